"""Runs an experiment end to end: data, model, fit, test metrics, and a run directory.

A run directory holds `config.yaml`, `metrics.json` (test and validation metrics, per-epoch history,
timings), `curves.png` (training loss and validation AUC per epoch) and `checkpoint.pt` (weights,
fitted schema and config), from which `deepfm export` writes an artifact.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from matplotlib.figure import Figure

from deepfm.artifact import export_artifact
from deepfm.config import ExperimentConfig
from deepfm.data.encoding import FeatureEncoder
from deepfm.data.movielens import MovieLensAdapter
from deepfm.data.schema import DatasetSchema
from deepfm.models import CTRModel, build_model, model_hyperparameters
from deepfm.training.trainer import History, Scorer, Trainer, evaluate, probabilities_of, seed_everything

logger = logging.getLogger(__name__)

CHECKPOINT_FILE = "checkpoint.pt"
METRICS_FILE = "metrics.json"


def build_model_for(config: ExperimentConfig, schema: DatasetSchema) -> CTRModel:
    """The config's model over `schema`, given only the hyperparameters that model takes."""
    accepted = model_hyperparameters(config.model.name)
    hyperparameters = {k: v for k, v in config.model.hyperparameters().items() if k in accepted}
    return build_model(config.model.name, schema, fm_embed_dim=config.feature.fm_embed_dim, **hyperparameters)


@dataclass
class RunResult:
    """A finished training run."""

    run_dir: Path
    config: ExperimentConfig
    schema: DatasetSchema
    model: CTRModel
    history: History
    metrics: dict[str, Any]


def train_experiment(config: ExperimentConfig, run_dir: str | Path | None = None) -> RunResult:
    """Train and test one experiment and write its run directory.

    Args:
        config: the experiment.
        run_dir: where to write; default `<training.output_dir>/<name>/<UTC timestamp>-seed<seed>`.
            Under torchrun only rank 0 writes (call inside `distributed.process_group`).
    """
    started = time.perf_counter()
    seed_everything(config.training.seed)
    torch.set_num_threads(config.training.num_threads)
    adapter = MovieLensAdapter(config.data)
    schema, train, val, test = adapter.build()
    schema = schema.with_embedding_dims(config.feature.embedding_dims)
    model = build_model_for(config, schema)
    logger.info(
        "%s: %d parameters, %d train / %d val / %d test rows",
        config.model.name, sum(p.numel() for p in model.parameters()), len(train), len(val), len(test),
    )  # fmt: skip
    trainer = Trainer(model, config.training)
    history = trainer.fit(train, val)
    test_metrics = evaluate(probabilities_of(model), test, config.training.eval_batch_size, trainer.world)
    model.cpu()  # the checkpoint and the artifact are CPU tensors whatever the training device
    logger.info("test: %s", json.dumps({k: round(v, 4) for k, v in test_metrics.items()}))
    epochs = history.epochs
    metrics: dict[str, Any] = {
        "model": config.model.name,
        "seed": config.training.seed,
        "protocol": config.data.protocol,
        "test": test_metrics,
        "val": {"auc": history.best_val_auc, "best_epoch": history.best_epoch},
        "num_parameters": sum(p.numel() for p in model.parameters()),
        "seconds_per_epoch": sum(e.seconds for e in epochs) / max(len(epochs), 1),
        "train_samples_per_second": sum(e.samples_per_second for e in epochs) / max(len(epochs), 1),
        "total_seconds": time.perf_counter() - started,
        "history": history.to_dict(),
    }
    if run_dir is None:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        run_dir = Path(config.training.output_dir) / config.name / f"{stamp}-seed{config.training.seed}"
    out = Path(run_dir)
    if trainer.world.is_primary:  # under torchrun, rank 0 alone writes the run
        out.mkdir(parents=True, exist_ok=True)
        config.to_yaml(out / "config.yaml")
        (out / METRICS_FILE).write_text(json.dumps(metrics, indent=2))
        plot_curves(history, out / "curves.png", title=f"{config.name} (seed {config.training.seed})")
        torch.save(
            {
                "state_dict": model.state_dict(),
                "schema": schema.to_dict(),
                "config": config.to_dict(),
                "metrics": metrics,
            },
            out / CHECKPOINT_FILE,
        )
    return RunResult(out, config, schema, model, history, metrics)


def plot_curves(history: History, path: Path, title: str) -> None:
    """Training loss and validation AUC per epoch, side by side, as a PNG."""
    epochs = [e.epoch for e in history.epochs]
    figure = Figure(figsize=(10, 4))
    loss_axis, auc_axis = figure.subplots(1, 2)
    loss_axis.plot(epochs, [e.train_loss for e in history.epochs], marker="o")
    loss_axis.set(xlabel="epoch", ylabel="train logloss", title="training loss")
    auc_axis.plot(epochs, [e.val_auc for e in history.epochs], marker="o", color="tab:green")
    auc_axis.axvline(history.best_epoch, color="gray", linestyle="--", label=f"kept: epoch {history.best_epoch}")
    auc_axis.set(xlabel="epoch", ylabel="validation AUC", title="validation AUC")
    auc_axis.legend()
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def load_run(run_dir: str | Path) -> RunResult:
    """Rebuild the trained model of a run directory from its checkpoint."""
    checkpoint = torch.load(Path(run_dir) / CHECKPOINT_FILE, map_location="cpu", weights_only=True)
    config = ExperimentConfig.from_dict(checkpoint["config"])
    schema = DatasetSchema.from_dict(checkpoint["schema"])
    model = build_model_for(config, schema)
    model.load_state_dict(checkpoint["state_dict"])
    model.eval()
    history = History()
    return RunResult(Path(run_dir), config, schema, model, history, checkpoint["metrics"])


def export_run(run: RunResult, store: str | Path, model_name: str | None = None) -> Path:
    """Write a run's model as the next artifact version of `model_name` (default: the model's name)."""
    return export_artifact(
        run.model,
        run.schema,
        store,
        model_name or run.config.model.name,
        config=run.config.to_dict(),
        metrics={"test": run.metrics["test"], "val": run.metrics["val"], "protocol": run.metrics["protocol"]},
    )


def evaluate_scorer_on_raw_test(config: ExperimentConfig, schema: DatasetSchema, scorer: Scorer) -> dict[str, float]:
    """Test metrics of `scorer` on the config's test split, encoded from raw rows with `schema`.

    This is the serving path: raw user and movie attributes through the artifact's own schema.
    """
    adapter = MovieLensAdapter(config.data)
    adapter.build()
    test = adapter.dataset(adapter.splits["test"], FeatureEncoder(schema))
    return evaluate(scorer, test, config.training.eval_batch_size)

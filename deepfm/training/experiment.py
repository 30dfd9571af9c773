"""Runs an experiment end to end: data, model, fit, test metrics, and a run directory.

A run directory holds `config.yaml`, `metrics.json` (test and validation metrics, per-epoch history,
timings), `curves.png` (training loss and validation AUC per epoch) and `checkpoint.pt` (weights,
fitted schema and config), from which `deepfm export` writes an artifact.
"""

from __future__ import annotations

import json
import logging
import pickle
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from matplotlib.figure import Figure

from deepfm.artifact import export_artifact
from deepfm.config import DataConfig, ExperimentConfig, TableConfig, portable
from deepfm.data.schema import DatasetSchema
from deepfm.data.source import open_source
from deepfm.errors import ConfigError, RunError
from deepfm.models import CTRModel, build_model
from deepfm.training.trainer import History, Scorer, Trainer, evaluate, probabilities_of, seed_everything

logger = logging.getLogger(__name__)

CHECKPOINT_FILE = "checkpoint.pt"
METRICS_FILE = "metrics.json"


def build_model_for(config: ExperimentConfig, schema: DatasetSchema) -> CTRModel:
    """The config's model over `schema`."""
    return build_model(
        config.model.name, schema, fm_embed_dim=config.feature.fm_embed_dim, **config.model.hyperparameters()
    )


def protocol_of(data: DataConfig) -> str:
    """How the data is split and evaluated, in a word (recorded with the metrics)."""
    if isinstance(data, TableConfig):
        return "time_split" if data.time_column else ("random_split" if data.path else "given_splits")
    return data.protocol


def _embedding_dims(config: ExperimentConfig, schema: DatasetSchema) -> DatasetSchema:
    """`feature.embedding_dims` applied; a field whose dim a table declares too is a ConfigError."""
    if isinstance(config.data, TableConfig):
        both = sorted({f.name for f in config.data.fields if f.embedding_dim} & set(config.feature.embedding_dims))
        if both:
            raise ConfigError(f"embedding_dim of {both} set both in data.fields and in feature.embedding_dims")
    unknown = sorted(set(config.feature.embedding_dims) - set(schema.fields))
    if unknown:
        raise ConfigError(f"feature.embedding_dims names unknown fields {unknown}; fields: {schema.field_names}")
    return schema.with_embedding_dims(config.feature.embedding_dims)


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
    source = open_source(config.data)
    schema, train, val, test = source.build()
    logger.info("data prepared in %.1f s", time.perf_counter() - started)
    config = replace(config, data=source.config)  # a table's inferred fields, so that config.yaml holds them
    schema = _embedding_dims(config, schema)
    model = build_model_for(config, schema)
    logger.info(
        "%s: %d parameters, %d train / %d val / %d test rows",
        config.model.name, sum(p.numel() for p in model.parameters()), len(train), len(val), len(test),
    )  # fmt: skip
    trainer = Trainer(model, config.training)
    history = trainer.fit(train, val)
    test_metrics = evaluate(
        probabilities_of(model), test, config.training.eval_batch_size, trainer.world, config.training.prefetch_batches
    )
    model.cpu()  # the checkpoint and the artifact are CPU tensors whatever the training device
    logger.info("test: %s", json.dumps({k: round(v, 4) for k, v in test_metrics.items()}))
    epochs = history.epochs
    metrics: dict[str, Any] = {
        "model": config.model.name,
        "seed": config.training.seed,
        "protocol": protocol_of(config.data),
        "data": source.name,
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
    """Rebuild the trained model of a run directory from its checkpoint.

    Raises:
        RunError: the directory holds no readable checkpoint of `deepfm train`.
    """
    path = Path(run_dir) / CHECKPOINT_FILE
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        config = ExperimentConfig.from_dict(checkpoint["config"])
        schema = DatasetSchema.from_dict(checkpoint["schema"])
        model = build_model_for(config, schema)
        model.load_state_dict(checkpoint["state_dict"])
    except OSError as exc:
        raise RunError(
            f"{path}: cannot read ({exc.strerror}): is {run_dir} a run directory of `deepfm train`?"
        ) from exc
    except (pickle.UnpicklingError, RuntimeError, EOFError, KeyError, TypeError) as exc:
        raise RunError(f"{path}: not a checkpoint of `deepfm train` ({type(exc).__name__}: {str(exc)[:200]})") from exc
    model.eval()
    history = History()
    return RunResult(Path(run_dir), config, schema, model, history, checkpoint["metrics"])


def export_run(run: RunResult, store: str | Path, model_name: str | None = None) -> Path:
    """Write a run's model as the next artifact version of `model_name` (default: the model's name).

    The metadata records the data by name or relative path (`deepfm.config.portable`), never as a path
    of this machine; `deepfm evaluate --artifact ... --data PATH` points it at the data elsewhere.
    """
    recorded: dict[str, Any] = {
        key: run.metrics[key] for key in ("test", "val", "protocol", "data") if key in run.metrics
    }
    return export_artifact(
        run.model,
        run.schema,
        store,
        model_name or run.config.model.name,
        config=portable(run.config).to_dict(),
        metrics=recorded,
    )


def evaluate_scorer_on_raw_test(config: ExperimentConfig, schema: DatasetSchema, scorer: Scorer) -> dict[str, float]:
    """Test metrics of `scorer` on the config's test split, encoded from raw rows with `schema`.

    This is the serving path: raw columns through the artifact's own schema.
    """
    source = open_source(config.data)
    source.build()
    return evaluate(scorer, source.raw_test(schema), config.training.eval_batch_size)

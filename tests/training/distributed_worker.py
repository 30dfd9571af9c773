"""What tests/training/test_distributed.py starts in each torchrun process.

    torchrun ... distributed_worker.py OUT cli ARGS...   the `deepfm` command with ARGS, exactly as
                                                         `python -m deepfm ARGS`
    torchrun ... distributed_worker.py OUT padding       a tiny DeepFM whose rank-1 rows are all OOV
                                                         (padding index 0 in every field)

Either way the process then saves what it ended with to OUT/rank<RANK>.pt (weights and batch-norm
statistics, each epoch's validation metrics and learning rate, the test metrics), so the test can
compare the ranks. That file is the harness's; the run directory and the store are the product's.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "service"))  # serving_helpers: the tiny schema
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # tools/: torchrun runs this file as a script

from serving_helpers import base_schema

from deepfm import cli
from deepfm.config import TrainingConfig
from deepfm.data.dataset import CTRDataset, to_tensors
from deepfm.data.encoding import FeatureEncoder
from deepfm.data.fitting import fit_schema
from deepfm.models import build_model
from deepfm.training import experiment
from deepfm.training.distributed import process_group
from deepfm.training.trainer import History, Trainer
from tools.synthetic import movielens_rows

Outcome = tuple[nn.Module, History, dict[str, float]]


def run_cli(args: list[str]) -> Outcome:
    """`deepfm ARGS`; what `train_experiment` returned (the real function, observed)."""
    runs: list[experiment.RunResult] = []
    real = experiment.train_experiment

    def observed(*positional: object, **named: object) -> experiment.RunResult:
        runs.append(real(*positional, **named))  # type: ignore[arg-type]
        return runs[-1]

    experiment.train_experiment = observed
    code = cli.main(args)
    if code != 0:
        sys.exit(code)
    (run,) = runs
    return run.model, run.history, run.metrics["test"]


def run_padding() -> Outcome:
    """Two epochs in which every row of rank 1 indexes only the padding (OOV) row of every table."""
    frame = movielens_rows(512, seed=1)
    schema = fit_schema(base_schema(), frame.drop(columns="label"))
    features = to_tensors(FeatureEncoder(schema).encode_frame(frame).features)
    labels = torch.tensor(frame["label"].to_numpy())
    config = TrainingConfig(epochs=2, batch_size=64, eval_batch_size=100, progress=False, device="cpu", patience=5)
    with process_group(config.device) as world:
        own = {name: torch.zeros_like(v) for name, v in features.items()} if world.rank == 1 else features
        torch.manual_seed(0)
        model = build_model("deepfm", schema, fm_embed_dim=8, dnn_hidden_units=(16,), dnn_dropout=0.0)
        history = Trainer(model, config).fit(CTRDataset(own, labels), CTRDataset(features, labels))
    return model, history, {}


def main() -> None:
    out, mode, *args = sys.argv[1:]
    model, history, test = run_cli(args) if mode == "cli" else run_padding()
    decisions = [(e.epoch, e.train_loss, e.val_auc, e.val_logloss, e.lr) for e in history.epochs]
    outcome = {"state_dict": model.state_dict(), "epochs": decisions, "best_epoch": history.best_epoch, "test": test}
    torch.save(outcome, Path(out) / f"rank{os.environ['RANK']}.pt")


if __name__ == "__main__":
    main()

"""Acceptance of training on one's own data: `deepfm train --data ... --export` through the CLI on a synthetic
click log (CSV and Parquet) and on ML-1M- and ML-25M-format folders, then `python -m service` on the store.

Held-out raw rows, unseen ids included, are scored over HTTP; the scores equal the offline model's to 1e-6
and beat, on AUC, a logistic regression (the first-order terms alone) trained on the same rows.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
import torch
from synthetic_data import click_log, write_movielens
from torch import Tensor, nn

from deepfm.artifact import load_artifact
from deepfm.cli import main
from deepfm.data.dataset import to_tensors
from deepfm.data.encoding import FeatureEncoder
from deepfm.data.schema import DatasetSchema
from deepfm.data.source import open_source
from deepfm.models.layers.embedding import FeatureEmbedding
from deepfm.training.experiment import RunResult, load_run
from deepfm.training.metrics import roc_auc
from deepfm.training.trainer import Trainer, evaluate, probabilities_of
from tools.processes import Server, run_server

TRAINING = ["-o", "training.progress=false", "-o", "training.batch_size=256", "-o", "training.epochs=12"]
MOVIELENS = ["-o", "data.num_eval_negatives=50", "-o", "data.num_val_negatives=20"]
UNSEEN = {"user": "u-never-seen", "ad_id": 987_654, "device": "fridge", "tags": ["unheard-of"]}


@dataclass
class Trained:
    """One exported model: its name in the store, the run, and the raw test rows with their labels."""

    name: str
    run: RunResult
    rows: pd.DataFrame
    labels: np.ndarray
    baseline_auc: float


class LogisticRegression(nn.Module):
    """bias + the first-order weights of every field: no interactions."""

    def __init__(self, schema: DatasetSchema) -> None:
        super().__init__()
        self.embedding = FeatureEmbedding(schema, fm_embed_dim=1)
        self.bias = nn.Parameter(torch.zeros(1))

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        first_order, _, _ = self.embedding(batch)
        return (self.bias + first_order).squeeze(1)


def train_cli(args: list[str], store: Path, name: str, runs: Path) -> Trained:
    """Train and export through the CLI; rebuild the run's data for its raw test rows and the baseline."""
    run_dir = runs / name
    assert main(["train", *args, "--run-dir", str(run_dir), "--export", "--store", str(store), "--name", name]) == 0
    assert (store / name / "1" / "model.pt").is_file()
    run = load_run(run_dir)
    source = open_source(run.config.data)
    schema, train, val, test = source.build()
    baseline = LogisticRegression(schema)
    Trainer(baseline, run.config.training).fit(train, val)
    baseline_auc = evaluate(probabilities_of(baseline), test, 4096)["auc"]
    rows = source.splits["test"]  # type: ignore[attr-defined]
    if "query" in rows:  # MovieLens: raw attributes of each (user, movie) row
        labels = rows["label"].to_numpy()
        rows = source.raw_rows(rows)  # type: ignore[attr-defined]
    else:
        labels = rows[schema.label_field].to_numpy()
    return Trained(name, run, rows[schema.source_fields].reset_index(drop=True), labels, baseline_auc)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Trained]:
    root = tmp_path_factory.mktemp("own_data")
    log = click_log(20_000, seed=11)
    log.to_csv(root / "clicks.csv", index=False)
    log.assign(tags=log["tags"].str.split("|")).to_parquet(root / "clicks.parquet")
    ml1m = write_movielens(root / "ml-1m", "ml-1m")
    ml25m = write_movielens(root / "ml-25m", "ml-20m", seed=1)
    store, runs = root / "store", root / "runs"
    table = ["--label", "clicked", *TRAINING]
    jobs = {
        "clicks_csv": ["--data", str(root / "clicks.csv"), "--time-column", "ts", *table],
        "clicks_parquet": ["--data", str(root / "clicks.parquet"), *table, "--model", "xdeepfm"],
        "ml1m": ["--data", str(ml1m), *TRAINING, *MOVIELENS],
        "ml25m": ["--data", str(ml25m), *TRAINING, *MOVIELENS],
    }
    return {name: train_cli(args, store, name, runs) for name, args in jobs.items()}


@pytest.fixture(scope="module")
def server(trained: dict[str, Trained], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    store = next(iter(trained.values())).run.run_dir.parent.parent / "store"
    env = {"DEEPFM_SERVE_MODELS_STORE": str(store), "DEEPFM_SERVE_DEFAULT_MODEL": "clicks_csv"}
    with run_server(tmp_path_factory.mktemp("own_data_server"), env) as running:
        yield running


def instances(rows: pd.DataFrame) -> list[dict[str, Any]]:
    """Raw rows as JSON instances: lists as lists, missing values left out."""
    records = json.loads(rows.to_json(orient="records"))
    return [{k: v for k, v in record.items() if v is not None} for record in records]


def offline_scores(run: RunResult, records: list[dict[str, Any]]) -> np.ndarray:
    """The eager model of the run over the same raw rows, encoded by its schema."""
    columns = {s: [r.get(s) for r in records] for s in run.schema.source_fields}
    encoded = FeatureEncoder(run.schema).encode(columns, len(records))
    with torch.no_grad():
        return probabilities_of(run.model)(to_tensors(encoded.features)).numpy()


def served_scores(server: Server, model: str, records: list[dict[str, Any]]) -> np.ndarray:
    scores = []
    for start in range(0, len(records), 2_000):
        response = httpx.post(
            f"{server.url}/predict", json={"instances": records[start : start + 2_000], "model": model}, timeout=60
        )
        assert response.status_code == 200, response.text
        scores += response.json()["predictions"]
    return np.array(scores)


@pytest.mark.parametrize("name", ["clicks_csv", "clicks_parquet", "ml1m", "ml25m"])
def test_served_scores_equal_the_offline_model_and_beat_logistic_regression(
    trained: dict[str, Trained], server: Server, name: str
) -> None:
    model = trained[name]
    records = instances(model.rows)

    served = served_scores(server, name, records)

    np.testing.assert_allclose(served, offline_scores(model.run, records), rtol=0, atol=1e-6)
    auc = roc_auc(model.labels, served)
    assert auc == pytest.approx(model.run.metrics["test"]["auc"], abs=1e-6)
    assert auc > model.baseline_auc + 0.02, (auc, model.baseline_auc)


@pytest.mark.parametrize("name", ["clicks_csv", "clicks_parquet"])
def test_unseen_ids_score_as_oov_and_are_counted(trained: dict[str, Trained], server: Server, name: str) -> None:
    model = trained[name]
    records = [{**record, **UNSEEN} for record in instances(model.rows.iloc[:5])]
    before = _oov(server, name, "user")

    served = served_scores(server, name, records)

    np.testing.assert_allclose(served, offline_scores(model.run, records), rtol=0, atol=1e-6)
    encoded = FeatureEncoder(model.run.schema).encode({"user": [UNSEEN["user"]]}, 1, fields=["user"])
    assert encoded.features["user"].tolist() == [0]
    assert _oov(server, name, "user") == before + 5


def _oov(server: Server, model: str, field: str) -> float:
    for line in httpx.get(f"{server.url}/metrics").text.splitlines():
        if line.startswith("deepfm_oov_rows_total{") and f'model="{model}"' in line and f'field="{field}"' in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_metadata_records_the_data_by_name(trained: dict[str, Trained]) -> None:
    recorded = {
        name: load_artifact(model.run.run_dir.parent.parent / "store" / name / "1").metadata
        for name, model in trained.items()
    }

    assert recorded["clicks_csv"]["config"]["data"]["path"] == "clicks.csv"
    assert recorded["clicks_parquet"]["metrics"]["data"] == "clicks.parquet"
    assert recorded["ml1m"]["config"]["data"]["path"] == "ml-1m"
    assert recorded["ml25m"]["metrics"]["protocol"] == "leave_one_out"
    assert recorded["clicks_csv"]["metrics"]["protocol"] == "time_split"

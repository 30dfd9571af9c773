"""Helpers of the service tests: a tiny trained DeepFM, its export, and a real server process.

The raw rows look like MovieLens (ids, gender, age, occupation, zip code, genres); the label depends
on gender, age and genres so that the trained model's scores differ from row to row.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from fastapi.testclient import TestClient
from torch import nn

from deepfm.artifact import MODEL_FILE, export_artifact
from deepfm.data.dataset import to_tensors
from deepfm.data.encoding import FeatureEncoder
from deepfm.data.schema import DatasetSchema, FeatureType, FieldSchema, Transform, TransformKind
from deepfm.models import build_model

MODEL_NAME = "deepfm"
ADMIN_TOKEN = "test-admin-token-0123456789"

Instance = dict[str, Any]
MakeClient = Callable[..., TestClient]
"""Builds a started in-process client, with settings overridable per test (the `make_client` fixture)."""

# Rows with values the model has not seen, or without some fields: each scores with OOV index 0 there.
UNKNOWN_INSTANCES: list[Instance] = [
    {"user_id": 99999, "movie_id": 242, "gender": "X", "age": 24, "occupation": "astronaut", "zip_code": "ZZZ99"},
    {"user_id": 3, "movie_id": 12345, "gender": "F", "age": -5, "occupation": "writer", "genres": ["Nope", "Drama"]},
    {"movie_id": 7, "genres": []},
    {"user_id": None, "movie_id": 8, "gender": None, "age": None, "genres": "Comedy|Action"},
]


def base_schema() -> DatasetSchema:
    """The seven MovieLens-like fields, unfitted, in a user and an item group."""
    sparse, user, item = FeatureType.SPARSE, "user", "item"
    return DatasetSchema(
        [
            FieldSchema("user_id", sparse, embedding_dim=8, group=user),
            FieldSchema("movie_id", sparse, embedding_dim=8, group=item),
            FieldSchema("gender", sparse, embedding_dim=4, group=user),
            FieldSchema(
                "age",
                sparse,
                embedding_dim=4,
                group=user,
                transform=Transform(TransformKind.BUCKETIZE, (1, 18, 25, 35, 45, 56)),
            ),
            FieldSchema("occupation", sparse, embedding_dim=4, group=user),
            FieldSchema(
                "zip_prefix",
                sparse,
                embedding_dim=4,
                group=user,
                source="zip_code",
                transform=Transform(TransformKind.PREFIX, length=3),
            ),
            FieldSchema(
                "genres",
                FeatureType.SEQUENCE,
                embedding_dim=4,
                group=item,
                max_length=3,
                transform=Transform(TransformKind.SPLIT),
            ),
        ]
    )


def train(schema: DatasetSchema, frame: pd.DataFrame, seed: int = 0, steps: int = 20) -> nn.Module:
    """A tiny DeepFM trained full-batch for a few steps."""
    torch.manual_seed(seed)
    model = build_model(
        "deepfm", schema, fm_embed_dim=8, dnn_hidden_units=(16,), dnn_dropout=0.0, dnn_use_batch_norm=False
    )
    features = to_tensors(FeatureEncoder(schema).encode_frame(frame).features)
    labels = torch.tensor(frame["label"].to_numpy())
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(steps):
        optimizer.zero_grad()
        nn.functional.binary_cross_entropy_with_logits(model(features), labels).backward()
        optimizer.step()
    return model.eval()


@dataclass(frozen=True)
class Trained:
    """A fitted schema, a trained model and the raw rows it was trained on."""

    schema: DatasetSchema
    model: nn.Module
    frame: pd.DataFrame

    def instances(self, count: int, start: int = 0) -> list[Instance]:
        """Raw training rows as request instances (genres as lists)."""
        rows = self.frame.drop(columns="label").iloc[start : start + count].to_dict("records")
        return [{**{str(k): v for k, v in row.items()}, "genres": row["genres"].split("|")} for row in rows]

    def eager_scores(self, instances: list[Instance], model: nn.Module | None = None) -> np.ndarray:
        """Offline probabilities of the eager model, encoded by FeatureEncoder from the same raw rows."""
        columns = {s: [row.get(s) for row in instances] for s in self.schema.source_fields}
        encoded = FeatureEncoder(self.schema).encode(columns, len(instances))
        with torch.no_grad():
            return torch.sigmoid((model or self.model)(to_tensors(encoded.features))).numpy()

    def export(self, store: Path, model: nn.Module | None = None, test_auc: float | None = None) -> Path:
        """Export as the next version of MODEL_NAME in `store`, recording `test_auc` as its test metric if given."""
        metrics: dict[str, Any] = {"auc": 0.75} if test_auc is None else {"test": {"auc": test_auc}}
        return export_artifact(
            model or self.model, self.schema, store, MODEL_NAME, config={"model": MODEL_NAME}, metrics=metrics
        )

    def index_of(self, source: str, position: int) -> Any:
        """The raw value of a request field whose vocabulary index is `position`."""
        (field,) = [f for f in self.schema.fields.values() if f.source == source]
        assert field.vocabulary is not None
        return _raw(field.vocabulary[position - 1])


def _raw(key: str) -> Any:
    return int(key) if key.isdigit() else key


def add_broken_version(store: Path, name: str = MODEL_NAME) -> int:
    """Copy the newest version as the next one with model.pt corrupted, renamed into place atomically."""
    root = store / name
    newest = max(int(p.name) for p in root.iterdir() if p.name.isdigit())
    staging = Path(tempfile.mkdtemp(prefix=".broken-", dir=root))
    shutil.copytree(root / str(newest), staging, dirs_exist_ok=True)
    with (staging / MODEL_FILE).open("ab") as handle:
        handle.write(b"corrupted")
    staging.rename(root / str(newest + 1))
    return newest + 1


def metric(client: TestClient, name: str, **labels: str) -> float:
    """The value of one sample of /metrics (0 if absent)."""
    wanted = {f'{k}="{v}"' for k, v in labels.items()}
    for line in client.get("/metrics").text.splitlines():
        match = re.fullmatch(rf"{name}(?:{{(.*)}})? (\S+)", line)
        if match and wanted <= set((match.group(1) or "").split(",")) - {""}:
            return float(match.group(2))
    return 0.0

"""Helpers of the deployment tests: a synthetic store, request bodies, a bounded load generator."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from torch import nn

from tools import loopback
from tools.processes import REPO
from tools.requests import MOVIELENS_INSTANCES
from tools.synthetic import MOVIELENS_100K, movielens_rows

__all__ = ["REPO", "loopback"]

INSTANCES = MOVIELENS_INSTANCES
BODY = {"instances": INSTANCES[:1]}


def build_synthetic_store(store: Path) -> Path:
    """A store with one deepfm version, fitted on synthetic MovieLens-like rows (no dataset needed)."""
    import torch

    from deepfm.artifact import export_artifact
    from deepfm.data.fitting import fit_schema
    from deepfm.data.movielens import movielens_schema
    from deepfm.data.schema import embedding_dim_for
    from deepfm.models.registry import build_model

    rows = movielens_rows(2000, shape=MOVIELENS_100K)
    schema = fit_schema(movielens_schema(), rows)
    schema = schema.with_embedding_dims({f.name: embedding_dim_for(f.vocabulary_size) for f in schema.fields.values()})
    torch.manual_seed(0)
    export_artifact(build_model("deepfm", schema), schema, store, "deepfm", config={}, metrics={})
    return store


def export_next_version(
    store: Path, model_name: str = "deepfm", seed: int = 1, wrap: Callable[[nn.Module], nn.Module] | None = None
) -> int:
    """Roll out a new version the way the trainer does: a freshly initialised model over the
    latest version's schema, exported by deepfm.artifact (atomic rename into the store), recording
    the latest version's metrics (as good a model as the last, for the promotion gate). `wrap` makes
    another model of it (e.g. one of tools.faults)."""
    import torch

    from deepfm.artifact import SCHEMA_FILE, export_artifact, list_versions, read_metadata
    from deepfm.data.schema import DatasetSchema
    from deepfm.models.registry import build_model

    latest = max(list_versions(store, model_name))
    schema = DatasetSchema.from_json((store / model_name / str(latest) / SCHEMA_FILE).read_text())
    torch.manual_seed(seed)
    metrics = read_metadata(store / model_name / str(latest)).get("metrics", {})
    model = build_model(model_name, schema)
    path = export_artifact(
        model if wrap is None else wrap(model), schema, store, model_name, config={}, metrics=metrics
    )
    return int(path.name)

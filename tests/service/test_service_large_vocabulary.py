"""A model whose vocabulary lives beside schema.json: the service loads it, scores with it, and keeps
`GET /schema` bounded."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient

from deepfm.artifact import VOCABULARY_FILE, export_artifact
from deepfm.data.encoding import FeatureEncoder
from deepfm.data.schema import DatasetSchema, FeatureType, FieldSchema
from deepfm.models import build_model
from service.app import create_app
from service.inputs import KNOWN_VALUES_LISTED
from service.scoring import LoadedModel
from service.settings import Settings

VALUES = 5_000
ADS = tuple(f"{i * 7919 % 2**32:08x}" for i in range(VALUES))


def large_schema() -> DatasetSchema:
    return DatasetSchema(
        [
            FieldSchema("ad_id", FeatureType.SPARSE, vocabulary_size=VALUES + 1, embedding_dim=4, vocabulary=ADS),
            FieldSchema("device", FeatureType.SPARSE, vocabulary_size=4, embedding_dim=4, vocabulary=("a", "b", "c")),
            FieldSchema("price", FeatureType.DENSE, embedding_dim=1, mean=3.0, std=2.0, example=2.5),
        ]
    )


def test_a_model_with_a_vocabulary_file_serves_and_its_schema_lists_no_values(tmp_path: Path) -> None:
    schema = large_schema()
    torch.manual_seed(0)
    model = build_model("deepfm", schema)
    store = tmp_path / "store"
    version = export_artifact(model, schema, store, "deepfm", config={}, metrics={}, inline_vocabulary_max=100)
    assert (version / VOCABULARY_FILE).is_file()
    instances = [{"ad_id": ADS[i], "device": "b", "price": 1.0} for i in (0, 1234, VALUES - 1)]
    instances.append({"ad_id": "not-an-id", "device": "b", "price": 1.0})
    columns = {name: [row[name] for row in instances] for name in instances[0]}
    encoded = FeatureEncoder(schema).encode(columns, len(instances))  # the training side's encoder and schema
    assert encoded.features["ad_id"].tolist() == [1, 1235, VALUES, 0]
    artifact = LoadedModel.load(version, max_rows=64).artifact
    expected = artifact.predict({k: torch.from_numpy(v) for k, v in encoded.features.items()})

    settings = Settings(models_store=store, poll_interval_s=0, torch_threads=1)
    with TestClient(create_app(settings)) as client:
        predicted = client.post("/predict", json={"instances": instances})
        described = client.get("/schema")

    assert predicted.status_code == 200, predicted.text
    assert predicted.json()["predictions"] == pytest.approx(expected.tolist(), abs=1e-6)
    ad = next(f for f in described.json()["fields"] if f["name"] == "ad_id")["features"][0]
    assert ad["vocabulary_size"] == VALUES and ad["known_values"] is None and VALUES > KNOWN_VALUES_LISTED
    assert len(described.content) < 10_000

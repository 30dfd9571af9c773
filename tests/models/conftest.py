"""Schemas and batches shared by the model and layer tests."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch import Tensor

from deepfm.data.schema import DatasetSchema, FeatureType, FieldSchema, Transform, TransformKind
from deepfm.models.layers.embedding import FUSED_MAX_ROWS

SEEDS_DIR = Path(__file__).resolve().parents[1] / "seeds"


@pytest.fixture(params=[1, 7, 1024])
def batch_size(request: pytest.FixtureRequest) -> int:
    """Batch sizes of the TorchScript parity tests: a single row, an odd size, a large batch."""
    size: int = request.param
    return size


@pytest.fixture
def synthetic_schema() -> DatasetSchema:
    """The 6-field schema of the "Model Layers Guide" seed notebook."""
    sparse = FeatureType.SPARSE
    return DatasetSchema(
        [
            FieldSchema("user_id", sparse, vocabulary_size=100, embedding_dim=16),
            FieldSchema("item_id", sparse, vocabulary_size=200, embedding_dim=16),
            FieldSchema("gender", sparse, vocabulary_size=3, embedding_dim=4),
            FieldSchema("age", sparse, vocabulary_size=8, embedding_dim=4),
            FieldSchema("occupation", sparse, vocabulary_size=22, embedding_dim=8),
            FieldSchema("city", sparse, vocabulary_size=50, embedding_dim=8),
        ]
    )


@pytest.fixture
def mixed_schema() -> DatasetSchema:
    """Every feature type and combiner, widths both equal to and different from D = 8."""
    split = Transform(TransformKind.SPLIT)
    return DatasetSchema(
        [
            FieldSchema("user", FeatureType.SPARSE, vocabulary_size=30, embedding_dim=8),
            FieldSchema("item", FeatureType.SPARSE, vocabulary_size=50, embedding_dim=4),
            FieldSchema(
                "tags_mean", FeatureType.SEQUENCE, vocabulary_size=12, embedding_dim=6, max_length=5, transform=split
            ),
            FieldSchema(
                "tags_sum",
                FeatureType.SEQUENCE,
                vocabulary_size=9,
                embedding_dim=8,
                max_length=3,
                combiner="sum",
                transform=split,
            ),
            FieldSchema(
                "tags_max",
                FeatureType.SEQUENCE,
                vocabulary_size=7,
                embedding_dim=4,
                max_length=4,
                combiner="max",
                transform=split,
            ),
            FieldSchema("price", FeatureType.DENSE, embedding_dim=3),
        ]
    )


@pytest.fixture
def large_schema(mixed_schema: DatasetSchema) -> DatasetSchema:
    """The mixed schema with a SPARSE and a SEQUENCE table too large to be fused (see FUSED_MAX_ROWS)."""
    rows = FUSED_MAX_ROWS + 1
    return mixed_schema.with_fields(replace(mixed_schema.fields[n], vocabulary_size=rows) for n in ("item", "tags_sum"))


@pytest.fixture
def movielens_schema() -> DatasetSchema:
    """Stand-in for the MovieLens-100K schema of the "FeatureEmbedding Guide" seed notebook."""
    return DatasetSchema.from_json((SEEDS_DIR / "movielens_100k_schema.json").read_text())


def _random_batch(schema: DatasetSchema, batch_size: int, *, seed: int = 0, low: int = 1) -> dict[str, Tensor]:
    """Random encoded inputs: indices in [low, vocabulary_size), sequences with trailing padding."""
    generator = torch.Generator().manual_seed(seed)
    batch: dict[str, Tensor] = {}
    for field in schema.fields.values():
        if field.feature_type is FeatureType.DENSE:
            batch[field.name] = torch.randn(batch_size, generator=generator)
            continue
        shape = (batch_size, field.max_length) if field.feature_type is FeatureType.SEQUENCE else (batch_size,)
        values = torch.randint(low, field.vocabulary_size, shape, generator=generator)
        if field.feature_type is FeatureType.SEQUENCE:
            lengths = torch.randint(1, field.max_length + 1, (batch_size, 1), generator=generator)
            values = values.masked_fill(torch.arange(field.max_length) >= lengths, 0)  # (B, L), 0-padded
        batch[field.name] = values
    return batch


@pytest.fixture
def make_batch() -> Callable[..., dict[str, Tensor]]:
    """`make_batch(schema, batch_size, seed=0, low=1)`: a random encoded batch."""
    return _random_batch


def _oov_batch(schema: DatasetSchema, batch_size: int) -> dict[str, Tensor]:
    """Index 0 in every categorical slot and 0.0 for every dense value."""
    batch: dict[str, Tensor] = {}
    for field in schema.fields.values():
        if field.feature_type is FeatureType.DENSE:
            batch[field.name] = torch.zeros(batch_size)
        elif field.feature_type is FeatureType.SEQUENCE:
            batch[field.name] = torch.zeros(batch_size, field.max_length, dtype=torch.long)
        else:
            batch[field.name] = torch.zeros(batch_size, dtype=torch.long)
    return batch


@pytest.fixture
def make_oov_batch() -> Callable[..., dict[str, Tensor]]:
    """`make_oov_batch(schema, batch_size)`: index 0 in every categorical slot, 0.0 in every dense one."""
    return _oov_batch

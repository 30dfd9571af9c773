"""ServingEmbedding: FeatureEmbedding's three views from fused tables, eager and frozen TorchScript."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn

from deepfm import jit
from deepfm.data.schema import OOV_INDEX, DatasetSchema
from deepfm.models import MODELS, build_model
from deepfm.models.layers.embedding import FeatureEmbedding
from deepfm.models.layers.serving_embedding import ServingEmbedding

BatchFactory = Callable[..., dict[str, torch.Tensor]]
TOLERANCE = {"rtol": 0.0, "atol": 1e-6}


def _trained(embedding: FeatureEmbedding, seed: int = 3) -> FeatureEmbedding:
    """Weights as training leaves them: random everywhere but the OOV/padding rows, which stay zero."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in embedding.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.3)
        for module in embedding.modules():
            if isinstance(module, nn.Embedding | nn.EmbeddingBag):
                module.weight[OOV_INDEX].zero_()
    return embedding.eval()


@pytest.fixture(params=["mixed", "movielens"])
def schema(
    request: pytest.FixtureRequest, mixed_schema: DatasetSchema, movielens_schema: DatasetSchema
) -> DatasetSchema:
    return mixed_schema if request.param == "mixed" else movielens_schema


def test_views_equal_feature_embedding(schema: DatasetSchema, make_batch: BatchFactory, batch_size: int) -> None:
    embedding = _trained(FeatureEmbedding(schema, fm_embed_dim=8))
    serving = ServingEmbedding(embedding)
    frozen = jit.freeze(jit.script(serving), preserved_attrs=[])
    batch = make_batch(schema, batch_size, seed=batch_size, low=0)  # OOV and padding in every field
    expected = embedding(batch)
    for views in (serving(batch), frozen(batch)):
        for view, reference in zip(views, expected, strict=True):
            torch.testing.assert_close(view, reference, **TOLERANCE)


def test_all_padding_and_all_oov_rows(
    mixed_schema: DatasetSchema, make_oov_batch: BatchFactory, make_batch: BatchFactory
) -> None:
    embedding = _trained(FeatureEmbedding(mixed_schema, fm_embed_dim=8))
    batch = make_oov_batch(mixed_schema, 3)  # empty bags: max pooling must give zeros, not -inf
    batch["price"] = make_batch(mixed_schema, 3)["price"]
    for view, reference in zip(ServingEmbedding(embedding)(batch), embedding(batch), strict=True):
        assert torch.isfinite(view).all()
        torch.testing.assert_close(view, reference, **TOLERANCE)


def test_weights_are_copied(mixed_schema: DatasetSchema, make_batch: BatchFactory) -> None:
    embedding = _trained(FeatureEmbedding(mixed_schema, fm_embed_dim=8))
    batch = make_batch(mixed_schema, 5)
    serving = ServingEmbedding(embedding)
    before = serving(batch)
    with torch.no_grad():
        for parameter in embedding.parameters():
            parameter.add_(1.0)
    for view, reference in zip(serving(batch), before, strict=True):
        assert torch.equal(view, reference)


@pytest.mark.parametrize("model_name", sorted(MODELS))
def test_for_serving_keeps_the_logits(model_name: str, mixed_schema: DatasetSchema, make_batch: BatchFactory) -> None:
    model = build_model(model_name, mixed_schema, fm_embed_dim=8, dnn_hidden_units=(16, 8))
    _trained(model.embedding)
    model.eval()
    serving = model.for_serving()
    assert isinstance(serving.embedding, ServingEmbedding) and isinstance(model.embedding, FeatureEmbedding)
    batch = make_batch(mixed_schema, 64, low=0)
    torch.testing.assert_close(serving(batch), model(batch), **TOLERANCE)

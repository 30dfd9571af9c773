"""DeepFM, xDeepFM and AttentionDeepFM: logits, composition, gradients, TorchScript."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch

from deepfm.data.schema import DatasetSchema
from deepfm.jit import script
from deepfm.models import MODELS, AttentionDeepFM, CTRModel, DeepFM, build_model, xDeepFM

BatchFactory = Callable[..., dict[str, torch.Tensor]]
SMALL: dict[str, Any] = {"fm_embed_dim": 8, "dnn_hidden_units": (16, 8)}


@pytest.fixture(params=sorted(MODELS))
def model_name(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


def test_logits_have_shape_b(
    model_name: str, mixed_schema: DatasetSchema, make_batch: BatchFactory, batch_size: int
) -> None:
    model = build_model(model_name, mixed_schema, **SMALL).eval()
    logits = model(make_batch(mixed_schema, batch_size))
    assert logits.shape == (batch_size,)
    assert logits.dtype == torch.float32


def test_script_matches_eager(
    model_name: str, mixed_schema: DatasetSchema, make_batch: BatchFactory, batch_size: int
) -> None:
    model = build_model(model_name, mixed_schema, **SMALL).eval()
    batch = make_batch(mixed_schema, batch_size, seed=batch_size, low=0)
    torch.testing.assert_close(script(model)(batch), model(batch))


def test_gradients_reach_every_parameter_but_no_oov_row(
    model_name: str, mixed_schema: DatasetSchema, make_batch: BatchFactory
) -> None:
    # Without batch norm: a Linear's bias right before a BatchNorm1d has (numerically) zero gradient
    # in training mode, since the norm subtracts the batch mean.
    model = build_model(model_name, mixed_schema, **SMALL, dnn_use_batch_norm=False).train()
    batch = make_batch(mixed_schema, 32, low=0)  # index 0 appears in every categorical field
    labels = torch.randint(0, 2, (32,), generator=torch.Generator().manual_seed(1)).float()
    torch.nn.functional.binary_cross_entropy_with_logits(model(batch), labels).backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None and torch.count_nonzero(parameter.grad) > 0, name
    for tables in (model.embedding.second_order_embeddings, model.embedding.first_order_embeddings):
        for name, table in tables.items():
            if mixed_schema.fields[name].is_categorical:
                assert torch.count_nonzero(table.weight.grad[0]) == 0, name


def _views(model: CTRModel, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    first_order, field_embeddings, flat_embeddings = model.embedding(batch)
    return model.bias + first_order, field_embeddings, flat_embeddings


def test_deepfm_composition(mixed_schema: DatasetSchema, make_batch: BatchFactory) -> None:
    model = DeepFM(mixed_schema, **SMALL).eval()
    batch = make_batch(mixed_schema, 6)
    linear, fields, flat = _views(model, batch)
    expected = linear + model.fm(fields) + model.dnn_out(model.dnn(flat))
    torch.testing.assert_close(model(batch), expected.squeeze(1))


def test_xdeepfm_composition(mixed_schema: DatasetSchema, make_batch: BatchFactory) -> None:
    model = xDeepFM(mixed_schema, **SMALL, cin_layer_sizes=(6, 4)).eval()
    batch = make_batch(mixed_schema, 6)
    linear, fields, flat = _views(model, batch)
    expected = linear + model.cin_out(model.cin(fields)) + model.dnn_out(model.dnn(flat))
    torch.testing.assert_close(model(batch), expected.squeeze(1))
    assert model.cin.output_dim == 3 + 4


def test_attention_deepfm_composition(mixed_schema: DatasetSchema, make_batch: BatchFactory) -> None:
    model = AttentionDeepFM(mixed_schema, **SMALL, attention_num_heads=2, attention_dim=8).eval()
    batch = make_batch(mixed_schema, 6)
    linear, fields, flat = _views(model, batch)
    dnn_input = torch.cat([model.attention(fields).flatten(1), flat], dim=1)
    expected = linear + model.fm(fields) + model.dnn_out(model.dnn(dnn_input))
    torch.testing.assert_close(model(batch), expected.squeeze(1))
    assert model.dnn.mlp[0].in_features == mixed_schema.num_fields * 8 + mixed_schema.total_embedding_dim

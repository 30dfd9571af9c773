"""The model registry: names, accepted hyperparameters, building, errors."""

from __future__ import annotations

import pytest
from torch import nn

from deepfm.data.schema import DatasetSchema
from deepfm.errors import ConfigError
from deepfm.models import MODELS, AttentionDeepFM, DeepFM, build_model, model_hyperparameters, xDeepFM

DNN_HYPERPARAMETERS = {"fm_embed_dim", "dnn_hidden_units", "dnn_activation", "dnn_dropout", "dnn_use_batch_norm"}


def test_names() -> None:
    assert list(MODELS.items()) == [("deepfm", DeepFM), ("xdeepfm", xDeepFM), ("attention_deepfm", AttentionDeepFM)]


def test_hyperparameters() -> None:
    assert model_hyperparameters("deepfm") == DNN_HYPERPARAMETERS
    assert model_hyperparameters("xdeepfm") == DNN_HYPERPARAMETERS | {"cin_layer_sizes", "cin_split_half"}
    attention = {f"attention_{p}" for p in ("num_heads", "dim", "num_layers", "use_residual", "dropout")}
    assert model_hyperparameters("attention_deepfm") == DNN_HYPERPARAMETERS | attention


def test_build_passes_hyperparameters(synthetic_schema: DatasetSchema) -> None:
    model = build_model("xdeepfm", synthetic_schema, fm_embed_dim=8, cin_layer_sizes=[4], dnn_hidden_units=[5])
    assert isinstance(model, xDeepFM)
    assert model.embedding.fm_embed_dim == 8
    assert model.cin.output_dim == 4
    assert model.dnn.output_dim == 5


def test_build_uses_defaults(synthetic_schema: DatasetSchema) -> None:
    model = build_model("attention_deepfm", synthetic_schema)
    assert isinstance(model, AttentionDeepFM)
    assert len(model.attention.layers) == 2
    assert [m.out_features for m in model.dnn.mlp if isinstance(m, nn.Linear)] == [256, 128, 64]


def test_unknown_model_lists_the_known_ones(synthetic_schema: DatasetSchema) -> None:
    with pytest.raises(ConfigError, match=r"'fm'.*\['attention_deepfm', 'deepfm', 'xdeepfm'\]"):
        build_model("fm", synthetic_schema)
    with pytest.raises(ConfigError, match="'fm'"):
        model_hyperparameters("fm")


def test_unknown_hyperparameter_is_named(synthetic_schema: DatasetSchema) -> None:
    with pytest.raises(ConfigError, match=r"'deepfm' does not accept \['cin_layer_sizes'\]"):
        build_model("deepfm", synthetic_schema, cin_layer_sizes=[4])

"""DNN: layer stack and repr of the seed notebook, parameter count, a manual reference, errors, TorchScript."""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn

from deepfm.errors import ConfigError
from deepfm.jit import script
from deepfm.models.layers.dnn import ACTIVATIONS, DNN, Dropout

SEED_REPR = """DNN(
  (mlp): Sequential(
    (0): Linear(in_features=56, out_features=128, bias=True)
    (1): BatchNorm1d(128, eps=1e-05, momentum=0.1, affine=True, track_running_stats=True)
    (2): ReLU()
    (3): Dropout(p=0.1, inplace=False)
    (4): Linear(in_features=128, out_features=64, bias=True)
    (5): BatchNorm1d(64, eps=1e-05, momentum=0.1, affine=True, track_running_stats=True)
    (6): ReLU()
    (7): Dropout(p=0.1, inplace=False)
    (8): Linear(in_features=64, out_features=32, bias=True)
    (9): BatchNorm1d(32, eps=1e-05, momentum=0.1, affine=True, track_running_stats=True)
    (10): ReLU()
    (11): Dropout(p=0.1, inplace=False)
  )
)"""


def without_norm_bias(text: str) -> str:
    """A repr without the `bias=True` that newer torch prints in norm layers and the seed's torch did not."""
    return re.sub(r"((?:BatchNorm1d|LayerNorm)\(.*?), bias=True", r"\1", text)


def test_seed_configuration() -> None:
    dnn = DNN(56, [128, 64, 32], activation="relu", dropout=0.1, use_batch_norm=True)
    assert without_norm_bias(repr(dnn)) == SEED_REPR
    assert dnn.output_dim == 32
    assert sum(p.numel() for p in dnn.parameters()) == 18_080
    assert dnn.eval()(torch.randn(8, 56)).shape == (8, 32)


def test_matches_manual_reference() -> None:
    dnn = DNN(5, [4, 3], activation="tanh", dropout=0.5, use_batch_norm=True).eval()
    norms = [dnn.mlp[1], dnn.mlp[5]]
    for bn in norms:
        bn.running_mean.uniform_(-1.0, 1.0)
        bn.running_var.uniform_(0.5, 2.0)
    x = torch.randn(6, 5)
    expected = x
    for linear, bn in zip([dnn.mlp[0], dnn.mlp[4]], norms, strict=True):
        normed = (linear(expected) - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps) * bn.weight + bn.bias
        expected = torch.tanh(normed)
    torch.testing.assert_close(dnn(x), expected)


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_every_activation_runs_and_scripts(activation: str) -> None:
    dnn = DNN(6, [5, 4], activation=activation).eval()
    x = torch.randn(3, 6)
    torch.testing.assert_close(script(dnn)(x), dnn(x))


def test_unknown_activation_is_named() -> None:
    with pytest.raises(ConfigError, match="'swish_ish'"):
        DNN(4, [2], activation="swish_ish")


@pytest.mark.parametrize(
    ("input_dim", "hidden_units", "dropout"), [(0, [4], 0.0), (4, [], 0.0), (4, [4, 0], 0.0), (4, [4], 1.0)]
)
def test_invalid_sizes_raise(input_dim: int, hidden_units: list[int], dropout: float) -> None:
    with pytest.raises(ConfigError):
        DNN(input_dim, hidden_units, dropout=dropout)


def test_script_matches_eager(batch_size: int) -> None:
    dnn = DNN(56, [128, 64, 32], dropout=0.1, use_batch_norm=True).eval()
    x = torch.randn(batch_size, 56, generator=torch.Generator().manual_seed(batch_size))
    torch.testing.assert_close(script(dnn)(x), dnn(x))


@pytest.mark.parametrize("p", [0.2, 0.5])
def test_dropout_keeps_one_minus_p_scaled_and_its_gradient_is_the_mask(p: float) -> None:
    torch.manual_seed(0)
    dropout = Dropout(p).train()
    x = torch.rand(1000, 1000).add_(0.5).requires_grad_()  # no zeros: a zero output is a dropped value
    out = dropout(x)
    kept = out != 0
    assert abs(kept.float().mean().item() - (1 - p)) < 0.005  # 1M draws: the standard error is 0.0005
    torch.testing.assert_close(out[kept], x[kept] / (1 - p))
    out.sum().backward()
    assert x.grad is not None
    torch.testing.assert_close(x.grad, kept.float() / (1 - p))
    assert not torch.equal(dropout(x), out)  # a fresh mask each call


def test_dropout_is_nn_dropout_in_eval_and_at_the_edges() -> None:
    x = torch.randn(64, 8)
    assert torch.equal(Dropout(0.3).eval()(x), x)
    assert torch.equal(Dropout(0.0).train()(x), x)
    assert torch.equal(Dropout(1.0).train()(x), torch.zeros_like(x))
    assert repr(Dropout(0.1)) == repr(nn.Dropout(0.1))

"""MultiHeadSelfAttention: the seed notebook's sizes and repr, a per-head reference, errors, TorchScript."""

from __future__ import annotations

import math
import re

import pytest
import torch
from torch.nn import functional

from deepfm.errors import ConfigError
from deepfm.jit import script
from deepfm.models.layers.attention import MultiHeadSelfAttention

SEED_REPR = """MultiHeadSelfAttention(
  (layers): ModuleList(
    (0-1): 2 x _AttentionBlock(
      (W_q): Linear(in_features=16, out_features=64, bias=True)
      (W_k): Linear(in_features=16, out_features=64, bias=True)
      (W_v): Linear(in_features=16, out_features=64, bias=True)
      (W_out): Linear(in_features=64, out_features=16, bias=True)
      (layer_norm): LayerNorm((16,), eps=1e-05, elementwise_affine=True)
    )
  )
)"""


def _reference(attention: MultiHeadSelfAttention, x: torch.Tensor, use_residual: bool) -> torch.Tensor:
    """Self-attention computed head by head, with `attention`'s weights."""
    for block in attention.layers:
        q, k, v = block.W_q(x), block.W_k(x), block.W_v(x)  # (B, F, attention_dim)
        heads = []
        for h in range(block.num_heads):
            part = slice(h * block.head_dim, (h + 1) * block.head_dim)
            scores = q[..., part] @ k[..., part].transpose(1, 2) / math.sqrt(block.head_dim)  # (B, F, F)
            heads.append(torch.softmax(scores, dim=-1) @ v[..., part])  # (B, F, head_dim)
        out = block.W_out(torch.cat(heads, dim=-1))
        norm = block.layer_norm
        x = functional.layer_norm(out + x if use_residual else out, norm.normalized_shape, norm.weight, norm.bias)
    return x


def test_seed_configuration() -> None:
    attention = MultiHeadSelfAttention(embed_dim=16, num_heads=4, attention_dim=64, num_layers=2, use_residual=True)
    # torch >= 2.1 prints LayerNorm's `bias=True`; the seed notebook's torch did not.
    assert re.sub(r"(LayerNorm\(.*?), bias=True", r"\1", repr(attention)) == SEED_REPR
    assert sum(p.numel() for p in attention.parameters()) == 8_672
    block = attention.layers[0]
    assert (block.num_heads, block.head_dim) == (4, 16)
    assert attention(torch.randn(8, 6, 16)).shape == (8, 6, 16)


@pytest.mark.parametrize("use_residual", [True, False])
@pytest.mark.parametrize(("num_heads", "num_layers"), [(1, 1), (4, 2)])
def test_matches_per_head_reference(use_residual: bool, num_heads: int, num_layers: int) -> None:
    attention = MultiHeadSelfAttention(8, num_heads, 16, num_layers, use_residual).double().eval()
    x = torch.randn(3, 5, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    torch.testing.assert_close(attention(x), _reference(attention, x, use_residual))


def test_attention_dropout_is_active_only_in_training() -> None:
    attention = MultiHeadSelfAttention(8, 2, 16, dropout=0.5)
    x = torch.randn(4, 5, 8)
    assert not torch.equal(attention(x), attention(x))
    attention.eval()
    assert torch.equal(attention(x), attention(x))


@pytest.mark.parametrize(
    ("num_heads", "attention_dim", "num_layers", "dropout"),
    [(3, 64, 1, 0.0), (0, 64, 1, 0.0), (2, 64, 0, 0.0), (2, 64, 1, 1.0)],
)
def test_invalid_sizes_raise(num_heads: int, attention_dim: int, num_layers: int, dropout: float) -> None:
    with pytest.raises(ConfigError):
        MultiHeadSelfAttention(16, num_heads, attention_dim, num_layers, dropout=dropout)


def test_indivisible_attention_dim_is_named() -> None:
    with pytest.raises(ConfigError, match="attention_dim 64 is not divisible by num_heads 3"):
        MultiHeadSelfAttention(16, num_heads=3, attention_dim=64)


def test_script_matches_eager(batch_size: int) -> None:
    attention = MultiHeadSelfAttention(16, num_heads=4, attention_dim=64, num_layers=2).eval()
    x = torch.randn(batch_size, 6, 16, generator=torch.Generator().manual_seed(batch_size))
    torch.testing.assert_close(script(attention)(x), attention(x))

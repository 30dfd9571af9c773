"""Multi-head self-attention over fields, as in AutoInt (Song et al. 2019, "AutoInt: Automatic Feature
Interaction Learning via Self-Attentive Neural Networks"), with the scaled dot-product attention of
Vaswani et al. 2017 ("Attention Is All You Need").

Each field embedding attends to every field of the same row; a block projects the F embeddings to
queries, keys and values, attends per head, projects the concatenated heads back to D and adds the
input (residual) before a LayerNorm. The output keeps the input's shape (B, F, D).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional

from deepfm.errors import ConfigError


class _AttentionBlock(nn.Module):
    """One multi-head self-attention layer: (B, F, D) -> (B, F, D).

    Args:
        embed_dim: field embedding width D.
        num_heads: number of heads H.
        attention_dim: total query/key/value width, split evenly over the heads.
        use_residual: add the input before the LayerNorm.
        dropout: dropout probability on the attention weights.
    """

    def __init__(self, embed_dim: int, num_heads: int, attention_dim: int, use_residual: bool, dropout: float) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = attention_dim // num_heads
        self.use_residual = use_residual
        self.dropout = dropout
        self.W_q = nn.Linear(embed_dim, attention_dim)
        self.W_k = nn.Linear(embed_dim, attention_dim)
        self.W_v = nn.Linear(embed_dim, attention_dim)
        self.W_out = nn.Linear(attention_dim, embed_dim)
        self.layer_norm = nn.LayerNorm(embed_dim)

    def _heads(self, x: Tensor) -> Tensor:
        """(B, F, H * hd) -> (B, H, F, hd)."""
        return x.view(x.size(0), x.size(1), self.num_heads, self.head_dim).transpose(1, 2)

    def forward(self, x: Tensor) -> Tensor:
        """Args: x (B, F, D). Returns: (B, F, D)."""
        q, k, v = self._heads(self.W_q(x)), self._heads(self.W_k(x)), self._heads(self.W_v(x))  # (B, H, F, hd)
        scores = torch.matmul(q, k.transpose(-2, -1)) / math.sqrt(self.head_dim)  # (B, H, F, F)
        weights = functional.dropout(torch.softmax(scores, dim=-1), p=self.dropout, training=self.training)
        heads = torch.matmul(weights, v)  # (B, H, F, hd)
        out = self.W_out(heads.transpose(1, 2).reshape(x.size(0), x.size(1), -1))  # (B, F, H * hd) -> (B, F, D)
        normed: Tensor = self.layer_norm(out + x if self.use_residual else out)
        return normed


class MultiHeadSelfAttention(nn.Module):
    """A stack of multi-head self-attention blocks over the fields.

    Args:
        embed_dim: field embedding width D.
        num_heads: number of heads; must divide `attention_dim`.
        attention_dim: total query/key/value width of each block.
        num_layers: number of stacked blocks.
        use_residual: add each block's input before its LayerNorm.
        dropout: dropout probability on the attention weights.
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int = 2,
        attention_dim: int = 64,
        num_layers: int = 1,
        use_residual: bool = True,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if min(embed_dim, num_heads, attention_dim, num_layers) < 1:
            raise ConfigError(
                "attention needs embed_dim, num_heads, attention_dim and num_layers >= 1, got "
                f"{embed_dim}, {num_heads}, {attention_dim} and {num_layers}"
            )
        if attention_dim % num_heads:
            raise ConfigError(f"attention_dim {attention_dim} is not divisible by num_heads {num_heads}")
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"attention dropout must be in [0, 1), got {dropout}")
        self.layers = nn.ModuleList(
            _AttentionBlock(embed_dim, num_heads, attention_dim, use_residual, dropout) for _ in range(num_layers)
        )

    def forward(self, field_embeddings: Tensor) -> Tensor:
        """Args: field_embeddings (B, F, D). Returns: (B, F, D)."""
        x = field_embeddings
        for layer in self.layers:
            x = layer(x)
        return x

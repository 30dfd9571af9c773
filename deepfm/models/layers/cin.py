"""Compressed Interaction Network, the explicit high-order part of xDeepFM (Lian et al. 2018,
"xDeepFM: Combining Explicit and Implicit Feature Interactions for Recommender Systems").

Layer k takes the outer product of the input X^0 (B, F, D) and the previous hidden state
X^{k-1} (B, H, D) along the fields, giving F*H interaction maps of width D, and compresses them
to H_k maps with a 1x1 convolution (eq. 6 of the paper). As in eq. 6, no nonlinearity follows the
convolution, so layer k adds interactions of order k + 2 (layer 0 the second order). With
`split_half`, every layer but the last sends half of its maps to the output and feeds the other half
on; the output sum-pools each map sent to it over D (eq. 8).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional

from deepfm.errors import ConfigError


class CIN(nn.Module):
    """Compressed Interaction Network.

    Args:
        num_fields: number of fields F.
        embed_dim: embedding width D (shape only; CIN has no parameters along D).
        layer_sizes: number of feature maps H_k of each layer.
        split_half: send half of each non-last layer's maps to the output and feed the other half on.
    """

    def __init__(self, num_fields: int, embed_dim: int, layer_sizes: Sequence[int], split_half: bool = True) -> None:
        super().__init__()
        sizes = list(layer_sizes)
        if num_fields < 1 or embed_dim < 1:
            raise ConfigError(f"CIN needs num_fields >= 1 and embed_dim >= 1, got {num_fields} and {embed_dim}")
        if not sizes or min(sizes) < 1:
            raise ConfigError(f"CIN layer_sizes must be one or more positive sizes, got {sizes}")
        if split_half and any(size % 2 for size in sizes[:-1]):
            raise ConfigError(f"CIN with split_half needs even layer sizes (the last excepted), got {sizes}")
        last = len(sizes) - 1
        # Each split layer sends one half to the output and the other on; otherwise all maps go both ways.
        self.direct_sizes = [s // 2 if split_half and i < last else s for i, s in enumerate(sizes)]
        self.next_sizes = list(self.direct_sizes)
        in_sizes = [num_fields, *self.next_sizes[:-1]]
        self.conv_layers = nn.ModuleList(
            nn.Conv1d(num_fields * h, size, kernel_size=1) for h, size in zip(in_sizes, sizes, strict=True)
        )
        self.split_half = split_half
        self.output_dim = sum(self.direct_sizes)

    def forward(self, x0: Tensor) -> Tensor:
        """Args: x0 (B, F, D) field embeddings. Returns: (B, output_dim)."""
        batch_size, _, embed_dim = x0.shape
        last = len(self.direct_sizes) - 1
        # D leads the fields, contiguous, so that each layer's 1x1 convolution is one (B*D, F*H) x (F*H, H_k)
        # GEMM instead of a matmul broadcast over the batch.
        x0 = x0.transpose(1, 2).contiguous()  # (B, D, F)
        hidden = x0
        pooled: list[Tensor] = []
        for i, conv in enumerate(self.conv_layers):
            z = (x0.unsqueeze(3) * hidden.unsqueeze(2)).reshape(batch_size * embed_dim, -1)  # (B*D, F*H)
            weight = conv.weight[:, :, 0]  # type: ignore[index]
            z = functional.linear(z, weight, conv.bias)  # type: ignore[arg-type]
            z = z.view(batch_size, embed_dim, -1)  # (B, D, H_k)
            if self.split_half and i < last:
                direct, hidden = z.chunk(2, dim=2)  # (B, D, H_k/2) each
            else:
                direct, hidden = z, z
            pooled.append(direct.sum(dim=1))  # (B, direct_size)
        return torch.cat(pooled, dim=1)  # (B, output_dim)

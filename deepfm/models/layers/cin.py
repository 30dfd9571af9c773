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
        batch_size, num_fields, embed_dim = x0.shape
        last = len(self.direct_sizes) - 1
        # Maps lead and the B*D positions run innermost and contiguous: every product and its backward's
        # reductions stream whole rows (a broadcast over a trailing dimension of F or H elements is many
        # times slower), and each 1x1 convolution is one (H_k, F*H) x (F*H, B*D) GEMM.
        x0 = x0.transpose(0, 1).reshape(num_fields, batch_size * embed_dim)  # (F, B*D)
        hidden = x0
        pooled: list[Tensor] = []
        for i, conv in enumerate(self.conv_layers):
            z = (x0.unsqueeze(1) * hidden.unsqueeze(0)).view(-1, batch_size * embed_dim)  # (F*H, B*D)
            weight = conv.weight[:, :, 0]  # type: ignore[index]
            bias = conv.bias
            assert bias is not None  # built with one: tells TorchScript it is a tensor
            z = torch.addmm(bias.unsqueeze(1), weight, z)  # type: ignore[operator]
            if self.split_half and i < last:  # z is (H_k, B*D)
                direct, hidden = z.chunk(2, dim=0)  # (H_k/2, B*D) each
            else:
                direct, hidden = z, z
            pooled.append(direct.view(-1, batch_size, embed_dim).sum(dim=2))  # (direct_size, B)
        return torch.cat(pooled, dim=0).t()  # (B, output_dim)

"""Factorization-machine second-order interaction (Rendle 2010, "Factorization Machines"), as the FM
component of DeepFM (Guo et al. 2017).

    sum_{i<j} <v_i, v_j> = 0.5 * sum_d ((sum_i v_id)^2 - sum_i v_id^2)

computes all pairwise field interactions in O(F*D) rather than O(F^2*D).
"""

from __future__ import annotations

from torch import Tensor, nn


class FMInteraction(nn.Module):
    """Sum of the pairwise dot products of the field embeddings; no parameters."""

    def forward(self, field_embeddings: Tensor) -> Tensor:
        """Args: field_embeddings (B, F, D). Returns: (B, 1)."""
        square_of_sum = field_embeddings.sum(dim=1).pow(2)  # (B, D)
        sum_of_squares = field_embeddings.pow(2).sum(dim=1)  # (B, D)
        return 0.5 * (square_of_sum - sum_of_squares).sum(dim=1, keepdim=True)  # (B, 1)

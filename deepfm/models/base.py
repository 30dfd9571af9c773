"""The base of every CTR model: a shared `FeatureEmbedding`, a global bias and the FM linear term.

All models follow DeepFM (Guo et al. 2017): the logit is `bias + first_order + interaction`, where
the first-order (linear) term and the interaction part read the same embeddings, and only the
interaction part differs between models.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from deepfm.data.schema import DatasetSchema
from deepfm.models.layers.embedding import FeatureEmbedding


class CTRModel(nn.Module):
    """A click-through-rate model over a schema's fields; subclasses define `interaction`.

    Args:
        schema: the input fields.
        fm_embed_dim: the common embedding width D of the interaction layers.
    """

    def __init__(self, schema: DatasetSchema, fm_embed_dim: int) -> None:
        super().__init__()
        self.embedding = FeatureEmbedding(schema, fm_embed_dim)
        self.bias = nn.Parameter(torch.zeros(1))

    def interaction(self, field_embeddings: Tensor, flat_embeddings: Tensor) -> Tensor:
        """Args: field_embeddings (B, F, D), flat_embeddings (B, total_embedding_dim). Returns: (B, 1)."""
        raise NotImplementedError

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        """Args: batch, field name -> encoded values (see `FeatureEmbedding`). Returns: logits (B,)."""
        first_order, field_embeddings, flat_embeddings = self.embedding(batch)
        logit: Tensor = self.bias + first_order + self.interaction(field_embeddings, flat_embeddings)  # (B, 1)
        return logit.squeeze(1)

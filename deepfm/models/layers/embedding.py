"""Per-field embeddings shared by every CTR model: the first-order and second-order views of a batch.

Following DeepFM (Guo et al. 2017, "DeepFM: A Factorization-Machine based Neural Network for CTR
Prediction"), the FM component and the deep component share one set of feature embeddings. Each
field has its own `embedding_dim`; the interaction layers (FM, CIN, attention) need one common width
D, so a field whose dim differs from `fm_embed_dim` is projected to it (bias-free, so zero stays zero).

Index 0 is the OOV/padding index of every categorical field: its rows start at zero and receive no
gradient, so an unknown value contributes exactly nothing to any of the three outputs.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from deepfm.data.schema import OOV_INDEX, DatasetSchema, FeatureType, FieldSchema
from deepfm.errors import ConfigError


class DenseEmbedding(nn.Module):
    """Embeds one float per row as `value * w`, so a value of 0 embeds to zero.

    Args:
        embedding_dim: width of the embedding.
    """

    def __init__(self, embedding_dim: int) -> None:
        super().__init__()
        self.embedding_dim = embedding_dim
        self.linear = nn.Linear(1, embedding_dim, bias=False)

    def forward(self, values: Tensor) -> Tensor:
        """Args: values (B,) float. Returns: (B, embedding_dim)."""
        embedded: Tensor = self.linear(values.unsqueeze(1))  # (B, 1) -> (B, embedding_dim)
        return embedded


def _field_embedding(field: FieldSchema, dim: int) -> nn.Module:
    """The lookup of one field at width `dim`, Xavier-normal initialised with its OOV/padding row zero.

    Xavier scales the init to the table's shape: small for large vocabularies, larger for fields with
    a handful of values. On MovieLens-100K it beat a fixed std of 0.01 (benchmarks/results/quality_bench.md).
    """
    module: nn.Module
    if field.feature_type is FeatureType.DENSE:
        module = DenseEmbedding(dim)
        weight = module.linear.weight
    elif field.feature_type is FeatureType.SEQUENCE:
        module = nn.EmbeddingBag(field.vocabulary_size, dim, mode=field.combiner, padding_idx=OOV_INDEX)
        weight = module.weight
    else:
        module = nn.Embedding(field.vocabulary_size, dim, padding_idx=OOV_INDEX)
        weight = module.weight
    with torch.no_grad():
        nn.init.xavier_normal_(weight)
        if field.is_categorical:
            weight[OOV_INDEX].zero_()
    return module


class FeatureEmbedding(nn.Module):
    """Looks up every field of a batch and returns its first-order, field-wise and flat views.

    Args:
        schema: the fields in model order. SPARSE inputs are (B,) int64, SEQUENCE inputs (B, L) int64
            padded with 0 and pooled by the field's combiner, DENSE inputs (B,) float32.
        fm_embed_dim: the common width D of `field_embeddings`.
    """

    def __init__(self, schema: DatasetSchema, fm_embed_dim: int) -> None:
        super().__init__()
        if fm_embed_dim < 1:
            raise ConfigError(f"fm_embed_dim must be >= 1, got {fm_embed_dim}")
        fields = list(schema.fields.values())
        self.field_names = schema.field_names
        self.num_fields = schema.num_fields
        self.fm_embed_dim = fm_embed_dim
        self.total_embedding_dim = schema.total_embedding_dim
        self.second_order_embeddings = nn.ModuleDict({f.name: _field_embedding(f, f.embedding_dim) for f in fields})
        self.first_order_embeddings = nn.ModuleDict({f.name: _field_embedding(f, 1) for f in fields})
        self.projections = nn.ModuleDict(
            {
                f.name: nn.Linear(f.embedding_dim, fm_embed_dim, bias=False)
                for f in fields
                if f.embedding_dim != fm_embed_dim
            }
        )

    def forward(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        """Embed a batch.

        Args:
            batch: field name -> encoded values, (B,) or (B, L) as the field's type says.

        Returns:
            first_order (B, 1): the first-order weights summed over fields.
            field_embeddings (B, F, D): every field's embedding at width D = fm_embed_dim.
            flat_embeddings (B, total_embedding_dim): the raw embeddings concatenated in field order.
        """
        first: list[Tensor] = []
        for name, lookup in self.first_order_embeddings.items():
            first.append(lookup(batch[name]))  # (B, 1)
        raw: dict[str, Tensor] = {}
        for name, lookup in self.second_order_embeddings.items():
            raw[name] = lookup(batch[name])  # (B, field_dim)
        projected: dict[str, Tensor] = dict(raw)
        for name, projection in self.projections.items():
            projected[name] = projection(raw[name])  # (B, D)
        first_order = torch.cat(first, dim=1).sum(dim=1, keepdim=True)  # (B, F) -> (B, 1)
        field_embeddings = torch.stack([projected[n] for n in self.field_names], dim=1)  # (B, F, D)
        flat_embeddings = torch.cat([raw[n] for n in self.field_names], dim=1)  # (B, total_embedding_dim)
        return first_order, field_embeddings, flat_embeddings

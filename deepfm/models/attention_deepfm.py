"""AttentionDeepFM: DeepFM (Guo et al. 2017) whose DNN also reads field embeddings refined by
AutoInt-style multi-head self-attention (Song et al. 2019, "AutoInt: Automatic Feature Interaction
Learning via Self-Attentive Neural Networks").

    logit = bias + first_order + FM(field_embeddings)
          + Linear(DNN(cat(Attention(field_embeddings).flatten(1), flat_embeddings)))
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from deepfm.config import AttentionConfig, DNNConfig, FeatureConfig
from deepfm.data.schema import DatasetSchema
from deepfm.models.base import CTRModel
from deepfm.models.layers.attention import MultiHeadSelfAttention
from deepfm.models.layers.dnn import DNN
from deepfm.models.layers.fm import FMInteraction


class AttentionDeepFM(CTRModel):
    """DeepFM whose DNN input adds the attention-refined field embeddings to the raw ones.

    Args:
        schema: the input fields.
        fm_embed_dim: common embedding width D of the FM and attention components.
        dnn_hidden_units: widths of the DNN's hidden layers.
        dnn_activation: the DNN's activation (see `deepfm.models.layers.dnn.ACTIVATIONS`).
        dnn_dropout: the DNN's dropout probability.
        dnn_use_batch_norm: whether the DNN uses batch norm.
        attention_num_heads: heads per attention block; must divide `attention_dim`.
        attention_dim: total query/key/value width of each attention block.
        attention_num_layers: number of stacked attention blocks.
        attention_use_residual: whether each block adds its input before its LayerNorm.
        attention_dropout: dropout probability on the attention weights.
    """

    def __init__(
        self,
        schema: DatasetSchema,
        *,
        fm_embed_dim: int = FeatureConfig.fm_embed_dim,
        dnn_hidden_units: Sequence[int] = DNNConfig.hidden_units,
        dnn_activation: str = DNNConfig.activation,
        dnn_dropout: float = DNNConfig.dropout,
        dnn_use_batch_norm: bool = DNNConfig.use_batch_norm,
        attention_num_heads: int = AttentionConfig.num_heads,
        attention_dim: int = AttentionConfig.dim,
        attention_num_layers: int = AttentionConfig.num_layers,
        attention_use_residual: bool = AttentionConfig.use_residual,
        attention_dropout: float = AttentionConfig.dropout,
    ) -> None:
        super().__init__(schema, fm_embed_dim)
        self.fm = FMInteraction()
        self.attention = MultiHeadSelfAttention(
            fm_embed_dim,
            attention_num_heads,
            attention_dim,
            attention_num_layers,
            attention_use_residual,
            attention_dropout,
        )
        dnn_input_dim = schema.num_fields * fm_embed_dim + schema.total_embedding_dim
        self.dnn = DNN(dnn_input_dim, dnn_hidden_units, dnn_activation, dnn_dropout, dnn_use_batch_norm)
        self.dnn_out = nn.Linear(self.dnn.output_dim, 1)

    def interaction(self, field_embeddings: Tensor, flat_embeddings: Tensor) -> Tensor:
        """Args: field_embeddings (B, F, D), flat_embeddings (B, total_embedding_dim). Returns: (B, 1)."""
        attended = self.attention(field_embeddings).flatten(1)  # (B, F, D) -> (B, F*D)
        dnn_input = torch.cat([attended, flat_embeddings], dim=1)  # (B, F*D + total_embedding_dim)
        logit: Tensor = self.fm(field_embeddings) + self.dnn_out(self.dnn(dnn_input))
        return logit

"""DeepFM (Guo et al. 2017, "DeepFM: A Factorization-Machine based Neural Network for CTR Prediction").

logit = bias + first_order + FM(field_embeddings) + Linear(DNN(flat_embeddings))
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from deepfm.config import DNNConfig, FeatureConfig
from deepfm.data.schema import DatasetSchema
from deepfm.models.base import CTRModel
from deepfm.models.layers.dnn import DNN
from deepfm.models.layers.fm import FMInteraction


class DeepFM(CTRModel):
    """FM for explicit second-order interactions plus a DNN for implicit higher-order ones.

    Args:
        schema: the input fields.
        fm_embed_dim: common embedding width D of the FM component.
        dnn_hidden_units: widths of the DNN's hidden layers.
        dnn_activation: the DNN's activation (see `deepfm.models.layers.dnn.ACTIVATIONS`).
        dnn_dropout: the DNN's dropout probability.
        dnn_use_batch_norm: whether the DNN uses batch norm.
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
    ) -> None:
        super().__init__(schema, fm_embed_dim)
        self.fm = FMInteraction()
        self.dnn = DNN(schema.total_embedding_dim, dnn_hidden_units, dnn_activation, dnn_dropout, dnn_use_batch_norm)
        self.dnn_out = nn.Linear(self.dnn.output_dim, 1)

    def interaction(self, field_embeddings: Tensor, flat_embeddings: Tensor) -> Tensor:
        """Args: field_embeddings (B, F, D), flat_embeddings (B, total_embedding_dim). Returns: (B, 1)."""
        logit: Tensor = self.fm(field_embeddings) + self.dnn_out(self.dnn(flat_embeddings))
        return logit

"""xDeepFM (Lian et al. 2018, "xDeepFM: Combining Explicit and Implicit Feature Interactions for
Recommender Systems").

    logit = bias + first_order + Linear(CIN(field_embeddings)) + Linear(DNN(flat_embeddings))
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from deepfm.config import CINConfig, DNNConfig, FeatureConfig
from deepfm.data.schema import DatasetSchema
from deepfm.models.base import CTRModel
from deepfm.models.layers.cin import CIN
from deepfm.models.layers.dnn import DNN


class xDeepFM(CTRModel):  # noqa: N801  (the paper's name)
    """A CIN for explicit vector-wise high-order interactions plus a DNN for implicit ones.

    Args:
        schema: the input fields.
        fm_embed_dim: common embedding width D of the CIN.
        dnn_hidden_units: widths of the DNN's hidden layers.
        dnn_activation: the DNN's activation (see `deepfm.models.layers.dnn.ACTIVATIONS`).
        dnn_dropout: the DNN's dropout probability.
        dnn_use_batch_norm: whether the DNN uses batch norm.
        cin_layer_sizes: number of feature maps of each CIN layer.
        cin_split_half: whether each non-last CIN layer sends half its maps to the output.
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
        cin_layer_sizes: Sequence[int] = CINConfig.layer_sizes,
        cin_split_half: bool = CINConfig.split_half,
    ) -> None:
        super().__init__(schema, fm_embed_dim)
        self.cin = CIN(schema.num_fields, fm_embed_dim, cin_layer_sizes, cin_split_half)
        self.cin_out = nn.Linear(self.cin.output_dim, 1)
        self.dnn = DNN(schema.total_embedding_dim, dnn_hidden_units, dnn_activation, dnn_dropout, dnn_use_batch_norm)
        self.dnn_out = nn.Linear(self.dnn.output_dim, 1)

    def interaction(self, field_embeddings: Tensor, flat_embeddings: Tensor) -> Tensor:
        """Args: field_embeddings (B, F, D), flat_embeddings (B, total_embedding_dim). Returns: (B, 1)."""
        logit: Tensor = self.cin_out(self.cin(field_embeddings)) + self.dnn_out(self.dnn(flat_embeddings))
        return logit

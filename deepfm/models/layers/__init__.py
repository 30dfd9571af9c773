"""Building blocks of the CTR models; each takes plain sizes, only `FeatureEmbedding` reads a schema."""

from deepfm.models.layers.attention import MultiHeadSelfAttention
from deepfm.models.layers.cin import CIN
from deepfm.models.layers.dnn import ACTIVATIONS, DNN
from deepfm.models.layers.embedding import DenseEmbedding, FeatureEmbedding
from deepfm.models.layers.fm import FMInteraction

__all__ = ["ACTIVATIONS", "CIN", "DNN", "DenseEmbedding", "FMInteraction", "FeatureEmbedding", "MultiHeadSelfAttention"]

"""CTR models: DeepFM, xDeepFM and AttentionDeepFM over a shared `FeatureEmbedding`, and a registry."""

from deepfm.models.attention_deepfm import AttentionDeepFM
from deepfm.models.base import CTRModel
from deepfm.models.deepfm import DeepFM
from deepfm.models.registry import MODELS, build_model, model_class, model_hyperparameters
from deepfm.models.xdeepfm import xDeepFM

__all__ = [
    "MODELS",
    "AttentionDeepFM",
    "CTRModel",
    "DeepFM",
    "build_model",
    "model_class",
    "model_hyperparameters",
    "xDeepFM",
]

"""The models by name, and building one from a name and plain hyperparameters (e.g. from a config)."""

from __future__ import annotations

import inspect
from typing import Any

from deepfm.data.schema import DatasetSchema
from deepfm.errors import ConfigError
from deepfm.models.attention_deepfm import AttentionDeepFM
from deepfm.models.base import CTRModel
from deepfm.models.deepfm import DeepFM
from deepfm.models.xdeepfm import xDeepFM

MODELS: dict[str, type[CTRModel]] = {
    "deepfm": DeepFM,
    "xdeepfm": xDeepFM,
    "attention_deepfm": AttentionDeepFM,
}


def model_class(name: str) -> type[CTRModel]:
    """The model class registered as `name`; ConfigError naming the known models otherwise."""
    if name not in MODELS:
        raise ConfigError(f"unknown model {name!r}, expected one of {sorted(MODELS)}")
    return MODELS[name]


def model_hyperparameters(name: str) -> set[str]:
    """Names of the keyword hyperparameters the model `name` accepts (everything but the schema)."""
    parameters = inspect.signature(model_class(name)).parameters
    return {p for p, param in parameters.items() if param.kind is inspect.Parameter.KEYWORD_ONLY}


def build_model(name: str, schema: DatasetSchema, **hyperparameters: Any) -> CTRModel:
    """A fresh model `name` over `schema`; hyperparameters not given take the model's defaults.

    Raises:
        ConfigError: unknown model name, or a hyperparameter the model does not accept.
    """
    unknown = sorted(set(hyperparameters) - model_hyperparameters(name))
    if unknown:
        raise ConfigError(f"model {name!r} does not accept {unknown}; it accepts {sorted(model_hyperparameters(name))}")
    return model_class(name)(schema, **hyperparameters)

"""Experiment configuration: frozen dataclasses, YAML in and out, `section.key=value` overrides.

`ExperimentConfig()` with no arguments is a complete DeepFM-on-MovieLens-100K experiment. The data
directory defaults to `$DEEPFM_DATA_DIR`, or `data/ml-100k` under the working directory, which is
where the README tells a user to unpack GroupLens's `ml-100k.zip`.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from deepfm.errors import ConfigError

DATA_DIR_ENV = "DEEPFM_DATA_DIR"
DEFAULT_DATA_DIR = "data/ml-100k"


def default_data_dir() -> str:
    """`$DEEPFM_DATA_DIR` if set, else `data/ml-100k`."""
    return os.environ.get(DATA_DIR_ENV, DEFAULT_DATA_DIR)


@dataclass(frozen=True)
class DataConfig:
    """Where the data is and how it is split and sampled."""

    data_dir: str = field(default_factory=default_data_dir)  # GroupLens ml-100k folder (u.data, u.user, u.item)
    protocol: str = "leave_one_out"  # or "random_split": explicit ratings only, 80/10/10
    label_threshold: int = 4  # rating >= threshold is a click (label 1)
    num_negatives: int = 4  # sampled unrated movies per training rating, re-drawn every epoch
    num_eval_negatives: int = 999  # sampled unrated movies per held-out test rating (drawn once)
    num_val_negatives: int = 99  # the same for validation, which only steers early stopping and the LR
    eval_seed: int = 2024  # seed of the evaluation negatives: every model sees the same rows
    sample_seed: int = 42  # seed of the training negatives (epoch e draws with [sample_seed, e])
    split_seed: int = 42  # seed of the random_split protocol
    val_fraction: float = 0.1  # random_split only
    test_fraction: float = 0.1  # random_split only
    genres_max_length: int = 6  # genre sequence length (ML-100K movies have at most 6)
    max_users: int = 0  # keep only the first N users (0 = all): small slices for CI and smoke runs


@dataclass(frozen=True)
class FeatureConfig:
    """Embedding sizes."""

    fm_embed_dim: int = 16  # common dim D of the field embeddings seen by FM, CIN and attention
    embedding_dims: dict[str, int] = field(default_factory=dict)  # per-field overrides of the default dims


@dataclass(frozen=True)
class ModelConfig:
    """Which model and its hyperparameters; each model reads the ones it takes."""

    name: str = "deepfm"  # deepfm | xdeepfm | attention_deepfm
    dnn_hidden_units: tuple[int, ...] = (256, 128, 64)
    dnn_activation: str = "relu"
    dnn_dropout: float = 0.2
    dnn_use_batch_norm: bool = True
    cin_layer_sizes: tuple[int, ...] = (64, 64)  # xdeepfm
    cin_split_half: bool = True  # xdeepfm
    attention_num_heads: int = 2  # attention_deepfm
    attention_dim: int = 64  # attention_deepfm
    attention_num_layers: int = 2  # attention_deepfm
    attention_use_residual: bool = True  # attention_deepfm
    attention_dropout: float = 0.0  # attention_deepfm

    def hyperparameters(self) -> dict[str, Any]:
        """Every field but the name, as keyword arguments for the model constructor."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "name"}


@dataclass(frozen=True)
class TrainingConfig:
    """The fit loop."""

    epochs: int = 20  # upper bound; early stopping usually ends sooner
    batch_size: int = 2048
    eval_batch_size: int = 16384
    lr: float = 2e-3
    weight_decay: float = 0.0  # AdamW decoupled weight decay
    ema_epochs: float = 0.0  # > 0: validate, keep and export a moving average of the weights over ~this many epochs
    lr_schedule: str = "plateau"  # plateau (halve when val AUC stalls) | cosine | constant
    grad_clip_norm: float = 1.0  # 0 disables clipping
    patience: int = 3  # epochs without a val AUC gain before stopping
    seed: int = 42
    num_threads: int = 1  # torch intra-op threads, set deliberately: 1 lets two runs share 2 cores
    device: str = "auto"  # auto (CUDA when available) | cpu | cuda; under torchrun each process takes cuda:LOCAL_RANK
    amp: bool = False  # CUDA only: mixed precision (float16 autocast with a gradient scaler)
    progress: bool = True  # tqdm progress bars
    output_dir: str = "runs"  # where a run writes checkpoints, metrics and curves


@dataclass(frozen=True)
class ExperimentConfig:
    """A whole experiment: data, features, model and training."""

    name: str = "deepfm_movielens"
    data: DataConfig = field(default_factory=DataConfig)
    feature: FeatureConfig = field(default_factory=FeatureConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)

    def to_dict(self) -> dict[str, Any]:
        """The config as plain JSON/YAML values (tuples become lists)."""
        return typing.cast(dict[str, Any], _plain(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ExperimentConfig:
        """Build a config from nested plain values; unknown keys are a ConfigError."""
        return typing.cast(ExperimentConfig, _build(cls, data, ""))

    def to_yaml(self, path: str | Path) -> None:
        """Write the config as YAML."""
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: Iterable[str] = ()) -> ExperimentConfig:
        """Read a YAML config, then apply `section.key=value` overrides."""
        try:
            data = yaml.safe_load(Path(path).read_text()) or {}
        except OSError as exc:
            raise ConfigError(f"cannot read config {path}: {exc}") from exc
        except yaml.YAMLError as exc:
            raise ConfigError(f"config {path} is not valid YAML: {exc}") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"config {path} must be a mapping")
        return cls.from_dict(data).with_overrides(overrides)

    def with_overrides(self, overrides: Iterable[str]) -> ExperimentConfig:
        """A copy with `section.key=value` overrides applied (values are parsed as YAML)."""
        data = self.to_dict()
        for item in overrides:
            key, sep, raw = item.partition("=")
            if not sep:
                raise ConfigError(f"override {item!r} must look like section.key=value")
            *parents, leaf = key.strip().split(".")
            node = data
            for part in parents:
                child = node.get(part)
                if not isinstance(child, dict):
                    raise ConfigError(f"override {item!r}: no config section {part!r}")
                node = child
            if leaf not in node:
                raise ConfigError(f"override {item!r}: unknown key {key!r}")
            node[leaf] = yaml.safe_load(raw)
        return ExperimentConfig.from_dict(data)


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _build(cls: type[Any], data: Mapping[str, Any], where: str) -> Any:
    """Instantiate dataclass `cls` from `data`, checking keys and coercing values to field types."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where or 'config'} must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"unknown keys in {where or 'config'}: {unknown}; known: {sorted(names)}")
    kwargs = {}
    for key, value in data.items():
        path = f"{where}.{key}" if where else key
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            kwargs[key] = _build(typing.cast(type[Any], hint), value, path)
        else:
            kwargs[key] = _coerce(value, hint, path)
    return cls(**kwargs)


def _coerce(value: Any, hint: Any, path: str) -> Any:
    """Check `value` against a simple type hint, converting lists to tuples and ints to floats."""
    origin = typing.get_origin(hint)
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{path} must be a list, got {value!r}")
        return tuple(_coerce(v, typing.get_args(hint)[0], path) for v in value)
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{path} must be a mapping, got {value!r}")
        _, value_type = typing.get_args(hint)
        return {str(k): _coerce(v, value_type, path) for k, v in value.items()}
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(hint):
            try:
                return _coerce(value, option, path)
            except ConfigError:
                continue
        raise ConfigError(f"{path}: {value!r} does not fit {hint}")
    if hint is type(None):
        if value is not None:
            raise ConfigError(f"{path} must be null, got {value!r}")
        return None
    if hint is float and isinstance(value, int | str) and not isinstance(value, bool):
        try:
            return float(value)  # YAML reads 5e-4 (no dot) as a string
        except ValueError:
            raise ConfigError(f"{path} must be a float, got {value!r}") from None
    if hint in (int, float) and isinstance(value, bool):
        raise ConfigError(f"{path} must be a {hint.__name__}, got {value!r}")
    if not isinstance(value, hint):
        raise ConfigError(f"{path} must be a {hint.__name__}, got {value!r}")
    return value

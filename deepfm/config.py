"""Experiment configuration: frozen dataclasses, YAML in and out, `section.key=value` overrides.

    ExperimentConfig
    ├── data      MovieLensConfig (kind: movielens) | TableConfig (kind: table), chosen by `data.kind`
    │             a table's fields: FieldConfig (FuxiCTR's `feature_cols`), inferred when none are given
    ├── feature   FeatureConfig
    ├── model     DeepFMConfig | XDeepFMConfig | AttentionDeepFMConfig, chosen by `model.name`, with
    │             their blocks as DNNConfig, CINConfig and AttentionConfig
    └── training  TrainingConfig

Every knob has one default, here; a key the chosen data kind or model does not take is an error.
`ExperimentConfig()` with no arguments is a complete DeepFM-on-MovieLens-100K experiment. The MovieLens
folder defaults to `$DEEPFM_DATA_DIR`, or `data/ml-100k` under the working directory, which is where the
README tells a user to unpack GroupLens's `ml-100k.zip`.

Configs of the earlier shape (a flat MovieLens `data` section with `data_dir`; a flat `model` section
with `dnn_*`, `cin_*` and `attention_*` keys for every model, of which each model read its own) are
migrated when read (`migrate`), so older YAML files and the metadata of older artifacts still load.
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

from deepfm.data.schema import Transform
from deepfm.errors import ConfigError, DeepFMError

DATA_DIR_ENV = "DEEPFM_DATA_DIR"
DEFAULT_DATA_DIR = "data/ml-100k"


def default_data_dir() -> str:
    """`$DEEPFM_DATA_DIR` if set, else `data/ml-100k`."""
    return os.environ.get(DATA_DIR_ENV, DEFAULT_DATA_DIR)


@dataclass(frozen=True)
class MovieLensConfig:
    """A GroupLens MovieLens folder, how it is split and sampled (see `deepfm.data.movielens`)."""

    kind: str = "movielens"
    path: str = field(default_factory=default_data_dir)  # ml-100k, ml-1m, ml-10m or ml-20m/25m/32m folder
    protocol: str = "leave_one_out"  # or "random_split": explicit ratings only, 80/10/10
    label_threshold: float = 4.0  # rating >= threshold is a click (label 1)
    num_negatives: int = 4  # sampled unrated movies per training rating, re-drawn every epoch
    num_eval_negatives: int = 999  # sampled unrated movies per held-out test rating (drawn once)
    num_val_negatives: int = 99  # the same for validation, which only steers early stopping and the LR
    eval_seed: int = 2024  # seed of the evaluation negatives: every model sees the same rows
    sample_seed: int = 42  # seed of the training negatives (epoch e draws with [sample_seed, e])
    split_seed: int = 42  # seed of the random_split protocol
    val_fraction: float = 0.1  # random_split only
    test_fraction: float = 0.1  # random_split only
    genres_max_length: int = 6  # genre sequence length (ML-100K and ML-1M movies have at most 6)
    max_users: int = 0  # keep only the first N users (0 = all): small slices for CI and smoke runs


@dataclass(frozen=True)
class FieldConfig:
    """One declared field of a table; keys left out take the defaults below.

    Only the keys that go with the field's type are allowed: `min_frequency` and `max_vocabulary` with
    categorical fields that are not hashed, `max_length` and `combiner` with sequences.
    """

    name: str  # the model's name for the field
    type: str = "sparse"  # sparse | dense | sequence
    source: str = ""  # the column it reads (default: name)
    transform: Transform | None = None  # default: split on "|" for sequences, identity otherwise
    min_frequency: int = 1  # values seen fewer times in training are OOV (index 0)
    max_vocabulary: int = 0  # keep at most this many values, the most frequent (0: all)
    embedding_dim: int = 0  # 0: by vocabulary size (4 up to 16 values, 8 up to 512, else 16)
    max_length: int = 0  # sequence: tokens kept per row (0: the longest list in training)
    combiner: str = "mean"  # sequence: mean | sum | max pooling of its tokens
    group: str = "default"  # a free label, e.g. user or item

    def to_dict(self) -> dict[str, Any]:
        """The keys that differ from their defaults, as YAML-ready values (name and type always)."""
        out: dict[str, Any] = {"name": self.name, "type": self.type}
        for spec in dataclasses.fields(self)[2:]:
            value = getattr(self, spec.name)
            if value != spec.default:
                out[spec.name] = value.to_dict() if isinstance(value, Transform) else value
        return out


@dataclass(frozen=True)
class TableConfig:
    """A click log: a CSV or Parquet file (or a folder of Parquet files) with a 0/1 label column."""

    kind: str = "table"
    path: str = ""  # the whole log, split as below; or leave it empty and give train, val and test
    train: str = ""  # given splits (files of the same layout) instead of splitting `path`
    val: str = ""
    test: str = ""
    label: str = "label"  # 0/1 or boolean column
    time_column: str = ""  # if set: the last test_fraction of rows by time test, the val_fraction before them val
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    split_seed: int = 42  # seed of the random split (no time_column)
    fields: tuple[FieldConfig, ...] = ()  # empty: inferred from the training rows (see `deepfm init`)
    sparse_max_distinct: int = 1000  # inference: integer columns with at most this many values are sparse
    min_frequency: int = 1  # inference: the min_frequency of inferred sparse and sequence fields
    block_rows: int = 250_000  # rows read at a time (CSV chunk, Parquet batch); fields are inferred from the first
    cache_dir: str = ""  # where the encoded column files go (a fresh folder, removed after use); empty: the temp dir
    shuffle_block_rows: int = 100_000  # training order: blocks of this many rows shuffled, then rows within a window
    shuffle_window_blocks: int = 10  # blocks per shuffle window; a split of at most one window is shuffled whole


DataConfig = MovieLensConfig | TableConfig
DATA_KINDS: dict[str, type[DataConfig]] = {"movielens": MovieLensConfig, "table": TableConfig}


@dataclass(frozen=True)
class FeatureConfig:
    """Embedding sizes."""

    fm_embed_dim: int = 16  # common dim D of the field embeddings seen by FM, CIN and attention
    embedding_dims: dict[str, int] = field(default_factory=dict)  # per-field overrides of the default dims


@dataclass(frozen=True)
class DNNConfig:
    """The deep block: an MLP over the concatenated field embeddings."""

    hidden_units: tuple[int, ...] = (256, 128, 64)
    activation: str = "relu"  # see deepfm.models.layers.dnn.ACTIVATIONS
    dropout: float = 0.2
    use_batch_norm: bool = True


@dataclass(frozen=True)
class CINConfig:
    """xDeepFM's compressed interaction network."""

    layer_sizes: tuple[int, ...] = (32, 32)  # feature maps per layer
    split_half: bool = True  # each non-last layer sends half its maps to the output


@dataclass(frozen=True)
class AttentionConfig:
    """AutoInt-style multi-head self-attention over the field embeddings."""

    num_heads: int = 2  # must divide dim
    dim: int = 64  # total query/key/value width of each block
    num_layers: int = 2
    use_residual: bool = True
    dropout: float = 0.0  # on the attention weights


class _Hyperparameters:
    """Flattens a model config's blocks into the model constructor's keyword arguments."""

    def hyperparameters(self) -> dict[str, Any]:
        """`{block}_{knob}` for every knob of every block (`dnn_hidden_units`, `cin_layer_sizes`, ...)."""
        out: dict[str, Any] = {}
        for spec in dataclasses.fields(typing.cast(Any, self)):
            block = getattr(self, spec.name)
            if dataclasses.is_dataclass(block):
                out |= {f"{spec.name}_{k}": v for k, v in dataclasses.asdict(typing.cast(Any, block)).items()}
        return out


@dataclass(frozen=True)
class DeepFMConfig(_Hyperparameters):
    """DeepFM: FM plus a DNN."""

    name: str = "deepfm"
    dnn: DNNConfig = field(default_factory=DNNConfig)


@dataclass(frozen=True)
class XDeepFMConfig(_Hyperparameters):
    """xDeepFM: a CIN plus a DNN."""

    name: str = "xdeepfm"
    dnn: DNNConfig = field(default_factory=DNNConfig)
    cin: CINConfig = field(default_factory=CINConfig)


@dataclass(frozen=True)
class AttentionDeepFMConfig(_Hyperparameters):
    """DeepFM whose DNN also reads the attention-refined field embeddings."""

    name: str = "attention_deepfm"
    dnn: DNNConfig = field(default_factory=DNNConfig)
    attention: AttentionConfig = field(default_factory=AttentionConfig)


ModelConfig = DeepFMConfig | XDeepFMConfig | AttentionDeepFMConfig
MODEL_CONFIGS: dict[str, type[ModelConfig]] = {
    "deepfm": DeepFMConfig,
    "xdeepfm": XDeepFMConfig,
    "attention_deepfm": AttentionDeepFMConfig,
}


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
    # one process: tables too large to fuse get sparse gradients and SparseAdam (lazy: only the rows a batch
    # looks up move; no weight decay); under torchrun every gradient is dense, as DDP averages it
    sparse_gradients: bool = True
    patience: int = 3  # epochs without a val AUC gain before stopping
    seed: int = 42
    num_threads: int = 1  # torch intra-op threads, set deliberately: 1 lets two runs share 2 cores
    device: str = "auto"  # auto (CUDA when available) | cpu | cuda; under torchrun each process takes cuda:LOCAL_RANK
    amp: bool = False  # CUDA only: mixed precision (float16 autocast with a gradient scaler)
    prefetch_batches: int = 2  # batches prepared ahead of the step by a background thread; 0: in the loop
    progress: bool = True  # tqdm progress bars
    output_dir: str = "runs"  # where a run writes checkpoints, metrics and curves


@dataclass(frozen=True)
class ExperimentConfig:
    """A whole experiment: data, features, model and training."""

    name: str = "deepfm_movielens"
    data: DataConfig = field(default_factory=MovieLensConfig)
    feature: FeatureConfig = field(default_factory=FeatureConfig)
    model: ModelConfig = field(default_factory=DeepFMConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)

    def to_dict(self) -> dict[str, Any]:
        """The config as plain JSON/YAML values (tuples become lists)."""
        return typing.cast(dict[str, Any], _plain(self))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ExperimentConfig:
        """Build a config from nested plain values (migrating the earlier shape); unknown keys are a ConfigError."""
        return typing.cast(ExperimentConfig, _build(cls, migrate(data), ""))

    def to_yaml(self, path: str | Path) -> None:
        """Write the config as YAML."""
        Path(path).write_text(self.yaml())

    def yaml(self) -> str:
        """The config as a YAML document."""
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None)

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
        """A copy with `section.key=value` overrides applied in order (values are parsed as YAML).

        Setting `data.kind` or `model.name` to another value starts that section anew from the new
        kind's defaults, keeping the keys the new kind also takes (e.g. the DNN block of a model).
        """
        config = self
        for item in overrides:
            key, sep, raw = item.partition("=")
            if not sep:
                raise ConfigError(f"override {item!r} must look like section.key=value")
            *parents, leaf = key.strip().split(".")
            data = config.to_dict()
            node = data
            for part in parents:
                child = node.get(part)
                if not isinstance(child, dict):
                    raise ConfigError(f"override {item!r}: no config section {part!r}")
                node = child
            if leaf not in node:
                raise ConfigError(f"override {item!r}: unknown key {key!r}")
            value = yaml.safe_load(raw)
            if parents in (["data"], ["model"]) and leaf == _discriminator(parents[0]) and value != node[leaf]:
                data[parents[0]] = _switched(parents[0], node, value)
            else:
                node[leaf] = value
            config = ExperimentConfig.from_dict(data)
        return config


def _discriminator(section: str) -> str:
    """The key that chooses a section's variant."""
    return "kind" if section == "data" else "name"


def _switched(section: str, old: dict[str, Any], choice: Any) -> dict[str, Any]:
    """A `section` of variant `choice`: its defaults plus the keys of `old` that it also takes."""
    variants: Mapping[str, type[Any]] = DATA_KINDS if section == "data" else MODEL_CONFIGS
    if choice not in variants:
        raise ConfigError(f"{section}.{_discriminator(section)} must be one of {sorted(variants)}, got {choice!r}")
    taken = {f.name for f in dataclasses.fields(variants[choice])}
    return {k: v for k, v in old.items() if k in taken} | {_discriminator(section): choice}


# --- where the data is ----------------------------------------------------------------------------------------------

_PATH_KEYS = ("path", "train", "val", "test")


def _portable_path(path: str) -> str:
    """A path relative to the working directory if under it; else only its name; relative paths as they are."""
    given = Path(path)
    if not path or not given.is_absolute():
        return path
    try:
        return str(given.relative_to(Path.cwd()))
    except ValueError:
        return given.name


def portable(config: ExperimentConfig) -> ExperimentConfig:
    """The config with its data paths relative to the working directory or by name: what an artifact records."""
    data = config.data
    moved: dict[str, Any] = {key: _portable_path(getattr(data, key)) for key in _PATH_KEYS if hasattr(data, key)}
    if isinstance(data, TableConfig):
        moved["cache_dir"] = ""  # scratch space of this machine, not part of the data's identity
    return dataclasses.replace(config, data=dataclasses.replace(data, **moved))


def located(config: ExperimentConfig, data_path: str) -> ExperimentConfig:
    """The config reading its data at `data_path` on this machine.

    `data_path` replaces `data.path`; for a table of given train/val/test files it is their folder.
    """
    data = config.data
    if isinstance(data, TableConfig) and not data.path:
        moved: dict[str, Any] = {key: str(Path(data_path) / Path(getattr(data, key)).name) for key in _PATH_KEYS[1:]}
        return dataclasses.replace(config, data=dataclasses.replace(data, **moved))
    return dataclasses.replace(config, data=dataclasses.replace(data, path=data_path))


# --- migration of the earlier shape --------------------------------------------------------------------------------

_MODEL_BLOCKS = ("dnn", "cin", "attention")


def migrate(data: Mapping[str, Any]) -> dict[str, Any]:
    """A config dict of the earlier shape in the current one; a current one is returned as it is.

    - `data` with `data_dir` (and no `kind`): the MovieLens section, `data_dir` renamed `path`.
    - `model` with flat `dnn_*`, `cin_*`, `attention_*` keys: those keys nested into the blocks; the blocks
      the model does not take are dropped, as the earlier shape ignored them.
    """
    out = dict(data)
    section = out.get("data")
    if isinstance(section, Mapping) and "data_dir" in section and "kind" not in section:
        section = dict(section)
        out["data"] = {"kind": "movielens", "path": section.pop("data_dir"), **section}
    model = out.get("model")
    if isinstance(model, Mapping) and any(k.partition("_")[0] in _MODEL_BLOCKS and "_" in k for k in model):
        name = model.get("name", "deepfm")
        taken = {f.name for f in dataclasses.fields(MODEL_CONFIGS[name])} if name in MODEL_CONFIGS else set()
        nested: dict[str, Any] = {"name": name} if "name" in model else {}
        for key, value in model.items():
            block, _, knob = key.partition("_")
            if block in _MODEL_BLOCKS and knob:
                if block in taken:
                    nested.setdefault(block, {})[knob] = value
            elif key != "name":
                nested[key] = value
        out["model"] = nested
    return out


# --- plain values in and out ---------------------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    """Plain YAML values of a config object: objects with `to_dict` use it, tuples become lists."""
    if hasattr(value, "to_dict") and not isinstance(value, ExperimentConfig):
        return _plain(value.to_dict())
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _build(cls: type[Any], data: Any, where: str) -> Any:
    """Instantiate dataclass `cls` from `data`, checking keys and coercing values to field types."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where or 'config'} must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    specs = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(specs))
    if unknown:
        first = next(iter(specs))
        chosen = cls in (*DATA_KINDS.values(), *MODEL_CONFIGS.values())
        variant = f" ({first} {getattr(cls, first)!r})" if chosen else ""
        raise ConfigError(f"unknown keys in {where or 'config'}{variant}: {unknown}; known: {sorted(specs)}")
    required = [n for n, f in specs.items() if _is_required(f) and n not in data]
    if required:
        raise ConfigError(f"{where or 'config'} needs {required}")
    kwargs = {}
    for key, value in data.items():
        kwargs[key] = _coerce(value, hints[key], f"{where}.{key}" if where else key)
    return cls(**kwargs)


def _is_required(spec: dataclasses.Field[Any]) -> bool:
    return spec.default is dataclasses.MISSING and spec.default_factory is dataclasses.MISSING


def _variant(options: tuple[type[Any], ...], value: Any, path: str) -> type[Any]:
    """The dataclass of a union (`data`, `model`) that `value` chooses by its first key (`kind`, `name`)."""
    if not isinstance(value, Mapping):
        raise ConfigError(f"{path} must be a mapping, got {value!r}")
    key = dataclasses.fields(options[0])[0].name
    by_choice = {getattr(option, key): option for option in options}
    choice = value.get(key, getattr(options[0], key))
    if choice not in by_choice:
        raise ConfigError(f"{path}.{key} must be one of {sorted(by_choice)}, got {choice!r}")
    return by_choice[choice]


def _coerce(value: Any, hint: Any, path: str) -> Any:
    """Check `value` against a type hint, converting lists to tuples, ints to floats, mappings to dataclasses."""
    origin = typing.get_origin(hint)
    arguments = typing.get_args(hint)
    if hint is Transform:  # its own parser names the bad key
        try:
            return Transform.from_dict(value)
        except DeepFMError as exc:
            raise ConfigError(f"{path}: {exc}") from None
    if dataclasses.is_dataclass(hint):
        return _build(typing.cast(type[Any], hint), value, path)
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{path} must be a list, got {value!r}")
        return tuple(_coerce(v, arguments[0], _item_path(path, i, v)) for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{path} must be a mapping, got {value!r}")
        return {str(k): _coerce(v, arguments[1], path) for k, v in value.items()}
    if origin in (typing.Union, types.UnionType):
        if all(dataclasses.is_dataclass(option) for option in arguments):
            return _build(_variant(arguments, value, path), value, path)
        if value is None and type(None) in arguments:
            return None
        present = [option for option in arguments if option is not type(None)]
        if len(present) == 1:  # an optional value: its own type's message
            return _coerce(value, present[0], path)
        for option in arguments:
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


def _item_path(path: str, index: int, value: Any) -> str:
    """`data.fields[price]` for a named entry, `data.fields[2]` otherwise."""
    name = value.get("name") if isinstance(value, Mapping) else None
    return f"{path}[{name}]" if isinstance(name, str) and name else f"{path}[{index}]"

"""Feature schema: which fields a model reads, how they are embedded and how they are encoded.

A `DatasetSchema` is the contract shared by training and serving. Besides the model-facing
description of each field (type, vocabulary size, embedding dim), a `FieldSchema` carries what the
encoding needs: the raw request field it reads (`source`), the `Transform` applied to that raw value
and, once fitted on training data, the vocabulary (categorical fields) or the normalisation
statistics (dense fields). The whole schema round-trips losslessly through JSON.

A large vocabulary may live in a file beside the JSON (as an artifact stores it): the field's JSON then
names the file (`vocabulary_file`) instead of listing the values, its `vocabulary_size` still says how
many there are, and the document's format version is `FILE_VOCABULARIES_FORMAT_VERSION`. Whoever
writes and reads that file (`deepfm.artifact`) passes the values in and out.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from itertools import pairwise
from typing import Any

from deepfm.errors import SchemaError

SCHEMA_FORMAT_VERSION = 1
"""The format of a schema document whose vocabularies are all inline (what older readers know)."""
FILE_VOCABULARIES_FORMAT_VERSION = 2
"""The format of a schema document some of whose vocabularies are in files beside it (`vocabulary_file`)."""
COMBINERS = ("mean", "sum", "max")
OOV_INDEX = 0


def embedding_dim_for(vocabulary_size: int) -> int:
    """A default embedding dim that grows with cardinality: 4 up to 16 values, 8 up to 512, else 16."""
    if vocabulary_size <= 16:
        return 4
    return 8 if vocabulary_size <= 512 else 16


class FeatureType(StrEnum):
    """How a field is represented in the model's input."""

    SPARSE = "sparse"  # one categorical index per row, shape (B,)
    DENSE = "dense"  # one float per row, shape (B,)
    SEQUENCE = "sequence"  # up to max_length categorical indices per row, shape (B, L), 0-padded


class TransformKind(StrEnum):
    """Transforms that derive a field's value from the raw request value."""

    IDENTITY = "identity"  # use the raw value as it is
    BUCKETIZE = "bucketize"  # the largest boundary not above the number; below the first -> OOV
    PREFIX = "prefix"  # the first `length` characters of the string
    SPLIT = "split"  # a multi-valued string split on `separator` (a list is taken as is)
    LOG1P = "log1p"  # dense: sign(x) * log(1 + |x|), which is log1p(x) for x >= 0 and defined for every x
    HASH = "hash"  # sparse: FNV-1a 64 of the value's canonical string, modulo `buckets`, plus 1


# Parameters each transform kind takes, beside `kind`; identity and log1p also clip (dense fields).
_CLIP = ("clip_min", "clip_max")
TRANSFORM_PARAMETERS: dict[TransformKind, tuple[str, ...]] = {
    TransformKind.IDENTITY: _CLIP,
    TransformKind.BUCKETIZE: ("boundaries",),
    TransformKind.PREFIX: ("length",),
    TransformKind.SPLIT: ("separator",),
    TransformKind.LOG1P: _CLIP,
    TransformKind.HASH: ("buckets",),
}


@dataclass(frozen=True)
class Transform:
    """A transform from a raw value to the value that is looked up in the vocabulary.

    Args:
        kind: which transform.
        boundaries: ascending bucket boundaries (BUCKETIZE).
        length: number of leading characters kept (PREFIX).
        separator: separator of a multi-valued string (SPLIT).
        buckets: number of hash buckets (HASH); index 0 stays OOV for missing values.
        clip_min: numbers below are raised to it before the transform (IDENTITY and LOG1P of dense fields).
        clip_max: numbers above are lowered to it, likewise.
    """

    kind: TransformKind = TransformKind.IDENTITY
    boundaries: tuple[float, ...] = ()
    length: int = 0
    separator: str = "|"
    buckets: int = 0
    clip_min: float | None = None
    clip_max: float | None = None

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "kind", TransformKind(self.kind))
        except ValueError:
            raise SchemaError(
                f"unknown transform {self.kind!r}, expected one of {[k.value for k in TransformKind]}"
            ) from None
        object.__setattr__(self, "boundaries", tuple(float(b) for b in self.boundaries))
        for name in _CLIP:
            if getattr(self, name) is not None:
                object.__setattr__(self, name, float(getattr(self, name)))
        self._validate_parameters()

    def _validate_parameters(self) -> None:
        if self.kind is TransformKind.HASH and self.buckets < 1:
            raise SchemaError(f"hash transform needs buckets >= 1, got {self.buckets}")
        if self.clips and self.kind not in (TransformKind.IDENTITY, TransformKind.LOG1P):
            raise SchemaError(f"clip_min and clip_max go with the identity and log1p transforms, not {self.kind.value}")
        if self.clip_min is not None and self.clip_max is not None and self.clip_min > self.clip_max:
            raise SchemaError(f"clip_min {self.clip_min} is above clip_max {self.clip_max}")
        if self.kind is TransformKind.BUCKETIZE:
            if not self.boundaries:
                raise SchemaError("bucketize transform needs at least one boundary")
            if any(a >= b for a, b in pairwise(self.boundaries)):
                raise SchemaError(f"bucketize boundaries must be strictly ascending: {self.boundaries}")
        if self.kind is TransformKind.PREFIX and self.length < 1:
            raise SchemaError(f"prefix transform needs length >= 1, got {self.length}")
        if self.kind is TransformKind.SPLIT and not self.separator:
            raise SchemaError("split transform needs a non-empty separator")

    @property
    def clips(self) -> bool:
        """Whether numbers are clipped before the transform."""
        return self.clip_min is not None or self.clip_max is not None

    def to_dict(self) -> dict[str, Any]:
        """The transform as JSON-ready values; parameters the kind does not use (or unset clips) are left out."""
        out: dict[str, Any] = {"kind": self.kind.value}
        for name in TRANSFORM_PARAMETERS[self.kind]:
            value = getattr(self, name)
            if value is not None:
                out[name] = list(value) if isinstance(value, tuple) else value
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | str) -> Transform:
        """Inverse of `to_dict`; a bare kind name (`"log1p"`) stands for its defaults.

        Raises:
            SchemaError: an unknown kind, a parameter the kind does not take (named), or an invalid value.
        """
        if isinstance(data, str):
            data = {"kind": data}
        if not isinstance(data, Mapping) or "kind" not in data:
            raise SchemaError(f"invalid transform {data!r}: needs a 'kind'")
        try:
            kind = TransformKind(data["kind"])
        except ValueError:
            raise SchemaError(
                f"unknown transform {data['kind']!r}, expected one of {[k.value for k in TransformKind]}"
            ) from None
        extra = sorted(set(data) - {"kind", *TRANSFORM_PARAMETERS[kind]})
        if extra:
            raise SchemaError(
                f"transform {kind.value!r} takes no {extra}; it takes {list(TRANSFORM_PARAMETERS[kind]) or 'nothing'}"
            )
        try:
            clips = {name: None if data.get(name) is None else _number(data[name]) for name in _CLIP}
            return cls(
                kind=kind,
                boundaries=tuple(map(_number, data.get("boundaries", ()))),
                length=_integer(data.get("length", 0)),
                separator=str(data.get("separator", "|")),
                buckets=_integer(data.get("buckets", 0)),
                **clips,
            )
        except (ValueError, TypeError) as exc:
            raise SchemaError(f"invalid transform {dict(data)!r}: {exc}") from exc


def _number(value: Any) -> float:
    """A transform parameter as a float; booleans and strings are refused."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{value!r} is not a number")
    return float(value)


def _integer(value: Any) -> int:
    """A transform parameter as an int; booleans, floats and strings are refused."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{value!r} is not an integer")
    return value


@dataclass(frozen=True)
class FieldSchema:
    """One input field of a model.

    Args:
        name: the model's name for the field (key of the encoded batch dict).
        feature_type: SPARSE, DENSE or SEQUENCE.
        vocabulary_size: number of embedding rows, OOV/padding index 0 included (categorical).
        embedding_dim: width of this field's embedding.
        group: a free label to group fields (e.g. "user", "item").
        max_length: sequence length after padding/truncation (SEQUENCE only).
        combiner: pooling over a sequence: "mean", "sum" or "max".
        source: the raw request field the value is read from; defaults to `name`.
        transform: how the raw value becomes the looked-up value.
        vocabulary: fitted known values (as strings), in index order from 1; None if not fitted.
        mean: fitted mean of a dense field.
        std: fitted standard deviation of a dense field.
        example: a raw value seen in training, as a client would send it (before the transform: a zip
            code, not its prefix); None if not fitted. Documents the field (the service's examples).
    """

    name: str
    feature_type: FeatureType
    vocabulary_size: int = 1
    embedding_dim: int = 8
    group: str = "default"
    max_length: int = 1
    combiner: str = "mean"
    source: str = ""
    transform: Transform = field(default_factory=Transform)
    vocabulary: tuple[str, ...] | None = field(default=None, repr=False)
    mean: float = 0.0
    std: float = 1.0
    example: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "feature_type", FeatureType(self.feature_type))
        if not self.source:
            object.__setattr__(self, "source", self.name)
        if self.vocabulary is not None:
            object.__setattr__(self, "vocabulary", tuple(self.vocabulary))
        self._validate()

    def _validate(self) -> None:
        where = f"field {self.name!r}"
        if not self.name:
            raise SchemaError("field name must be non-empty")
        if self.embedding_dim < 1:
            raise SchemaError(f"{where}: embedding_dim must be >= 1, got {self.embedding_dim}")
        if self.is_categorical:
            if self.vocabulary_size < 1:
                raise SchemaError(f"{where}: vocabulary_size must be >= 1, got {self.vocabulary_size}")
            if self.vocabulary is not None:
                if len(self.vocabulary) + 1 != self.vocabulary_size:
                    raise SchemaError(
                        f"{where}: vocabulary has {len(self.vocabulary)} values, so vocabulary_size "
                        f"must be {len(self.vocabulary) + 1} (index 0 is OOV), got {self.vocabulary_size}"
                    )
                if len(set(self.vocabulary)) != len(self.vocabulary):
                    raise SchemaError(f"{where}: vocabulary has duplicate values")
        elif self.std <= 0:
            raise SchemaError(f"{where}: std must be > 0, got {self.std}")
        if self.feature_type is FeatureType.SEQUENCE:
            if self.max_length < 1:
                raise SchemaError(f"{where}: max_length must be >= 1, got {self.max_length}")
            if self.combiner not in COMBINERS:
                raise SchemaError(f"{where}: unknown combiner {self.combiner!r}, expected one of {COMBINERS}")
        kind = self.transform.kind
        if self.feature_type is FeatureType.DENSE and kind not in (TransformKind.IDENTITY, TransformKind.LOG1P):
            raise SchemaError(f"{where}: a dense field takes the identity or log1p transform, not {kind.value}")
        if self.is_categorical and (kind is TransformKind.LOG1P or self.transform.clips):
            raise SchemaError(f"{where}: log1p and clipping go with dense fields only")
        if kind is TransformKind.HASH:
            if self.feature_type is not FeatureType.SPARSE:
                raise SchemaError(f"{where}: the hash transform goes with sparse fields only")
            if self.vocabulary is not None:
                raise SchemaError(f"{where}: a hashed field has no vocabulary")
        if (kind is TransformKind.SPLIT) != (self.feature_type is FeatureType.SEQUENCE):
            raise SchemaError(f"{where}: the split transform goes with, and only with, sequence fields")

    @property
    def is_categorical(self) -> bool:
        """Whether the field is looked up in a vocabulary (SPARSE or SEQUENCE)."""
        return self.feature_type is not FeatureType.DENSE

    @property
    def is_hashed(self) -> bool:
        """Whether values are hashed into buckets instead of looked up in a vocabulary."""
        return self.transform.kind is TransformKind.HASH

    @property
    def is_fitted(self) -> bool:
        """Whether the encoding state (vocabulary for categorical fields; buckets + OOV rows if hashed) is present."""
        if self.is_hashed:
            return self.vocabulary_size == self.transform.buckets + 1
        return not self.is_categorical or self.vocabulary is not None

    def to_dict(self, vocabulary_file: str | None = None) -> dict[str, Any]:
        """The field as JSON-ready values; with `vocabulary_file`, its vocabulary is named as held there
        instead of listed (the caller writes that file)."""
        out: dict[str, Any] = {
            "name": self.name,
            "feature_type": self.feature_type.value,
            "vocabulary_size": self.vocabulary_size,
            "embedding_dim": self.embedding_dim,
            "group": self.group,
            "max_length": self.max_length,
            "combiner": self.combiner,
            "source": self.source,
            "transform": self.transform.to_dict(),
        }
        if self.is_categorical and not self.is_hashed:
            if vocabulary_file is not None and self.vocabulary is not None:
                out["vocabulary_file"] = vocabulary_file
            else:
                out["vocabulary"] = None if self.vocabulary is None else list(self.vocabulary)
        elif not self.is_categorical:
            out["mean"] = self.mean
            out["std"] = self.std
        if self.example is not None:
            out["example"] = self.example
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], vocabulary_from_file: Sequence[str] | None = None) -> FieldSchema:
        """Inverse of `to_dict`; a field whose JSON names a `vocabulary_file` takes `vocabulary_from_file`,
        the values read from it."""
        try:
            vocabulary = data.get("vocabulary")
            if "vocabulary_file" in data:
                if vocabulary is not None or vocabulary_from_file is None:
                    raise ValueError(f"names vocabulary_file {data['vocabulary_file']!r}: its values must come from it")
                vocabulary = tuple(vocabulary_from_file)  # strings already: the file holds text
            elif vocabulary_from_file is not None:
                raise ValueError("has vocabulary values from a file but names no vocabulary_file")
            return cls(
                name=str(data["name"]),
                feature_type=FeatureType(data["feature_type"]),
                vocabulary_size=int(data.get("vocabulary_size", 1)),
                embedding_dim=int(data["embedding_dim"]),
                group=str(data.get("group", "default")),
                max_length=int(data.get("max_length", 1)),
                combiner=str(data.get("combiner", "mean")),
                source=str(data.get("source", "")),
                transform=Transform.from_dict(data.get("transform", {"kind": "identity"})),
                vocabulary=vocabulary
                if vocabulary is None or isinstance(vocabulary, tuple)
                else tuple(map(str, vocabulary)),
                mean=float(data.get("mean", 0.0)),
                std=float(data.get("std", 1.0)),
                example=data.get("example"),
            )
        except (KeyError, ValueError, TypeError) as exc:
            raise SchemaError(f"invalid field {data.get('name', '?')!r}: {exc!r}") from exc


def vocabulary_files(data: Mapping[str, Any]) -> dict[str, str]:
    """Field name -> the file holding its vocabulary, for the fields of a schema document that name one.

    Raises:
        SchemaError: the document has no 'fields' list, or names a file by anything but a string.
    """
    fields = data.get("fields")
    if not isinstance(fields, list) or not all(isinstance(f, Mapping) for f in fields):
        raise SchemaError("schema needs a 'fields' list of objects")
    files = {str(f.get("name")): f["vocabulary_file"] for f in fields if "vocabulary_file" in f}
    bad = {name: file for name, file in files.items() if not isinstance(file, str) or not file}
    if bad:
        raise SchemaError(f"vocabulary_file must be a file name, got {bad}")
    return files


class DatasetSchema:
    """The ordered fields of a dataset plus its label.

    Args:
        fields: the fields in model order, as a mapping name -> FieldSchema or an iterable of them.
        label_field: name of the label column.
    """

    def __init__(self, fields: Mapping[str, FieldSchema] | Iterable[FieldSchema], label_field: str = "label") -> None:
        if isinstance(fields, Mapping):
            for key, value in fields.items():
                if key != value.name:
                    raise SchemaError(f"field registered under {key!r} is named {value.name!r}")
            items = list(fields.values())
        else:
            items = list(fields)
        if not items:
            raise SchemaError("a schema needs at least one field")
        names = [f.name for f in items]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise SchemaError(f"duplicate field names: {duplicates}")
        if label_field in names:
            raise SchemaError(f"label field {label_field!r} is also a feature field")
        self.fields: dict[str, FieldSchema] = {f.name: f for f in items}
        self.label_field = label_field

    @property
    def field_names(self) -> list[str]:
        """Field names in model order."""
        return list(self.fields)

    @property
    def num_fields(self) -> int:
        """Number of feature fields (F)."""
        return len(self.fields)

    @property
    def total_embedding_dim(self) -> int:
        """Sum of every field's embedding_dim: the width of the flat embedding."""
        return sum(f.embedding_dim for f in self.fields.values())

    def _of_type(self, feature_type: FeatureType) -> list[FieldSchema]:
        return [f for f in self.fields.values() if f.feature_type is feature_type]

    @property
    def sparse_fields(self) -> list[FieldSchema]:
        """SPARSE fields in model order."""
        return self._of_type(FeatureType.SPARSE)

    @property
    def dense_fields(self) -> list[FieldSchema]:
        """DENSE fields in model order."""
        return self._of_type(FeatureType.DENSE)

    @property
    def sequence_fields(self) -> list[FieldSchema]:
        """SEQUENCE fields in model order."""
        return self._of_type(FeatureType.SEQUENCE)

    @property
    def source_fields(self) -> list[str]:
        """Raw request field names the schema reads, each once, in first-use order."""
        return list(dict.fromkeys(f.source for f in self.fields.values()))

    def with_fields(self, fields: Iterable[FieldSchema]) -> DatasetSchema:
        """A copy with some fields replaced by name (e.g. by their fitted versions)."""
        updated = {f.name: f for f in fields}
        unknown = sorted(set(updated) - set(self.fields))
        if unknown:
            raise SchemaError(f"unknown fields {unknown}")
        return DatasetSchema([updated.get(n, f) for n, f in self.fields.items()], self.label_field)

    def with_embedding_dims(self, dims: Mapping[str, int]) -> DatasetSchema:
        """A copy with the embedding dims of the named fields changed."""
        return self.with_fields(replace(self.fields[n], embedding_dim=d) for n, d in dims.items())

    def to_dict(self, vocabulary_files: Mapping[str, str] | None = None) -> dict[str, Any]:
        """The schema as JSON-ready values, with its format version.

        Args:
            vocabulary_files: field name -> the file that holds its vocabulary, for the fields whose
                vocabulary is not to be listed inline (the caller writes those files).
        """
        files = dict(vocabulary_files or {})
        unknown = sorted(set(files) - {f.name for f in self.fields.values() if f.vocabulary is not None})
        if unknown:
            raise SchemaError(f"vocabulary files for fields {unknown}, which have no vocabulary")
        return {
            "format_version": FILE_VOCABULARIES_FORMAT_VERSION if files else SCHEMA_FORMAT_VERSION,
            "label_field": self.label_field,
            "fields": [f.to_dict(files.get(f.name)) for f in self.fields.values()],
        }

    @classmethod
    def from_dict(
        cls, data: Mapping[str, Any], vocabularies: Mapping[str, Sequence[str]] | None = None
    ) -> DatasetSchema:
        """Inverse of `to_dict`; refuses other format versions.

        Args:
            data: the schema document.
            vocabularies: field name -> its vocabulary, read from the file its JSON names (`vocabulary_files`).
        """
        version = data.get("format_version")
        known = (SCHEMA_FORMAT_VERSION, FILE_VOCABULARIES_FORMAT_VERSION)
        if version not in known:
            raise SchemaError(f"unsupported schema format_version {version!r}, expected one of {list(known)}")
        files = vocabulary_files(data)
        if files and version != FILE_VOCABULARIES_FORMAT_VERSION:
            raise SchemaError(
                f"fields {sorted(files)} name vocabulary files, which format_version {version} does not have"
            )
        given = dict(vocabularies or {})
        if set(given) != set(files):
            raise SchemaError(
                f"vocabularies given for {sorted(given)}, but fields {sorted(files)} name vocabulary files"
            )
        fields = [FieldSchema.from_dict(f, given.get(str(f.get("name")))) for f in data["fields"]]
        return cls(fields, str(data.get("label_field", "label")))

    def to_json(self, vocabulary_files: Mapping[str, str] | None = None) -> str:
        """The schema as a JSON document (see `to_dict`)."""
        return json.dumps(self.to_dict(vocabulary_files), indent=2)

    @classmethod
    def from_json(cls, text: str) -> DatasetSchema:
        """Inverse of `to_json`."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SchemaError(f"schema is not valid JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise SchemaError("schema JSON must be an object")
        return cls.from_dict(data)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, DatasetSchema):
            return NotImplemented
        return self.label_field == other.label_field and list(self.fields.values()) == list(other.fields.values())

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"DatasetSchema(fields={self.field_names}, label_field={self.label_field!r})"

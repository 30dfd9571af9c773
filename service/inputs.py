"""A model's request fields, derived from its schema: they check parsed instances and build raw columns.

A request field is a schema `source` (e.g. `zip_code`); it feeds one or more model fields (e.g.
`zip_prefix` through a prefix transform). Checks here are set operations and C-level scans over
columns, so a valid request costs no Python loop per row; whether a value suits its field is the
encoder's to say (`deepfm.data.encoding`, the one judge of raw values).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import repeat
from typing import Any

from deepfm.data.encoding import raw_value_schema
from deepfm.data.schema import DatasetSchema, FeatureType, FieldSchema, TransformKind
from service.errors import ErrorDetail, InvalidInputError
from service.schemas import FeatureInfo, RequestFieldInfo

Instance = dict[str, Any]
KNOWN_VALUES_LISTED = 100
"""`GET /schema` lists the known values of model fields with at most this many (genres, not user ids)."""


def _natural(key: str) -> int | str:
    """A vocabulary key as a client would send it: integer-like keys as ints."""
    return int(key) if key.lstrip("-").isdigit() and str(int(key)) == key else key


def _example(field: FieldSchema, rank: int = 0) -> Any:
    """A raw value the field knows: its `rank`-th most frequent value. Where the fitted values are not raw
    (a dense field's statistics, a prefix, a hashed id), the raw value training recorded comes first."""
    raw_only = field.feature_type is FeatureType.DENSE or field.transform.kind in (
        TransformKind.PREFIX,
        TransformKind.HASH,
    )
    if raw_only and field.example is not None and rank == 0:
        return field.example
    if field.feature_type is FeatureType.DENSE:
        return round(field.mean + rank * field.std, 3)
    if not field.vocabulary:
        return None
    vocabulary = field.vocabulary[rank % len(field.vocabulary) :] + field.vocabulary
    if field.feature_type is FeatureType.SEQUENCE:
        return [_natural(token) for token in vocabulary[:2]]
    if field.transform.kind is TransformKind.BUCKETIZE:
        number = float(vocabulary[0])
        return int(number) if number.is_integer() else number
    if field.transform.kind is TransformKind.PREFIX:
        return vocabulary[0]
    return _natural(vocabulary[0])


@dataclass(frozen=True)
class RequestField:
    """A raw field a client sends, and the model fields it feeds."""

    name: str
    features: tuple[FieldSchema, ...]

    @property
    def multi_valued(self) -> bool:
        """Whether it takes a list of values."""
        return any(f.feature_type is FeatureType.SEQUENCE for f in self.features)

    @property
    def numeric(self) -> bool:
        """Whether it takes a number."""
        return bool(self._numeric_features)

    @property
    def _numeric_features(self) -> list[FieldSchema]:
        return [
            f
            for f in self.features
            if f.feature_type is FeatureType.DENSE or f.transform.kind is TransformKind.BUCKETIZE
        ]

    @property
    def example(self) -> Any:
        """A raw value the model knows: its most frequent one."""
        return _example(self.features[0])

    def example_at(self, rank: int) -> Any:
        """A raw value the model knows: its `rank`-th most frequent one."""
        return _example(self.features[0], rank)

    @property
    def group(self) -> str:
        """The group of the model fields it feeds (e.g. "user")."""
        return self.features[0].group

    def json_schema(self) -> dict[str, Any]:
        """The JSON Schema of its raw values: what the encoder takes for the strictest model field it feeds."""
        lists = [f for f in self.features if f.feature_type is FeatureType.SEQUENCE]
        strictest = [*self._numeric_features, *lists, *self.features][0]
        return {**raw_value_schema(strictest), "examples": [self.example]}

    def info(self) -> RequestFieldInfo:
        """The field as `GET /schema` describes it."""
        return RequestFieldInfo(
            name=self.name,
            type="numeric" if self.numeric else "categorical",
            multi_valued=self.multi_valued,
            example=self.example,
            features=[
                FeatureInfo(
                    name=f.name,
                    feature_type=f.feature_type.value,
                    transform=f.transform.to_dict(),
                    vocabulary_size=None if f.vocabulary is None else len(f.vocabulary),
                    known_values=None
                    if f.vocabulary is None or len(f.vocabulary) > KNOWN_VALUES_LISTED
                    else list(f.vocabulary),
                )
                for f in self.features
            ],
        )


@dataclass(frozen=True)
class Rows:
    """A request's raw values, checked and ready to encode.

    Args:
        columns: request field -> one value per instance (None where missing), for fields some instance sends.
        context: request field -> the value shared by every instance.
        num_rows: number of instances (B).
    """

    columns: dict[str, list[Any]]
    context: dict[str, Any]
    num_rows: int


def _first(instances: Sequence[Instance], name: str) -> int:
    return next(i for i, instance in enumerate(instances) if name in instance)


class RequestSpec:
    """The request fields of a schema, and the checks of a request against them.

    Args:
        schema: the model's fitted schema.
    """

    def __init__(self, schema: DatasetSchema) -> None:
        by_source: dict[str, list[FieldSchema]] = {}
        for field in schema.fields.values():
            by_source.setdefault(field.source, []).append(field)
        self.fields = {name: RequestField(name, tuple(features)) for name, features in by_source.items()}

    def example_instance(self, rank: int = 0) -> Instance:
        """An instance with a known value in every field: the `rank`-th most frequent of each."""
        return {name: field.example_at(rank) for name, field in self.fields.items()}

    def rows(self, instances: Sequence[Any], context: Instance | None, strict: bool) -> Rows:
        """Check instances (each must be an object) and context against the fields and build columns.

        Values are left to the encoder, the one judge of what a field takes (`FeatureEncoder.encode`
        raises an EncodingError naming the field and row).

        Raises:
            InvalidInputError: naming each offending instance and field: an instance that is no object,
                unknown fields, a field both in the context and an instance, and (strict) missing or null values.
        """
        if set(map(type, instances)) != {dict}:
            row = next(i for i, instance in enumerate(instances) if type(instance) is not dict)
            raise InvalidInputError("1 problem(s) in the request", [ErrorDetail("an instance must be an object", row)])
        context = context or {}
        present: set[str] = set().union(*instances)
        details = [
            ErrorDetail("unknown field; GET /schema lists the fields", _first(instances, name), name)
            for name in sorted(present - self.fields.keys())
        ]
        details += [
            ErrorDetail("context: unknown field", None, name) for name in sorted(context.keys() - self.fields.keys())
        ]
        details += [
            ErrorDetail("also given in the context; send a field in one place", _first(instances, name), name)
            for name in sorted(present & context.keys())
        ]
        if details:
            raise InvalidInputError(f"{len(details)} problem(s) in the request", details)
        columns = {name: list(map(dict.get, instances, repeat(name))) for name in present}
        if strict:
            details = self._missing(columns, context)
            if details:
                raise InvalidInputError(f"{len(details)} problem(s) in the request", details)
        return Rows(columns, context, len(instances))

    def _missing(self, columns: dict[str, list[Any]], context: Instance) -> list[ErrorDetail]:
        """Strict mode: a detail for each field missing or null in the context or in some instance."""
        details = []
        for name in self.fields:
            if name in context:
                if context[name] is None:
                    details.append(ErrorDetail("context: null (strict mode)", None, name))
            elif name not in columns:
                details.append(ErrorDetail("missing (strict mode)", 0, name))
            elif None in columns[name]:
                details.append(ErrorDetail("missing or null (strict mode)", columns[name].index(None), name))
        return details

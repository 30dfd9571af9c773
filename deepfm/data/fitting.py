"""Fitting a schema's encoding state on training data: vocabularies in order of frequency, dense mean and std.

`fit_schema` (or `SchemaFitter` over chunks) learns each field's state from training rows only and
returns a fitted `DatasetSchema`, whose JSON carries that state; `deepfm.data.encoding` then turns raw
values into model input with it. Fitting reads pandas DataFrames and counts with pandas; it lives apart
from the encoder so that serving, which only encodes, never imports pandas.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from itertools import chain, compress
from typing import Any

import numpy as np
import pandas as pd

from deepfm.data.encoding import Factorized, _canonical, _dense, _hashed, _is_present, _keys, _tokens, factorized
from deepfm.data.schema import DatasetSchema, FeatureType, FieldSchema, TransformKind
from deepfm.errors import SchemaError

MERGE_KEYS = 1_000_000
"""Distinct keys that blocks' counts may hold unmerged before they are summed into the running counts."""


@dataclass(frozen=True)
class VocabularyLimits:
    """Which values of a categorical field its fitted vocabulary keeps (FuxiCTR's `min_categr_count`,
    NVTabular's `freq_threshold`, torchrec's capped tables).

    Args:
        min_frequency: values seen fewer times in training stay out (they encode to OOV).
        max_size: keep at most this many values, the most frequent (0: no cap).
    """

    min_frequency: int
    max_size: int


class SchemaFitter:
    """Fits a schema's encoding state on training rows that come in one or more chunks.

    `update` counts a chunk (value counts per categorical field; count, mean and squared deviations per
    dense field, merged as Chan et al. do); `fitted` ranks and cuts the merged counts. Fitting a file
    chunk by chunk gives the vocabularies of fitting it whole.

    Args:
        schema: fields with their sources and transforms; vocabularies and statistics are ignored.
        min_frequency: the vocabulary cut of fields that `limits` does not name.
        limits: field name -> its own vocabulary cut.
    """

    def __init__(
        self, schema: DatasetSchema, min_frequency: int = 1, limits: Mapping[str, VocabularyLimits] | None = None
    ) -> None:
        self.schema = schema
        self._limits = {name: VocabularyLimits(min_frequency, 0) for name in schema.fields} | dict(limits or {})
        unknown = sorted(set(self._limits) - set(schema.fields))
        if unknown:
            raise SchemaError(f"vocabulary limits for unknown fields {unknown}")
        self._counts: dict[str, list[pd.Series]] = {}  # per field: merged counts, then blocks' not yet merged
        self._moments: dict[str, tuple[int, float, float]] = {}  # dense: (count, mean, sum of squared deviations)
        self._raw: dict[str, dict[str, Any]] = {}  # field -> canonical key -> a raw value that gave it

    def update(self, frame: pd.DataFrame) -> SchemaFitter:
        """Count one chunk of training rows (one column per raw source); returns self.

        A column of a string or numeric dtype is factorised: its distinct values are judged and counted once.
        """
        for field in self.schema.fields.values():
            if field.source not in frame:
                raise SchemaError(f"field {field.name!r} reads column {field.source!r}, which the data lacks")
            column = factorized(frame[field.source])
            if column is None:
                self._count(field, frame[field.source].tolist(), None)
            else:
                with column.rows_named():
                    self._count(field, column.uniques, column)
        return self

    def _count(self, field: FieldSchema, values: list[Any], column: Factorized | None) -> None:
        """Add the field's `values`: its rows' values, or the distinct values of the factorised `column`."""
        weights = None if column is None else column.counts()
        self._add_raw(field, values)
        if field.feature_type is FeatureType.DENSE:
            self._add_moments(field.name, _dense(field, values), weights)
        elif field.is_hashed:
            _hashed(field, values)  # checks the values; a hashed field has nothing to count
        else:
            if field.feature_type is FeatureType.SEQUENCE:
                tokens = _tokens(field, values)
                keys = list(chain.from_iterable(tokens))
                if weights is not None:
                    weights = np.repeat(weights, np.fromiter(map(len, tokens), dtype=np.int64, count=len(tokens)))
            else:
                keys = _keys(field, values)
            parts = self._counts.setdefault(field.name, [])
            parts.append(_canonical_counts(keys, weights))
            if sum(map(len, parts[1:])) > max(len(parts[0]), MERGE_KEYS):  # merged in amortised linear time
                parts[:] = [_merged(parts)]

    def _add_raw(self, field: FieldSchema, values: list[Any]) -> None:
        """Remember raw values, for examples: of a PREFIX field one per prefix (few), else the first present."""
        raw = self._raw.setdefault(field.name, {})
        if field.transform.kind is TransformKind.PREFIX:
            keys = _keys(field, values)
            for key, value in dict(zip(keys, values, strict=True)).items():
                if key is not None:
                    raw.setdefault(_canonical(key), value)
        elif not raw:
            empty = (isinstance(v, str | list | tuple) and not v for v in values)
            first = next((v for v, e in zip(values, empty, strict=True) if _is_present(v) and not e), None)
            if first is not None:
                raw[""] = list(first) if isinstance(first, tuple | np.ndarray) else first

    def _example(self, field: FieldSchema, vocabulary: tuple[str, ...] | None) -> Any:
        """A raw value of the field: one giving its most frequent key (PREFIX), or the first one seen."""
        raw = self._raw.get(field.name, {})
        if field.transform.kind is TransformKind.PREFIX:
            return raw.get(vocabulary[0]) if vocabulary else None
        return _plain(raw.get(""))

    def _add_moments(self, name: str, numbers: np.ndarray, weights: np.ndarray | None) -> None:
        """Merge in the count, mean and squared deviations of `numbers` (each counted `weights` times)."""
        present = ~np.isnan(numbers)
        numbers = numbers[present]
        counts = np.ones(len(numbers)) if weights is None else weights[present].astype(np.float64)
        size = int(counts.sum())
        if not size:
            return
        count, mean, squares = self._moments.get(name, (0, 0.0, 0.0))
        chunk_mean = float((numbers * counts).sum() / size)
        chunk_squares = float((counts * (numbers - chunk_mean) ** 2).sum())
        total = count + size
        delta = chunk_mean - mean
        self._moments[name] = (
            total,
            mean + delta * size / total,
            squares + chunk_squares + delta**2 * count * size / total,
        )

    def fitted(self) -> DatasetSchema:
        """The schema with vocabularies (most frequent first, ties by value), vocabulary sizes, bucket counts
        and dense means and stds filled in."""
        fitted: list[FieldSchema] = []
        for field in self.schema.fields.values():
            if field.feature_type is FeatureType.DENSE:
                count, mean, squares = self._moments.get(field.name, (0, 0.0, 0.0))
                std = math.sqrt(squares / count) if count else 0.0
                done = replace(field, mean=mean, std=std if std > 0 else 1.0)
            elif field.is_hashed:
                done = replace(field, vocabulary_size=field.transform.buckets + 1)
            else:
                vocabulary = _ranked(_merged(self._counts.get(field.name, [])), self._limits[field.name])
                done = replace(field, vocabulary=vocabulary, vocabulary_size=len(vocabulary) + 1)
            fitted.append(replace(done, example=self._example(field, done.vocabulary)))
        return self.schema.with_fields(fitted)


def _plain(value: Any) -> Any:
    """A raw value as JSON holds it: numpy scalars as Python numbers, tuples as lists."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _canonical_counts(keys: list[Any], weights: np.ndarray | None = None) -> pd.Series:
    """Occurrences of each present key (each entry of `keys` counted `weights` times, default once), indexed
    by canonical form (196, 196.0 and "196" count as "196")."""
    if weights is None:
        counts = pd.Series(keys, dtype=object).value_counts(dropna=True, sort=False)
        keys, weights = counts.index.tolist(), counts.to_numpy()
    present = np.fromiter(map(_is_present, keys), dtype=bool, count=len(keys))
    canonical = pd.Index(list(map(_canonical, compress(keys, present))))  # one call per distinct key
    by_key = pd.Series(weights[present].astype(np.int64), index=canonical)
    return by_key.groupby(level=0, sort=False).sum()  # distinct keys can share a canonical form


def _merged(parts: list[pd.Series]) -> pd.Series:
    """Counts of several blocks as one, summed by key in one hash group-by (a pairwise Series.add sorts)."""
    if len(parts) <= 1:
        return parts[0] if parts else pd.Series(dtype=np.int64)
    merged: pd.Series = pd.concat(parts).groupby(level=0, sort=False).sum()
    return merged


def _ranked(counts: pd.Series, limits: VocabularyLimits) -> tuple[str, ...]:
    """The kept keys of `counts`: most frequent first, ties in ascending order of the key."""
    frequencies = counts.to_numpy(dtype=np.int64)
    kept = np.flatnonzero(frequencies >= limits.min_frequency)  # cut first: most keys of a long tail go
    keys = counts.index[kept]
    by_key = keys.argsort()  # the index's own sort (Arrow's for Arrow-backed strings)
    order = by_key[np.argsort(-frequencies[kept][by_key], kind="stable")]
    if limits.max_size > 0:
        order = order[: limits.max_size]
    return tuple(keys[order].tolist())


def fit_schema(
    schema: DatasetSchema,
    frame: pd.DataFrame,
    min_frequency: int = 1,
    limits: Mapping[str, VocabularyLimits] | None = None,
) -> DatasetSchema:
    """Fit every field's encoding state on training data (`SchemaFitter` over one chunk).

    Args:
        schema: fields with their sources and transforms; vocabularies and statistics are ignored.
        frame: training rows, one column per raw source.
        min_frequency: values seen fewer times than this stay out of the vocabulary (they map to OOV).
        limits: per-field vocabulary cuts that replace `min_frequency` for the fields they name.

    Returns:
        The schema with vocabularies (most frequent first, ties by value), vocabulary sizes, and
        dense means and stds filled in.
    """
    return SchemaFitter(schema, min_frequency, limits).update(frame).fitted()

"""Raw feature values to model input: the one encoding path shared by training and serving.

`deepfm.data.fitting.fit_schema` learns each field's state from training data only (vocabularies in
order of frequency, dense mean and std) and returns a fitted `DatasetSchema`, whose JSON carries that
state. `FeatureEncoder` turns columns of raw values into the arrays the model reads:

- SPARSE   -> int64 (B,)   vocabulary index, 0 for unknown or missing values
- SEQUENCE -> int64 (B, L) indices of the first L tokens, 0-padded; unknown tokens are 0 too
- DENSE    -> float32 (B,) (t(x) - mean) / std, 0 for missing values; t clips and applies log1p if asked

A HASH field needs no vocabulary: a value's index is 1 + FNV-1a 64 of its canonical string modulo the
bucket count, the same in every process and language.

Lookups run through C-level `map`/`dict.get` and numpy, never a Python loop per row. Number-like
values match their string form: a vocabulary entry "196" is found for 196, 196.0 and "196". A
DataFrame's columns of strings or numbers are first factorised (`Factorized`): each distinct value is
judged, looked up and transformed once, and the rows take their value's result.

This module is the one judge of raw values, in training and serving alike. Types are exact: a
boolean is no number; integers fit in 64 bits; floats are finite (NaN is a missing value, as pandas
writes one); a sequence is a list of strings or integers (ids), or a separated string. Any other value (a
list where one value belongs, a string in a numeric field, an infinity) is an EncodingError naming
the field and the row.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from itertools import chain, compress, repeat
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from deepfm.data.schema import OOV_INDEX, DatasetSchema, FeatureType, FieldSchema, TransformKind
from deepfm.errors import EncodingError, SchemaError

if TYPE_CHECKING:  # serving encodes without pandas: a DataFrame or Series is only duck-typed here
    import pandas as pd


class ListLike(Protocol):
    """A column that converts itself to Python values: a numpy array, a pandas Series."""

    def tolist(self) -> Any: ...


@dataclass(frozen=True)
class Factorized:
    """A column as its distinct values and, per row, the position of its value among them (-1: missing).

    Args:
        codes: (B,) int64 position in `uniques` of each row's value, -1 where it is missing.
        uniques: the distinct present values, in order of their first row.
    """

    codes: np.ndarray
    uniques: list[Any]

    def __len__(self) -> int:
        return len(self.codes)

    def counts(self) -> np.ndarray:
        """(len(uniques),) int64: how many rows hold each distinct value."""
        return np.bincount(self.codes[self.codes >= 0], minlength=len(self.uniques))

    @contextmanager
    def rows_named(self) -> Iterator[None]:
        """An EncodingError about a distinct value (its row: a position in `uniques`) raised as one naming
        the first row that holds the value."""
        try:
            yield
        except EncodingError as exc:
            if exc.row is None or not 0 <= exc.row < len(self.uniques):
                raise
            row = int(np.argmax(self.codes == exc.row))
            raise EncodingError(str(exc), field=exc.field, row=row) from None


def factorized(column: pd.Series) -> Factorized | None:
    """A Series of a string or numeric dtype as a `Factorized` column; None for other dtypes (object,
    boolean: their values are judged one by one, as equal hashes would merge True with 1)."""
    import pandas as pd  # only DataFrames' callers (training, evaluation) come here; serving does not

    kind = column.dtype
    numeric = pd.api.types.is_numeric_dtype(kind) and not pd.api.types.is_bool_dtype(kind)
    text = pd.api.types.is_string_dtype(kind) and not pd.api.types.is_object_dtype(kind)
    if not (numeric or text):
        return None
    codes, uniques = pd.factorize(column, use_na_sentinel=True)
    return Factorized(codes.astype(np.int64, copy=False), uniques.tolist())


Column = Sequence[Any] | ListLike | Factorized
"""A column of raw values, one per row; None (or NaN) is a missing value."""


INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
_STRING_OR_MISSING: frozenset[type] = frozenset({str, type(None)})
_NUMBER_OR_MISSING: frozenset[type] = frozenset({int, float, type(None)})
_SCALAR_OR_MISSING: frozenset[type] = frozenset({str, int, float, type(None)})
_LISTS: frozenset[type] = frozenset({list, tuple})
_TOKEN_TYPES: frozenset[type] = frozenset({str, int})

NEEDS_NUMBER = "a number (an integer within 64 bits or a finite float)"
NEEDS_SCALAR = "a string or a number (an integer within 64 bits or a finite float)"


def _values(column: Column) -> list[Any] | Factorized:
    """The column as a list of Python values (an array's or a Series' by its `tolist`); a factorised one as it is."""
    if type(column) is list or isinstance(column, Factorized):  # a list (a request's column) is only read
        return column
    if isinstance(column, Sequence):
        return list(column)
    values: list[Any] = column.tolist()
    return values


def _is_nan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


def _is_present(value: Any) -> bool:
    return value is not None and not _is_nan(value)


def _is_int(value: Any) -> bool:
    """An integer within 64 bits; exact types, so a bool is not one."""
    return (type(value) is int and INT64_MIN <= value <= INT64_MAX) or isinstance(value, np.integer)


def _is_number_or_missing(value: Any) -> bool:
    """A 64-bit integer, a float that is not infinite (NaN is missing, as pandas spells it), or None."""
    return value is None or _is_int(value) or (isinstance(value, float) and not math.isinf(value))


def _is_scalar_or_missing(value: Any) -> bool:
    return isinstance(value, str) or _is_number_or_missing(value)


def _is_token(value: Any) -> bool:
    """A string or a 64-bit integer: the ids a list holds (no missing values, no floats)."""
    return isinstance(value, str) or _is_int(value)


def _is_sequence_or_missing(value: Any) -> bool:
    """None, NaN (missing), a separated string, or a list of tokens."""
    if value is None or _is_nan(value) or isinstance(value, str):
        return True
    return isinstance(value, list | tuple | np.ndarray) and all(map(_is_token, value))


def _of_type(values: list[Any], kind: type) -> Iterator[Any]:
    """The values whose exact type is `kind`, by C-level iteration."""
    return compress(values, map(operator.is_, map(type, values), repeat(kind)))


def _in_range(values: list[Any], types: set[type]) -> bool:
    """Whether the values' ints fit in 64 bits and none of their floats is infinite, by whole-column scans."""
    if int in types:
        ints = values if len(types) == 1 else list(_of_type(values, int))
        if min(ints) < INT64_MIN or max(ints) > INT64_MAX:
            return False
    return float not in types or not any(map(math.isinf, _of_type(values, float)))


def _check(
    field: FieldSchema, values: list[Any], accepted: Any, expected: str, fast_types: frozenset[type] = frozenset()
) -> set[type]:
    """EncodingError naming the first row whose value `accepted` refuses; else the values' exact types.

    When every value's exact type is in `fast_types` (the common case) and the ints and floats among
    them are in range, no per-value call is made.
    """
    types = set(map(type, values))
    if types <= fast_types and _in_range(values, types):
        return types
    valid = list(map(accepted, values))
    if not all(valid):
        row = valid.index(False)
        raise EncodingError(
            f"field {field.source!r} needs {expected}, got {values[row]!r:.80}", field=field.source, row=row
        )
    return types


def _numbers(field: FieldSchema, values: list[Any]) -> np.ndarray:
    """Raw values as float64, missing as NaN; a non-number or an infinity is an EncodingError."""
    _check(field, values, _is_number_or_missing, NEEDS_NUMBER, _NUMBER_OR_MISSING)
    return np.asarray(values, dtype=np.float64)  # None -> NaN


def _canonical(key: Any) -> str:
    """The vocabulary form of a raw key: integral floats lose their '.0' so they match ints."""
    if isinstance(key, float) and key.is_integer():
        return str(int(key))
    return str(key)


def _numeric_alias(key: str) -> int | float | None:
    """The number whose canonical form is `key` ("196" -> 196, "0.5" -> 0.5), else None."""
    try:
        number = float(key)
    except ValueError:
        return None
    if not math.isfinite(number) or _canonical(number) != key:
        return None
    return int(number) if number.is_integer() else number


def _dense(field: FieldSchema, values: list[Any]) -> np.ndarray:
    """A DENSE field's raw numbers after its clipping and transform, as float64; missing as NaN."""
    numbers = _numbers(field, values)
    transform = field.transform
    if transform.clips:
        numbers = np.clip(numbers, transform.clip_min, transform.clip_max)  # NaN stays NaN
    if transform.kind is TransformKind.LOG1P:
        numbers = np.sign(numbers) * np.log1p(np.abs(numbers))
    return numbers


_FNV_OFFSET = np.uint64(0xCBF29CE484222325)
_FNV_PRIME = np.uint64(0x100000001B3)


def fnv1a_64(keys: Sequence[str]) -> np.ndarray:
    """FNV-1a 64-bit hashes (uint64) of strings' UTF-8 bytes: vectorised over the strings, looping over byte
    positions only."""
    encoded = np.char.encode(np.asarray(keys, dtype=str), "utf-8")  # (N,) null-padded bytes
    lengths = np.char.str_len(encoded)
    width = encoded.dtype.itemsize
    data = encoded.view(np.uint8).reshape(len(encoded), width)  # (N, W)
    hashes = np.full(len(encoded), _FNV_OFFSET, dtype=np.uint64)
    for position in range(width):
        active = lengths > position
        hashes[active] = (hashes[active] ^ data[active, position]) * _FNV_PRIME  # uint64 arithmetic wraps
    return hashes


def _hashed(field: FieldSchema, values: list[Any]) -> np.ndarray:
    """A HASH field's indices: 1 + hash of the canonical key modulo the buckets; 0 where missing."""
    types = _check(field, values, _is_scalar_or_missing, NEEDS_SCALAR, _SCALAR_OR_MISSING)
    if types <= {str, int}:  # the usual cases, with no Python call per value
        keys, present = list(map(str, values)), None
    else:
        present = np.fromiter(map(_is_present, values), dtype=bool, count=len(values))
        keys = [_canonical(v) if p else "" for v, p in zip(values, present, strict=True)]
    indices = (fnv1a_64(keys) % np.uint64(field.transform.buckets)).astype(np.int64) + 1
    if present is not None:
        indices[~present] = OOV_INDEX
    return indices


def _buckets(field: FieldSchema, values: list[Any]) -> np.ndarray:
    """The bucket of each raw value of a BUCKETIZE field: the index of the largest boundary not above
    it, -1 below the first boundary or missing."""
    numbers = _numbers(field, values)
    position = np.searchsorted(np.asarray(field.transform.boundaries), numbers, side="right") - 1  # -1 below
    position[np.isnan(numbers)] = -1  # NaN sorts last
    return position


def _prefix_key(value: Any, length: int) -> str | None:
    """The first `length` characters of a raw value's canonical form; None if it is missing."""
    if type(value) is str:  # the common case, first
        return value[:length]
    return _canonical(value)[:length] if _is_present(value) else None


def _keys(field: FieldSchema, values: list[Any]) -> list[Any]:
    """Lookup keys of a SPARSE field's raw values after its transform; None where missing."""
    transform = field.transform
    if transform.kind is TransformKind.BUCKETIZE:
        labels = np.array([*map(_canonical, transform.boundaries), None], dtype=object)
        return labels[_buckets(field, values)].tolist()  # type: ignore[no-any-return]
    types = _check(field, values, _is_scalar_or_missing, NEEDS_SCALAR, _SCALAR_OR_MISSING)
    if transform.kind is TransformKind.PREFIX:
        if types == {str}:  # the usual case: a slice of each, with no Python call per value
            return list(map(operator.itemgetter(slice(transform.length)), values))
        return list(map(_prefix_key, values, repeat(transform.length)))
    return values


def _tokens(field: FieldSchema, values: list[Any]) -> Sequence[Sequence[Any]]:
    """Tokens of a SEQUENCE field's raw values: a string is split, a list taken as is, missing is empty."""
    separator = field.transform.separator
    types = set(map(type, values))
    if types <= _LISTS:  # the usual cases first, checked by whole-column scans: all lists, or all strings
        tokens = list(chain.from_iterable(values))
        token_types = set(map(type, tokens))
        if token_types <= _TOKEN_TYPES and _in_range(tokens, token_types):
            return values
    elif types == {str}:
        split_values = list(map(str.split, values, repeat(separator)))
        if "" not in chain.from_iterable(split_values):
            return split_values
    needs = f"a list of strings or integers within 64 bits, or a {separator!r}-separated string"
    _check(field, values, _is_sequence_or_missing, needs, _STRING_OR_MISSING)

    def split(value: Any) -> Sequence[Any]:
        if isinstance(value, str):
            return [token for token in value.split(separator) if token]
        return () if value is None or isinstance(value, float) else value

    return list(map(split, values))


_NUMBER_CHARACTERS = "-+.0123456789e"
"""Every character of a finite number's canonical form (str of an int or a float)."""


def _lookup_table(vocabulary: Sequence[str]) -> dict[Any, int]:
    """Key -> index from 1; number-like keys are also reachable by their number ("196" by 196 and 196.0).

    Built by C-level passes: only the keys made of number characters alone are tried as numbers.
    """
    table: dict[Any, int] = dict(zip(vocabulary, range(1, len(vocabulary) + 1), strict=True))
    rest = map(str.strip, vocabulary, repeat(_NUMBER_CHARACTERS))  # "" for a key of number characters only
    for index in compress(range(1, len(vocabulary) + 1), map(operator.not_, rest)):
        alias = _numeric_alias(vocabulary[index - 1])
        if alias is not None:
            table[alias] = index
    return table


@dataclass(frozen=True)
class EncodedBatch:
    """Model input arrays plus, per field, how many rows had a missing or unknown value.

    Args:
        features: field name -> array, shaped as the module docstring says.
        oov_rows: field name -> rows whose value was missing or unknown (any token, for sequences).
        num_rows: B.
    """

    features: dict[str, np.ndarray]
    oov_rows: dict[str, int]
    num_rows: int


FieldEncoder = Callable[[list[Any]], tuple[np.ndarray, np.ndarray | None]]
"""A field's values -> (its model input, (B,) bool: rows whose value was missing or unknown; None for an
index per row, where those are the rows whose index is OOV_INDEX)."""


def _encode_dense(field: FieldSchema, values: list[Any]) -> tuple[np.ndarray, np.ndarray]:
    numbers = _dense(field, values)
    missing = np.isnan(numbers)
    scaled = np.where(missing, 0.0, (numbers - field.mean) / field.std).astype(np.float32)
    return scaled, missing


def _encode_hashed(field: FieldSchema, values: list[Any]) -> tuple[np.ndarray, None]:
    return _hashed(field, values), None


def _encode_buckets(field: FieldSchema, indices: np.ndarray, values: list[Any]) -> tuple[np.ndarray, None]:
    """`indices`: bucket -> vocabulary index, the last entry (bucket -1) OOV."""
    return indices[_buckets(field, values)], None


def _encode_sparse(field: FieldSchema, table: dict[Any, int], values: list[Any]) -> tuple[np.ndarray, None]:
    keys = _keys(field, values)
    return np.fromiter(map(table.get, keys, repeat(OOV_INDEX)), dtype=np.int64, count=len(keys)), None


def _encode_sequence(field: FieldSchema, table: dict[Any, int], values: list[Any]) -> tuple[np.ndarray, np.ndarray]:
    tokens = _tokens(field, values)
    counts = list(map(len, tokens))  # a list: its sum and max by builtins, cheaper than numpy's for small batches
    lengths = np.array(counts, dtype=np.int64)
    flat = np.fromiter(
        map(table.get, chain.from_iterable(tokens), repeat(OOV_INDEX)), dtype=np.int64, count=sum(counts)
    )
    max_length = field.max_length
    if max(counts, default=0) > max_length:  # some rows are longer than max_length: drop their extra tokens
        flat = flat[np.arange(len(flat)) - np.repeat(np.cumsum(lengths) - lengths, lengths) < max_length]
        lengths = np.minimum(lengths, max_length)
    filled = np.arange(max_length) < lengths[:, None]  # (B, L): the slots of each row's first max_length tokens
    out = np.zeros((len(tokens), max_length), dtype=np.int64)
    out[filled] = flat  # row-major order is the tokens' order
    unknown = lengths == 0
    if np.count_nonzero(flat) < len(flat):  # some kept token is unknown: find its rows
        unknown |= ((out == OOV_INDEX) & filled).any(axis=1)
    return out, unknown


class FeatureEncoder:
    """Encodes raw columns into model input with a fitted schema's vocabularies and statistics.

    Args:
        schema: a fitted schema (every categorical field has its vocabulary).
    """

    def __init__(self, schema: DatasetSchema) -> None:
        unfitted = [f.name for f in schema.fields.values() if not f.is_fitted]
        if unfitted:
            raise SchemaError(
                f"fields {unfitted} have no fitted vocabulary; fit the schema on training data first (fit_schema)"
            )
        self.schema = schema
        # each field's source and encoding step, chosen once: a small request's cost is mostly per field
        self._fields = {f.name: (f.source, self._field_encoder(f)) for f in schema.fields.values()}

    @staticmethod
    def _field_encoder(field: FieldSchema) -> FieldEncoder:
        if field.feature_type is FeatureType.DENSE:
            return partial(_encode_dense, field)
        if field.is_hashed:
            return partial(_encode_hashed, field)
        assert field.vocabulary is not None  # a fitted categorical field
        table = _lookup_table(field.vocabulary)
        if field.transform.kind is TransformKind.BUCKETIZE and field.feature_type is FeatureType.SPARSE:
            boundaries = (table.get(_canonical(b), OOV_INDEX) for b in field.transform.boundaries)
            return partial(_encode_buckets, field, np.array([*boundaries, OOV_INDEX], dtype=np.int64))
        if field.feature_type is FeatureType.SPARSE:
            return partial(_encode_sparse, field, table)
        return partial(_encode_sequence, field, table)

    def fields_reading(self, sources: Iterable[str]) -> list[str]:
        """Names of the fields whose raw source is one of `sources`, in model order."""
        wanted = set(sources)
        return [f.name for f in self.schema.fields.values() if f.source in wanted]

    def encode(self, columns: Mapping[str, Column], num_rows: int, fields: Iterable[str] | None = None) -> EncodedBatch:
        """Encode raw columns keyed by source name.

        Args:
            columns: source field -> column of `num_rows` raw values; an absent source is all missing.
            num_rows: B.
            fields: names of the fields to encode; all of them if None.

        Returns:
            The encoded batch. Raises EncodingError naming the field (and row, where known); where several
            fields are at fault, its `problems` name each.
        """
        features: dict[str, np.ndarray] = {}
        oov_rows: dict[str, int] = {}
        problems: dict[str, EncodingError] = {}  # by source: fields reading one source see the same value
        for name in self._fields if fields is None else fields:
            source, encode_field = self._fields[name]
            column = columns.get(source)
            values = [None] * num_rows if column is None else _values(column)
            if len(values) != num_rows:
                raise EncodingError(f"field {source!r} has {len(values)} values for {num_rows} rows", field=source)
            try:
                if isinstance(values, Factorized):  # its distinct values encoded, then taken per row
                    with values.rows_named():
                        encoded, oov = encode_field([*values.uniques, None])  # the last: missing (code -1)
                    encoded, oov = encoded[values.codes], None if oov is None else oov[values.codes]
                else:
                    encoded, oov = encode_field(values)
                features[name] = encoded
                missing = num_rows - np.count_nonzero(encoded) if oov is None else np.count_nonzero(oov)
                oov_rows[name] = int(missing)
            except EncodingError as exc:
                problems.setdefault(source, exc)
        if len(problems) == 1:
            raise next(iter(problems.values()))
        if problems:
            raise EncodingError("; ".join(map(str, problems.values())), problems=list(problems.values()))
        return EncodedBatch(features, oov_rows, num_rows)

    def encode_frame(self, frame: pd.DataFrame) -> EncodedBatch:
        """Encode every field from a DataFrame with one column per raw source (factorised where its dtype allows)."""
        columns: dict[str, Column] = {}
        for source in self.schema.source_fields:
            if source in frame:
                columns[source] = factorized(frame[source]) or frame[source]
        return self.encode(columns, len(frame))


_INT64_SCHEMA: dict[str, Any] = {"type": "integer", "minimum": INT64_MIN, "maximum": INT64_MAX}
_FINITE_SCHEMA: dict[str, Any] = {"type": "number", "description": "finite"}


def raw_value_schema(field: FieldSchema) -> dict[str, Any]:
    """The JSON Schema of the raw values this module accepts for a field (see the module docstring), for
    documents such as the service's OpenAPI; null is a missing value."""
    if field.feature_type is FeatureType.DENSE or field.transform.kind is TransformKind.BUCKETIZE:
        return {"anyOf": [_INT64_SCHEMA, _FINITE_SCHEMA, {"type": "null"}]}
    if field.feature_type is FeatureType.SEQUENCE:
        tokens = {"type": "array", "items": {"anyOf": [{"type": "string"}, _INT64_SCHEMA]}}
        separated = {"type": "string", "description": f"values separated by {field.transform.separator!r}"}
        return {"anyOf": [tokens, separated, {"type": "null"}]}
    return {"anyOf": [{"type": "string"}, _INT64_SCHEMA, _FINITE_SCHEMA, {"type": "null"}]}

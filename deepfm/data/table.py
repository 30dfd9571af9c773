"""A click log as a CTR dataset: a CSV or Parquet file (or a folder of Parquet files) with a 0/1 label.

CSV is read by pandas; Parquet by pyarrow, an optional dependency (`pip install 'deepfm[parquet]'`).

Fields are declared in `data.fields` (`FieldConfig`) or, when none are, inferred from the data:
- the label and the time column are never features;
- a list column (Parquet), or a text column with a value holding "|" -> a sequence split on "|";
- other text and boolean columns -> sparse;
- integer columns (and float columns holding whole numbers only) -> sparse when named like an id (`id`,
  `*_id`, `*Id`, `*ID`) or with at most `sparse_max_distinct` distinct values, dense otherwise;
- other float columns -> dense, standardised;
- a text column whose values are mostly numbers is refused as mixed: declare its field to say which it is.

Splits: with `time_column`, the last `test_fraction` of rows by time are test and the `val_fraction`
before them validation; without it, a random split seeded by `split_seed`; or given files (`train`,
`val`, `test`). Labels are 0/1 numbers or booleans. Vocabularies and statistics are fitted on the
training rows only. Errors name the file, the row (counted from 0, header excluded) and the field.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd

from deepfm.config import FieldConfig, TableConfig
from deepfm.data.dataset import CTRDataset, compact, to_tensors
from deepfm.data.encoding import FeatureEncoder
from deepfm.data.fitting import VocabularyLimits, fit_schema
from deepfm.data.schema import (
    DatasetSchema,
    FeatureType,
    FieldSchema,
    Transform,
    TransformKind,
    embedding_dim_for,
)
from deepfm.errors import ConfigError, DataError, EncodingError, SchemaError

logger = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
PARQUET_SUFFIXES = (".parquet", ".pq")
LIST_SEPARATOR = "|"
_ID_NAME = re.compile(r"(^|_)id$|[a-z0-9](Id|ID)$", re.IGNORECASE)
_NAME_DEFAULT = {f.name: f.default for f in dataclasses.fields(FieldConfig)}


def read_table(path: str | Path) -> pd.DataFrame:
    """Rows of a CSV file, a Parquet file or a folder of Parquet files; DataError if absent, unreadable or empty."""
    source = Path(path)
    if not source.exists():
        raise DataError(f"data file {source} not found")
    parquet = source.is_dir() or source.suffix.lower() in PARQUET_SUFFIXES
    try:
        frame = _read_parquet(source) if parquet else pd.read_csv(source, sep=_separator(source), low_memory=False)
    except pd.errors.EmptyDataError:
        raise DataError(f"data file {source} is empty") from None
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise DataError(f"cannot read {source}: {' '.join(str(exc).split())}") from None
    if frame.empty:
        raise DataError(f"data file {source} has no rows")
    return frame


def _separator(path: Path) -> str:
    """Tab for .tsv files (also compressed), comma otherwise."""
    return "\t" if ".tsv" in path.suffixes else ","


def _read_parquet(path: Path) -> pd.DataFrame:
    try:
        import pyarrow as pa  # optional: only Parquet needs it
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError(f"reading Parquet ({path}) needs pyarrow: pip install 'deepfm[parquet]'") from None
    if path.is_dir() and not any(path.glob("*.parquet")):
        raise DataError(f"data folder {path} holds no .parquet files")
    table = pq.read_table(path)
    frame: pd.DataFrame = table.to_pandas()
    for name, kind in zip(table.column_names, table.schema.types, strict=True):
        if pa.types.is_list(kind) or pa.types.is_large_list(kind):
            frame[name] = pd.Series(table.column(name).to_pylist(), dtype=object)  # lists, not numpy arrays
    return frame


# --- labels and splits ---------------------------------------------------------------------------------------------


def labels_of(frame: pd.DataFrame, column: str, where: str) -> np.ndarray:
    """The label column as float32 0/1; DataError naming the column and a bad value otherwise."""
    if column not in frame:
        raise DataError(f"{where}: no label column {column!r}; columns: {list(frame.columns)}")
    values = frame[column]
    if pd.api.types.is_bool_dtype(values):
        return values.to_numpy(dtype=np.float32)
    numeric = pd.api.types.is_numeric_dtype(values)
    good = values.isin([0, 1]).to_numpy() if numeric else np.zeros(len(values), dtype=bool)
    if not good.all():
        row = int(np.flatnonzero(~good)[0])
        raise DataError(
            f"{where}: label column {column!r} must hold 0/1 or booleans; row {frame.index[row]} has "
            f"{values.iloc[row : row + 1].tolist()[0]!r}"
        )
    return values.to_numpy(dtype=np.float32)


def _time_order(frame: pd.DataFrame, column: str, where: str) -> np.ndarray:
    """Row positions in time order (stable): numbers as they are, text parsed as dates."""
    if column not in frame:
        raise DataError(f"{where}: no time column {column!r}; columns: {list(frame.columns)}")
    values = frame[column]
    if not pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_datetime64_any_dtype(values):
        try:
            values = pd.to_datetime(values)
        except (ValueError, TypeError) as exc:
            raise DataError(f"{where}: time column {column!r} holds neither numbers nor dates: {exc}") from None
    if values.isna().any():
        row = int(np.flatnonzero(values.isna().to_numpy())[0])
        raise DataError(f"{where}: time column {column!r} has a missing value in row {frame.index[row]}")
    return np.argsort(values.to_numpy(), kind="stable")


def split_rows(frame: pd.DataFrame, config: TableConfig, where: str) -> dict[str, pd.DataFrame]:
    """train/val/test rows of one table, by time or at random (see the module docstring)."""
    size = len(frame)
    num_test, num_val = int(size * config.test_fraction), int(size * config.val_fraction)
    if config.time_column:
        order = _time_order(frame, config.time_column, where)
        cut_val, cut_test = size - num_test - num_val, size - num_test
        parts = {"train": order[:cut_val], "val": order[cut_val:cut_test], "test": order[cut_test:]}
    else:
        order = np.random.default_rng(config.split_seed).permutation(size)
        parts = {
            "test": order[:num_test],
            "val": order[num_test : num_test + num_val],
            "train": order[num_test + num_val :],
        }
    empty = [name for name in SPLITS if not len(parts[name])]
    if empty:
        raise DataError(
            f"{where}: {size} rows leave no {' and no '.join(empty)} rows with val_fraction {config.val_fraction} "
            f"and test_fraction {config.test_fraction}"
        )
    return {name: frame.iloc[parts[name]] for name in SPLITS}


# --- field inference -----------------------------------------------------------------------------------------------


def infer_fields(frame: pd.DataFrame, config: TableConfig, where: str) -> tuple[FieldConfig, ...]:
    """Field declarations for every column but the label and time columns (rules in the module docstring)."""
    fields = []
    for column in frame.columns:
        name = str(column)
        if name in (config.label, config.time_column):
            continue
        values = frame[column]
        present = values.dropna()
        if present.empty:
            logger.warning("%s: column %r has no values; it is left out", where, name)
            continue
        fields.append(FieldConfig(name=name, type=_inferred_type(name, values, present, config, where)))
    if not fields:
        raise DataError(f"{where}: no feature columns beside the label {config.label!r}")
    return tuple(fields)


def _inferred_type(name: str, values: pd.Series, present: pd.Series, config: TableConfig, where: str) -> str:
    if pd.api.types.is_bool_dtype(values):
        return "sparse"
    if pd.api.types.is_numeric_dtype(values):
        numbers = present.to_numpy(dtype=np.float64)
        whole = pd.api.types.is_integer_dtype(values) or bool(np.all(numbers == np.round(numbers)))
        few = present.nunique() <= config.sparse_max_distinct
        return "sparse" if whole and (few or _ID_NAME.search(name) is not None) else "dense"
    kinds = set(map(type, present.tolist()))
    if kinds & {list, tuple}:
        return "sequence"
    if kinds - {str}:
        raise DataError(f"{where}: column {name!r} mixes value types {sorted(k.__name__ for k in kinds)}")
    _refuse_mixed_text(name, values, present, where)
    return "sequence" if bool(present.str.contains(LIST_SEPARATOR, regex=False).any()) else "sparse"


def _refuse_mixed_text(name: str, values: pd.Series, present: pd.Series, where: str) -> None:
    """DataError for a text column of numbers but a few: most likely a numeric column with stray text."""
    distinct = pd.Series(present.unique())
    parsed = pd.to_numeric(distinct, errors="coerce")
    numeric = int(parsed.notna().sum())
    if numeric and numeric < len(distinct) and numeric >= 0.5 * len(distinct):
        text = distinct[parsed.isna()].iloc[0]
        row = values.index[values.to_numpy() == text][0]
        raise DataError(
            f"{where}: column {name!r} mixes numbers and text (row {row}: {text!r}); fix the data, or declare "
            f"the field in data.fields with type sparse to read it as text"
        )


# --- declared fields -> schema -------------------------------------------------------------------------------------


def _given(field: FieldConfig, key: str) -> bool:
    return bool(getattr(field, key) != _NAME_DEFAULT[key])


def declared_schema(
    fields: tuple[FieldConfig, ...], train: pd.DataFrame, label: str, where: str
) -> tuple[DatasetSchema, dict[str, VocabularyLimits]]:
    """The unfitted schema of declared fields and their vocabulary limits; errors name the field and the key."""
    schema_fields, limits = [], {}
    for field in fields:
        at = f"data.fields[{field.name}]"
        try:
            feature_type = FeatureType(field.type)
        except ValueError:
            raise ConfigError(
                f"{at}: type must be one of {[t.value for t in FeatureType]}, got {field.type!r}"
            ) from None
        source = field.source or field.name
        if source == label:
            raise ConfigError(f"{at}: reads the label column {label!r}")
        if source not in train:
            raise DataError(
                f"{where}: {at} reads column {source!r}, which the data lacks; columns: {list(train.columns)}"
            )
        transform = field.transform or Transform(
            TransformKind.SPLIT if feature_type is FeatureType.SEQUENCE else TransformKind.IDENTITY
        )
        _check_keys(field, feature_type, transform, at)
        max_length = 1
        if feature_type is FeatureType.SEQUENCE:
            max_length = field.max_length or _longest(train[source], transform.separator)
        try:
            schema_fields.append(
                FieldSchema(
                    field.name, feature_type, group=field.group, max_length=max_length,
                    combiner=field.combiner, source=source, transform=transform,
                )
            )  # fmt: skip
        except SchemaError as exc:
            raise ConfigError(f"{at}: {exc}") from None
        if feature_type is not FeatureType.DENSE and transform.kind is not TransformKind.HASH:
            limits[field.name] = VocabularyLimits(field.min_frequency, field.max_vocabulary)
    try:
        return DatasetSchema(schema_fields, label_field=label), limits
    except SchemaError as exc:
        raise ConfigError(f"data.fields: {exc}") from None


def _check_keys(field: FieldConfig, feature_type: FeatureType, transform: Transform, at: str) -> None:
    """ConfigError for a key that does not go with the field's type or transform, or out of range."""
    hashed = transform.kind is TransformKind.HASH
    categorical = feature_type is not FeatureType.DENSE
    for key, goes in (
        ("min_frequency", categorical and not hashed),
        ("max_vocabulary", categorical and not hashed),
        ("max_length", feature_type is FeatureType.SEQUENCE),
        ("combiner", feature_type is FeatureType.SEQUENCE),
    ):
        if not goes and _given(field, key):
            what = (
                "a hashed field (it has no vocabulary)" if hashed and categorical else f"a {feature_type.value} field"
            )
            raise ConfigError(f"{at}: key {key!r} does not go with {what}")
    for key, low in (("min_frequency", 1), ("max_vocabulary", 0), ("embedding_dim", 0), ("max_length", 0)):
        if getattr(field, key) < low:
            raise ConfigError(f"{at}: {key} must be >= {low}, got {getattr(field, key)}")


def _longest(column: pd.Series, separator: str) -> int:
    """The most tokens of one row of a sequence column (lists, or separated strings)."""
    present = column.dropna()
    if present.empty:
        return 1
    if isinstance(present.iloc[0], str):
        return int((present.astype(str).str.count(re.escape(separator)) + 1).max())
    return int(present.str.len().max())


# --- the source ----------------------------------------------------------------------------------------------------


class TableSource:
    """Builds the fitted schema and the train/val/test datasets of a click log (a `DatasetSource`).

    Args:
        config: the table section; after `build`, `config` holds the fields used (inferred if none were given).
    """

    def __init__(self, config: TableConfig) -> None:
        if not config.label:
            raise ConfigError("data.label must name the label column")
        given = [name for name in SPLITS if getattr(config, name)]
        if config.path and given:
            raise ConfigError(f"give data.path or data.train/val/test, not both (path and {given})")
        if not config.path and len(given) < len(SPLITS):
            raise ConfigError("data.path names the click log (or give all of data.train, data.val, data.test)")
        if not config.path and config.time_column:
            raise ConfigError("data.time_column splits data.path; given train/val/test files are split already")
        for name in ("val_fraction", "test_fraction"):
            if not 0 < getattr(config, name) < 1:
                raise ConfigError(f"data.{name} must be between 0 and 1, got {getattr(config, name)}")
        if config.val_fraction + config.test_fraction >= 1:
            raise ConfigError("data.val_fraction + data.test_fraction must leave training rows (sum below 1)")
        self._config = config
        self.files = {name: Path(config.path or getattr(config, name)) for name in SPLITS}
        self.splits: dict[str, pd.DataFrame] = {}
        """Split name -> its raw rows (index: the row in its file)."""

    @property
    def config(self) -> TableConfig:
        """The table section, with the fields used once built."""
        return self._config

    @property
    def name(self) -> str:
        """The log's file name (of the training file for given splits): how an artifact's metadata records it."""
        return self.files["train"].name

    def build(self) -> tuple[DatasetSchema, CTRDataset, CTRDataset, CTRDataset]:
        """Read, split, fit on train, and encode: (schema, train, val, test)."""
        config = self._config
        if config.path:
            frame = read_table(config.path)
            self.splits = split_rows(frame, config, config.path)
        else:
            self.splits = {name: read_table(self.files[name]) for name in SPLITS}
        train = self.splits["train"]
        labels = {name: labels_of(rows, config.label, str(self.files[name])) for name, rows in self.splits.items()}
        fields = config.fields or infer_fields(train, config, str(self.files["train"]))
        if not config.fields:
            logger.info("inferred fields: %s", ", ".join(f"{f.name} ({f.type})" for f in fields))
        self._config = dataclasses.replace(config, fields=fields)
        spec, limits = declared_schema(fields, train, config.label, str(self.files["train"]))
        self.splits = {name: self._numeric(name, rows, spec) for name, rows in self.splits.items()}
        train = self.splits["train"]
        with self._rows_named("train"):
            fitted = fit_schema(spec, train, limits=limits)
        dims = {f.name: f.embedding_dim or embedding_dim_for(fitted.fields[f.name].vocabulary_size) for f in fields}
        self.schema = fitted.with_embedding_dims(dims)
        encoder = FeatureEncoder(self.schema)
        datasets = [self._dataset(name, encoder, labels[name]) for name in SPLITS]
        return self.schema, datasets[0], datasets[1], datasets[2]

    def _numeric(self, split: str, rows: pd.DataFrame, schema: DatasetSchema) -> pd.DataFrame:
        """Rows with the text columns of dense fields parsed as numbers; DataError naming the first that is none.

        A CSV column with one stray word reads as text throughout: this names the word, not the first number.
        """
        parsed = {}
        for field in schema.dense_fields:
            column = rows[field.source]
            if pd.api.types.is_numeric_dtype(column) or field.source in parsed:
                continue
            numbers = pd.to_numeric(column, errors="coerce")
            bad = np.flatnonzero((numbers.isna() & column.notna()).to_numpy())
            if bad.size:
                raise DataError(
                    f"{self.files[split]}: row {rows.index[bad[0]]}: field {field.name!r} needs a number, got "
                    f"{column.iloc[bad[0]]!r}"
                )
            parsed[field.source] = numbers
        return rows.assign(**parsed) if parsed else rows

    def raw_test(self, schema: DatasetSchema) -> CTRDataset:
        """The test split encoded from raw rows with `schema` (e.g. an artifact's). Call after `build`."""
        test = self.splits["test"]
        return self._dataset(
            "test", FeatureEncoder(schema), labels_of(test, schema.label_field, str(self.files["test"]))
        )

    def _dataset(self, split: str, encoder: FeatureEncoder, labels: np.ndarray) -> CTRDataset:
        with self._rows_named(split):
            features = encoder.encode_frame(self.splits[split]).features
        return CTRDataset(to_tensors(compact(features, encoder.schema)), to_tensors({"y": labels})["y"])

    @contextmanager
    def _rows_named(self, split: str) -> Iterator[None]:
        """EncodingError (row counted within the split) as a DataError naming the file and its row."""
        try:
            yield
        except EncodingError as exc:
            rows = self.splits[split].index
            row = f"row {rows[exc.row]}: " if exc.row is not None and exc.row < len(rows) else ""
            raise DataError(f"{self.files[split]}: {row}{exc}") from None


def inferred_config(config: TableConfig) -> TableConfig:
    """The table section with its fields inferred from the data when none are declared (for `deepfm init`)."""
    if config.fields:
        return config
    source = TableSource(config)
    train = read_table(source.files["train"])
    if config.path:
        train = split_rows(train, config, config.path)["train"]
    labels_of(train, config.label, str(source.files["train"]))
    return dataclasses.replace(config, fields=infer_fields(train, config, str(source.files["train"])))

"""A click log as a CTR dataset: a CSV or Parquet file (or a folder of Parquet files) with a 0/1 label.

CSV is read by pandas; Parquet by pyarrow, an optional dependency (`pip install 'deepfm[parquet]'`).

Fields are declared in `data.fields` (`FieldConfig`) or, when none are, inferred from the data:
- the label and the time column are never features;
- a list column (Parquet), or a text column with a value holding "|" -> a sequence split on "|";
- other text and boolean columns -> sparse;
- integer columns (and float columns holding whole numbers only) -> sparse when named like an id (`id`,
  `*_id`, `*Id`, `*ID`) or with at most `sparse_max_distinct` distinct values, dense otherwise;
- other float columns -> dense, standardised;
- sparse and sequence fields keep the values seen at least `min_frequency` times in training (others OOV);
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
import shutil
import sys
import tempfile
import weakref
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd

from deepfm.config import FieldConfig, TableConfig
from deepfm.data.dataset import ColumnFiles, ColumnWriter, CTRDataset, compact
from deepfm.data.encoding import FeatureEncoder
from deepfm.data.fitting import SchemaFitter, VocabularyLimits
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
    """All rows of a CSV file, a Parquet file or a folder of Parquet files (index: the row in the file);
    DataError if absent, unreadable or empty. Large files: `read_blocks`."""
    return pd.concat(list(read_blocks(path, sys.maxsize)))


def read_blocks(
    path: str | Path, block_rows: int, columns: Sequence[str] | None = None, text: Sequence[str] = ()
) -> Iterator[pd.DataFrame]:
    """The rows of a table `block_rows` at a time, indexed by their row in the file (header excluded).

    Args:
        path: a CSV file (tab-separated if .tsv), a Parquet file or a folder of Parquet files.
        block_rows: rows per block (a CSV chunk, a Parquet batch).
        columns: read only these (None: all).
        text: CSV columns read as text in every block (pandas infers each block's types on its own).

    Raises:
        DataError: the file is absent, unreadable, empty or holds no rows.
    """
    source = Path(path)
    if not source.exists():
        raise DataError(f"data file {source} not found")
    parquet = source.is_dir() or source.suffix.lower() in PARQUET_SUFFIXES
    rows = 0
    try:
        blocks = (
            _parquet_blocks(source, block_rows, columns) if parquet else _csv_blocks(source, block_rows, columns, text)
        )
        for block in blocks:
            if len(block):
                rows += len(block)
                yield block
    except pd.errors.EmptyDataError:
        raise DataError(f"data file {source} is empty") from None
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise DataError(f"cannot read {source}: {' '.join(str(exc).split())}") from None
    if not rows:
        raise DataError(f"data file {source} has no rows")


def table_columns(path: str | Path) -> list[str]:
    """The column names of a table (its header, or its Parquet schema); DataError as `read_blocks`."""
    return [str(c) for c in next(read_blocks(path, 1)).columns]


def _separator(path: Path) -> str:
    """Tab for .tsv files (also compressed), comma otherwise."""
    return "\t" if ".tsv" in path.suffixes else ","


def _csv_blocks(
    path: Path, block_rows: int, columns: Sequence[str] | None, text: Sequence[str]
) -> Iterator[pd.DataFrame]:
    types = dict.fromkeys(text, str)
    with pd.read_csv(
        path,
        sep=_separator(path),
        chunksize=block_rows,
        usecols=None if columns is None else list(columns),
        dtype=types or None,
        low_memory=False,
    ) as chunks:
        yield from chunks  # chunks carry the file's row numbers as their index


def _parquet_blocks(path: Path, block_rows: int, columns: Sequence[str] | None) -> Iterator[pd.DataFrame]:
    try:
        import pyarrow as pa  # optional: only Parquet needs it
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError(f"reading Parquet ({path}) needs pyarrow: pip install 'deepfm[parquet]'") from None
    files = sorted(path.glob("*.parquet")) if path.is_dir() else [path]
    if not files:
        raise DataError(f"data folder {path} holds no .parquet files")
    start = 0
    for file in files:
        for batch in pq.ParquetFile(file).iter_batches(batch_size=min(block_rows, 2**31 - 1), columns=columns):
            frame: pd.DataFrame = batch.to_pandas()
            for name, kind in zip(batch.schema.names, batch.schema.types, strict=True):
                if pa.types.is_list(kind) or pa.types.is_large_list(kind):
                    frame[name] = pd.Series(batch.column(name).to_pylist(), dtype=object)  # lists, not arrays
            frame.index = pd.RangeIndex(start, start + len(frame))
            start += len(frame)
            yield frame


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


def time_values(frame: pd.DataFrame, column: str, where: str) -> np.ndarray:
    """The time column as sortable numbers: numbers as they are, text parsed as dates."""
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
    return values.to_numpy()


def split_assignment(size: int, times: np.ndarray | None, config: TableConfig, where: str) -> np.ndarray:
    """The split of each of `size` rows, by time or at random (see the module docstring).

    Args:
        times: (size,) sortable times of the rows, or None for a random split.

    Returns:
        (size,) int8: the position in SPLITS (0 train, 1 val, 2 test) of each row.
    """
    num_test, num_val = int(size * config.test_fraction), int(size * config.val_fraction)
    if times is not None:
        order = np.argsort(times, kind="stable")
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
    assignment = np.empty(size, dtype=np.int8)
    for position, name in enumerate(SPLITS):
        assignment[parts[name]] = position
    return assignment


def split_rows(frame: pd.DataFrame, config: TableConfig, where: str) -> dict[str, pd.DataFrame]:
    """train/val/test rows of one table in memory, in table order (`split_assignment`)."""
    times = time_values(frame, config.time_column, where) if config.time_column else None
    assignment = split_assignment(len(frame), times, config, where)
    return {name: frame[assignment == position] for position, name in enumerate(SPLITS)}


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
        kind = _inferred_type(name, values, present, config, where)
        fields.append(FieldConfig(name=name, type=kind, min_frequency=1 if kind == "dense" else config.min_frequency))
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
    fields: tuple[FieldConfig, ...], columns: Sequence[str], label: str, where: str
) -> tuple[DatasetSchema, dict[str, VocabularyLimits]]:
    """The unfitted schema of declared fields and their vocabulary limits; errors name the field and the key.

    A sequence field without `max_length` gets 1 here: the longest in training is known once it is fitted.
    """
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
        if source not in columns:
            raise DataError(f"{where}: {at} reads column {source!r}, which the data lacks; columns: {list(columns)}")
        transform = field.transform or Transform(
            TransformKind.SPLIT if feature_type is FeatureType.SEQUENCE else TransformKind.IDENTITY
        )
        _check_keys(field, feature_type, transform, at)
        max_length = field.max_length or 1
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

    The log is read `block_rows` rows at a time, in passes, so that memory holds one block and the
    fitted vocabularies, never the whole log:
    1. the label (and time) column alone: labels checked, rows counted, each row's split decided;
       the first block of the training file, whole, is the sample that field inference reads;
    2. the training rows: vocabularies and statistics counted (`SchemaFitter`, block by block);
    3. every row: encoded and appended to its split's column files (`ColumnWriter`) in a fresh folder
       under `cache_dir` (default: the system's temporary folder), removed once the datasets are released
       (at the latest when the process ends). The datasets are `ColumnFiles` over those files.

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
        for name in ("block_rows", "shuffle_block_rows", "shuffle_window_blocks", "min_frequency"):
            if getattr(config, name) < 1:
                raise ConfigError(f"data.{name} must be >= 1, got {getattr(config, name)}")
        self._config = config
        self.files = {name: Path(config.path or getattr(config, name)) for name in SPLITS}
        self._assignment: np.ndarray | None = None  # a split log: each row's position in SPLITS
        self._sizes: dict[str, int] = {}
        self._sample = pd.DataFrame()  # the first block of the training file (its rows until fields are inferred)
        self._text: list[str] = []  # CSV columns that the sample holds as text: read as text in every block
        self._numbers: list[str] = []  # columns that the sample holds as numbers
        self._spec: DatasetSchema | None = None  # the declared fields, unfitted
        self._scratch: _Scratch | None = None

    @property
    def config(self) -> TableConfig:
        """The table section, with the fields used once built."""
        return self._config

    @property
    def name(self) -> str:
        """The log's file name (of the training file for given splits): how an artifact's metadata records it."""
        return self.files["train"].name

    @property
    def splits(self) -> Mapping[str, pd.DataFrame]:
        """Split name -> its raw rows (index: the row in its file), read from the file again at each access.

        For inspection and tests of small logs; empty before `build`.
        """
        return _RawSplits(self) if self._spec is not None else {}

    def build(self) -> tuple[DatasetSchema, CTRDataset, CTRDataset, CTRDataset]:
        """Read, split, fit on train, and encode: (schema, train, val, test)."""
        self._scan()
        config = self._config
        fields = config.fields or self._inferred_fields()
        if not config.fields:
            logger.info("inferred fields: %s", ", ".join(f"{f.name} ({f.type})" for f in fields))
        self._config = config = dataclasses.replace(config, fields=fields)
        self._sample = self._sample.iloc[:0]  # its columns and types are all that is needed from here on
        where = str(self.files["train"])
        spec, limits = declared_schema(fields, list(self._sample.columns), config.label, where)
        self._spec = spec
        fitter = SchemaFitter(spec, limits=limits)
        unsized = [f for f in fields if f.type == FeatureType.SEQUENCE.value and not f.max_length]
        longest = dict.fromkeys((f.name for f in unsized), 1)
        for _, rows in self._blocks(("train",)):
            with _rows_named(where, rows):
                fitter.update(rows)
            for field in unsized:
                schema_field = spec.fields[field.name]
                longest[field.name] = max(
                    longest[field.name], _longest(rows[schema_field.source], schema_field.transform.separator)
                )
        fitted = fitter.fitted()
        fitted = fitted.with_fields(
            dataclasses.replace(f, max_length=longest.get(f.name, f.max_length)) for f in fitted.fields.values()
        )
        dims = {f.name: f.embedding_dim or embedding_dim_for(fitted.fields[f.name].vocabulary_size) for f in fields}
        self.schema = fitted.with_embedding_dims(dims)
        datasets = self._encoded(FeatureEncoder(self.schema), SPLITS, config.label)
        return self.schema, datasets["train"], datasets["val"], datasets["test"]

    def raw_test(self, schema: DatasetSchema) -> CTRDataset:
        """The test split encoded from raw rows with `schema` (e.g. an artifact's). Call after `build`."""
        return self._encoded(FeatureEncoder(schema), ("test",), schema.label_field)["test"]

    # --- passes --------------------------------------------------------------------------------------------------

    def _scan(self) -> None:
        """Pass 1: the labels (and times) of every row, the sample, and each row's split."""
        config = self._config
        self._sample = next(read_blocks(self.files["train"], config.block_rows))
        self._text = [
            str(c)
            for c, kind in self._sample.dtypes.items()
            if pd.api.types.is_object_dtype(kind) or pd.api.types.is_string_dtype(kind)
        ]
        self._numbers = [
            str(c) for c, kind in self._sample.dtypes.items()
            if pd.api.types.is_numeric_dtype(kind) and not pd.api.types.is_bool_dtype(kind)
            and c not in (config.label, config.time_column)
        ]  # fmt: skip
        files = {self.files["train"]} if config.path else set(self.files.values())
        for file in files:
            columns = table_columns(file)
            for column, what in ((config.time_column, "time"), (config.label, "label")):
                if column and column not in columns:
                    raise DataError(f"{file}: no {what} column {column!r}; columns: {columns}")
        wanted = [c for c in (config.label, config.time_column) if c]
        if not config.path:
            for name in SPLITS:
                blocks = read_blocks(self.files[name], config.block_rows, wanted)
                self._sizes[name] = sum(len(labels_of(b, config.label, str(self.files[name]))) for b in blocks)
            return
        where, count, times = config.path, 0, []
        for block in read_blocks(config.path, config.block_rows, wanted):
            count += len(labels_of(block, config.label, where))
            if config.time_column:
                times.append(time_values(block, config.time_column, where))
        self._assignment = split_assignment(count, np.concatenate(times) if times else None, config, where)
        counts = np.bincount(self._assignment, minlength=len(SPLITS))
        self._sizes = {name: int(counts[position]) for position, name in enumerate(SPLITS)}

    def _inferred_fields(self) -> tuple[FieldConfig, ...]:
        """Fields inferred from the sample's training rows (after `_scan`)."""
        sample = self._sample
        if self._assignment is not None:
            sample = sample[self._assignment[: len(sample)] == SPLITS.index("train")]
        return infer_fields(sample, self._config, str(self.files["train"]))

    def _blocks(self, splits: Sequence[str]) -> Iterator[tuple[str, pd.DataFrame]]:
        """(split, its rows of one block), block by block, with the dense fields' text parsed as numbers."""
        config = self._config
        if self._assignment is None:
            for name in splits:
                for block in read_blocks(self.files[name], config.block_rows, text=self._text):
                    yield name, self._parsed(block, str(self.files[name]))
            return
        for block in read_blocks(config.path, config.block_rows, text=self._text):
            block = self._parsed(block, config.path)
            assignment = self._assignment[block.index.to_numpy()]
            for name in splits:
                rows = block[assignment == SPLITS.index(name)]
                if len(rows):
                    yield name, rows

    def _parsed(self, rows: pd.DataFrame, where: str) -> pd.DataFrame:
        """Rows with text parsed as numbers where the field is dense or the sample held numbers; DataError
        naming the first row that holds none.

        A CSV column with one stray word reads as text throughout: this names the word, not the first number.
        """
        if self._spec is None:
            raise RuntimeError("the fields are declared before blocks are read")
        dense = {f.source: f.name for f in self._spec.dense_fields}
        parsed = {}
        for source in dict.fromkeys([*dense, *self._numbers]):
            if source not in rows:
                continue
            column = rows[source]
            if pd.api.types.is_numeric_dtype(column):
                continue
            numbers = pd.to_numeric(column, errors="coerce")
            bad = np.flatnonzero((numbers.isna() & column.notna()).to_numpy())
            if bad.size:
                value = column.iloc[bad[0]]
                if source in dense:
                    raise DataError(
                        f"{where}: row {rows.index[bad[0]]}: field {dense[source]!r} needs a number, got {value!r}"
                    )
                raise DataError(
                    f"{where}: column {source!r} mixes numbers and text (row {rows.index[bad[0]]}: {value!r}, "
                    f"numbers in its first block of rows); fix the data, or declare its field in data.fields"
                )
            parsed[source] = numbers
        return rows.assign(**parsed) if parsed else rows

    def _encoded(self, encoder: FeatureEncoder, splits: Sequence[str], label: str) -> dict[str, CTRDataset]:
        """Pass 3: `splits` encoded into column files of a fresh folder; a `ColumnFiles` dataset each."""
        config = self._config
        self._scratch = self._scratch or _Scratch(config.cache_dir)
        folder = Path(tempfile.mkdtemp(prefix="encoded-", dir=self._scratch.path))
        names = encoder.schema.field_names
        writers = {}
        for name in splits:
            (folder / name).mkdir()
            writers[name] = ColumnWriter(folder / name, names, self._sizes[name])
        for name, rows in self._blocks(splits):
            where = str(self.files[name])
            with _rows_named(where, rows):
                features = encoder.encode_frame(rows).features
            writers[name].append(compact(features, encoder.schema), labels_of(rows, label, where))
        for writer in writers.values():
            writer.close()
        return {
            name: ColumnFiles(
                folder / name, names, config.shuffle_block_rows, config.shuffle_window_blocks, keep=self._scratch
            )
            for name in splits
        }


@contextmanager
def _rows_named(where: str, rows: pd.DataFrame) -> Iterator[None]:
    """EncodingError (row counted within `rows`) as a DataError naming the file and its row."""
    try:
        yield
    except EncodingError as exc:
        row = f"row {rows.index[exc.row]}: " if exc.row is not None and exc.row < len(rows) else ""
        raise DataError(f"{where}: {row}{exc}") from None


class _Scratch:
    """A fresh folder for encoded column files, removed when this object is garbage or the process ends."""

    def __init__(self, parent: str) -> None:
        if parent:
            Path(parent).mkdir(parents=True, exist_ok=True)
        self.path = Path(tempfile.mkdtemp(prefix="deepfm-columns-", dir=parent or None))
        weakref.finalize(self, shutil.rmtree, self.path, ignore_errors=True)


class _RawSplits(Mapping[str, pd.DataFrame]):
    """A built source's raw rows by split, read from the file on access."""

    def __init__(self, source: TableSource) -> None:
        self._source = source

    def __getitem__(self, split: str) -> pd.DataFrame:
        if split not in SPLITS:
            raise KeyError(split)
        return pd.concat([rows for _, rows in self._source._blocks((split,))])

    def __iter__(self) -> Iterator[str]:
        return iter(SPLITS)

    def __len__(self) -> int:
        return len(SPLITS)


def inferred_config(config: TableConfig) -> TableConfig:
    """The table section with its fields inferred from the data when none are declared (for `deepfm init`)."""
    if config.fields:
        return config
    source = TableSource(config)
    source._scan()
    return dataclasses.replace(config, fields=source._inferred_fields())

"""The table source: reading CSV and Parquet, labels, splits, field inference and declared fields."""

from __future__ import annotations

import dataclasses
import gc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from synthetic_data import click_log

from deepfm.config import FieldConfig, TableConfig
from deepfm.data import table as table_module
from deepfm.data.dataset import CTRDataset
from deepfm.data.encoding import FeatureEncoder
from deepfm.data.schema import DatasetSchema, FeatureType, Transform, TransformKind
from deepfm.data.table import TableSource, infer_fields, inferred_config, labels_of, read_table, split_rows
from deepfm.errors import ConfigError, DataError

ROWS = 2_000


@pytest.fixture(scope="module")
def log() -> pd.DataFrame:
    return click_log(ROWS, seed=3)


@pytest.fixture(scope="module")
def csv_path(log: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("table") / "clicks.csv"
    log.to_csv(path, index=False)
    return path


def table(path: Path, **changes: Any) -> TableConfig:
    return TableConfig(path=str(path), label="clicked", **changes)


# --- reading ------------------------------------------------------------------------------------------------------


def test_csv_and_parquet_read_the_same_rows(log: pd.DataFrame, csv_path: Path, tmp_path: Path) -> None:
    log.assign(tags=log["tags"].str.split("|")).to_parquet(tmp_path / "clicks.parquet")
    folder = tmp_path / "parts"
    folder.mkdir()
    for part, rows in enumerate(np.array_split(np.arange(ROWS), 3)):
        log.iloc[rows].to_parquet(folder / f"part-{part}.parquet")

    from_csv = read_table(csv_path)
    from_parquet = read_table(tmp_path / "clicks.parquet")
    from_folder = read_table(folder)

    assert from_parquet["tags"].map(lambda tags: isinstance(tags, list)).all()  # Parquet lists come as Python lists
    assert from_parquet["tags"].map("|".join).tolist() == from_csv["tags"].tolist()
    pd.testing.assert_frame_equal(from_parquet.drop(columns="tags"), from_csv.drop(columns="tags"), check_dtype=False)
    assert from_folder["user"].tolist() == from_csv["user"].tolist()


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "not found"), ("", "is empty"), ("a,b,clicked\n", "has no rows"), ('a,b\n1,"2\n', "cannot read")],
)
def test_unreadable_files_are_data_errors(tmp_path: Path, content: str | None, message: str) -> None:
    path = tmp_path / "log.csv"
    if content is not None:
        path.write_text(content)

    with pytest.raises(DataError, match=message):
        read_table(path)


def test_a_folder_without_parquet_files_is_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"holds no \.parquet files"):
        read_table(tmp_path)


# --- labels and splits --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("values", [[0, 1, 1], [0.0, 1.0, 0.0], [True, False, True]])
def test_labels_are_zero_one_or_booleans(values: list[Any]) -> None:
    labels = labels_of(pd.DataFrame({"y": values}), "y", "log.csv")

    assert labels.dtype == np.float32 and labels.tolist() == [float(v) for v in values]


@pytest.mark.parametrize(
    ("values", "bad"), [([0, 2, 1], "2"), ([0, 1, None], "nan"), (["yes", "no", "no"], "'yes'"), ([0.5, 1, 0], "0.5")]
)
def test_other_labels_name_the_column_row_and_value(values: list[Any], bad: str) -> None:
    frame = pd.DataFrame({"y": values})
    row = next(i for i, v in enumerate(values) if v not in (0, 1) or isinstance(v, str))

    with pytest.raises(DataError, match=rf"log.csv: label column 'y' must hold 0/1 or booleans; row {row} has {bad}"):
        labels_of(frame, "y", "log.csv")


def test_time_split_holds_out_the_latest_rows(log: pd.DataFrame) -> None:
    shuffled = log.sample(frac=1.0, random_state=0)

    splits = split_rows(shuffled, table(Path("x"), time_column="ts"), "x")

    assert [len(splits[s]) for s in ("train", "val", "test")] == [1600, 200, 200]
    assert splits["train"]["ts"].max() <= splits["val"]["ts"].min()
    assert splits["val"]["ts"].max() <= splits["test"]["ts"].min()
    assert sorted(pd.concat(splits.values()).index) == sorted(shuffled.index)


def test_random_split_is_seeded(log: pd.DataFrame) -> None:
    first = split_rows(log, table(Path("x")), "x")
    again = split_rows(log, table(Path("x")), "x")
    other = split_rows(log, table(Path("x"), split_seed=7), "x")

    assert first["test"].index.tolist() == again["test"].index.tolist()
    assert first["test"].index.tolist() != other["test"].index.tolist()
    assert [len(first[s]) for s in ("train", "val", "test")] == [1600, 200, 200]


def test_dates_as_text_order_a_time_split() -> None:
    frame = pd.DataFrame({"when": ["2024-03-01", "2024-01-01", "2024-02-01"] * 10, "y": [0, 1] * 15})

    splits = split_rows(frame, TableConfig(path="x", label="y", time_column="when"), "x")

    assert set(splits["test"]["when"]) == {"2024-03-01"}


def test_too_few_rows_for_the_fractions_is_a_data_error() -> None:
    with pytest.raises(DataError, match="5 rows leave no val and no test rows"):
        split_rows(pd.DataFrame({"y": [0, 1, 0, 1, 0]}), TableConfig(path="x", label="y"), "x")


# --- inference ----------------------------------------------------------------------------------------------------


def test_inferred_field_types(log: pd.DataFrame) -> None:
    frame = log.assign(
        flag=log["hour"] > 12,
        score=np.linspace(0, 1, ROWS),
        whole_floats=(log["hour"] * 1.0).where(log["hour"] != 3),
        counts=np.arange(ROWS) * 7,
        campaignId=np.arange(ROWS),
        empty=np.nan,
    )

    fields = {f.name: f.type for f in infer_fields(frame, table(Path("x"), time_column="ts"), "x")}

    assert fields == {
        "user": "sparse",
        "ad_id": "sparse",
        "device": "sparse",
        "price": "dense",
        "tags": "sequence",
        "hour": "sparse",
        "flag": "sparse",
        "score": "dense",
        "whole_floats": "sparse",  # an int column with missing values reads as floats
        "counts": "dense",  # 2,000 distinct integers, not named like an id
        "campaignId": "sparse",
    }


def test_a_numeric_column_with_stray_text_is_refused_as_mixed() -> None:
    frame = pd.DataFrame({"price": [str(v) for v in range(40)] + ["n/a?"], "y": [0, 1] * 20 + [0]})

    with pytest.raises(DataError, match=r"log.csv: column 'price' mixes numbers and text \(row 40: 'n/a\?'\)"):
        infer_fields(frame, TableConfig(path="x", label="y"), "log.csv")


def test_inferred_config_holds_the_fields(csv_path: Path) -> None:
    config = inferred_config(table(csv_path, time_column="ts"))

    assert [f.name for f in config.fields] == ["user", "ad_id", "device", "price", "tags", "hour"]


def test_data_min_frequency_makes_the_rare_values_of_inferred_fields_oov(log: pd.DataFrame, csv_path: Path) -> None:
    config = inferred_config(table(csv_path, time_column="ts", min_frequency=5))
    schema, train, *_ = TableSource(config).build()

    assert {f.name: f.min_frequency for f in config.fields} == {
        "user": 5, "ad_id": 5, "device": 5, "price": 1, "tags": 5, "hour": 5
    }  # fmt: skip
    counts = log["user"].iloc[: len(train)].value_counts()  # a time split: the first rows train
    vocabulary = schema.fields["user"].vocabulary
    assert vocabulary is not None and set(vocabulary) == set(counts.index[counts >= 5])
    with pytest.raises(ConfigError, match=r"data\.min_frequency must be >= 1, got 0"):
        TableSource(table(csv_path, min_frequency=0))


# --- the source ---------------------------------------------------------------------------------------------------


def test_source_builds_fitted_compact_datasets_from_train_only(csv_path: Path) -> None:
    source = TableSource(table(csv_path, time_column="ts"))

    schema, train, val, test = source.build()

    assert isinstance(source.config, TableConfig) and len(source.config.fields) == 6
    assert (len(train), len(val), len(test)) == (1600, 200, 200)
    assert schema.label_field == "clicked" and schema.fields["tags"].max_length == 3
    assert train.features["user"].dtype == torch.int32  # stored compactly
    batch, labels = next(train.batches(64))
    assert batch["user"].dtype == torch.int64 and labels.dtype == torch.float32
    train_users = set(source.splits["train"]["user"])
    vocabulary = schema.fields["user"].vocabulary
    assert vocabulary is not None and set(vocabulary) == train_users
    unseen = ~source.splits["test"]["user"].isin(train_users).to_numpy()
    assert unseen.any() and (test.features["user"][torch.from_numpy(unseen)] == 0).all()
    for name, values in source.raw_test(schema).features.items():
        assert torch.equal(values.long(), test.features[name].long()), name
    assert source.name == "clicks.csv"


def test_declared_fields_take_every_key(csv_path: Path) -> None:
    fields = (
        FieldConfig("user", min_frequency=2, max_vocabulary=50, embedding_dim=12, group="user"),
        FieldConfig("ad", source="ad_id", transform=Transform(TransformKind.HASH, buckets=64)),
        FieldConfig("price", type="dense", transform=Transform(TransformKind.LOG1P, clip_min=0.0, clip_max=100.0)),
        FieldConfig("tags", type="sequence", max_length=2, combiner="sum"),
    )
    source = TableSource(table(csv_path, fields=fields))

    schema, train, _, _ = source.build()

    user = schema.fields["user"]
    assert user.vocabulary is not None and len(user.vocabulary) == 50 and user.embedding_dim == 12
    counts = source.splits["train"]["user"].value_counts()
    assert set(user.vocabulary) <= set(counts[counts >= 2].index)
    assert schema.fields["ad"].vocabulary_size == 65 and schema.fields["ad"].source == "ad_id"
    assert int(train.features["ad"].max()) <= 64
    assert schema.fields["price"].transform == Transform(TransformKind.LOG1P, clip_min=0.0, clip_max=100.0)
    tags = schema.fields["tags"]
    assert (tags.feature_type, tags.max_length, tags.combiner) == (FeatureType.SEQUENCE, 2, "sum")
    assert train.features["tags"].shape == (1600, 2)
    assert schema.field_names == ["user", "ad", "price", "tags"]


@pytest.mark.parametrize(
    ("field", "message"),
    [
        (FieldConfig("price", type="dense", min_frequency=3), r"data.fields\[price\]: key 'min_frequency' does not go"),
        (FieldConfig("user", max_length=4), r"data.fields\[user\]: key 'max_length' does not go with a sparse field"),
        (FieldConfig("user", combiner="sum"), r"key 'combiner' does not go with a sparse field"),
        (
            FieldConfig("user", transform=Transform(TransformKind.HASH, buckets=9), max_vocabulary=5),
            r"key 'max_vocabulary' does not go with a hashed field",
        ),
        (FieldConfig("price", type="dense", transform=Transform(TransformKind.HASH, buckets=9)), "not hash"),
        (FieldConfig("user", transform=Transform(TransformKind.LOG1P)), "log1p and clipping go with dense fields"),
        (FieldConfig("tags", type="sequence", combiner="median"), "unknown combiner 'median'"),
        (FieldConfig("user", type="categorical"), r"type must be one of \['sparse', 'dense', 'sequence'\]"),
        (FieldConfig("user", min_frequency=0), "min_frequency must be >= 1"),
        (FieldConfig("y", source="clicked"), "reads the label column 'clicked'"),
    ],
)
def test_impossible_declarations_name_the_field_and_key(csv_path: Path, field: FieldConfig, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        TableSource(table(csv_path, fields=(field,))).build()


def test_a_declared_field_absent_from_the_data_names_it(csv_path: Path) -> None:
    with pytest.raises(DataError, match=r"data.fields\[campaign\] reads column 'campaign', which the data lacks"):
        TableSource(table(csv_path, fields=(FieldConfig("campaign"),))).build()


def test_text_in_a_declared_dense_column_names_file_row_and_field(log: pd.DataFrame, tmp_path: Path) -> None:
    path = tmp_path / "mixed.csv"
    log.astype({"price": object}).assign(price=lambda f: f["price"].where(f.index != 1234, "abc")).to_csv(
        path, index=False
    )
    fields = (FieldConfig("price", type="dense"), FieldConfig("user"))

    with pytest.raises(DataError, match=r"mixed.csv: row 1234: field 'price' needs a number, got 'abc'"):
        TableSource(table(path, fields=fields)).build()


def test_given_split_files(log: pd.DataFrame, tmp_path: Path) -> None:
    for name, rows in (("train", slice(0, 1500)), ("val", slice(1500, 1750)), ("test", slice(1750, None))):
        log.iloc[rows].to_csv(tmp_path / f"{name}.csv", index=False)
    paths = {name: str(tmp_path / f"{name}.csv") for name in ("train", "val", "test")}

    schema, train, val, test = TableSource(
        TableConfig(label="clicked", train=paths["train"], val=paths["val"], test=paths["test"])
    ).build()

    assert (len(train), len(val), len(test)) == (1500, 250, 250)
    assert "ts" in schema.fields  # no time column named: it is a feature like any other


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"label": ""}, "data.label must name the label column"),
        ({"train": "t.csv"}, "give data.path or data.train/val/test, not both"),
        ({"path": "", "train": "t.csv"}, r"data.path names the click log \(or give all of"),
        ({"val_fraction": 0.0}, "data.val_fraction must be between 0 and 1"),
        ({"val_fraction": 0.5, "test_fraction": 0.5}, "must leave training rows"),
    ],
)
def test_inconsistent_table_configs_are_config_errors(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        TableSource(dataclasses.replace(table(Path("clicks.csv")), **changes))


def test_the_encoder_of_the_fitted_schema_reads_raw_request_rows(csv_path: Path) -> None:
    schema, *_ = TableSource(table(csv_path)).build()
    rows: dict[str, list[Any]] = {
        "user": ["u1", "never-seen"],
        "ad_id": [5, 99999],
        "device": ["ios", None],
        "price": [3.5, None],
    }

    encoded = FeatureEncoder(schema).encode({**rows, "tags": [["news", "food"], "music|nope"], "hour": [3, 30]}, 2)

    assert encoded.features["user"][1] == 0 and encoded.features["ad_id"][1] == 0
    assert encoded.oov_rows["user"] == 1 and encoded.oov_rows["hour"] == 1


# --- reading in blocks --------------------------------------------------------------------------------------------


def built(config: TableConfig) -> tuple[DatasetSchema, dict[str, CTRDataset], TableConfig]:
    source = TableSource(config)
    schema, train, val, test = source.build()
    return schema, {"train": train, "val": val, "test": test}, source.config


@pytest.mark.parametrize("time_column", ["", "ts"])
@pytest.mark.parametrize("kind", ["csv", "parquet", "folder"])
def test_reading_in_blocks_builds_what_reading_whole_does(
    log: pd.DataFrame, csv_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str, time_column: str
) -> None:
    path = csv_path
    if kind == "parquet":
        path = tmp_path / "clicks.parquet"
        log.assign(tags=log["tags"].str.split("|")).to_parquet(path, row_group_size=300)
    elif kind == "folder":
        path = tmp_path / "parts"
        path.mkdir()
        for part, rows in enumerate(np.array_split(np.arange(ROWS), 3)):
            log.iloc[rows].to_parquet(path / f"part-{part}.parquet")
    whole_schema, whole, inferred = built(table(path, time_column=time_column))  # 2,000 rows: one block
    blocks: list[int] = []
    read = table_module.read_blocks

    def counted(*args: Any, **kwargs: Any) -> Iterator[pd.DataFrame]:
        for block in read(*args, **kwargs):
            blocks.append(len(block))
            yield block

    monkeypatch.setattr(table_module, "read_blocks", counted)
    # the fields inferred from all rows: inference reads the first block alone (300 rows here)
    blocked = table(path, time_column=time_column, fields=inferred.fields, block_rows=300, shuffle_block_rows=128)
    schema, datasets, _ = built(blocked)

    assert max(blocks) <= 300 and sum(blocks) > 3 * ROWS  # every pass in blocks, never the whole file
    for name, field in whole_schema.fields.items():
        other = schema.fields[name]
        assert (other.vocabulary, other.vocabulary_size, other.max_length) == (
            field.vocabulary, field.vocabulary_size, field.max_length,
        ), name  # fmt: skip
        assert other.mean == pytest.approx(field.mean) and other.std == pytest.approx(field.std), name
    for split, dataset in datasets.items():
        assert len(dataset) == len(whole[split]) and torch.equal(dataset.labels, whole[split].labels)
        for name, values in whole[split].features.items():
            assert torch.allclose(dataset.features[name].double(), values.double()), (split, name)


def test_a_split_log_assigns_the_rows_of_reading_it_whole(log: pd.DataFrame, csv_path: Path) -> None:
    for time_column in ("", "ts"):
        config = table(csv_path, time_column=time_column, block_rows=256)
        source = TableSource(config)
        source.build()

        expected = split_rows(read_table(csv_path), config, "x")
        for name in ("train", "val", "test"):
            assert source.splits[name].index.tolist() == expected[name].index.tolist()


def test_a_block_with_text_in_a_column_of_numbers_names_file_row_and_column(log: pd.DataFrame, tmp_path: Path) -> None:
    path = tmp_path / "late.csv"
    log.astype({"hour": object}).assign(hour=lambda f: f["hour"].where(f.index != 1500, "noon")).to_csv(
        path, index=False
    )

    with pytest.raises(DataError, match=r"late.csv: column 'hour' mixes numbers and text \(row 1500: 'noon'"):
        TableSource(table(path, block_rows=500)).build()


def test_the_encoded_files_are_removed_once_the_datasets_are_released(csv_path: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    source = TableSource(table(csv_path, cache_dir=str(cache)))
    _, train, val, test = source.build()
    assert len(list(cache.rglob("*.npy"))) == 3 * 8  # 7 fields (ts too: no time column) and the labels, per split

    del source, train, val, test
    gc.collect()

    assert not list(cache.iterdir())


@pytest.mark.parametrize("key", ["block_rows", "shuffle_block_rows", "shuffle_window_blocks"])
def test_block_sizes_below_one_are_config_errors(csv_path: Path, key: str) -> None:
    with pytest.raises(ConfigError, match=f"data.{key} must be >= 1, got 0"):
        TableSource(table(csv_path, **{key: 0}))


def test_a_text_column_stays_text_in_blocks_that_look_like_numbers(log: pd.DataFrame, tmp_path: Path) -> None:
    path = tmp_path / "codes.csv"
    log.assign(code=[f"x{i % 7}" if i < 500 else f"{i % 7:03d}" for i in range(ROWS)]).to_csv(path, index=False)
    fields = (FieldConfig("code"), FieldConfig("user"))

    schema, *_ = TableSource(table(path, fields=fields, block_rows=400)).build()

    assert set(schema.fields["code"].vocabulary or ()) == {f"x{i}" for i in range(7)} | {f"{i:03d}" for i in range(7)}

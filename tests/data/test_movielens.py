"""MovieLensAdapter on the real MovieLens-100K: schema, leave-one-out split, sampling, one encoding path."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from deepfm.config import MovieLensConfig
from deepfm.data.dataset import CTRDataset, ResampledDataset
from deepfm.data.movielens import AGE_BOUNDARIES, MovieLensAdapter, read_movielens
from deepfm.data.schema import DatasetSchema, FeatureType, TransformKind
from deepfm.errors import ConfigError, DataError

Built = tuple[MovieLensAdapter, tuple[DatasetSchema, CTRDataset, CTRDataset, CTRDataset]]  # `movielens` fixture
NUM_MOVIES = 1682
NUM_USERS = 943
SMALL_USERS = 30
SPLITS = ("train", "val", "test")


def small_config(movielens_dir: Path, **changes: Any) -> MovieLensConfig:
    return replace(MovieLensConfig(), path=str(movielens_dir), max_users=SMALL_USERS, **changes)


@pytest.fixture(scope="module")
def small(movielens_dir: Path) -> Built:
    """`(adapter, (schema, train, val, test))` over the first 30 users: cheap to build again."""
    adapter = MovieLensAdapter(small_config(movielens_dir))
    return adapter, adapter.build()


def targets(adapter: MovieLensAdapter, split: str) -> pd.DataFrame:
    """The held-out ratings of an eval split, with their rating and timestamp."""
    rows = adapter.splits[split]
    return rows[rows["is_target"]].merge(adapter.tables.ratings, on=["user_id", "movie_id"], validate="one_to_one")


def pair_set(frame: pd.DataFrame) -> set[tuple[int, int]]:
    return set(zip(frame["user_id"].tolist(), frame["movie_id"].tolist(), strict=True))


def pair_keys(user_ids: pd.Series | pd.Index | np.ndarray, movie_ids: pd.Series | np.ndarray) -> np.ndarray:
    """One int64 per (user, movie) pair, for vectorised membership tests."""
    return np.asarray(user_ids, dtype=np.int64) * 10_000 + np.asarray(movie_ids, dtype=np.int64)


def decode(adapter: MovieLensAdapter, field: str, indices: torch.Tensor) -> np.ndarray:
    """Raw ids of encoded indices; -1 for the OOV index 0."""
    vocabulary = adapter.schema.fields[field].vocabulary
    assert vocabulary is not None
    table = np.array([-1, *map(int, vocabulary)])
    return table[indices.numpy()]


# --- schema -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "vocabulary_size", "embedding_dim"),
    [
        ("user_id", 944, 16),
        ("movie_id", 1679, 16),
        ("gender", 3, 4),
        ("age", 8, 4),
        ("occupation", 22, 8),
        ("zip_prefix", 383, 8),
        ("genres", 20, 8),
    ],
)
def test_vocabulary_sizes_and_embedding_dims(
    movielens: Built, field: str, vocabulary_size: int, embedding_dim: int
) -> None:
    _, (schema, *_) = movielens

    assert schema.fields[field].vocabulary_size == vocabulary_size
    assert schema.fields[field].embedding_dim == embedding_dim


def test_schema_fields(movielens: Built) -> None:
    _, (schema, *_) = movielens

    assert schema.field_names == ["user_id", "movie_id", "gender", "age", "occupation", "zip_prefix", "genres"]
    assert schema.num_fields == 7
    assert schema.total_embedding_dim == 64
    assert schema.label_field == "label"
    genres = schema.fields["genres"]
    assert (genres.feature_type, genres.max_length, genres.combiner) == (FeatureType.SEQUENCE, 6, "mean")
    assert schema.fields["age"].transform.boundaries == tuple(map(float, AGE_BOUNDARIES))
    zip_prefix = schema.fields["zip_prefix"]
    assert (zip_prefix.source, zip_prefix.transform.kind, zip_prefix.transform.length) == (
        "zip_code",
        TransformKind.PREFIX,
        3,
    )
    assert schema.fields["gender"].vocabulary == ("M", "F")


def test_read_movielens_tables(movielens_dir: Path) -> None:
    tables = read_movielens(movielens_dir)

    assert len(tables.ratings) == 100_000
    assert len(tables.users) == NUM_USERS
    assert len(tables.movies) == NUM_MOVIES
    assert tables.movies.set_index("movie_id").loc[1, "genres"] == ["Animation", "Children's", "Comedy"]
    assert tables.users.set_index("user_id").loc[1, "zip_code"] == "85711"
    assert max(map(len, tables.movies["genres"])) == 6


# --- leave-one-out split ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("split", ["val", "test"])
def test_one_held_out_rating_per_user(movielens: Built, split: str) -> None:
    adapter, _ = movielens

    held_out = targets(adapter, split)

    assert len(held_out) == NUM_USERS
    assert held_out["user_id"].is_unique
    assert held_out["label"].tolist() == (held_out["rating"] >= 4).astype("float32").tolist()


def test_held_out_ratings_are_each_users_latest(movielens: Built) -> None:
    adapter, _ = movielens
    ratings = adapter.tables.ratings
    test = targets(adapter, "test").set_index("user_id")
    val = targets(adapter, "val").set_index("user_id")
    train = adapter.splits["train"]

    latest = ratings.groupby("user_id")["timestamp"].max()
    held_out_test = np.isin(pair_keys(ratings["user_id"], ratings["movie_id"]), pair_keys(test.index, test["movie_id"]))
    without_test = ratings[~held_out_test]
    second_latest = without_test.groupby("user_id")["timestamp"].max()
    latest_train = train.groupby("user_id")["timestamp"].max()

    assert (test["timestamp"] == latest.loc[test.index]).all()
    assert (val["timestamp"] == second_latest.loc[val.index]).all()
    assert (test["timestamp"] >= val["timestamp"]).all()  # equal only for ratings given in the same second
    assert (latest_train.loc[val.index] <= val["timestamp"]).all()


def test_splits_partition_the_ratings(movielens: Built) -> None:
    adapter, _ = movielens
    train = pair_set(adapter.splits["train"])
    val = pair_set(targets(adapter, "val"))
    test = pair_set(targets(adapter, "test"))

    assert not train & val and not train & test and not val & test
    assert train | val | test == pair_set(adapter.tables.ratings)
    assert len(train) == 100_000 - 2 * NUM_USERS


# --- training rows ----------------------------------------------------------------------------------------------


def test_train_rows_are_ratings_plus_negatives(movielens: Built) -> None:
    adapter, (_, train_ds, _, _) = movielens
    train = adapter.splits["train"]
    positives = len(train)

    assert isinstance(train_ds, ResampledDataset)
    assert len(train_ds) == positives * (1 + adapter.config.num_negatives) == 490_570
    assert train_ds.labels[:positives].tolist() == train["label"].tolist()
    assert not train_ds.labels[positives:].any()
    assert train_ds.query_ids is None


def test_train_negatives_were_never_rated_by_their_user(movielens: Built) -> None:
    adapter, (_, train_ds, _, _) = movielens
    train = adapter.splits["train"]
    negatives = slice(len(train), None)

    users = decode(adapter, "user_id", train_ds.features["user_id"][negatives])
    movies = decode(adapter, "movie_id", train_ds.features["movie_id"][negatives])

    assert (users == np.repeat(train["user_id"].to_numpy(), adapter.config.num_negatives)).all()
    known = movies >= 0  # a movie never rated in train has no vocabulary entry (and cannot be decoded)
    assert known.mean() > 0.99
    ratings = adapter.tables.ratings
    rated = pair_keys(ratings["user_id"], ratings["movie_id"])
    assert not np.isin(pair_keys(users[known], movies[known]), rated).any()


def test_train_negatives_are_redrawn_per_epoch_and_reproducible(small: Built, movielens_dir: Path) -> None:
    train_ds = MovieLensAdapter(small_config(movielens_dir)).build()[1]  # our own: resampling mutates it
    assert isinstance(train_ds, ResampledDataset)
    positives = len(small[0].splits["train"])
    epoch0 = {name: values.clone() for name, values in train_ds.features.items()}

    train_ds.resample(1)
    epoch1 = {name: values.clone() for name, values in train_ds.features.items()}
    train_ds.resample(0)

    assert torch.equal(epoch1["movie_id"][:positives], epoch0["movie_id"][:positives])
    assert torch.equal(epoch1["user_id"], epoch0["user_id"])
    # Most negatives differ; some pairs coincide, or are both OOV (30 users' train covers few movies).
    assert (epoch1["movie_id"][positives:] != epoch0["movie_id"][positives:]).float().mean() > 0.5
    for name, values in epoch0.items():
        assert torch.equal(train_ds.features[name], values), name  # the same epoch draws the same rows


def test_sample_seed_changes_train_negatives_but_not_eval_queries(small: Built, movielens_dir: Path) -> None:
    adapter, (_, train_ds, _, _) = small
    other = MovieLensAdapter(small_config(movielens_dir, sample_seed=1))
    _, other_train, _, _ = other.build()
    positives = len(adapter.splits["train"])

    assert torch.equal(other_train.features["movie_id"][:positives], train_ds.features["movie_id"][:positives])
    assert not torch.equal(other_train.features["movie_id"][positives:], train_ds.features["movie_id"][positives:])
    for split in ("val", "test"):  # every model is evaluated on the same rows
        pd.testing.assert_frame_equal(other.splits[split], adapter.splits[split])


# --- evaluation queries -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("split", "full_size", "short_queries"),
    [
        ("val", 100, 0),  # num_val_negatives = 99: validation only steers early stopping
        ("test", 1000, 2),  # num_eval_negatives = 999; two heavy raters have fewer than 999 unrated movies
    ],
)
def test_eval_queries_have_full_size_or_every_unrated_movie(
    movielens: Built, split: str, full_size: int, short_queries: int
) -> None:
    adapter, _ = movielens
    rows = adapter.splits[split]
    rated_count = adapter.tables.ratings.groupby("user_id").size()

    sizes = rows.groupby("query").size()
    users = rows.groupby("query")["user_id"].first()

    expected = np.minimum(full_size, 1 + NUM_MOVIES - rated_count.loc[users].to_numpy())
    assert sizes.tolist() == expected.tolist()
    assert (sizes < full_size).sum() == short_queries
    assert rows.groupby("query")["user_id"].nunique().eq(1).all()


@pytest.mark.parametrize("split", ["val", "test"])
def test_each_query_has_one_target_first_and_unrated_negatives(movielens: Built, split: str) -> None:
    adapter, _ = movielens
    rows = adapter.splits[split]
    ratings = adapter.tables.ratings

    assert rows.groupby("query")["is_target"].sum().eq(1).all()
    assert rows.groupby("query")["is_target"].first().all()  # the target leads its query
    negatives = rows[~rows["is_target"]]
    assert not negatives["label"].any()
    negative_keys = pair_keys(negatives["user_id"], negatives["movie_id"])
    assert not np.isin(negative_keys, pair_keys(ratings["user_id"], ratings["movie_id"])).any()
    assert pd.Index(negative_keys).is_unique  # one query per user: so distinct within each query


@pytest.mark.parametrize("split", ["val", "test"])
def test_eval_datasets_carry_queries_and_targets(movielens: Built, split: str) -> None:
    adapter, (_, *datasets) = movielens
    dataset = dict(zip(SPLITS, datasets, strict=True))[split]
    rows = adapter.splits[split]

    assert len(dataset) == len(rows)
    assert dataset.query_ids is not None and dataset.is_target is not None
    assert dataset.query_ids.tolist() == rows["query"].tolist()
    assert dataset.is_target.tolist() == rows["is_target"].tolist()
    assert dataset.labels.tolist() == rows["label"].tolist()


def test_val_and_test_negatives_are_drawn_independently(movielens: Built) -> None:
    adapter, _ = movielens
    val, test = adapter.splits["val"], adapter.splits["test"]

    first_val = set(val.loc[(val["query"] == 0) & ~val["is_target"], "movie_id"].tolist())
    first_test = set(test.loc[(test["query"] == 0) & ~test["is_target"], "movie_id"].tolist())

    # Independent draws of 99 and 999 of a user's ~1,400 unrated movies practically never nest.
    assert len(first_val) == 99 and len(first_test) == 999
    assert not first_val <= first_test


def test_builds_are_deterministic(small: Built, movielens_dir: Path) -> None:
    adapter, (schema, *datasets) = small
    again = MovieLensAdapter(small_config(movielens_dir))
    schema_again, *datasets_again = again.build()

    assert schema_again == schema
    for name in ("train", "val", "test"):
        pd.testing.assert_frame_equal(again.splits[name], adapter.splits[name])
    for mine, theirs in zip(datasets, datasets_again, strict=True):
        for name, values in mine.features.items():
            assert torch.equal(values, theirs.features[name]), name
        assert torch.equal(mine.labels, theirs.labels)


# --- encoding ---------------------------------------------------------------------------------------------------


def test_encoders_are_fitted_on_train_only(movielens: Built) -> None:
    adapter, (schema, _, _, test_ds) = movielens
    train_movies = set(adapter.splits["train"]["movie_id"].tolist())
    test_rows = adapter.splits["test"]
    held_out_only = sorted(set(test_rows.loc[test_rows["is_target"], "movie_id"].tolist()) - train_movies)

    assert held_out_only == [1525, 1624, 1671]
    vocabulary = schema.fields["movie_id"].vocabulary
    assert vocabulary is not None and len(vocabulary) == len(train_movies)
    assert not {str(m) for m in held_out_only} & set(vocabulary)
    rows = np.flatnonzero(test_rows["is_target"] & test_rows["movie_id"].isin(held_out_only))
    assert test_ds.features["movie_id"][rows].tolist() == [0, 0, 0]


@pytest.mark.parametrize(("split", "step"), [("train", 7), ("val", 53), ("test", 47)])
def test_dataset_features_equal_encoding_the_raw_rows(movielens: Built, split: str, step: int) -> None:
    adapter, (_, *datasets) = movielens
    dataset = dict(zip(SPLITS, datasets, strict=True))[split]
    rows = np.arange(0, len(adapter.splits[split]), step)  # ~14-20k rows of each split

    raw = adapter.raw_rows(adapter.splits[split].iloc[rows].reset_index(drop=True))
    encoded = adapter.encoder.encode_frame(raw)

    assert list(encoded.features) == list(dataset.features)
    for name, values in encoded.features.items():
        assert torch.equal(dataset.features[name][rows], torch.from_numpy(values)), name


# --- other protocols and slices ---------------------------------------------------------------------------------


def test_max_users_keeps_only_the_first_users(small: Built) -> None:
    adapter, _ = small

    assert adapter.tables.ratings["user_id"].max() == SMALL_USERS
    assert adapter.schema.fields["user_id"].vocabulary_size == SMALL_USERS + 1
    for split in ("train", "val", "test"):
        assert adapter.splits[split]["user_id"].between(1, SMALL_USERS).all()
    assert adapter.splits["val"]["query"].nunique() == SMALL_USERS
    assert len(adapter.tables.users) == NUM_USERS  # attribute tables stay whole


def test_random_split_is_80_10_10_without_negatives(movielens_dir: Path) -> None:
    adapter = MovieLensAdapter(small_config(movielens_dir, protocol="random_split"))
    ratings = adapter.tables.ratings
    _, train_ds, val_ds, test_ds = adapter.build()

    n = len(ratings)
    assert (len(val_ds), len(test_ds)) == (n // 10, n // 10)
    assert len(train_ds) == n - 2 * (n // 10)
    assert not isinstance(train_ds, ResampledDataset) and train_ds.query_ids is None
    splits = [pair_set(adapter.splits[s]) for s in ("train", "val", "test")]
    assert set().union(*splits) == pair_set(ratings)
    assert sum(map(len, splits)) == n
    assert train_ds.labels.tolist() == (adapter.splits["train"]["rating"] >= 4).astype("float32").tolist()


def test_unknown_protocol_is_a_config_error(movielens_dir: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown data\.protocol 'kfold'"):
        MovieLensAdapter(small_config(movielens_dir, protocol="kfold"))


# --- missing or malformed data ----------------------------------------------------------------------------------


def test_missing_directory_says_how_to_download(tmp_path: Path) -> None:
    absent = tmp_path / "nowhere"

    with pytest.raises(DataError) as info:
        MovieLensAdapter(MovieLensConfig(path=str(absent)))

    message = str(info.value)
    assert str(absent) in message
    assert "https://grouplens.org/datasets/movielens/100k/" in message
    assert "DEEPFM_DATA_DIR" in message


@pytest.mark.parametrize("missing", ["u.data", "u.user", "u.genre", "u.item"])
def test_missing_file_is_named(tmp_path: Path, movielens_dir: Path, missing: str) -> None:
    for name in ("u.data", "u.user", "u.genre", "u.item"):
        if name != missing:
            (tmp_path / name).symlink_to(movielens_dir / name)

    with pytest.raises(DataError, match=f"{missing} not found: download a MovieLens zip"):
        read_movielens(tmp_path)


def test_malformed_file_is_a_data_error(tmp_path: Path, movielens_dir: Path) -> None:
    for name in ("u.user", "u.genre", "u.item"):
        shutil.copy(movielens_dir / name, tmp_path / name)
    (tmp_path / "u.data").write_text("1\t2\tthree\t4\n")

    with pytest.raises(DataError, match="malformed"):
        read_movielens(tmp_path)

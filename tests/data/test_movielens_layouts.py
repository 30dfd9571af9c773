"""The MovieLens family: ML-1M, ML-10M and ML-20M/25M/32M layouts, detected from the files, on tiny folders of
GroupLens's layouts written by the test."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from synthetic_data import write_movielens

from deepfm.config import MovieLensConfig
from deepfm.data.dataset import ResampledDataset
from deepfm.data.movielens import MovieLensAdapter, detect_layout, read_movielens
from deepfm.errors import DataError

NUM_USERS, NUM_MOVIES, PER_USER = 40, 50, 12
ALL_FIELDS = ["user_id", "movie_id", "gender", "age", "occupation", "zip_prefix", "genres"]


@pytest.fixture(scope="module", params=["ml-1m", "ml-10m", "ml-20m"])
def folder(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    layout = str(request.param)
    root = write_movielens(tmp_path_factory.mktemp(layout) / layout, layout, NUM_USERS, NUM_MOVIES, PER_USER)
    return layout, root


def test_layout_is_told_by_the_files(folder: tuple[str, Path], movielens_dir: Path) -> None:
    layout, root = folder

    assert detect_layout(root) == layout
    assert detect_layout(movielens_dir) == "ml-100k"


def test_tables_hold_every_rating_user_and_movie(folder: tuple[str, Path]) -> None:
    layout, root = folder

    tables = read_movielens(root)

    assert tables.layout == layout
    assert len(tables.ratings) == NUM_USERS * PER_USER
    assert list(tables.ratings.columns) == ["user_id", "movie_id", "rating", "timestamp"]
    assert tables.ratings["user_id"].nunique() == len(tables.users) == NUM_USERS
    assert len(tables.movies) == NUM_MOVIES
    assert all(isinstance(g, list) for g in tables.movies["genres"])
    assert tables.has_user_attributes == (layout == "ml-1m")
    if layout == "ml-1m":
        assert tables.users["zip_code"].map(lambda zip_code: isinstance(zip_code, str)).all()
        assert set(tables.users["age"]) <= {1, 18, 25, 35, 45, 50, 56}
    if layout == "ml-20m":
        assert tables.movies.set_index("movie_id").loc[NUM_MOVIES, "genres"] == []  # "(no genres listed)"
    if layout != "ml-1m":
        assert (tables.ratings["rating"] % 1 == 0.5).any()  # half stars


def test_leave_one_out_on_every_layout(folder: tuple[str, Path]) -> None:
    layout, root = folder
    adapter = MovieLensAdapter(MovieLensConfig(path=str(root), num_eval_negatives=20, num_val_negatives=10))

    schema, train, val, test = adapter.build()

    expected = ALL_FIELDS if layout == "ml-1m" else ["user_id", "movie_id", "genres"]
    assert schema.field_names == expected
    assert isinstance(train, ResampledDataset)
    assert len(train) == (NUM_USERS * PER_USER - 2 * NUM_USERS) * 5
    for split, dataset in (("val", val), ("test", test)):
        rows = adapter.splits[split]
        assert rows["query"].nunique() == NUM_USERS
        assert rows.groupby("query")["is_target"].sum().eq(1).all()
        assert dataset.query_ids is not None and len(dataset) == len(rows)
    ratings = adapter.tables.ratings
    targets = adapter.splits["test"][adapter.splits["test"]["is_target"]].merge(ratings, on=["user_id", "movie_id"])
    np.testing.assert_array_equal(targets["label"], (targets["rating"] >= 4).astype("float32"))
    assert adapter.name == layout
    assert (adapter.raw_test(schema).features["movie_id"] == test.features["movie_id"]).all()


def test_a_rated_movie_missing_from_the_movies_file_gets_no_genres(tmp_path: Path) -> None:
    root = write_movielens(tmp_path / "ml-20m", "ml-20m", 10, 20, 5)
    movies = (root / "movies.csv").read_text().splitlines()
    (root / "movies.csv").write_text("\n".join(movies[:-3]) + "\n")  # the last three movies are unlisted

    tables = read_movielens(root)

    assert len(tables.movies) == 20
    unlisted = tables.movies[tables.movies["movie_id"] > 17]
    assert unlisted["genres"].map(len).eq(0).all()


def test_malformed_ratings_dat_is_a_data_error(tmp_path: Path) -> None:
    root = write_movielens(tmp_path / "ml-1m", "ml-1m", 5, 10, 3)
    (root / "ratings.dat").write_text("1::2::3\n")

    with pytest.raises(DataError, match="malformed"):
        read_movielens(root)


def test_a_folder_without_ratings_names_the_files_it_looks_for(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"no MovieLens ratings file \(u.data, ratings.dat or ratings.csv\)"):
        read_movielens(tmp_path)

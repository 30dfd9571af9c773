"""Synthetic MovieLens-like raw rows for tests and benchmarks (the real data is not needed to exercise code).

The rows carry a click label that depends on gender, age and genres, so that a trained model's
scores differ from row to row.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class MovieLensShape:
    """The value ranges of synthetic rows: ids from 1, ages and zip codes in [low, high)."""

    users: int
    movies: int
    ages: tuple[int, int]
    zips: tuple[int, int]
    occupations: tuple[str, ...]
    genres: tuple[str, ...]  # the label favours the second and disfavours the third


SMALL = MovieLensShape(
    users=59,
    movies=79,
    ages=(7, 70),
    zips=(10000, 10900),
    occupations=("writer", "student", "engineer", "artist", "other"),
    genres=("Comedy", "Drama", "Action", "Thriller", "Romance", "Crime"),
)
"""A tiny model's data: small vocabularies, quick to fit and train."""

MOVIELENS_100K = MovieLensShape(
    users=943,
    movies=1682,
    ages=(7, 74),
    zips=(0, 99999),
    occupations=tuple(f"occupation{i}" for i in range(21)),
    genres=tuple(f"genre{i}" for i in range(19)),
)
"""MovieLens-100K's cardinalities: a model of the real one's size."""


def movielens_rows(num_rows: int, seed: int = 0, shape: MovieLensShape = SMALL) -> pd.DataFrame:
    """Raw request-style rows (genres `|`-separated) with a `label` column of clicks."""
    rng = np.random.default_rng(seed)
    gender = rng.choice(["M", "F"], num_rows)
    age = rng.integers(*shape.ages, num_rows)
    genres = [list(rng.choice(shape.genres, int(rng.integers(1, 4)), replace=False)) for _ in range(num_rows)]
    liked, disliked = shape.genres[1], shape.genres[2]
    logit = (gender == "F") * 1.5 - (age > 40) + np.array([(liked in g) * 1.0 - (disliked in g) for g in genres])
    return pd.DataFrame(
        {
            "user_id": rng.integers(1, shape.users + 1, num_rows),
            "movie_id": rng.integers(1, shape.movies + 1, num_rows),
            "gender": gender,
            "age": age,
            "occupation": rng.choice(shape.occupations, num_rows),
            "zip_code": [f"{z:05d}" for z in rng.integers(*shape.zips, num_rows)],
            "genres": ["|".join(g) for g in genres],
            "label": (rng.random(num_rows) < 1 / (1 + np.exp(-logit))).astype(np.float32),
        }
    )


def write_movielens_100k_layout(folder: str | Path, users: int, movies: int, ratings: int, seed: int = 0) -> Path:
    """A GroupLens ml-100k folder (u.data, u.user, u.item, u.genre) of about `ratings` ratings: users'
    activity log-normal, movies' popularity Zipf-like (a long tail), ratings higher for a user's liked genre.
    Each (user, movie) pair is rated at most once."""
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    genres = MOVIELENS_100K.genres
    activity = rng.lognormal(0.0, 1.0, users)
    popularity = 1.0 / np.arange(1, movies + 1) ** 0.9
    if ratings > users * movies // 2:
        raise ValueError(f"{ratings} ratings over {users} users x {movies} movies: too dense to draw")
    order = rng.permutation(movies)  # which movie ids are popular
    keys = np.zeros(0, dtype=np.int64)
    while len(keys) < ratings:  # rounds of draws; pairs drawn twice count once
        need = int((ratings - len(keys)) * 1.3) + 16
        user = rng.choice(users, need, p=activity / activity.sum()) + 1
        movie = order[rng.choice(movies, need, p=popularity / popularity.sum())] + 1
        keys = np.unique(np.concatenate([keys, user.astype(np.int64) * (movies + 1) + movie]))
    user, movie = np.sort(rng.choice(keys, ratings, replace=False)).__divmod__(movies + 1)
    movie_genres = rng.random((movies, len(genres))) < 0.12
    movie_genres[np.arange(movies), rng.integers(0, len(genres), movies)] = True  # at least one genre each
    liked = rng.integers(0, len(genres), users)
    mean = 3.0 + 1.2 * movie_genres[movie - 1, liked[user - 1]]
    stars = np.clip(np.rint(rng.normal(mean, 1.0)), 1, 5).astype(np.int64)
    stamps = 874_724_710 + rng.integers(0, 20_000_000, len(user))
    pd.DataFrame({"u": user, "m": movie, "r": stars, "t": stamps}).to_csv(
        out / "u.data", sep="\t", header=False, index=False
    )
    pd.DataFrame(
        {
            "user_id": np.arange(1, users + 1),
            "age": rng.integers(*MOVIELENS_100K.ages, users),
            "gender": rng.choice(["M", "F"], users),
            "occupation": rng.choice(MOVIELENS_100K.occupations, users),
            "zip_code": pd.Series(rng.integers(0, 99_999, users)).map("{:05d}".format),
        }
    ).to_csv(out / "u.user", sep="|", header=False, index=False)
    items = pd.DataFrame({"movie_id": np.arange(1, movies + 1), "title": "Movie", "release": "01-Jan-1995"})
    items = items.assign(video="", url="", **{name: movie_genres[:, i].astype(int) for i, name in enumerate(genres)})
    items.to_csv(out / "u.item", sep="|", header=False, index=False, encoding="latin-1")
    pd.DataFrame({"genre": genres, "index": range(len(genres))}).to_csv(
        out / "u.genre", sep="|", header=False, index=False
    )
    return out


CRITEO_CARDINALITIES = (
    1_460, 583, 2_000_000, 305, 24, 12_517, 633, 3, 93_145, 5_683, 8_351_593, 3_194, 27, 14_992,
    5_461_306, 10, 5_652, 2_173, 4, 7_046_547, 18, 15, 286_181, 105, 142_572, 400,
)  # fmt: skip
"""Distinct ids that each of C1..C26 may draw (Criteo Kaggle's cardinalities, C3 raised to 2M)."""


def criteo_rows(num_rows: int, seed: int = 0) -> pd.DataFrame:
    """Criteo-shaped click rows: `label`, integer counts I1..I13 (long tails, ~20% missing) and categorical
    C1..C26 as 8-digit hex strings with Zipf-distributed ids (C3, C11, C15 and C20 reach millions of values
    at 10M rows). The label depends on I1, I2, C1 and C2, so that a model has something to learn.
    """
    rng = np.random.default_rng(seed)
    columns: dict[str, np.ndarray] = {}
    for i in range(1, 14):
        counts = np.floor(rng.lognormal(mean=1.0 + i % 4, sigma=1.5, size=num_rows)).astype(np.float64)
        counts[rng.random(num_rows) < 0.2] = np.nan
        columns[f"I{i}"] = counts
    ids = {}
    for i, cardinality in enumerate(CRITEO_CARDINALITIES, start=1):
        # Zipf head plus a uniform tail, so that big fields hold many rare ids as real logs do
        zipf = (rng.zipf(1.2, num_rows) - 1) % cardinality
        tail = rng.integers(0, cardinality, num_rows)
        ids[i] = np.where(rng.random(num_rows) < 0.5, zipf, tail)
        hashed = (ids[i].astype(np.uint64) * np.uint64(2_654_435_761) + np.uint64(i * 97)) & np.uint64(0xFFFFFFFF)
        distinct, inverse = np.unique(hashed, return_inverse=True)
        text = np.array([f"{value:08x}" for value in distinct.tolist()], dtype=object)[inverse]
        text[rng.random(num_rows) < 0.04 * (i % 3)] = None  # some fields have missing values
        columns[f"C{i}"] = text
    logit = (
        -1.5 + 0.25 * np.nan_to_num(np.log1p(columns["I1"])) - 0.15 * np.nan_to_num(np.log1p(columns["I2"]))
        + 0.8 * (ids[1] % 5 == 0) - 0.6 * (ids[2] % 3 == 0) + 0.5 * ((ids[1] + ids[2]) % 4 == 0)
    )  # fmt: skip
    label = (rng.random(num_rows) < 1 / (1 + np.exp(-logit))).astype(np.int8)
    return pd.DataFrame({"label": label, **columns})


def write_criteo(path: str | Path, num_rows: int, seed: int = 0, chunk_rows: int = 500_000) -> Path:
    """Write `criteo_rows` as CSV or Parquet (by suffix), chunk by chunk so that memory stays one chunk's."""
    out = Path(path)
    parquet = out.suffix in (".parquet", ".pq")
    writer = None
    for number, start in enumerate(range(0, num_rows, chunk_rows)):
        rows = criteo_rows(min(chunk_rows, num_rows - start), seed=seed * 1_000_003 + number)
        if parquet:
            import pyarrow as pa
            import pyarrow.parquet as pq

            table = pa.Table.from_pandas(rows, preserve_index=False)
            writer = writer or pq.ParquetWriter(out, table.schema)
            writer.write_table(table)
        else:
            rows.to_csv(out, mode="w" if number == 0 else "a", header=number == 0, index=False)
    if writer is not None:
        writer.close()
    return out

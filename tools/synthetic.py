"""Synthetic MovieLens-like raw rows for tests and benchmarks (the real data is not needed to exercise code).

The rows carry a click label that depends on gender, age and genres, so that a trained model's
scores differ from row to row.
"""

from __future__ import annotations

from dataclasses import dataclass

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

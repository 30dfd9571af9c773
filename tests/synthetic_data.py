"""Synthetic data for tests of the data sources: a click log and tiny MovieLens folders in GroupLens's layouts.

Both carry a pattern only an interaction of two fields explains, so that a factorization model beats
logistic regression on them: in the click log, clicks depend on (device, ad_category) pairs whose
marginals are flat; in MovieLens, each user favours the genre of their (gender, age) group (users
without attributes: of their id), and rates it high.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

DEVICES = ["ios", "android", "web", "tv"]
TAGS = ["news", "sport", "music", "games", "travel", "food"]
GENRES = ["Action", "Comedy", "Drama", "Horror", "Romance", "Sci-Fi"]
AGE_CODES = [1, 18, 25, 35, 45, 50, 56]  # ML-1M's age codes
ZIPS = ["85711", "94043", "32067", "55105", "02138", "T8H1N"]


def click_log(num_rows: int, seed: int = 0, first_user: int = 0) -> pd.DataFrame:
    """Ad impressions: string user ids, int ad ids, a float price, a `|`-list of tags, an hour, a time, a label.

    Args:
        num_rows: rows.
        seed: the generator's seed.
        first_user: user ids start here (Zipf-distributed above it), so a later block can hold unseen users.
    """
    rng = np.random.default_rng(seed)
    device = rng.integers(0, len(DEVICES), num_rows)
    category = rng.integers(0, len(DEVICES), num_rows)
    price = rng.lognormal(2.0, 1.0, num_rows)
    tags = ["|".join(rng.choice(TAGS, int(k), replace=False)) for k in rng.integers(1, 4, num_rows)]
    logit = np.where(device == category, 1.5, -1.5) + 0.3 * (np.log(price) - 2.0)
    return pd.DataFrame(
        {
            "user": [f"u{first_user + int(z)}" for z in rng.zipf(1.3, num_rows) % 5000],
            "ad_id": 100 * category + rng.integers(0, 40, num_rows),
            "device": np.array(DEVICES, dtype=object)[device],
            "price": price.round(2),
            "tags": tags,
            "hour": rng.integers(0, 24, num_rows),
            "ts": 1_700_000_000 + np.sort(rng.integers(0, 30 * 86_400, num_rows)),
            "clicked": (rng.random(num_rows) < 1 / (1 + np.exp(-logit))).astype(np.int64),
        }
    )


def _ratings(
    num_users: int, num_movies: int, per_user: int, user_genre: np.ndarray, rng: np.random.Generator
) -> tuple[pd.DataFrame, list[list[str]]]:
    """Ratings favouring each user's genre, and each movie's genres."""
    movie_genres = [sorted(set(rng.choice(GENRES, int(k), replace=False))) for k in rng.integers(1, 3, num_movies)]
    rows = []
    for user in range(num_users):
        liked = [m for m, g in enumerate(movie_genres) if GENRES[user_genre[user]] in g]
        others = [m for m in range(num_movies) if m not in set(liked)]
        take_liked = min(len(liked), int(per_user * 0.7))
        chosen = [
            *rng.choice(liked, take_liked, replace=False),
            *rng.choice(others, per_user - take_liked, replace=False),
        ]
        for movie in chosen:
            good = GENRES[user_genre[user]] in movie_genres[movie]
            rating = int(rng.integers(4, 6)) if good and rng.random() < 0.85 else int(rng.integers(1, 4))
            rows.append((user + 1, int(movie) + 1, rating))
    ratings = pd.DataFrame(rows, columns=["user_id", "movie_id", "rating"])
    ratings = ratings.iloc[rng.permutation(len(ratings))].reset_index(drop=True)
    ratings["timestamp"] = 978_300_000 + np.arange(len(ratings)) * 17
    return ratings, movie_genres


def write_movielens(
    root: Path, layout: str, num_users: int = 150, num_movies: int = 90, per_user: int = 30, seed: int = 0
) -> Path:
    """A tiny MovieLens folder in GroupLens's `layout` (ml-1m, ml-10m or ml-20m, the ml-20m/25m/32m format)."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    gender = rng.choice(["M", "F"], num_users)
    age = rng.choice(AGE_CODES, num_users)
    if layout == "ml-1m":
        user_genre = (np.searchsorted(AGE_CODES, age) + 3 * (gender == "F")) % len(GENRES)
    else:
        user_genre = np.arange(num_users) % len(GENRES)
    ratings, movie_genres = _ratings(num_users, num_movies, per_user, user_genre, rng)
    titles = [f"Movie {m + 1}, The ({1950 + m % 60})" for m in range(num_movies)]
    genres = ["|".join(g) for g in movie_genres]
    if layout == "ml-20m":
        genres[-1] = "(no genres listed)"
        ratings.rename(columns={"user_id": "userId", "movie_id": "movieId"}).assign(
            rating=ratings["rating"] - rng.choice([0.0, 0.5], len(ratings))
        ).to_csv(root / "ratings.csv", index=False)
        pd.DataFrame({"movieId": np.arange(1, num_movies + 1), "title": titles, "genres": genres}).to_csv(
            root / "movies.csv", index=False
        )
        return root
    stars = ratings["rating"] - (rng.choice([0.0, 0.5], len(ratings)) if layout == "ml-10m" else 0)
    lines = [
        f"{u}::{m}::{r:g}::{t}"
        for u, m, r, t in zip(ratings["user_id"], ratings["movie_id"], stars, ratings["timestamp"], strict=True)
    ]
    (root / "ratings.dat").write_text("\n".join(lines) + "\n")
    movies = [f"{m + 1}::{titles[m]}::{genres[m]}" for m in range(num_movies)]
    (root / "movies.dat").write_text("\n".join(movies) + "\n", encoding="latin-1")
    if layout == "ml-1m":
        users = [
            f"{u + 1}::{gender[u]}::{age[u]}::{int(rng.integers(0, 21))}::{rng.choice(ZIPS)}" for u in range(num_users)
        ]
        (root / "users.dat").write_text("\n".join(users) + "\n")
    return root

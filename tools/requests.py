"""Request rows for a MovieLens-100K model, as a client sends them (raw values)."""

from __future__ import annotations

from typing import Any

MOVIELENS_INSTANCES: list[dict[str, Any]] = [
    {
        "user_id": 196,
        "movie_id": 242,
        "gender": "M",
        "age": 24,
        "occupation": "writer",
        "zip_code": "85711",
        "genres": ["Comedy", "Drama"],
    },
    {
        "user_id": 186,
        "movie_id": 302,
        "gender": "F",
        "age": 39,
        "occupation": "executive",
        "zip_code": "00000",
        "genres": ["Crime", "Film-Noir", "Mystery", "Thriller"],
    },
    {
        "user_id": 22,
        "movie_id": 377,
        "gender": "M",
        "age": 25,
        "occupation": "writer",
        "zip_code": "40206",
        "genres": ["Children's", "Comedy"],
    },
    {  # unknown ids and values: scored through the OOV index
        "user_id": 99999,
        "movie_id": 99999,
        "gender": "M",
        "age": 70,
        "occupation": "astronaut",
        "zip_code": "99999",
        "genres": ["Western"],
    },
]

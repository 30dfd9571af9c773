"""The MovieLens family (Harper & Konstan, ACM TiiS 2015) in GroupLens's own formats, as CTR datasets.

The layout is told by the files in the folder:

    layout   files                                          datasets         fields
    ml-100k  u.data, u.user, u.item, u.genre                ml-100k          all seven
    ml-1m    ratings.dat, users.dat, movies.dat (`::`)      ml-1m            all seven
    ml-10m   ratings.dat, movies.dat (`::`)                 ml-10m           user_id, movie_id, genres
    ml-20m   ratings.csv, movies.csv                        ml-20m/25m/32m   user_id, movie_id, genres

The seven fields: user_id, movie_id, gender, age (bucketed; ML-1M's age codes are the bucket starts),
occupation (a name in ML-100K, a code in ML-1M), zip_prefix (first 3 characters of zip_code) and genres
(a sequence; ML-20M's "(no genres listed)" is an empty one). Label: rating >= `label_threshold`. Encoders
are fitted on the training split only. Two protocols:

- leave_one_out: per user by timestamp, the last rating is the test query and the second-to-last
  the validation query (users with fewer than 3 ratings train only). Training rows are every train
  rating plus `num_negatives` unrated movies per rating (label 0), drawn anew each epoch. Each
  held-out test rating is ranked against `num_eval_negatives` unrated movies drawn once with
  `eval_seed` (`num_val_negatives` for validation, which only steers early stopping: fewer is faster).
- random_split: explicit ratings only, shuffled with `split_seed` into train/val/test.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from deepfm.config import MovieLensConfig
from deepfm.data.dataset import CTRDataset, ResampledDataset, compact, to_tensors
from deepfm.data.encoding import FeatureEncoder
from deepfm.data.fitting import SchemaFitter
from deepfm.data.schema import DatasetSchema, FeatureType, FieldSchema, Transform, TransformKind, embedding_dim_for
from deepfm.errors import ConfigError, DataError

DOWNLOAD_HINT = (
    "download a MovieLens zip (ml-100k.zip from https://grouplens.org/datasets/movielens/100k/, or ml-1m, "
    "ml-10m, ml-20m, ml-25m, ml-32m from https://grouplens.org/datasets/movielens/), unzip it, and point "
    "data.path (or the DEEPFM_DATA_DIR environment variable, or --data) at its folder"
)
AGE_BOUNDARIES = (1, 18, 25, 35, 45, 50, 56)
USER_COLUMNS = ["user_id", "age", "gender", "occupation", "zip_code"]
RATING_COLUMNS = ["user_id", "movie_id", "rating", "timestamp"]
LABEL = "label"
PROTOCOLS = ("leave_one_out", "random_split")
LAYOUTS = ("ml-100k", "ml-1m", "ml-10m", "ml-20m")
NO_GENRES = "(no genres listed)"  # ML-20M and later
FIT_BLOCK_ROWS = 1_000_000  # training ratings whose raw rows are made at once when fitting the schema


def movielens_schema(genres_max_length: int = 6, user_attributes: bool = True) -> DatasetSchema:
    """The unfitted MovieLens schema: fields, sources and transforms (dims are set after fitting).

    Args:
        genres_max_length: genre tokens kept per movie.
        user_attributes: whether the layout has gender, age, occupation and zip code (ML-100K, ML-1M).
    """
    user, item = "user", "item"
    attributes = [
        FieldSchema("gender", FeatureType.SPARSE, group=user),
        FieldSchema(
            "age", FeatureType.SPARSE, group=user, transform=Transform(TransformKind.BUCKETIZE, AGE_BOUNDARIES)
        ),
        FieldSchema("occupation", FeatureType.SPARSE, group=user),
        FieldSchema(
            "zip_prefix",
            FeatureType.SPARSE,
            group=user,
            source="zip_code",
            transform=Transform(TransformKind.PREFIX, length=3),
        ),
    ]
    return DatasetSchema(
        [
            FieldSchema("user_id", FeatureType.SPARSE, group=user),
            FieldSchema("movie_id", FeatureType.SPARSE, group=item),
            *(attributes if user_attributes else []),
            FieldSchema(
                "genres",
                FeatureType.SEQUENCE,
                group=item,
                max_length=genres_max_length,
                combiner="mean",
                transform=Transform(TransformKind.SPLIT, separator="|"),
            ),
        ],
        label_field=LABEL,
    )


@dataclass(frozen=True)
class MovieLensTables:
    """The raw tables: ratings (user_id, movie_id, rating, timestamp), users and movies by id."""

    ratings: pd.DataFrame
    users: pd.DataFrame  # USER_COLUMNS (ml-100k, ml-1m) or user_id alone, one row per user
    movies: pd.DataFrame  # movie_id, genres as lists of names; every rated movie has a row
    layout: str = "ml-100k"  # one of LAYOUTS

    @property
    def has_user_attributes(self) -> bool:
        """Whether users have gender, age, occupation and zip code."""
        return "gender" in self.users


def _file(data_dir: Path, name: str) -> Path:
    path = data_dir / name
    if not path.is_file():
        raise DataError(f"MovieLens file {path} not found: {DOWNLOAD_HINT}")
    return path


def detect_layout(data_dir: str | Path) -> str:
    """Which GroupLens layout a folder holds (see the module docstring); DataError if none."""
    root = Path(data_dir)
    if not root.is_dir():
        raise DataError(f"MovieLens directory {root} not found: {DOWNLOAD_HINT}")
    if any((root / name).exists() for name in ("u.data", "u.user", "u.item", "u.genre")):
        return "ml-100k"
    if (root / "ratings.dat").is_file():
        return "ml-1m" if (root / "users.dat").is_file() else "ml-10m"
    if (root / "ratings.csv").is_file():
        return "ml-20m"
    raise DataError(f"no MovieLens ratings file (u.data, ratings.dat or ratings.csv) in {root}: {DOWNLOAD_HINT}")


def read_movielens(data_dir: str | Path) -> MovieLensTables:
    """Read the ratings, users and movies of a GroupLens MovieLens folder of any layout."""
    root = Path(data_dir)
    layout = detect_layout(root)
    try:
        if layout == "ml-100k":
            ratings, users, movies = _read_100k(root)
        elif layout == "ml-20m":
            ratings = pd.read_csv(_file(root, "ratings.csv"), header=0, names=RATING_COLUMNS)
            movies = pd.read_csv(_file(root, "movies.csv"), header=0, usecols=[0, 2], names=["movie_id", "genres"])
            users = None
        else:
            ratings = _read_double_colon(_file(root, "ratings.dat"))
            movies = pd.read_csv(
                _file(root, "movies.dat"), sep="::", engine="python", names=["movie_id", "title", "genres"],
                encoding="latin-1",
            )[["movie_id", "genres"]]  # fmt: skip
            users = None
            if layout == "ml-1m":
                users = pd.read_csv(
                    _file(root, "users.dat"), sep="::", engine="python",
                    names=["user_id", "gender", "age", "occupation", "zip_code"], dtype={"zip_code": str},
                )[USER_COLUMNS]  # fmt: skip
    except (ValueError, pd.errors.ParserError) as exc:
        raise DataError(f"MovieLens files in {root} are malformed: {exc}") from exc
    if layout != "ml-100k":
        genres = movies["genres"].fillna("").astype(str).replace(NO_GENRES, "")
        movies = pd.DataFrame({"movie_id": movies["movie_id"], "genres": genres.str.split("|").map(_non_empty)})
    if users is None:
        users = pd.DataFrame({"user_id": np.unique(ratings["user_id"].to_numpy())})
    unlisted = np.setdiff1d(ratings["movie_id"].unique(), movies["movie_id"].to_numpy())
    if unlisted.size:  # rated but not in the movies file: no genres
        movies = pd.concat([movies, pd.DataFrame({"movie_id": unlisted, "genres": [[]] * unlisted.size})])
    return MovieLensTables(ratings, users, movies.reset_index(drop=True), layout)


def _non_empty(tokens: list[str]) -> list[str]:
    return [token for token in tokens if token]


def _read_double_colon(path: Path) -> pd.DataFrame:
    """A `::`-separated ratings file, read by the C parser as `:`-separated with the empty columns skipped."""
    names = ["user_id", "", "movie_id", " ", "rating", "  ", "timestamp"]  # the blanks: between the colons
    frame = pd.read_csv(path, sep=":", header=None, names=names, usecols=RATING_COLUMNS)
    if frame.isna().to_numpy().any():
        raise DataError(f"MovieLens file {path} is malformed: missing values")
    return frame.astype({"user_id": "int64", "movie_id": "int64", "timestamp": "int64"})


def _read_100k(root: Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """u.data, u.user, u.item and u.genre of a GroupLens ml-100k folder."""
    ratings = pd.read_csv(_file(root, "u.data"), sep="\t", names=RATING_COLUMNS, dtype="int64")
    users = pd.read_csv(
        _file(root, "u.user"), sep="|", names=USER_COLUMNS, dtype={"zip_code": str}, keep_default_na=False
    )
    genre_names = pd.read_csv(_file(root, "u.genre"), sep="|", names=["genre", "index"])["genre"].tolist()
    items = pd.read_csv(
        _file(root, "u.item"),
        sep="|",
        names=["movie_id", "title", "release_date", "video_release_date", "url", *genre_names],
        encoding="latin-1",
    )
    flags = items[genre_names].to_numpy(dtype=bool)
    names = np.array(genre_names, dtype=object)
    movies = pd.DataFrame({"movie_id": items["movie_id"], "genres": [names[row].tolist() for row in flags]})
    return ratings, users, movies


class MovieLensAdapter:
    """Builds the fitted schema and the train/val/test datasets from a MovieLens folder (a `DatasetSource`).

    Args:
        config: data settings (directory, protocol, sampling).
    """

    def __init__(self, config: MovieLensConfig) -> None:
        if config.protocol not in PROTOCOLS:
            raise ConfigError(f"unknown data.protocol {config.protocol!r}, expected one of {PROTOCOLS}")
        self.config = config
        self.tables = read_movielens(config.path)
        if config.max_users > 0:
            ratings = self.tables.ratings
            self.tables = MovieLensTables(
                ratings[ratings["user_id"] <= config.max_users].reset_index(drop=True),
                self.tables.users,
                self.tables.movies,
                self.tables.layout,
            )
        self.splits: dict[str, pd.DataFrame] = {}
        """Split name -> its rows' raw (user_id, movie_id, label[, query, is_target]), in dataset order."""

    @property
    def name(self) -> str:
        """The folder's name (e.g. ml-1m): how an artifact's metadata records the data."""
        return Path(self.config.path).resolve().name

    def raw_test(self, schema: DatasetSchema) -> CTRDataset:
        """The test split encoded from raw rows with `schema` (e.g. an artifact's), as the service encodes.

        Call after `build`.
        """
        return self.dataset(self.splits["test"], FeatureEncoder(schema))

    def build(self) -> tuple[DatasetSchema, CTRDataset, CTRDataset, CTRDataset]:
        """Split, fit the encoders on train, and encode: (schema, train, val, test)."""
        ratings = self.tables.ratings.assign(
            **{LABEL: (self.tables.ratings["rating"] >= self.config.label_threshold).astype("float32")}
        )
        if self.config.protocol == "leave_one_out":
            train, val, test = self._leave_one_out(ratings)
        else:
            train, val, test = self._random_split(ratings)
        spec = movielens_schema(self.config.genres_max_length, self.tables.has_user_attributes)
        fitter = SchemaFitter(spec)
        for start in range(0, len(train), FIT_BLOCK_ROWS):  # raw rows of one block at a time in memory
            fitter.update(self.raw_rows(train.iloc[start : start + FIT_BLOCK_ROWS]))
        fitted = fitter.fitted()
        self.schema = fitted.with_embedding_dims(
            {f.name: embedding_dim_for(f.vocabulary_size) for f in fitted.fields.values()}
        )
        self.encoder = FeatureEncoder(self.schema)
        self._user_features = compact(self._encode_table(self.tables.users), self.schema)
        self._movie_features = compact(self._encode_table(self.tables.movies), self.schema)
        if self.config.protocol == "leave_one_out":
            rated = np.sort(self._pair_keys(ratings["user_id"], ratings["movie_id"]))
            train_ds: CTRDataset = ResampledDataset(lambda epoch: self._with_negatives(train, rated, epoch))
            val = self._eval_queries(val, rated, self.config.num_val_negatives, seed=self.config.eval_seed)
            test = self._eval_queries(test, rated, self.config.num_eval_negatives, seed=self.config.eval_seed + 1)
        else:
            train_ds = self.dataset(train)
        self.splits = {"train": train, "val": val, "test": test}
        return self.schema, train_ds, self.dataset(val), self.dataset(test)

    def raw_rows(self, pairs: pd.DataFrame) -> pd.DataFrame:
        """Raw request-style columns (users' and movies' attributes) for (user_id, movie_id) pairs."""
        users = pairs[["user_id"]].merge(self.tables.users, on="user_id", how="left")
        movies = pairs[["movie_id"]].merge(self.tables.movies, on="movie_id", how="left")
        return pd.concat([users, movies], axis=1)

    @staticmethod
    def _leave_one_out(ratings: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
        ordered = ratings.sort_values(["user_id", "timestamp"], kind="stable")
        position_from_end = ordered.groupby("user_id").cumcount(ascending=False)
        counts = ordered.groupby("user_id")["movie_id"].transform("size")
        held_out = counts >= 3
        test = ordered[held_out & (position_from_end == 0)]
        val = ordered[held_out & (position_from_end == 1)]
        train = ordered[~held_out | (position_from_end >= 2)]
        return train.reset_index(drop=True), val.reset_index(drop=True), test.reset_index(drop=True)

    def _random_split(self, ratings: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
        order = np.random.default_rng(self.config.split_seed).permutation(len(ratings))
        n_test = int(len(ratings) * self.config.test_fraction)
        n_val = int(len(ratings) * self.config.val_fraction)
        shuffled = ratings.iloc[order].reset_index(drop=True)
        test = shuffled.iloc[:n_test].reset_index(drop=True)
        val = shuffled.iloc[n_test : n_test + n_val].reset_index(drop=True)
        return shuffled.iloc[n_test + n_val :].reset_index(drop=True), val, test

    def _encode_table(self, table: pd.DataFrame) -> dict[str, np.ndarray]:
        fields = self.encoder.fields_reading(table.columns)
        return self.encoder.encode({c: table[c] for c in table.columns}, len(table), fields).features

    def _pair_keys(self, user_ids: pd.Series | np.ndarray, movie_ids: pd.Series | np.ndarray) -> np.ndarray:
        stride = int(self.tables.movies["movie_id"].max()) + 1
        return np.asarray(user_ids, dtype=np.int64) * stride + np.asarray(movie_ids, dtype=np.int64)

    def _unrated(self, user_ids: np.ndarray, rated: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One uniformly drawn movie per user id that the user never rated (with replacement)."""
        movie_ids = self.tables.movies["movie_id"].to_numpy()
        drawn = rng.choice(movie_ids, size=len(user_ids))
        clash = np.ones(len(user_ids), dtype=bool)
        while clash.any():  # rejection rounds: each one redraws the rated movies only
            keys = self._pair_keys(user_ids[clash], drawn[clash])
            hit = rated[np.minimum(np.searchsorted(rated, keys), len(rated) - 1)] == keys
            redo = np.flatnonzero(clash)[hit]
            clash[:] = False
            clash[redo] = True
            drawn[redo] = rng.choice(movie_ids, size=len(redo))
        return drawn

    def _with_negatives(
        self, train: pd.DataFrame, rated: np.ndarray, epoch: int
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        rng = np.random.default_rng([self.config.sample_seed, epoch])
        users = np.repeat(train["user_id"].to_numpy(), self.config.num_negatives)
        movies = self._unrated(users, rated, rng)
        labels = np.concatenate([train[LABEL].to_numpy(dtype=np.float32), np.zeros(len(users), dtype=np.float32)])
        features = self._features(
            np.concatenate([train["user_id"].to_numpy(), users]), np.concatenate([train["movie_id"].to_numpy(), movies])
        )
        return features, torch.from_numpy(labels)

    def _eval_queries(self, held_out: pd.DataFrame, rated: np.ndarray, num_negatives: int, seed: int) -> pd.DataFrame:
        """Each held-out rating followed by up to `num_negatives` distinct unrated movies (all of them when fewer).

        Vectorised over queries: a user with at least twice `num_negatives` unrated movies gets uniform
        draws, where a rated or repeated movie is redrawn until none is left (rejection rounds against
        the sorted pair keys); the few others take their unrated movies from the complement, shuffled.
        """
        rng = np.random.default_rng(seed)
        movie_ids = self.tables.movies["movie_id"].to_numpy().astype(np.int64)
        stride = int(movie_ids.max()) + 1
        users = held_out["user_id"].to_numpy().astype(np.int64)
        low, high = np.searchsorted(rated, users * stride), np.searchsorted(rated, (users + 1) * stride)
        unrated = len(movie_ids) - (high - low)
        drawn = unrated >= 2 * num_negatives
        parts = [self._drawn_negatives(np.flatnonzero(drawn), users, rated, movie_ids, num_negatives, rng)]
        parts.append(self._complement_negatives(np.flatnonzero(~drawn), users, rated, movie_ids, num_negatives, rng))
        query = np.concatenate([np.arange(len(users)), *(p[0] for p in parts)])
        movie = np.concatenate([held_out["movie_id"].to_numpy().astype(np.int64), *(p[1] for p in parts)])
        order = np.argsort(query, kind="stable")  # each query's target, then its negatives in draw order
        query, movie = query[order], movie[order]
        is_target = np.zeros(len(query), dtype=bool)
        is_target[np.searchsorted(query, np.arange(len(users)))] = True
        labels = np.zeros(len(query), dtype=np.float32)
        labels[is_target] = held_out[LABEL].to_numpy(dtype=np.float32)
        return pd.DataFrame(
            {"user_id": users[query], "movie_id": movie, LABEL: labels, "query": query, "is_target": is_target}
        )

    @staticmethod
    def _drawn_negatives(
        queries: np.ndarray,
        users: np.ndarray,
        rated: np.ndarray,
        movie_ids: np.ndarray,
        k: int,
        rng: np.random.Generator,
    ) -> tuple[np.ndarray, np.ndarray]:
        """(query, movie) of k distinct unrated movies for each of `queries`, by rejection rounds."""
        stride = int(movie_ids.max()) + 1
        picked = movie_ids[rng.integers(0, len(movie_ids), (len(queries), k))]  # (Q, k)
        owners = users[queries][:, None] * stride
        redo = np.ones(picked.shape, dtype=bool)
        while redo.any():
            rows = np.flatnonzero(redo.any(axis=1))
            block, keys = picked[rows], owners[rows] + picked[rows]
            hit = rated[np.minimum(np.searchsorted(rated, keys), len(rated) - 1)] == keys
            order = np.argsort(block, axis=1, kind="stable")
            ordered = np.take_along_axis(block, order, axis=1)
            repeat = np.zeros(block.shape, dtype=bool)  # the later of two equal movies in a row
            np.put_along_axis(repeat, order[:, 1:], ordered[:, 1:] == ordered[:, :-1], axis=1)
            redo[:] = False
            redo[rows] = hit | repeat
            picked[redo] = movie_ids[rng.integers(0, len(movie_ids), int(redo.sum()))]
        return np.repeat(queries, k), picked.ravel()

    @staticmethod
    def _complement_negatives(
        queries: np.ndarray,
        users: np.ndarray,
        rated: np.ndarray,
        movie_ids: np.ndarray,
        k: int,
        rng: np.random.Generator,
    ) -> tuple[np.ndarray, np.ndarray]:
        """(query, movie) of min(k, unrated) unrated movies, in random order, for users who rated nearly all."""
        if len(queries) == 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        stride = int(movie_ids.max()) + 1
        query = np.repeat(queries, len(movie_ids))  # every (query, movie) pair: these users are few
        movie = np.tile(movie_ids, len(queries))
        keys = users[query] * stride + movie
        keep = rated[np.minimum(np.searchsorted(rated, keys), len(rated) - 1)] != keys
        query, movie = query[keep], movie[keep]
        shuffled = np.lexsort((rng.random(len(query)), query))
        query, movie = query[shuffled], movie[shuffled]
        starts = np.searchsorted(query, query, side="left")
        first = np.arange(len(query)) - starts < k
        return query[first], movie[first]

    def _features(self, user_ids: np.ndarray, movie_ids: np.ndarray) -> dict[str, torch.Tensor]:
        """Encoded features of (user_id, movie_id) rows, gathered from the encoded user and movie tables."""
        user_pos = pd.Index(self.tables.users["user_id"]).get_indexer(user_ids)
        movie_pos = pd.Index(self.tables.movies["movie_id"]).get_indexer(movie_ids)
        gathered = {name: values[user_pos] for name, values in self._user_features.items()}
        gathered |= {name: values[movie_pos] for name, values in self._movie_features.items()}
        return to_tensors({name: gathered[name] for name in self.schema.field_names})

    def dataset(self, rows: pd.DataFrame, encoder: FeatureEncoder | None = None) -> CTRDataset:
        """A dataset of split rows (see `splits`).

        Args:
            rows: (user_id, movie_id, label[, query, is_target]) rows.
            encoder: encode the rows' raw attributes with this encoder (e.g. an artifact's schema);
                default: gather from this adapter's encoded user and movie tables (same result, faster).
        """
        if encoder is None:
            features = self._features(rows["user_id"].to_numpy(), rows["movie_id"].to_numpy())
        else:
            features = to_tensors(encoder.encode_frame(self.raw_rows(rows)).features)
        labels = torch.from_numpy(rows[LABEL].to_numpy(dtype=np.float32, copy=True))
        if "query" not in rows:
            return CTRDataset(features, labels)
        return CTRDataset(
            features,
            labels,
            query_ids=torch.from_numpy(rows["query"].to_numpy(dtype=np.int64, copy=True)),
            is_target=torch.from_numpy(rows["is_target"].to_numpy(dtype=bool, copy=True)),
        )

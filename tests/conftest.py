"""Shared test setup: where MovieLens-100K is, and one adapter built for the whole session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from deepfm.config import DATA_DIR_ENV, ExperimentConfig, MovieLensConfig
from deepfm.data.dataset import CTRDataset
from deepfm.data.movielens import MovieLensAdapter
from deepfm.data.schema import DatasetSchema

# CI clones the repository with shared/ beside it; a DEEPFM_DATA_DIR set by the caller wins.
os.environ.setdefault(DATA_DIR_ENV, str(Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ml-100k"))

Built = tuple[DatasetSchema, CTRDataset, CTRDataset, CTRDataset]


@pytest.fixture(scope="session")
def movielens_dir() -> Path:
    """The GroupLens ml-100k folder; the test is skipped when it is absent."""
    path = Path(os.environ[DATA_DIR_ENV])
    if not (path / "u.data").is_file():
        pytest.skip(f"MovieLens-100K not found at {path}: set {DATA_DIR_ENV} to an unpacked ml-100k folder")
    return path


@pytest.fixture(scope="session")
def movielens(movielens_dir: Path) -> tuple[MovieLensAdapter, Built]:
    """`(adapter, (schema, train, val, test))` for the default config, built once per session (~5 s).

    Shared by every test of the session: read it, never mutate it (resample the train set of an
    adapter of your own).
    """
    config = ExperimentConfig().data
    assert isinstance(config, MovieLensConfig)
    adapter = MovieLensAdapter(config)
    return adapter, adapter.build()

"""Data sources: where an experiment's rows come from, chosen by `data.kind`.

    data.kind   source                                      config section
    movielens   deepfm.data.movielens.MovieLensAdapter      MovieLensConfig
    table       deepfm.data.table.TableSource               TableConfig

The trainer, `deepfm evaluate` and the quality benchmark open their data through `open_source`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from deepfm.config import DataConfig
from deepfm.data.dataset import CTRDataset
from deepfm.data.movielens import MovieLensAdapter
from deepfm.data.schema import DatasetSchema
from deepfm.data.table import TableSource
from deepfm.errors import ConfigError


class DatasetSource(Protocol):
    """Raw rows in; a fitted schema and encoded train/val/test datasets out."""

    @property
    def config(self) -> Any:
        """The data section, completed once built (a table's inferred fields filled in)."""

    @property
    def name(self) -> str:
        """The dataset by name (a folder or file name), never a machine-local path: what metadata records."""

    def build(self) -> tuple[DatasetSchema, CTRDataset, CTRDataset, CTRDataset]:
        """Read, split, fit the encoders on train, and encode: (schema, train, val, test)."""

    def raw_test(self, schema: DatasetSchema) -> CTRDataset:
        """The test split encoded from raw rows with `schema` (an artifact's: the serving path); after build."""


SOURCES: dict[str, Callable[[Any], DatasetSource]] = {"movielens": MovieLensAdapter, "table": TableSource}


def open_source(config: DataConfig) -> DatasetSource:
    """The source registered for `config.kind`, over that config."""
    if config.kind not in SOURCES:
        raise ConfigError(f"unknown data.kind {config.kind!r}, expected one of {sorted(SOURCES)}")
    return SOURCES[config.kind](config)

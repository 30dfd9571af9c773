"""Fixtures of the service tests: a tiny trained DeepFM exported into a temporary models store."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from serving_helpers import MakeClient, Trained, base_schema, train
from torch import nn

from deepfm.data.fitting import fit_schema
from service.app import create_app
from service.settings import ENV_PREFIX, Settings
from tools.synthetic import movielens_rows


@pytest.fixture(scope="session")
def trained() -> Trained:
    """The tiny model every service test scores with."""
    frame = movielens_rows(400)
    schema = fit_schema(base_schema(), frame.drop(columns="label"))
    return Trained(schema, train(schema, frame), frame)


@pytest.fixture(scope="session")
def retrained(trained: Trained) -> nn.Module:
    """A second model over the same schema (another seed), the 'new version' of reload tests."""
    return train(trained.schema, trained.frame, seed=1)


@pytest.fixture(autouse=True)
def clean_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    """No DEEPFM_SERVE_* or PROMETHEUS_MULTIPROC_DIR from the machine leaks into a test."""
    for key in list(os.environ):
        if key.startswith(ENV_PREFIX) or key == "PROMETHEUS_MULTIPROC_DIR":
            monkeypatch.delenv(key)


@pytest.fixture
def store(tmp_path: Path, trained: Trained) -> Path:
    """A models store holding version 1 of MODEL_NAME."""
    root = tmp_path / "models_store"
    trained.export(root)
    return root


@pytest.fixture
def make_client(store: Path) -> Iterator[MakeClient]:
    """Started in-process clients over `store`, with settings overridable per test."""
    with ExitStack() as stack:

        def make(**overrides: Any) -> TestClient:
            values: dict[str, Any] = {"models_store": store, "poll_interval_s": 0, "torch_threads": 1, **overrides}
            return stack.enter_context(TestClient(create_app(Settings(**values))))

        yield make


@pytest.fixture
def client(make_client: MakeClient) -> TestClient:
    """A started in-process client with default settings over `store`."""
    return make_client()

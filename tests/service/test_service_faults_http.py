"""Faults of a model or a store, against `python -m service` in a subprocess over HTTP."""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from serving_helpers import MODEL_NAME, Trained

from deepfm.artifact import export_artifact
from tools.faults import SlowForOnePair
from tools.processes import run_server

NOBODY = 65534


def poison(trained: Trained, user_index: int, movie_index: int) -> dict[str, object]:
    """An instance whose user and movie have these vocabulary indices."""
    return {
        **trained.instances(1)[0],
        "user_id": trained.index_of("user_id", user_index),
        "movie_id": trained.index_of("movie_id", movie_index),
    }


def test_sigterm_completes_within_the_drain_timeout_with_a_model_call_stuck(tmp_path: Path, trained: Trained) -> None:
    store = tmp_path / "models_store"
    slow = SlowForOnePair(trained.model, user_index=3, movie_index=5, iterations=20_000_000)
    export_artifact(slow, trained.schema, store, MODEL_NAME, config={}, metrics={})
    env = {
        "DEEPFM_SERVE_MODELS_STORE": str(store),
        "DEEPFM_SERVE_TORCH_THREADS": "1",
        "DEEPFM_SERVE_REQUEST_TIMEOUT_S": "1",
        "DEEPFM_SERVE_DRAIN_TIMEOUT_S": "2",
    }
    with run_server(tmp_path, env) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        assert client.post("/predict", json={"instances": trained.instances(2)}).status_code == 200
        started = time.monotonic()
        stuck = client.post("/predict", json={"instances": [poison(trained, 3, 5)]})
        assert (stuck.status_code, stuck.json()["error"]["code"]) == (504, "deadline_exceeded")
        assert time.monotonic() - started < 5
        assert client.get("/health/ready").status_code == 503  # the worker is stuck past the deadline
        assert client.get("/health/live").status_code == 200
        signalled = time.monotonic()
        server.signal(signal.SIGTERM)
        code = server.wait(30)
        assert time.monotonic() - signalled < 2 + 1 + 3  # the drain timeout, the worker's second, slack
    assert code in (0, -signal.SIGTERM)
    assert "the scoring worker did not stop in time" in "\n".join(server.log_lines())


@pytest.fixture
def shared_store(trained: Trained) -> Iterator[Path]:
    """A store another user may read (pytest's own temporary directories are private to root)."""
    root = Path(tempfile.mkdtemp(prefix="deepfm-store-"))
    try:
        os.chmod(root, 0o755)
        store = root / "models_store"
        trained.export(store)
        trained.export(store)
        for path in [store, *store.rglob("*")]:
            os.chmod(path, 0o755 if path.is_dir() else 0o644)
        yield store
    finally:
        shutil.rmtree(root)


def test_a_version_the_service_user_cannot_read_is_refused_and_start_succeeds(
    shared_store: Path, tmp_path: Path, trained: Trained
) -> None:
    """The image runs as a non-root user; a version directory it may not read is one refused version."""
    unreadable = shared_store / MODEL_NAME / "2"
    os.chmod(unreadable, 0o000)
    prefix: tuple[str, ...] = ()
    if os.geteuid() == 0:  # root reads everything: run the server as nobody
        if shutil.which("setpriv") is None:
            pytest.skip("setpriv (util-linux) is needed to run the server as another user")
        prefix = ("setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups")
        os.chmod(tmp_path, 0o777)
    env = {"DEEPFM_SERVE_MODELS_STORE": str(shared_store), "DEEPFM_SERVE_TORCH_THREADS": "1", "HOME": str(tmp_path)}
    with run_server(tmp_path, env, prefix=prefix) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        info = client.get("/models").json()["models"][0]
        assert info["version"] == 1
        (refused,) = info["refused_versions"]
        assert refused["version"] == 2 and "Permission denied" in refused["reason"], refused
        assert client.post("/predict", json={"instances": trained.instances(2)}).status_code == 200

"""Helpers of the deployment tests: a synthetic store, request bodies, a bounded load generator."""

from __future__ import annotations

import re
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from torch import nn

from tools.requests import MOVIELENS_INSTANCES

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "deploy"))

import loopback  # noqa: E402  (deploy/loopback.py, found through the path set just above)

__all__ = ["REPO", "loopback"]

INSTANCES = MOVIELENS_INSTANCES
BODY = {"instances": INSTANCES[:1]}


def build_synthetic_store(store: Path) -> Path:
    """A store with one deepfm version, fitted on a few MovieLens-like rows (no dataset needed)."""
    import pandas as pd
    import torch

    from deepfm.artifact import export_artifact
    from deepfm.data.encoding import fit_schema
    from deepfm.data.movielens import movielens_schema
    from deepfm.data.schema import embedding_dim_for
    from deepfm.models.registry import build_model

    rows = pd.DataFrame(
        {
            "user_id": [196, 186, 22, 244, 166],
            "movie_id": [242, 302, 377, 51, 346],
            "gender": ["M", "F", "M", "M", "M"],
            "age": [49, 39, 25, 28, 47],
            "occupation": ["writer", "executive", "writer", "technician", "educator"],
            "zip_code": ["55105", "00000", "40206", "80525", "55113"],
            "genres": [["Comedy"], ["Crime", "Drama"], ["Children's", "Comedy"], ["Drama", "War"], ["Drama"]],
        }
    )
    schema = fit_schema(movielens_schema(), rows)
    schema = schema.with_embedding_dims({f.name: embedding_dim_for(f.vocabulary_size) for f in schema.fields.values()})
    torch.manual_seed(0)
    export_artifact(build_model("deepfm", schema), schema, store, "deepfm", config={}, metrics={})
    return store


def export_next_version(
    store: Path, model_name: str = "deepfm", seed: int = 1, wrap: Callable[[nn.Module], nn.Module] | None = None
) -> int:
    """Roll out a new version the way the trainer does: a freshly initialised model over the
    latest version's schema, exported by deepfm.artifact (atomic rename into the store), recording
    the latest version's metrics (as good a model as the last, for the promotion gate). `wrap` makes
    another model of it (e.g. one of tools.faults)."""
    import torch

    from deepfm.artifact import SCHEMA_FILE, export_artifact, list_versions, read_metadata
    from deepfm.data.schema import DatasetSchema
    from deepfm.models.registry import build_model

    latest = max(list_versions(store, model_name))
    schema = DatasetSchema.from_json((store / model_name / str(latest) / SCHEMA_FILE).read_text())
    torch.manual_seed(seed)
    metrics = read_metadata(store / model_name / str(latest)).get("metrics", {})
    model = build_model(model_name, schema)
    path = export_artifact(
        model if wrap is None else wrap(model), schema, store, model_name, config={}, metrics=metrics
    )
    return int(path.name)


def upstreams(header: str) -> list[str]:
    """The addresses nginx tried for one request, from X-Upstream ("a, b" after a retry)."""
    return [part for part in re.split(r"\s*,\s*|\s+:\s+", header.strip()) if part]


@dataclass
class Outcome:
    """One request of the load: when it ended, its status (0: transport error) and what answered."""

    end: float
    status: int
    upstream: list[str]
    version: int | None
    error: str = ""


@dataclass
class Load:
    """Closed-loop POST /predict load from `clients` threads, each on one keep-alive connection.

    Bounded: it stops after `max_seconds` or `max_requests` in all, or at `stop()`. `pause_s` between
    a client's requests keeps it steady rather than saturating.
    """

    url: str
    clients: int = 2
    max_seconds: float = 60.0
    max_requests: int = 20000
    pause_s: float = 0.005
    body: dict[str, Any] = field(default_factory=lambda: BODY)
    outcomes: list[Outcome] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(self.clients)]

    def __enter__(self) -> Load:
        self._deadline = time.monotonic() + self.max_seconds
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=15.0) as client:
            while not self._stop.is_set() and time.monotonic() < self._deadline:
                with self._lock:
                    if len(self.outcomes) >= self.max_requests:
                        return
                self._record(self._one(client))
                time.sleep(self.pause_s)

    def _one(self, client: httpx.Client) -> Outcome:
        try:
            response = client.post("/predict", json=self.body)
        except Exception as exc:  # any failure is an outcome to report, never a thread crash
            return Outcome(time.monotonic(), 0, [], None, repr(exc))
        version = None
        error = ""
        if response.status_code == 200:
            try:
                version = int(response.json()["version"])
            except Exception as exc:
                error = repr(exc)
        else:
            error = response.text[:200]
        return Outcome(
            time.monotonic(), response.status_code, upstreams(response.headers.get("x-upstream", "")), version, error
        )

    def _record(self, outcome: Outcome) -> None:
        with self._lock:
            self.outcomes.append(outcome)

    def snapshot(self) -> list[Outcome]:
        with self._lock:
            return list(self.outcomes)

    def wait_for(self, count: int, timeout: float) -> None:
        """Block until `count` requests have completed (at most `timeout` seconds)."""
        deadline = time.monotonic() + timeout
        while len(self.snapshot()) < count and time.monotonic() < deadline:
            time.sleep(0.05)

    def failures(self) -> list[Outcome]:
        return [o for o in self.snapshot() if o.status != 200 or o.error]

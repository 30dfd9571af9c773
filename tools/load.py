"""A bounded closed-loop load of `POST /predict` for functional tests under load (not a benchmark's: see
benchmarks/serve_bench.py for that), recording every request's outcome."""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from tools.requests import MOVIELENS_INSTANCES


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
    predictions: list[float] = field(default_factory=list)


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
    body: dict[str, Any] = field(default_factory=lambda: {"instances": MOVIELENS_INSTANCES[:1]})
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
        version, error, predictions = None, "", []
        if response.status_code == 200:
            try:
                body = response.json()
                version, predictions = int(body["version"]), list(body["predictions"])
            except Exception as exc:
                error = repr(exc)
        else:
            error = response.text[:200]
        upstream = upstreams(response.headers.get("x-upstream", ""))
        return Outcome(time.monotonic(), response.status_code, upstream, version, error, predictions)

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

"""Prometheus metrics of the service, labelled by model (and version where it matters).

With several worker processes, `PROMETHEUS_MULTIPROC_DIR` must name an empty directory before any
worker starts (`python -m service` sees to it); every worker then writes its values there and a
scrape of any worker aggregates them all. Without it, metrics live in this process's registry.
The OOV rate of a field is `rate(deepfm_oov_rows_total[5m]) / rate(deepfm_rows_scored_total[5m])`.
"""

from __future__ import annotations

import os

import numpy as np
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
ROW_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)
SCORE_BUCKETS = tuple(round(0.05 * i, 2) for i in range(1, 20))
SCORE_BUCKET_LABELS = tuple(map(str, SCORE_BUCKETS))


def multiprocess_mode() -> bool:
    """Whether metrics are shared between worker processes through files."""
    return bool(os.environ.get(MULTIPROC_ENV))


class ServiceMetrics:
    """The service's metrics, registered in their own registry (so each app, and test, has its own)."""

    def __init__(self) -> None:
        self._score_children: dict[str, tuple[list[Counter], Counter]] = {}
        self.registry = CollectorRegistry()
        registry = self.registry
        self.requests = Counter(
            "deepfm_http_requests",
            "HTTP requests, by route and status.",
            ["method", "route", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            "deepfm_http_request_duration_seconds",
            "HTTP request latency, by route and status.",
            ["method", "route", "status"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.request_rows = Histogram(
            "deepfm_request_rows", "Instances per predict request.", ["model"], buckets=ROW_BUCKETS, registry=registry
        )
        self.model_call_rows = Histogram(
            "deepfm_model_call_rows",
            "Rows per model call (requests coalesced, or large ones sliced).",
            ["model"],
            buckets=ROW_BUCKETS,
            registry=registry,
        )
        self.rows_scored = Counter("deepfm_rows_scored", "Rows scored.", ["model", "version"], registry=registry)
        self.oov_rows = Counter(
            "deepfm_oov_rows",
            "Rows whose value of a model field was missing or unknown (scored as OOV index 0).",
            ["model", "field"],
            registry=registry,
        )
        # A histogram's buckets as counters: prometheus_client observes one value per call, and a
        # model call scores up to thousands of rows, so each call adds its bucket counts at once.
        self.score_buckets = Counter(
            "deepfm_prediction_score_bucket",
            "Rows scored with a click probability <= le (cumulative buckets: histogram_quantile reads them).",
            ["model", "le"],
            registry=registry,
        )
        self.score_sum = Counter(
            "deepfm_prediction_score_sum", "Sum of the click probabilities scored.", ["model"], registry=registry
        )
        self.non_finite_scores = Counter(
            "deepfm_non_finite_scores",
            "Rows whose score was not a finite number (their requests failed with model_error).",
            ["model", "version"],
            registry=registry,
        )
        self.model_loads = Counter(
            "deepfm_model_loads",
            "Model version loads, by result (loaded or refused).",
            ["model", "result"],
            registry=registry,
        )
        self.serving_version = Gauge(
            "deepfm_model_version_info",
            "1 for the version a model serves, 0 for versions it served before.",
            ["model", "version"],
            multiprocess_mode="livemax",
            registry=registry,
        )

    def observe_scores(self, model: str, scores: np.ndarray) -> None:
        """Count finite click probabilities into the score buckets."""
        children = self._score_children.get(model)
        if children is None:  # the labelled series of a model, looked up once
            buckets = [self.score_buckets.labels(model, bound) for bound in (*SCORE_BUCKET_LABELS, "+Inf")]
            children = self._score_children[model] = (buckets, self.score_sum.labels(model))
        counts = np.searchsorted(np.sort(scores), SCORE_BUCKETS, side="right")  # rows <= each bound
        for bucket, count in zip(children[0], [*counts.tolist(), len(scores)], strict=True):
            if count:
                bucket.inc(count)
        children[1].inc(float(scores.sum()))

    def set_serving(self, model: str, version: int, previous: int | None) -> None:
        """Record that `model` now serves `version` instead of `previous`."""
        if previous is not None and previous != version:
            self.serving_version.labels(model, str(previous)).set(0)
        self.serving_version.labels(model, str(version)).set(1)

    def render(self) -> tuple[bytes, str]:
        """The exposition text of every metric (all workers' in multiprocess mode), and its content type."""
        if multiprocess_mode():
            registry = CollectorRegistry()
            MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    @staticmethod
    def close() -> None:
        """Drop this process's live gauges from the multiprocess files when it exits."""
        if multiprocess_mode():
            mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]

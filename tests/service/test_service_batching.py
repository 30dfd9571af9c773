"""Coalescing: every caller gets exactly its own rows' scores, no model call exceeds the maximum batch."""

from __future__ import annotations

import asyncio
import os
import random
import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, Histogram
from serving_helpers import UNKNOWN_INSTANCES, MakeClient, Trained

from deepfm.artifact import Artifact
from deepfm.data.encoding import FeatureEncoder
from deepfm.errors import EncodingError
from service.batching import Batcher, _Job
from service.errors import NotReadyError
from service.inputs import RequestSpec
from service.metrics import SCORE_BUCKETS, ServiceMetrics
from service.scoring import LoadedModel, encode_rows

MAX_ROWS = 8


@pytest.fixture
def model_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The batch size of every model call made while the test runs."""
    calls: list[int] = []
    lock = threading.Lock()
    scores = Artifact.scores

    def spy(self: Artifact, features: Mapping[str, np.ndarray]) -> np.ndarray:
        with lock:
            calls.append(len(next(iter(features.values()))))
        return scores(self, features)

    monkeypatch.setattr(Artifact, "scores", spy)
    return calls


def test_concurrent_callers_get_their_own_scores(
    make_client: MakeClient, trained: Trained, model_calls: list[int]
) -> None:
    client = make_client(batch_max_rows=MAX_ROWS, batch_max_wait_ms=20)
    rng = random.Random(0)
    pool = trained.instances(200) + UNKNOWN_INSTANCES
    requests = [rng.sample(pool, rng.randint(1, 5)) for _ in range(60)] + [pool[:20]]  # the last one is sliced
    model_calls.clear()

    def call(instances: list[dict[str, Any]]) -> list[float]:
        response = client.post("/predict", json={"instances": instances})
        assert response.status_code == 200, response.text
        predictions: list[float] = response.json()["predictions"]
        return predictions

    with ThreadPoolExecutor(max_workers=12) as executor:
        results = list(executor.map(call, requests))
    for instances, predictions in zip(requests, results, strict=True):
        np.testing.assert_allclose(predictions, trained.eager_scores(instances), atol=1e-6, rtol=0)
    assert max(model_calls) <= MAX_ROWS
    assert sum(model_calls) == sum(map(len, requests))
    assert len(model_calls) < len(requests)  # requests were merged


def test_a_refused_value_fails_only_its_own_request(store: Path, trained: Trained) -> None:
    loaded = LoadedModel.load(store / "deepfm" / "1", MAX_ROWS)
    batcher = Batcher(ServiceMetrics(), max_rows=64, max_wait_s=0.2, coalesce=True, timeout_s=10)
    good = [loaded.spec.rows(trained.instances(3, start=i), None, strict=False) for i in range(3)]
    bad = loaded.spec.rows([{"age": 30}, {"age": "old"}], None, strict=False)

    async def score_all() -> list[Any]:
        return await asyncio.gather(*(batcher.score(loaded, rows) for rows in [*good, bad]), return_exceptions=True)

    batcher.start()
    try:
        outcomes = asyncio.run(score_all())
    finally:
        batcher.stop(timeout_s=10)
    for i, scores in enumerate(outcomes[:3]):
        np.testing.assert_allclose(scores, trained.eager_scores(trained.instances(3, start=i)), atol=1e-6, rtol=0)
    error = outcomes[3]
    assert isinstance(error, EncodingError)
    assert [(p.row, p.field) for p in error.problems] == [(1, "age")]


def test_requests_queued_while_the_worker_yields_join_its_call(
    store: Path, trained: Trained, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With nothing waiting behind the first request, the worker yields the CPU once before the call;
    what the event loop queues meanwhile joins the call, and a lone request waits for nothing more."""
    loaded = LoadedModel.load(store / "deepfm" / "1", MAX_ROWS)
    batcher = Batcher(ServiceMetrics(), max_rows=64, max_wait_s=0.0, coalesce=True, timeout_s=10)
    loop = asyncio.new_event_loop()
    first, second = (
        _Job(loaded, loaded.spec.rows(trained.instances(2, i), None, strict=False), loop.create_future(), None)
        for i in range(2)
    )
    handed_over: list[_Job] = []

    def event_loop_runs() -> None:  # what the event loop does while the worker yields: queue a request
        handed_over.append(second)
        batcher._queue.put(second)

    monkeypatch.setattr(os, "sched_yield", event_loop_runs)
    assert batcher._group(first, []) == [first, second]
    monkeypatch.setattr(os, "sched_yield", lambda: handed_over.append(first))
    assert batcher._group(first, []) == [first]
    assert handed_over == [second, first]  # one yield per call
    loop.close()


def test_a_stopped_worker_refuses_requests(store: Path, trained: Trained) -> None:
    """A request that reaches a stopped worker, or waits to be handed to one that stops, gets a 503."""
    loaded = LoadedModel.load(store / "deepfm" / "1", MAX_ROWS)
    batcher = Batcher(ServiceMetrics(), max_rows=64, max_wait_s=0.0, coalesce=True, timeout_s=10)
    rows = loaded.spec.rows(trained.instances(2), None, strict=False)

    async def stop_before_hand_over() -> list[Any]:
        waiting = asyncio.ensure_future(batcher.score(loaded, rows))
        await asyncio.sleep(0)  # the request waits in this event-loop step's outbox
        batcher.stop(timeout_s=10)
        late = asyncio.ensure_future(batcher.score(loaded, rows))
        return await asyncio.wait_for(asyncio.gather(waiting, late, return_exceptions=True), timeout=10)

    batcher.start()
    outcomes = asyncio.run(stop_before_hand_over())
    assert [type(outcome) for outcome in outcomes] == [NotReadyError, NotReadyError]
    assert outcomes[0].status_code == 503


def assert_same_encoding(trained: Trained, parts: list[tuple[list[Any], dict[str, Any] | None]]) -> None:
    """Encoding requests together, contexts once each, equals encoding every row with its context merged in."""
    encoder, spec = FeatureEncoder(trained.schema), RequestSpec(trained.schema)
    merged = encode_rows(encoder, [spec.rows(rows, context, strict=False) for rows, context in parts])
    flat = [{**(context or {}), **row} for rows, context in parts for row in rows]
    expected = encoder.encode({s: [row.get(s) for row in flat] for s in trained.schema.source_fields}, len(flat))
    assert merged.num_rows == len(flat)
    assert merged.features.keys() == expected.features.keys()
    for name, values in expected.features.items():
        np.testing.assert_array_equal(merged.features[name], values, err_msg=name)
    assert merged.oov_rows == expected.oov_rows


def test_merged_encoding_equals_encoding_each_row(trained: Trained) -> None:
    instances = trained.instances(6) + UNKNOWN_INSTANCES
    user = {k: instances[0][k] for k in ("user_id", "gender", "age", "occupation")}
    movies: list[dict[str, Any]] = [{"movie_id": 5, "genres": ["Drama"]}, {"movie_id": 6}]
    assert_same_encoding(
        trained,
        [
            (instances[:3], None),
            (movies, user),
            (instances[3:], None),
            ([{"movie_id": 7, "zip_code": "10234"}] * 3, {"user_id": 99999, "gender": None}),
        ],
    )
    assert_same_encoding(trained, [(movies, user), (movies[:1], {**user, "gender": "X", "age": -1})])
    assert_same_encoding(trained, [(movies, user)])
    assert_same_encoding(trained, [(instances[:2], None), (movies, None), (instances[2:], None)])  # no context


def test_score_buckets_equal_a_histogram_observing_one_by_one() -> None:
    metrics = ServiceMetrics()
    reference = Histogram("reference", "reference", buckets=SCORE_BUCKETS, registry=CollectorRegistry())
    values = np.concatenate([np.random.default_rng(0).random(500), [0.0, 0.05, 0.5, 0.95, 1.0]]).astype(np.float32)
    metrics.observe_scores("m", values)
    for value in values.tolist():
        reference.observe(value)
    (reference_family,) = reference.collect()
    expected = {s.labels["le"]: s.value for s in reference_family.samples if s.name == "reference_bucket"}
    (buckets,) = metrics.score_buckets.collect()
    got = {s.labels["le"]: s.value for s in buckets.samples if s.name.endswith("_total") and s.labels["model"] == "m"}
    assert {le: count for le, count in expected.items() if count} == got
    (sums,) = metrics.score_sum.collect()
    (total,) = [s.value for s in sums.samples if s.name.endswith("_total")]
    assert total == pytest.approx(float(values.sum()), rel=1e-6)


def test_no_coalescing_when_turned_off(make_client: MakeClient, trained: Trained, model_calls: list[int]) -> None:
    client = make_client(coalesce=False, batch_max_rows=MAX_ROWS)
    model_calls.clear()
    with ThreadPoolExecutor(max_workers=8) as executor:
        statuses = list(
            executor.map(
                lambda i: client.post("/predict", json={"instances": trained.instances(2, i)}).status_code, range(16)
            )
        )
    assert statuses == [200] * 16
    assert model_calls == [2] * 16

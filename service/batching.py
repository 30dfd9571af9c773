"""The scoring worker: one thread that runs every model call, coalescing requests that wait together.

Requests hand their checked rows to `Batcher.score` (a coroutine) and await the result, so the model
never runs on the event loop. The worker takes the oldest waiting request and, when coalescing is
on, every request for the same model version waiting behind it (waiting up to `max_wait_s` for more)
while the rows fit in `max_rows`; it encodes them as one batch, runs the model on slices of at most
`max_rows` rows and hands each request exactly its own rows' scores. A request larger than
`max_rows` is scored alone, slice by slice.

When no request waits behind the first, the worker yields the CPU once (`sched_yield`) before the
call. Where the event loop shares the core, it runs meanwhile and hands over the requests it has
read, which join the call instead of each paying for one of their own (a small call's cost is
mostly fixed); where the event loop has nothing to do, the yield returns at once, so a lone request
waits for nothing.
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from deepfm.errors import EncodingError
from service.errors import DeadlineExceededError, ModelError, NotReadyError
from service.inputs import Rows
from service.logging import request_id
from service.metrics import ServiceMetrics
from service.scoring import LoadedModel, Scored

logger = logging.getLogger(__name__)

NOT_RUNNING = "the scoring worker is not running"


@dataclass(eq=False)
class _Job:
    """One request waiting for its scores."""

    model: LoadedModel
    rows: Rows
    future: asyncio.Future[np.ndarray]
    request_id: str | None


Outcome = tuple[_Job, np.ndarray | Exception]


def _settle(outcomes: list[Outcome]) -> None:
    """Hand each job its scores or error from the worker thread: one wake-up per event loop for the lot."""
    by_loop: dict[asyncio.AbstractEventLoop, list[Outcome]] = {}
    for outcome in outcomes:
        by_loop.setdefault(outcome[0].future.get_loop(), []).append(outcome)
    for loop, batch in by_loop.items():
        try:
            loop.call_soon_threadsafe(_resolve, batch)
        except RuntimeError:  # the loop is closed: nobody waits for these any more
            logger.warning("scores for a closed event loop dropped", extra={"requests": len(batch)})


def _resolve(outcomes: list[Outcome]) -> None:
    for job, outcome in outcomes:
        if job.future.done():  # the request was cancelled (the client went away)
            continue
        if isinstance(outcome, Exception):
            job.future.set_exception(outcome)
        else:
            job.future.set_result(outcome)


def _expire(future: asyncio.Future[np.ndarray], seconds: float) -> None:
    if not future.done():
        future.set_exception(DeadlineExceededError(f"no score within the server's deadline of {seconds:g} s"))


class Batcher:
    """Runs model calls on one worker thread, merging requests that wait at the same time.

    It serves the requests of one event loop (uvicorn runs one per worker process). Nothing a batch
    does can stop the worker: a failure fails that batch's requests (500 `model_error`), rows with
    a score that is not a finite probability fail their requests, and the worker goes on.

    Args:
        metrics: where model calls, rows, OOV counts and scores are recorded.
        max_rows: most rows in one model call.
        max_wait_s: how long a model call waits for more requests; 0 takes those already waiting and
            those queued while the worker yields the CPU once.
        coalesce: whether to merge requests at all.
        timeout_s: a request not scored within this many seconds fails (504), and a model call
            running longer marks the worker as stuck.
    """

    def __init__(
        self, metrics: ServiceMetrics, *, max_rows: int, max_wait_s: float, coalesce: bool, timeout_s: float
    ) -> None:
        self._metrics = metrics
        self._max_rows = max_rows
        self._max_wait_s = max_wait_s
        self._coalesce = coalesce
        self._timeout_s = timeout_s
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._outbox: list[_Job] = []  # jobs of the current event-loop step, not yet queued
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._call_started: float | None = None  # monotonic start of the model call in progress

    @property
    def running(self) -> bool:
        """Whether the worker accepts requests and is not stuck in a model call past the deadline."""
        thread, started = self._thread, self._call_started
        if thread is None or not thread.is_alive():
            return False
        return started is None or time.monotonic() - started < self._timeout_s

    def start(self) -> None:
        """Start the worker thread."""
        with self._lock:
            self._thread = threading.Thread(target=self._work, name="deepfm-scorer", daemon=True)
            self._thread.start()

    def stop(self, timeout_s: float) -> None:
        """Score the requests already waiting, then stop the worker; give up on it after `timeout_s`."""
        with self._lock:
            thread, self._thread = self._thread, None
            if thread is None:
                return
            self._queue.put(None)
        thread.join(timeout_s)
        if thread.is_alive():
            logger.error("the scoring worker did not stop in time", extra={"timeout_s": timeout_s})

    async def score(self, model: LoadedModel, rows: Rows) -> np.ndarray:
        """The scores of `rows` by `model`, computed on the worker thread.

        Raises:
            EncodingError: a raw value the encoder refused.
            ModelError: the model failed on these rows.
            NotReadyError: the worker is stopped.
            DeadlineExceededError: no score within `timeout_s`.
        """
        if self._thread is None:
            raise NotReadyError(NOT_RUNNING)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[np.ndarray] = loop.create_future()
        if not self._outbox:
            loop.call_soon(self._hand_over)
        self._outbox.append(_Job(model, rows, future, request_id.get()))
        deadline = loop.call_later(self._timeout_s, _expire, future, self._timeout_s)
        try:
            return await future
        finally:
            deadline.cancel()

    def _hand_over(self) -> None:
        """Queue the jobs of one event-loop step for the worker, together: the worker wakes once for
        them, not once per request in the middle of the step."""
        jobs, self._outbox = self._outbox, []
        with self._lock:
            if self._thread is None:
                for job in jobs:
                    if not job.future.done():
                        job.future.set_exception(NotReadyError(NOT_RUNNING))
                return
            for job in jobs:
                self._queue.put(job)

    def _work(self) -> None:
        held: list[_Job | None] = []  # what the last group took from the queue but could not use
        while True:
            job = held.pop() if held else self._queue.get()
            if job is None:
                return
            if job.future.done():  # its deadline passed while it waited
                continue
            group = self._group(job, held)
            self._call_started = time.monotonic()
            try:
                self._run(group)
            except Exception:  # a bug in the bookkeeping: fail the group, keep the worker
                logger.exception("scoring worker error", extra={"request_ids": [j.request_id for j in group]})
                _settle([(j, _model_error(j.model, "the scoring worker failed on this batch")) for j in group])
            finally:
                self._call_started = None

    def _group(self, first: _Job, held: list[_Job | None]) -> list[_Job]:
        """`first` and the waiting jobs that can join its model call; what cannot join goes to `held`."""
        group, rows = [first], first.rows.num_rows
        deadline = time.monotonic() + self._max_wait_s
        yielded = False
        while self._coalesce and rows < self._max_rows:
            try:
                timeout = deadline - time.monotonic()
                job = self._queue.get(timeout=timeout) if timeout > 0 else self._queue.get_nowait()
            except queue.Empty:
                if yielded:
                    break
                os.sched_yield()  # the event loop, if it has requests in hand, queues them meanwhile
                yielded = True
                continue
            if job is not None and job.future.done():
                continue
            if job is None or job.model is not first.model or rows + job.rows.num_rows > self._max_rows:
                held.append(job)
                break
            group.append(job)
            rows += job.rows.num_rows
        return group

    def _run(self, group: Sequence[_Job]) -> None:
        """Score a group; on a refused value, score its requests one by one so only the culprit fails."""
        model = group[0].model
        try:
            scored = model.score([job.rows for job in group], self._max_rows)
        except EncodingError as exc:
            if len(group) > 1:
                for job in group:
                    self._run([job])
            else:
                _settle([(group[0], exc)])
            return
        except Exception:  # a model that fails at run time: a 500 to each caller, a traceback here
            logger.exception(
                "scoring failed",
                extra={"model": model.name, "version": model.version, "request_ids": [j.request_id for j in group]},
            )
            _settle([(job, _model_error(model, "the model call failed")) for job in group])
            return
        finite = np.isfinite(scored.scores)
        outcomes: list[Outcome] = []
        start = 0
        for job in group:
            end = start + job.rows.num_rows
            bad = np.flatnonzero(~finite[start:end])
            if bad.size:
                outcomes.append((job, _model_error(model, f"non-finite scores for instances {bad[:10].tolist()}")))
            else:
                outcomes.append((job, scored.scores[start:end]))
            start = end
        self._record(model, scored, finite)
        _settle(outcomes)

    def _record(self, model: LoadedModel, scored: Scored, finite: np.ndarray) -> None:
        metrics, version = self._metrics, str(model.version)
        for rows in scored.call_rows:
            metrics.model_call_rows.labels(model.name).observe(rows)
        metrics.rows_scored.labels(model.name, version).inc(len(scored.scores))
        for name, count in scored.oov_rows.items():
            if count:
                metrics.oov_rows.labels(model.name, name).inc(count)
        num_finite = int(finite.sum())
        if num_finite < len(finite):
            logger.error(
                "model gave non-finite scores",
                extra={"model": model.name, "version": model.version, "rows": len(finite) - num_finite},
            )
            metrics.non_finite_scores.labels(model.name, version).inc(len(finite) - num_finite)
        metrics.observe_scores(model.name, scored.scores[finite])


def _model_error(model: LoadedModel, reason: str) -> ModelError:
    return ModelError(f"model {model.name!r} version {model.version}: {reason}; the log has the details")

"""Run the scoring service under uvicorn: `python -m service [--host H] [--port P] [--workers N]`.

Settings are `DEEPFM_SERVE_*` environment variables (`service.settings`; `python -m service --help`
lists them). This module owns what is process-wide, so that the app (`service.app.create_app`, which
tests build many times in one process) changes nothing outside itself: each worker process sets its
torch thread count, its garbage collector and what log records collect in `worker_app` before it
builds the app. glibc's
malloc thresholds are environment variables read at process start (`deploy/start-scorer.sh` sets
them); `PROMETHEUS_MULTIPROC_DIR`, with several workers, is set up here.

Threads: each worker runs its event loop and one scoring thread, the model with `torch_threads`
intra-op threads; `workers x torch_threads` may not exceed the CPUs.
"""

from __future__ import annotations

import gc
import logging
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import torch
import uvicorn
from fastapi import FastAPI

from service.app import create_app
from service.connection import Connection, ConnectionLimits
from service.logging import lighten_records, log_config
from service.metrics import MULTIPROC_ENV
from service.settings import ENV_PREFIX, Settings

logger = logging.getLogger(__name__)


def worker_app() -> FastAPI:
    """The app of one worker process, after setting what is process-wide: torch threads and the garbage
    collector (what exists now, the imported libraries, moved out of its sight; a higher young threshold)."""
    settings = Settings()
    lighten_records()
    torch.set_num_threads(settings.torch_threads)
    if settings.gc_freeze:
        gc.collect()
        gc.freeze()
    if settings.gc_young_threshold:
        gc.set_threshold(settings.gc_young_threshold, *gc.get_threshold()[1:])
    logger.info(
        "worker process",
        extra={
            "torch_threads": torch.get_num_threads(),
            "gc_frozen_objects": gc.get_freeze_count(),
            "gc_thresholds": gc.get_threshold(),
        },
    )
    return create_app(settings)


@contextmanager
def metrics_dir(workers: int) -> Iterator[None]:
    """A clean PROMETHEUS_MULTIPROC_DIR for the run: the one given, emptied, or a temporary one if workers > 1."""
    given = os.environ.get(MULTIPROC_ENV)
    if given:
        Path(given).mkdir(parents=True, exist_ok=True)
        for stale in Path(given).glob("*.db"):
            stale.unlink()
        yield
        return
    if workers == 1:
        yield
        return
    with tempfile.TemporaryDirectory(prefix="deepfm-metrics-") as path:
        os.environ[MULTIPROC_ENV] = path
        try:
            yield
        finally:
            del os.environ[MULTIPROC_ENV]


def run(host: str | None = None, port: int | None = None, workers: int | None = None) -> None:
    """Serve until SIGTERM or SIGINT; arguments given override their environment variables.

    Raises:
        pydantic.ValidationError: invalid settings, naming each one at fault.
    """
    for name, value in (("host", host), ("port", port), ("workers", workers)):
        if value is not None:
            os.environ[f"{ENV_PREFIX}{name.upper()}"] = str(value)  # the workers read the same settings
    settings = Settings()
    limits = ConnectionLimits(settings.max_header_bytes, settings.header_timeout_s, settings.max_connections)
    with metrics_dir(settings.workers):
        uvicorn.run(
            f"{__name__}:worker_app",
            factory=True,
            host=settings.host,
            port=settings.port,
            workers=settings.workers,
            log_config=log_config(settings.log_level),
            access_log=False,  # the request middleware logs each request with its id
            http=partial(Connection, limits=limits),  # type: ignore[arg-type]  # HTTP limits: service/connection.py
            timeout_graceful_shutdown=settings.drain_timeout_s,
        )

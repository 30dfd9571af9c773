"""Run the scoring service under uvicorn: `python -m service [--host H] [--port P] [--workers N]`.

Every setting is an environment variable with the `DEEPFM_SERVE_` prefix (`service.settings.Settings`;
`python -m service --help` lists them with their defaults):

    DEEPFM_SERVE_MODELS_STORE       models store root (models_store)
    DEEPFM_SERVE_DEFAULT_MODEL      model of requests that name none (deepfm)
    DEEPFM_SERVE_MODELS             comma-separated models to load (all in the store)
    DEEPFM_SERVE_PINNED_VERSIONS    model=version pairs never hot-reloaded, e.g. deepfm=1
    DEEPFM_SERVE_KEEP_VERSIONS      versions kept loaded per model (2)
    DEEPFM_SERVE_POLL_INTERVAL_S    seconds between store scans for new versions; 0 = off (30)
    DEEPFM_SERVE_ADMIN_TOKEN        bearer token of POST /admin/reload; unset = admin disabled
    DEEPFM_SERVE_MAX_BATCH_ROWS     most instances per request (10000)
    DEEPFM_SERVE_MAX_BODY_BYTES     largest request body (8 MiB)
    DEEPFM_SERVE_STRICT             reject missing or null fields (false)
    DEEPFM_SERVE_COALESCE           merge concurrent requests into one model call (true)
    DEEPFM_SERVE_BATCH_MAX_ROWS     most rows per model call (1024)
    DEEPFM_SERVE_BATCH_MAX_WAIT_MS  how long a model call waits for more requests (0)
    DEEPFM_SERVE_TORCH_THREADS      torch threads per worker (CPUs // workers)
    DEEPFM_SERVE_HOST, _PORT, _WORKERS, _LOG_LEVEL   (127.0.0.1, 8000, 1, info)

Logs are JSON lines on stderr, one access line per request with its id at `info`
(DEEPFM_SERVE_LOG_LEVEL=warning drops them). Threads: each worker runs its event loop and one
scoring thread, the model with DEEPFM_SERVE_TORCH_THREADS intra-op threads; keep
workers x torch_threads <= CPUs (the default, CPUs // workers, does; more is refused at start).

With more than one worker, metrics are shared through `PROMETHEUS_MULTIPROC_DIR`: a directory given
there is emptied at start; otherwise a temporary one is made and removed at exit. uvicorn handles
SIGTERM: it stops accepting connections, finishes the requests in flight, then the app shuts down.
Each response reaches the socket in one write (`service.protocol`), so a replica killed outright
has sent a whole response or none, which a load balancer can retry elsewhere.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import uvicorn

from service.logging import log_config
from service.metrics import MULTIPROC_ENV
from service.protocol import WholeResponseProtocol
from service.settings import ENV_PREFIX, Settings


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
    with metrics_dir(settings.workers):
        uvicorn.run(
            "service.app:create_app",
            factory=True,
            host=settings.host,
            port=settings.port,
            workers=settings.workers,
            log_config=log_config(settings.log_level),
            access_log=False,  # the request middleware logs each request with its id
            http=WholeResponseProtocol,  # a response's header and body in one write: see service/protocol.py
            timeout_graceful_shutdown=settings.drain_timeout_s,
        )

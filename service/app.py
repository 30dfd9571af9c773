"""The FastAPI app factory: settings in, an app with its models, scoring worker and reload poller out.

The lifespan loads and warms up every model (a start with nothing to serve for the default model
fails), starts the scoring worker and the reload poller; on shutdown (after uvicorn has finished
the requests in flight) it stops the poller, lets the worker finish what is queued, and retires this
process's metrics. The app changes nothing process-wide (`service.main` does, for a worker process).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import torch
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi_offline import FastAPIOffline
from starlette.exceptions import HTTPException
from starlette.responses import Response

from deepfm.errors import EncodingError
from service.batching import Batcher
from service.errors import ServiceError, as_service_error
from service.metrics import ServiceMetrics
from service.middleware import RequestMiddleware, error_response
from service.openapi import with_model
from service.predict import PredictEndpoint
from service.registry import ModelRegistry, ReloadPoller
from service.routes import Service, api_router
from service.settings import Settings

logger = logging.getLogger(__name__)

# By shutdown uvicorn has drained the requests in flight (drain_timeout_s): the worker holds at most a
# model call that nobody waits for, which is given a second and then left to the process's exit.
WORKER_STOP_S = 1.0

DESCRIPTION = """Click-through-rate scoring with DeepFM-family models.

Send raw feature values to `POST /predict`; `GET /schema` lists the fields a model reads, with
examples. Every error has the shape `{"error": {"code", "message", "details": [{"instance", "field",
"message"}]}}`.
"""


async def render_error(request: Request, exc: Exception) -> Response:
    """The one exception handler: every error as `{"error": {...}}` with its HTTP status."""
    return error_response(as_service_error(exc))


class OpenAPIDocument:
    """The app's OpenAPI document for the serving version of the default model, rebuilt when that changes."""

    def __init__(self, app: FastAPI, registry: ModelRegistry, max_instances: int) -> None:
        self._app = app
        self._registry = registry
        self._max_instances = max_instances
        self._cached: tuple[object, dict[str, Any]] | None = None

    def __call__(self) -> dict[str, Any]:
        model = self._registry.get() if self._registry.ready else None
        if self._cached is None or self._cached[0] is not model:
            app = self._app
            routes = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            self._cached = (model, with_model(routes, model, self._max_instances))
        return self._cached[1]


def create_app(settings: Settings | None = None) -> FastAPI:
    """The scoring service app.

    Args:
        settings: the service settings; read from the environment if None.
    """
    settings = settings or Settings()
    metrics = ServiceMetrics()
    service = Service(
        settings=settings,
        registry=ModelRegistry(settings, metrics),
        batcher=Batcher(
            metrics,
            max_rows=settings.batch_max_rows,
            max_wait_s=settings.batch_max_wait_ms / 1000,
            coalesce=settings.coalesce,
            timeout_s=settings.request_timeout_s,
        ),
        metrics=metrics,
    )
    poller = ReloadPoller(service.registry, settings.poll_interval_s)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await asyncio.to_thread(service.registry.load_all)
        service.batcher.start()
        poller.start()
        serving = {m.name: m.version for m in service.registry.describe().models}
        logger.info(
            "service ready",
            extra={"models": serving, "torch_threads": torch.get_num_threads()},
        )
        try:
            yield
        finally:
            poller.stop()
            service.batcher.stop(WORKER_STOP_S)
            metrics.close()
            logger.info("service stopped")

    app = FastAPIOffline(  # Swagger UI and ReDoc from files shipped with the package, not from a CDN
        title="deepfm scoring service",
        version="1",
        description=DESCRIPTION,
        lifespan=lifespan,
        # metrics are Prometheus's (/metrics); FastAPI's native OpenTelemetry would look up the global
        # OpenTelemetry providers on every request to find that none is configured
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.include_router(api_router(service))
    for exc_class in (ServiceError, EncodingError, RequestValidationError, HTTPException):
        app.add_exception_handler(exc_class, render_error)
    predict = PredictEndpoint(settings, service.registry, service.batcher, metrics)
    app.add_middleware(RequestMiddleware, metrics=metrics, max_body_bytes=settings.max_body_bytes, predict=predict)
    app.openapi = OpenAPIDocument(app, service.registry, settings.max_batch_rows)  # type: ignore[method-assign]
    return app

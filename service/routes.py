"""The HTTP API but predict (`service.predict`): schema, models, health, metrics, admin reload and promotion."""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Depends, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from service.batching import Batcher
from service.errors import (
    ForbiddenError,
    InvalidInputError,
    MalformedRequestError,
    NotFoundError,
    NotReadyError,
    UnauthorizedError,
)
from service.metrics import ServiceMetrics
from service.openapi import error_responses
from service.registry import ModelRegistry
from service.schemas import (
    HealthResponse,
    ModelsResponse,
    PromoteRequest,
    ReloadResponse,
    SchemaResponse,
)
from service.settings import Settings


@dataclass(frozen=True)
class Service:
    """What the routes work with; one per app."""

    settings: Settings
    registry: ModelRegistry
    batcher: Batcher
    metrics: ServiceMetrics


_bearer = HTTPBearer(auto_error=False, description="The service's admin_token.")
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def api_router(service: Service) -> APIRouter:
    """The routes, bound to one Service."""
    router = APIRouter()
    settings, registry, batcher, metrics = service.settings, service.registry, service.batcher, service.metrics

    def is_admin(credentials: HTTPAuthorizationCredentials | None) -> bool:
        if settings.admin_token is None or credentials is None:
            return False
        return hmac.compare_digest(credentials.credentials.encode(), settings.admin_token.get_secret_value().encode())

    async def require_admin(credentials: Credentials) -> None:
        """Pass only requests bearing the admin token; 403 when no token is configured, 401 for a wrong one."""
        if settings.admin_token is None:
            raise ForbiddenError("the admin API is disabled: set DEEPFM_SERVE_ADMIN_TOKEN to enable it")
        if not is_admin(credentials):
            raise UnauthorizedError("a valid bearer token is required", headers={"WWW-Authenticate": "Bearer"})

    @router.get(
        "/schema", summary="Request fields of a model", responses=error_responses(NotFoundError, InvalidInputError)
    )
    async def schema(model: str | None = None, version: int | None = None) -> SchemaResponse:
        """The fields a client sends to a model (the default one unless named), with examples, and its metrics."""
        loaded = registry.get(model, version)
        return SchemaResponse(
            model=loaded.name,
            version=loaded.version,
            metrics=loaded.artifact.metadata.get("metrics", {}),
            fields=[field.info() for field in loaded.spec.fields.values()],
        )

    @router.get(
        "/models",
        summary="Loaded models",
        openapi_extra={"security": [{}, {"HTTPBearer": []}]},  # the token is optional: it only adds detail
    )
    async def models(credentials: Credentials) -> ModelsResponse:
        """Loaded models, their serving, loaded, held and refused versions, and metadata (in full, with paths
        and library versions, for a request bearing the admin token)."""
        return registry.describe(full=is_admin(credentials))

    @router.get("/health/live", summary="Liveness")
    async def live() -> HealthResponse:
        """200 while the process runs."""
        return HealthResponse(status="alive")

    @router.get("/health/ready", summary="Readiness", responses=error_responses(NotReadyError))
    async def ready() -> HealthResponse:
        """200 once the default model is loaded, verified and warmed up, and the scoring worker runs."""
        if not (registry.ready and batcher.running):
            raise NotReadyError("no model loaded yet")
        return HealthResponse(status="ready")

    @router.get("/metrics", summary="Prometheus metrics", response_class=Response)
    def prometheus() -> Response:
        """Prometheus text exposition, aggregated over worker processes."""
        content, media_type = metrics.render()
        return Response(content, media_type=media_type)

    @router.post(
        "/admin/reload",
        summary="Load new model versions now",
        dependencies=[Depends(require_admin)],
        responses=error_responses(UnauthorizedError, ForbiddenError),
    )
    def reload() -> ReloadResponse:
        """Scan the store now and apply the promotion rule to each model that is not pinned (as the poller does)."""
        return ReloadResponse(results=registry.refresh())

    @router.post(
        "/admin/promote",
        summary="Serve a version on purpose",
        dependencies=[Depends(require_admin)],
        responses=error_responses(
            MalformedRequestError, UnauthorizedError, ForbiddenError, NotFoundError, InvalidInputError
        ),
    )
    def promote(body: PromoteRequest) -> ReloadResponse:
        """Serve a version of a model whatever the promotion gate says (a held one, or a rollback) until a newer
        version passes the gate; a restart applies the rule again (pin a version to keep it)."""
        return ReloadResponse(results=[registry.promote(body.model, body.version)])

    return router

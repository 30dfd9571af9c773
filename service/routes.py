"""The HTTP API: predict, schema, models, health, metrics, and admin reload and promotion."""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Depends, Request, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from service.batching import Batcher
from service.errors import (
    DeadlineExceededError,
    ForbiddenError,
    InvalidInputError,
    MalformedRequestError,
    ModelError,
    NotFoundError,
    NotReadyError,
    PayloadTooLargeError,
    ServiceError,
    UnauthorizedError,
)
from service.metrics import ServiceMetrics
from service.registry import ModelRegistry
from service.schemas import (
    ErrorResponse,
    HealthResponse,
    ModelsResponse,
    PredictResponse,
    PromoteRequest,
    ReloadResponse,
    SchemaResponse,
    parse_predict_request,
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


def _errors(*errors: type[ServiceError]) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for error responses, all in the one error shape, each with its own example."""
    responses: dict[int | str, dict[str, Any]] = {}
    for error in errors:
        entry = responses.setdefault(
            error.status_code, {"model": ErrorResponse, "description": "", "content": {"application/json": {}}}
        )
        entry["description"] = " ".join(filter(None, [entry["description"], error.__doc__ or error.code]))
        examples = entry["content"]["application/json"].setdefault("examples", {})
        examples[error.code] = {"summary": error.code, "value": error.example_body()}
    return responses


PREDICT_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/PredictRequest"}}},
    }
}


def api_router(service: Service) -> APIRouter:
    """The routes, bound to one Service (a closure: the predict path resolves no dependencies)."""
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

    @router.post(
        "/predict",
        response_model=PredictResponse,
        response_model_exclude_none=True,
        summary="Score instances",
        responses=_errors(
            MalformedRequestError,
            NotFoundError,
            PayloadTooLargeError,
            InvalidInputError,
            ServiceError,
            ModelError,
            NotReadyError,
            DeadlineExceededError,
        ),
        openapi_extra=PREDICT_BODY,
    )
    async def predict(request: Request) -> Response:
        """Click probabilities for raw feature rows, in the order given.

        Values are raw, as a client has them: the service applies the model's transforms and
        vocabularies, and unknown values score as unknown (OOV). Missing or null fields score as
        unknown too, or are refused in strict mode. Fields shared by every row go in `context`.
        """
        body = parse_predict_request(await request.body())
        if len(body.instances) > settings.max_batch_rows:
            limit = settings.max_batch_rows
            raise InvalidInputError(f"{len(body.instances)} instances, more than max_batch_rows ({limit})")
        model = registry.get(body.model, body.version)
        rows = model.spec.rows(body.instances, body.context, settings.strict if body.strict is None else body.strict)
        metrics.request_rows.labels(model.name).observe(rows.num_rows)
        scores = await batcher.score(model, rows)
        top_k = None if body.top_k is None else np.argsort(-scores, kind="stable")[: body.top_k].tolist()
        response = PredictResponse.model_construct(
            model=model.name, version=model.version, predictions=scores.tolist(), top_k=top_k
        )
        # valid by construction: serialised here, skipping FastAPI's re-validation of the response
        return Response(response.model_dump_json(exclude_none=True), media_type="application/json")

    @router.get("/schema", summary="Request fields of a model", responses=_errors(NotFoundError, InvalidInputError))
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

    @router.get("/health/ready", summary="Readiness", responses=_errors(NotReadyError))
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
        responses=_errors(UnauthorizedError, ForbiddenError),
    )
    def reload() -> ReloadResponse:
        """Scan the store now and apply the promotion rule to each model that is not pinned (as the poller does)."""
        return ReloadResponse(results=registry.refresh())

    @router.post(
        "/admin/promote",
        summary="Serve a version on purpose",
        dependencies=[Depends(require_admin)],
        responses=_errors(MalformedRequestError, UnauthorizedError, ForbiddenError, NotFoundError, InvalidInputError),
    )
    def promote(body: PromoteRequest) -> ReloadResponse:
        """Serve a version of a model whatever the promotion gate says (a held one, or a rollback) until a newer
        version passes the gate; a restart applies the rule again (pin a version to keep it)."""
        return ReloadResponse(results=[registry.promote(body.model, body.version)])

    return router

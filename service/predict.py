"""POST /predict: raw JSON rows in, click probabilities out, as a plain ASGI endpoint.

The request path reads endpoint -> scoring worker -> model: the body is parsed into its envelope
(`service.schemas`), the model's request fields check the instances (`service.inputs`), the worker
encodes and scores them with others that wait (`service.batching`), and the scores go out as JSON.
It is the one path under load, so the request middleware hands it the request directly instead of
through FastAPI's router, Request object and handler (a quarter of a one-row request's CPU:
docs/decisions.md); its OpenAPI operation is declared in `service.openapi`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pydantic_core
from starlette.requests import ClientDisconnect
from starlette.types import Receive, Scope, Send

from deepfm.errors import EncodingError
from service.batching import Batcher
from service.errors import InvalidInputError, ServiceError, as_service_error
from service.metrics import ServiceMetrics
from service.registry import ModelRegistry
from service.schemas import parse_predict_request
from service.settings import Settings

JSON_HEADERS = [(b"content-type", b"application/json")]


async def read_body(receive: Receive) -> bytes:
    """The whole request body.

    Raises:
        ClientDisconnect: the client hung up before sending it all.
    """
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


class PredictEndpoint:
    """Scores the instances of a predict request (the OpenAPI operation says what it takes and gives).

    Args:
        settings: strict mode and the batch limit.
        registry: the models.
        batcher: the scoring worker.
        metrics: where request sizes go.
    """

    def __init__(self, settings: Settings, registry: ModelRegistry, batcher: Batcher, metrics: ServiceMetrics) -> None:
        self._settings = settings
        self._registry = registry
        self._batcher = batcher
        self._metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            status, content = 200, await self._predict(await read_body(receive))
            headers = JSON_HEADERS
        except (ServiceError, EncodingError) as exc:
            error = as_service_error(exc)
            status, content = error.status_code, pydantic_core.to_json(error.body())
            headers = [*JSON_HEADERS, *((k.lower().encode(), v.encode()) for k, v in error.headers.items())]
        length = (b"content-length", str(len(content)).encode())
        await send({"type": "http.response.start", "status": status, "headers": [*headers, length]})
        await send({"type": "http.response.body", "body": content})

    async def _predict(self, body: bytes) -> bytes:
        request = parse_predict_request(body)
        limit = self._settings.max_batch_rows
        if len(request.instances) > limit:
            raise InvalidInputError(f"{len(request.instances)} instances, more than max_batch_rows ({limit})")
        model = self._registry.get(request.model, request.version)
        strict = self._settings.strict if request.strict is None else request.strict
        rows = model.spec.rows(request.instances, request.context, strict)
        self._metrics.request_rows.labels(model.name).observe(rows.num_rows)
        scores = await self._batcher.score(model, rows)
        response: dict[str, Any] = {"model": model.name, "version": model.version, "predictions": scores.tolist()}
        if request.top_k is not None:
            response["top_k"] = np.argsort(-scores, kind="stable")[: request.top_k].tolist()
        return pydantic_core.to_json(response)

"""Errors the service answers with; each carries its HTTP status and renders as one JSON shape.

    ServiceError                  500 internal_error
    ├── MalformedRequestError     400 malformed_json
    ├── UnauthorizedError         401 unauthorized
    ├── ForbiddenError            403 forbidden
    ├── NotFoundError             404 not_found (unknown model or version; the router's 404 has the same code)
    ├── PayloadTooLargeError      413 payload_too_large
    ├── InvalidInputError         422 invalid_input (details name the instance and field)
    ├── ModelError                500 model_error (a model call failed or gave non-finite scores)
    ├── NotReadyError             503 not_ready
    └── DeadlineExceededError     504 deadline_exceeded (no score within request_timeout_s)

Other HTTP errors (the router's 405, ...) keep their status, coded by its phrase (`with_status`).
Rendered as `{"error": {"code": ..., "message": ..., "details": [{"instance": i, "field": f, "message": m}]}}`.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from http import HTTPStatus
from typing import Any

from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException

from deepfm.errors import EncodingError


@dataclass(frozen=True)
class ErrorDetail:
    """One problem in a request: the instance (None: the request or its context) and field at fault."""

    message: str
    instance: int | None = None
    field: str | None = None


class ServiceError(Exception):
    """Root of the service's errors.

    Args:
        message: what is wrong, with the offending values.
        details: per-instance, per-field problems.
        headers: extra response headers (e.g. WWW-Authenticate).
    """

    status_code: int = 500
    code: str = "internal_error"
    example: str = "internal error; the log has the details"
    example_details: tuple[ErrorDetail, ...] = ()

    def __init__(
        self, message: str, details: list[ErrorDetail] | None = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or []
        self.headers = headers or {}

    @classmethod
    def with_status(cls, status_code: int, message: str, headers: dict[str, str] | None = None) -> ServiceError:
        """An error for an HTTP status raised outside the service (the router's 404 and 405), coded by its phrase."""
        error = cls(message, headers=headers)
        error.status_code = status_code
        error.code = re.sub(r"\W+", "_", HTTPStatus(status_code).phrase.lower())
        return error

    @classmethod
    def example_body(cls) -> dict[str, Any]:
        """The JSON error document of a typical error of this class (for the OpenAPI document)."""
        return cls(cls.example, list(cls.example_details)).body()

    def body(self) -> dict[str, Any]:
        """The JSON error document."""
        return {"error": {"code": self.code, "message": self.message, "details": [asdict(d) for d in self.details]}}


class MalformedRequestError(ServiceError):
    """The body is not valid JSON."""

    status_code, code = 400, "malformed_json"
    example = "request body is not valid JSON: expected value at line 1 column 16"


class UnauthorizedError(ServiceError):
    """A missing or wrong bearer token."""

    status_code, code = 401, "unauthorized"
    example = "a valid bearer token is required"


class ForbiddenError(ServiceError):
    """The action is disabled by configuration."""

    status_code, code = 403, "forbidden"
    example = "the admin API is disabled: set DEEPFM_SERVE_ADMIN_TOKEN to enable it"


class NotFoundError(ServiceError):
    """An unknown route, model or version."""

    status_code, code = 404, "not_found"
    example = "model 'dfm' is not loaded; loaded models: ['deepfm', 'xdeepfm']"


class PayloadTooLargeError(ServiceError):
    """The body exceeds `max_body_bytes`."""

    status_code, code = 413, "payload_too_large"
    example = "request body exceeds max_body_bytes (8388608 bytes)"


class InvalidInputError(ServiceError):
    """Well-formed JSON that the model cannot score: unknown fields, wrong types, bad sizes."""

    status_code, code = 422, "invalid_input"
    example = "1 problem(s) in the request"
    example_details = (ErrorDetail("unknown field; GET /schema lists the fields", 3, "agee"),)


class NotReadyError(ServiceError):
    """No model is loaded yet, or the scoring worker does not run."""

    status_code, code = 503, "not_ready"
    example = "no model loaded yet"


class ModelError(ServiceError):
    """The model failed on these rows (an exception, or a score that is not a finite probability)."""

    status_code, code = 500, "model_error"
    example = "model 'deepfm' version 3: non-finite scores for instances [2]; the log has the details"


class DeadlineExceededError(ServiceError):
    """The request was not scored within the server's deadline."""

    status_code, code = 504, "deadline_exceeded"
    example = "no score within the server's deadline of 5 s"


def as_service_error(exc: Exception) -> ServiceError:
    """The ServiceError for an exception raised while handling a request: the one place where the
    encoder's refusals become 422s naming instance and field."""
    if isinstance(exc, ServiceError):
        return exc
    if isinstance(exc, EncodingError):
        details = [ErrorDetail(str(p), p.row, p.field) for p in exc.problems]
        return InvalidInputError(f"{len(details)} problem(s) in the request", details)
    if isinstance(exc, RequestValidationError):
        details = [ErrorDetail(e["msg"], None, ".".join(map(str, e["loc"][1:]))) for e in exc.errors()]
        return InvalidInputError(f"{len(details)} problem(s) in the request", details)
    if isinstance(exc, HTTPException) and exc.status_code == MalformedRequestError.status_code:
        return MalformedRequestError(f"request body is not valid JSON: {exc.detail}")  # FastAPI's body parsing
    if isinstance(exc, HTTPException):  # the router's 404 and 405 (with its Allow header)
        return ServiceError.with_status(exc.status_code, str(exc.detail), headers=dict(exc.headers or {}))
    return ServiceError(str(exc))

"""Request and response bodies, and the parsing of a predict request into one with clear errors.

Parsing checks the request's shape; instance values are JSON values of any type here. Which fields
exist and that each value is a raw value (`RawValue`: string, 64-bit integer, finite number, list of
strings or integers, null) are checked against the model's request fields afterwards
(`service.inputs`, column by column, faster than pydantic's union validation per value), and what
each field takes by the encoder, because both differ between models.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    AllowInfNan,
    BaseModel,
    ConfigDict,
    Field,
    Strict,
    StrictStr,
    TypeAdapter,
    ValidationError,
    WithJsonSchema,
)
from pydantic_core import ErrorDetails

from service.errors import ErrorDetail, InvalidInputError, MalformedRequestError

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
Int = Annotated[int, Strict(), Field(ge=INT64_MIN, le=INT64_MAX)]
Float = Annotated[float, Strict(), AllowInfNan(False)]
RawValue = Annotated[StrictStr | Int | Float | list[StrictStr | Int] | None, Field(union_mode="left_to_right")]
"""A raw feature value, as a client has it; null scores as missing."""
DocumentedValue = Annotated[Any, WithJsonSchema(TypeAdapter(RawValue).json_schema())]
"""A JSON value, documented as a RawValue: `service.inputs` checks it is one."""

INSTANCE_EXAMPLE: dict[str, Any] = {
    "user_id": 196,
    "movie_id": 242,
    "gender": "M",
    "age": 24,
    "occupation": "writer",
    "zip_code": "85711",
    "genres": ["Comedy", "Drama"],
}


class PredictRequest(BaseModel):
    """Rows to score, with optional fields shared by all of them."""

    model_config = ConfigDict(extra="forbid")

    instances: list[dict[str, DocumentedValue]] = Field(
        min_length=1, description="Rows to score: request field -> raw value. See `GET /schema` for the fields."
    )
    context: dict[str, DocumentedValue] | None = Field(
        default=None,
        description="Fields shared by every instance (e.g. the user of a ranking call), sent and encoded once. "
        "A field may be in the context or in the instances, not both.",
    )
    top_k: int | None = Field(default=None, ge=1, description="Also return the indices of the k best-scored rows.")
    model: str | None = Field(default=None, description="Model name; the service's default model if unset.")
    version: int | None = Field(default=None, ge=1, description="Model version; the serving version if unset.")
    strict: bool | None = Field(
        default=None,
        description="Reject missing or null fields instead of scoring them as unknown; "
        "the service's `strict` setting if unset.",
    )


PREDICT_EXAMPLES: dict[str, dict[str, Any]] = {
    "batch": {
        "summary": "Score rows",
        "value": {"instances": [INSTANCE_EXAMPLE, {**INSTANCE_EXAMPLE, "movie_id": 302, "genres": ["Crime"]}]},
    },
    "ranking": {
        "summary": "Rank candidate movies for one user",
        "description": "The user's fields are sent once in `context`; `top_k` returns the best rows' indices.",
        "value": {
            "context": {k: INSTANCE_EXAMPLE[k] for k in ("user_id", "gender", "age", "occupation", "zip_code")},
            "instances": [
                {"movie_id": 242, "genres": ["Comedy"]},
                {"movie_id": 302, "genres": ["Crime", "Film-Noir"]},
                {"movie_id": 377, "genres": ["Children", "Comedy"]},
            ],
            "top_k": 2,
        },
    },
    "model_version": {
        "summary": "Name a model and version",
        "value": {"model": "deepfm", "version": 1, "instances": [INSTANCE_EXAMPLE]},
    },
}


class PredictResponse(BaseModel):
    """Click probabilities in the order of the instances."""

    model: str = Field(description="Model that scored the request.")
    version: int = Field(description="Its version.")
    predictions: list[float] = Field(description="Click probability of each instance, in request order.")
    top_k: list[int] | None = Field(default=None, description="Indices of the k best-scored instances, best first.")

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"model": "deepfm", "version": 1, "predictions": [0.73, 0.41]}]}
    )


class ErrorDetailBody(BaseModel):
    """One problem: the instance (null: the request or its context) and the field at fault."""

    instance: int | None
    field: str | None
    message: str


class ErrorBody(BaseModel):
    """What went wrong."""

    code: str
    message: str
    details: list[ErrorDetailBody]


class ErrorResponse(BaseModel):
    """The one error shape of every endpoint."""

    error: ErrorBody

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "error": {
                        "code": "invalid_input",
                        "message": "1 problem in the request",
                        "details": [{"instance": 3, "field": "agee", "message": "unknown field"}],
                    }
                }
            ]
        }
    )


class FeatureInfo(BaseModel):
    """A model input field fed by a request field."""

    name: str
    feature_type: Literal["sparse", "dense", "sequence"]
    transform: dict[str, Any] = Field(description="How the raw value becomes the looked-up value.")
    known_values: int | None = Field(description="Size of the fitted vocabulary; null for dense fields.")


class RequestFieldInfo(BaseModel):
    """A field a client sends."""

    name: str
    type: Literal["categorical", "numeric"]
    multi_valued: bool = Field(description="Takes a list (or a separated string) of values.")
    example: Any
    features: list[FeatureInfo]


class SchemaResponse(BaseModel):
    """The request fields of a model version, with its metrics."""

    model: str
    version: int
    metrics: dict[str, Any]
    fields: list[RequestFieldInfo]


class RefusedVersion(BaseModel):
    """A version that failed to load and is not retried until its files change."""

    version: int
    reason: str


class ModelInfo(BaseModel):
    """A loaded model."""

    name: str
    version: int = Field(description="The serving version.")
    loaded_versions: list[int]
    pinned: bool
    refused_versions: list[RefusedVersion]
    metadata: dict[str, Any] = Field(description="metadata.json of the serving version.")


class ModelsResponse(BaseModel):
    """Every loaded model."""

    default_model: str
    models: list[ModelInfo]


class ReloadResult(BaseModel):
    """What a reload did to one model."""

    model: str
    previous_version: int | None
    version: int | None
    refused: list[RefusedVersion]


class ReloadResponse(BaseModel):
    """What a reload did."""

    results: list[ReloadResult]


class HealthResponse(BaseModel):
    """Liveness or readiness."""

    status: Literal["alive", "ready"]


def _location(error: ErrorDetails) -> tuple[int | None, str | None]:
    """(instance, field) of a pydantic error."""
    loc = error["loc"]
    if loc[:1] == ("instances",) and len(loc) == 2:
        return int(loc[1]), None
    return None, ".".join(map(str, loc)) or None


def parse_predict_request(body: bytes) -> PredictRequest:
    """A predict request of the right shape; MalformedRequestError for bad JSON, InvalidInputError naming
    instance and field. (Its values are checked by `service.inputs.RequestSpec.rows`.)"""
    try:
        return PredictRequest.model_validate_json(body)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
    if errors[0]["type"] == "json_invalid":
        raise MalformedRequestError(f"request body is not valid JSON: {errors[0]['msg']}")
    details = [ErrorDetail(error["msg"], *_location(error)) for error in errors]
    raise InvalidInputError(f"{len(details)} problem(s) in the request", details)

"""Request and response bodies, and the parsing of a predict request into one with clear errors.

Parsing checks the request's envelope, with strict types (a boolean is no integer, a name is a
non-empty string). Instance and context values are JSON values of any type here: which fields exist
is checked against the model's request fields (`service.inputs`), and what each field takes by the
encoder (`deepfm.data.encoding`), the one judge of raw values. The OpenAPI document describes each
value as the serving model's encoder takes it (`service.openapi`).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import pydantic_core
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_core import ErrorDetails

from service.errors import ErrorDetail, InvalidInputError, MalformedRequestError

Instance = dict[str, Any]
ModelName = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]


class PredictRequest(BaseModel):
    """Rows to score, with optional fields shared by all of them."""

    model_config = ConfigDict(extra="forbid", strict=True)

    instances: list[Any] = Field(  # each an object: `service.inputs` checks it (cheaper than a copy of each)
        min_length=1, description="Rows to score: request field -> raw value. See `GET /schema` for the fields."
    )
    context: Instance | None = Field(
        default=None,
        description="Fields shared by every instance (e.g. the user of a ranking call), sent and encoded once. "
        "A field may be in the context or in the instances, not both.",
    )
    top_k: int | None = Field(default=None, ge=1, description="Also return the indices of the k best-scored rows.")
    model: ModelName | None = Field(default=None, description="Model name; the service's default model if unset.")
    version: int | None = Field(default=None, ge=1, description="Model version; the serving version if unset.")
    strict: bool | None = Field(
        default=None,
        description="Reject missing or null fields instead of scoring them as unknown; "
        "the service's `strict` setting if unset.",
    )


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


class FeatureInfo(BaseModel):
    """A model input field fed by a request field."""

    name: str
    feature_type: Literal["sparse", "dense", "sequence"]
    transform: dict[str, Any] = Field(description="How the raw value becomes the looked-up value.")
    vocabulary_size: int | None = Field(description="Known values (after the transform); null for dense fields.")
    known_values: list[str] | None = Field(
        description="The known values after the transform, most frequent first, for vocabularies of at most 100 "
        "(other values score as unknown); null for larger ones and dense fields."
    )


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


class HeldVersion(BaseModel):
    """A version that loaded but failed the promotion gate: scored only by requests naming it."""

    version: int
    reason: str


class ModelInfo(BaseModel):
    """A loaded model."""

    name: str
    version: int = Field(description="The serving version.")
    runtime: Literal["onnx", "torchscript"] = Field(
        description="What scores the serving version: its ONNX form by ONNX Runtime, or its TorchScript model."
    )
    loaded_versions: list[int] = Field(description="Versions a request may name: the serving, previous and held ones.")
    pinned: bool
    held_versions: list[HeldVersion]
    refused_versions: list[RefusedVersion]
    metadata: dict[str, Any] = Field(
        description="metadata.json of the serving version; without library versions and paths unless the request "
        "bears the admin token."
    )


class UnavailableModel(BaseModel):
    """A model of the store with no version that loads."""

    name: str
    refused_versions: list[RefusedVersion]


class ModelsResponse(BaseModel):
    """Every loaded model, and the store's models that have nothing to serve."""

    default_model: str
    models: list[ModelInfo]
    unavailable_models: list[UnavailableModel]


class ReloadResult(BaseModel):
    """What a reload or promotion did to one model."""

    model: str
    previous_version: int | None
    version: int | None
    refused: list[RefusedVersion] = Field(description="Versions refused by this reload.")
    held: list[HeldVersion] = Field(description="The version held by the promotion gate, if any.")


class PromoteRequest(BaseModel):
    """A version to serve whatever the promotion gate says."""

    model_config = ConfigDict(extra="forbid", strict=True)

    model: ModelName
    version: int = Field(ge=1)


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
    """A predict request of the right shape.

    Raises:
        MalformedRequestError: the body is not JSON (NaN and Infinity are not JSON).
        InvalidInputError: naming the instance and field of each problem with the envelope.
    """
    try:
        data = pydantic_core.from_json(body, allow_inf_nan=False)
    except ValueError as exc:
        raise MalformedRequestError(f"request body is not valid JSON: {exc}") from None
    try:
        return PredictRequest.model_validate(data)
    except ValidationError as exc:
        details = [ErrorDetail(error["msg"], *_location(error)) for error in exc.errors(include_url=False)]
    raise InvalidInputError(f"{len(details)} problem(s) in the request", details)

"""The OpenAPI document: FastAPI's, of the routes, plus `POST /predict` (a plain ASGI endpoint) declared
here: its envelope from `service.schemas`, each instance's fields, their raw value types
(`deepfm.data.encoding.raw_value_schema`) and the examples from the serving model's schema, and
each error with its own example.

A model trained on an ad log documents ad fields: the document is rebuilt when the default model's
serving version changes.
"""

from __future__ import annotations

import copy
from typing import Any

from pydantic.json_schema import models_json_schema

from service.errors import (
    DeadlineExceededError,
    InvalidInputError,
    MalformedRequestError,
    ModelError,
    NotFoundError,
    NotReadyError,
    PayloadTooLargeError,
    ServiceError,
)
from service.inputs import RequestSpec
from service.schemas import ErrorResponse, PredictRequest, PredictResponse
from service.scoring import LoadedModel

REF = "#/components/schemas/{model}"
PREDICT_ERRORS = (
    MalformedRequestError,
    NotFoundError,
    PayloadTooLargeError,
    InvalidInputError,
    ServiceError,
    ModelError,
    NotReadyError,
    DeadlineExceededError,
)
PREDICT_DESCRIPTION = """Click probabilities for raw feature rows, in the order given.

Values are raw, as a client has them: the service applies the model's transforms and vocabularies,
and unknown values score as unknown (OOV). Missing or null fields score as unknown too, or are
refused in strict mode. Fields shared by every row go in `context`."""


def error_responses(*errors: type[ServiceError]) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for error responses, all in the one error shape, each error with its own example."""
    responses: dict[int | str, dict[str, Any]] = {}
    for error in errors:
        entry = responses.setdefault(
            error.status_code,
            {
                "description": "",
                "content": {"application/json": {"schema": {"$ref": REF.format(model="ErrorResponse")}}},
            },
        )
        entry["description"] = " ".join(filter(None, [entry["description"], error.__doc__ or error.code]))
        examples = entry["content"]["application/json"].setdefault("examples", {})
        examples[error.code] = {"summary": error.code, "value": error.example_body()}
    return responses


def predict_operation() -> dict[str, Any]:
    """The OpenAPI operation of `POST /predict`."""
    json_of = {"application/json": {"schema": {"$ref": REF.format(model="PredictRequest")}}}
    return {
        "summary": "Score instances",
        "description": PREDICT_DESCRIPTION,
        "operationId": "predict",
        "requestBody": {"required": True, "content": json_of},
        "responses": {
            "200": {
                "description": "Click probabilities",
                "content": {"application/json": {"schema": {"$ref": REF.format(model="PredictResponse")}}},
            },
            **{str(status): entry for status, entry in error_responses(*PREDICT_ERRORS).items()},
        },
    }


def _components() -> dict[str, Any]:
    """The JSON schemas of the bodies the document names by reference, nested ones included."""
    _, definitions = models_json_schema(
        [(PredictRequest, "validation"), (PredictResponse, "serialization"), (ErrorResponse, "serialization")],
        ref_template=REF,
    )
    return dict(definitions["$defs"])


def instance_schema(spec: RequestSpec) -> dict[str, Any]:
    """An instance: each request field of the model with its raw value type; no other field."""
    return {
        "title": "Instance",
        "type": "object",
        "description": "Request field -> raw value. Missing fields and nulls score as unknown (OOV) "
        "unless the request is strict.",
        "properties": {name: field.json_schema() for name, field in spec.fields.items()},
        "additionalProperties": False,
    }


def predict_examples(model: LoadedModel) -> dict[str, dict[str, Any]]:
    """Request bodies for the model: a batch, a ranking call with one group's fields in the context, and
    one naming the model and version."""
    spec = model.spec
    first, second = spec.example_instance(0), spec.example_instance(1)
    examples: dict[str, dict[str, Any]] = {
        "batch": {"summary": "Score rows", "value": {"instances": [first, second]}},
    }
    groups = {field.group for field in spec.fields.values()}
    if len(groups) > 1:
        shared = next(iter(spec.fields.values())).group
        context = {name: first[name] for name, field in spec.fields.items() if field.group == shared}
        candidates = [{k: v for k, v in row.items() if k not in context} for row in (first, second)]
        examples["ranking"] = {
            "summary": f"Rank candidates for one {shared}",
            "description": f"The {shared}'s fields are sent once in `context`; `top_k` returns the best rows' indices.",
            "value": {"context": context, "instances": candidates, "top_k": 1},
        }
    examples["model_version"] = {
        "summary": "Name a model and version",
        "value": {"model": model.name, "version": model.version, "instances": [first]},
    }
    return examples


def with_model(document: dict[str, Any], model: LoadedModel | None, max_instances: int) -> dict[str, Any]:
    """`document` (FastAPI's, from the routes) with the predict body described for `model`; for the
    envelope alone while no model is loaded. `max_instances`: the service's max_batch_rows."""
    document = copy.deepcopy(document)
    document["paths"] = {"/predict": {"post": predict_operation()}, **document["paths"]}
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    schemas.update(_components())
    request = schemas["PredictRequest"]
    request["properties"]["instances"]["maxItems"] = max_instances
    if model is None:
        return document
    schemas["Instance"] = instance_schema(model.spec)
    instance_ref = {"$ref": REF.format(model="Instance")}
    request["properties"]["instances"]["items"] = instance_ref  # what `service.inputs` checks of each
    context = request["properties"]["context"]
    context["anyOf"] = [instance_ref, {"type": "null"}]
    body = document["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]
    body["examples"] = predict_examples(model)
    document["info"]["description"] += (
        f"\n\nThe fields and examples shown are those of model `{model.name}` version {model.version}, "
        "the default one; `GET /schema?model=...` lists another model's."
    )
    return document

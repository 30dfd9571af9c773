"""The OpenAPI document: the request envelope from `service.schemas`, each instance's fields, their raw
value types (`deepfm.data.encoding.raw_value_schema`) and the examples from the serving model's schema.

A model trained on an ad log documents ad fields: the document is rebuilt when the default model's
serving version changes.
"""

from __future__ import annotations

import copy
from typing import Any

from service.inputs import RequestSpec
from service.schemas import PredictRequest
from service.scoring import LoadedModel

REF = "#/components/schemas/{model}"


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
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    request = PredictRequest.model_json_schema(ref_template=REF)
    request["properties"]["instances"]["maxItems"] = max_instances
    schemas["PredictRequest"] = request
    if model is None:
        return document
    schemas["Instance"] = instance_schema(model.spec)
    instance_ref = {"$ref": REF.format(model="Instance")}
    request["properties"]["instances"]["items"] = instance_ref
    context = request["properties"]["context"]
    context["anyOf"] = [instance_ref, {"type": "null"}]
    body = document["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]
    body["examples"] = predict_examples(model)
    document["info"]["description"] += (
        f"\n\nThe fields and examples shown are those of model `{model.name}` version {model.version}, "
        "the default one; `GET /schema?model=...` lists another model's."
    )
    return document

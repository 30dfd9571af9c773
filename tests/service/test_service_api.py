"""The HTTP API in process (TestClient): every endpoint, every error path, in the one error shape."""

from __future__ import annotations

import gc
import json
import logging
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from serving_helpers import MODEL_NAME, UNKNOWN_INSTANCES, MakeClient, Trained, metric

from deepfm.data.schema import DatasetSchema, FeatureType, FieldSchema
from service.app import create_app
from service.inputs import KNOWN_VALUES_LISTED, RequestSpec
from service.settings import Settings

USER_FIELDS = ("user_id", "gender", "age", "occupation", "zip_code")


def assert_error(response: Any, status: int, code: str, *where: tuple[int | None, str | None]) -> dict[str, Any]:
    """The response is the one error shape with this status and code, naming (instance, field) pairs."""
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code and error["message"]
    named = {(d["instance"], d["field"]) for d in error["details"]}
    assert set(where) <= named, error
    return dict(error)


def test_predict_matches_eager_model_in_order(client: TestClient, trained: Trained) -> None:
    instances = trained.instances(20) + UNKNOWN_INSTANCES
    response = client.post("/predict", json={"instances": instances})
    assert response.status_code == 200
    body = response.json()
    assert (body["model"], body["version"]) == (MODEL_NAME, 1)
    assert "top_k" not in body
    np.testing.assert_allclose(body["predictions"], trained.eager_scores(instances), atol=1e-6, rtol=0)
    assert np.ptp(body["predictions"]) > 0.1  # the scores are not trivial


def test_context_is_shared_by_every_instance(client: TestClient, trained: Trained) -> None:
    user = {k: trained.instances(1)[0][k] for k in USER_FIELDS}
    candidates = [{"movie_id": row["movie_id"], "genres": row["genres"]} for row in trained.instances(8, start=30)]
    candidates.append({"movie_id": 99999})
    response = client.post("/predict", json={"context": user, "instances": candidates})
    assert response.status_code == 200
    expected = trained.eager_scores([{**user, **row} for row in candidates])
    np.testing.assert_allclose(response.json()["predictions"], expected, atol=1e-6, rtol=0)


def test_top_k_returns_the_best_instances_first(client: TestClient, trained: Trained) -> None:
    instances = trained.instances(10)
    scores = client.post("/predict", json={"instances": instances, "top_k": 3}).json()
    assert scores["top_k"] == list(np.argsort(scores["predictions"])[::-1][:3])
    everything = client.post("/predict", json={"instances": instances[:2], "top_k": 5}).json()
    assert sorted(everything["top_k"]) == [0, 1]


def test_model_and_version_select_a_loaded_model(client: TestClient, trained: Trained) -> None:
    instances = trained.instances(2)
    assert client.post("/predict", json={"instances": instances, "model": MODEL_NAME, "version": 1}).status_code == 200
    assert_error(client.post("/predict", json={"instances": instances, "model": "nope"}), 404, "not_found")
    assert_error(client.post("/predict", json={"instances": instances, "version": 7}), 404, "not_found")
    assert_error(client.get("/schema", params={"model": "nope"}), 404, "not_found")


BAD_BODIES: list[tuple[str, bytes, int, str, list[tuple[int | None, str | None]]]] = [
    ("malformed json", b'{"instances": [', 400, "malformed_json", []),
    ("not an object", b"[1, 2]", 422, "invalid_input", [(None, None)]),
    ("empty batch", b'{"instances": []}', 422, "invalid_input", [(None, "instances")]),
    ("instance not an object", b'{"instances": [{"age": 3}, 7]}', 422, "invalid_input", [(1, None)]),
    ("unknown field", b'{"instances": [{"age": 3}, {"agee": 3}]}', 422, "invalid_input", [(1, "agee")]),
    ("unknown request key", b'{"instances": [{"age": 3}], "foo": 1}', 422, "invalid_input", [(None, "foo")]),
    ("object value", b'{"instances": [{"gender": {"a": 1}}]}', 422, "invalid_input", [(0, "gender")]),
    ("boolean value", b'{"instances": [{"gender": true}]}', 422, "invalid_input", [(0, "gender")]),
    ("nan is not json", b'{"instances": [{"age": 3}, {"age": NaN}]}', 400, "malformed_json", []),
    ("infinity is not json", b'{"instances": [{"age": -Infinity}]}', 400, "malformed_json", []),
    ("overflowing float", b'{"instances": [{"age": 1e400}]}', 422, "invalid_input", [(0, "age")]),
    ("huge integer", b'{"instances": [{"age": 1' + b"0" * 400 + b"}]}", 422, "invalid_input", [(0, "age")]),
    ("float in a list", b'{"instances": [{"genres": ["Drama", 1.5]}]}', 422, "invalid_input", [(0, "genres")]),
    (
        "boolean in a list",
        b'{"instances": [{"genres": ["Drama"]}, {"genres": [true]}]}',
        422,
        "invalid_input",
        [(1, "genres")],
    ),
    ("list in a list", b'{"instances": [{"genres": [["Drama"]]}]}', 422, "invalid_input", [(0, "genres")]),
    (
        "huge integer among integers",
        b'{"instances": [{"age": 3}, {"age": 4}, {"age": 9223372036854775808}]}',
        422,
        "invalid_input",
        [(2, "age")],
    ),
    (
        "bad values in two fields",
        b'{"instances": [{"age": 3, "gender": "F"}, {"age": "old", "gender": false}]}',
        422,
        "invalid_input",
        [(1, "age"), (1, "gender")],
    ),
    (
        "infinity in the context",
        b'{"context": {"age": 1e999}, "instances": [{}]}',
        422,
        "invalid_input",
        [(None, "age")],
    ),
    (
        "bad values in two context fields",
        b'{"context": {"age": [1], "gender": true}, "instances": [{}]}',
        422,
        "invalid_input",
        [(None, "age"), (None, "gender")],
    ),
    # lists holding integers where they do not belong (each was a 500 before the encoder judged alone)
    ("int in a genre list", b'{"instances": [{"genres": [1]}]}', 200, "", []),
    ("text and int in a genre list", b'{"instances": [{"genres": ["Comedy", 1]}]}', 200, "", []),
    ("int list for an id", b'{"instances": [{"user_id": [1, 2]}]}', 422, "invalid_input", [(0, "user_id")]),
    ("int list for a number", b'{"instances": [{"age": [24]}]}', 422, "invalid_input", [(0, "age")]),
    ("int list for a text", b'{"instances": [{"zip_code": [85711]}]}', 422, "invalid_input", [(0, "zip_code")]),
    (
        "int list after a text",
        b'{"instances": [{"gender": "F"}, {"gender": [1]}]}',
        422,
        "invalid_input",
        [(1, "gender")],
    ),
    # the envelope is typed strictly
    ("strict as text", b'{"instances": [{"age": 3}], "strict": "yes"}', 422, "invalid_input", [(None, "strict")]),
    ("top_k as boolean", b'{"instances": [{"age": 3}], "top_k": true}', 422, "invalid_input", [(None, "top_k")]),
    ("top_k as text", b'{"instances": [{"age": 3}], "top_k": "2"}', 422, "invalid_input", [(None, "top_k")]),
    ("empty model name", b'{"instances": [{"age": 3}], "model": ""}', 422, "invalid_input", [(None, "model")]),
    ("version as float", b'{"instances": [{"age": 3}], "version": 1.0}', 422, "invalid_input", [(None, "version")]),
    (
        "list for one value",
        b'{"instances": [{"age": 3}, {"occupation": ["a"]}]}',
        422,
        "invalid_input",
        [(1, "occupation")],
    ),
    ("number for a list", b'{"instances": [{"genres": 5}]}', 422, "invalid_input", [(0, "genres")]),
    ("text for a number", b'{"instances": [{"age": 3}, {"age": "old"}]}', 422, "invalid_input", [(1, "age")]),
    (
        "unknown context field",
        b'{"context": {"foo": 1}, "instances": [{"age": 3}]}',
        422,
        "invalid_input",
        [(None, "foo")],
    ),
    (
        "bad context value",
        b'{"context": {"age": [1]}, "instances": [{"gender": "F"}]}',
        422,
        "invalid_input",
        [(None, "age")],
    ),
    (
        "text for a context number",
        b'{"context": {"age": "x"}, "instances": [{}]}',
        422,
        "invalid_input",
        [(None, "age")],
    ),
    (
        "field in context and instance",
        b'{"context": {"age": 3}, "instances": [{}, {"age": 4}]}',
        422,
        "invalid_input",
        [(1, "age")],
    ),
    ("top_k zero", b'{"instances": [{"age": 3}], "top_k": 0}', 422, "invalid_input", [(None, "top_k")]),
    ("version zero", b'{"instances": [{"age": 3}], "version": 0}', 422, "invalid_input", [(None, "version")]),
]


@pytest.fixture(scope="module")
def shared_client(tmp_path_factory: pytest.TempPathFactory, trained: Trained) -> Iterator[TestClient]:
    """One started client for the tests that only read (the error paths)."""
    store = tmp_path_factory.mktemp("shared") / "models_store"
    trained.export(store)
    with TestClient(create_app(Settings(models_store=store, poll_interval_s=0, torch_threads=1))) as client:
        yield client


@pytest.mark.parametrize(
    ("body", "status", "code", "where"), [b[1:] for b in BAD_BODIES], ids=[b[0] for b in BAD_BODIES]
)
def test_input_is_scored_or_a_4xx_naming_instance_and_field(
    shared_client: TestClient, body: bytes, status: int, code: str, where: list[tuple[int | None, str | None]]
) -> None:
    response = shared_client.post("/predict", content=body, headers={"content-type": "application/json"})
    if status == 200:  # a valid value the model does not know: scored as OOV
        assert response.status_code == 200, response.text
        assert len(response.json()["predictions"]) == 1
    else:
        assert_error(response, status, code, *where)


def test_batch_over_the_limit_is_refused(make_client: MakeClient, trained: Trained) -> None:
    client = make_client(max_batch_rows=3)
    assert client.post("/predict", json={"instances": trained.instances(3)}).status_code == 200
    error = assert_error(client.post("/predict", json={"instances": trained.instances(4)}), 422, "invalid_input")
    assert "max_batch_rows" in error["message"]


def test_oversized_body_is_413(make_client: MakeClient, trained: Trained) -> None:
    client = make_client(max_body_bytes=4096)
    body = json.dumps({"instances": trained.instances(60)}).encode()
    assert len(body) > 4096
    assert_error(client.post("/predict", content=body), 413, "payload_too_large")
    chunks = iter([body[:3000], body[3000:]])  # no Content-Length: counted while streaming
    assert_error(client.post("/predict", content=chunks), 413, "payload_too_large")


def test_missing_and_null_fields_score_as_oov_and_are_counted(client: TestClient, trained: Trained) -> None:
    before = metric(client, "deepfm_oov_rows_total", model=MODEL_NAME, field="gender")
    rows_before = metric(client, "deepfm_rows_scored_total", model=MODEL_NAME, version="1")
    instances: list[dict[str, Any]] = [{"movie_id": 3}, {"gender": None, "movie_id": 4}, {"gender": "F", "movie_id": 5}]
    response = client.post("/predict", json={"instances": instances})
    assert response.status_code == 200
    np.testing.assert_allclose(response.json()["predictions"], trained.eager_scores(instances), atol=1e-6, rtol=0)
    assert metric(client, "deepfm_oov_rows_total", model=MODEL_NAME, field="gender") == before + 2
    assert metric(client, "deepfm_oov_rows_total", model=MODEL_NAME, field="zip_prefix") >= 3
    assert metric(client, "deepfm_rows_scored_total", model=MODEL_NAME, version="1") == rows_before + 3


def test_strict_mode_rejects_missing_fields(make_client: MakeClient, trained: Trained) -> None:
    complete = trained.instances(2)
    missing = [complete[0], {k: v for k, v in complete[1].items() if k != "zip_code"}]
    nulled = [complete[0], {**complete[1], "gender": None}]
    lenient, strict = make_client(), make_client(strict=True)
    assert lenient.post("/predict", json={"instances": missing}).status_code == 200
    assert_error(
        lenient.post("/predict", json={"instances": missing, "strict": True}), 422, "invalid_input", (1, "zip_code")
    )
    assert_error(strict.post("/predict", json={"instances": missing}), 422, "invalid_input", (1, "zip_code"))
    assert_error(strict.post("/predict", json={"instances": nulled}), 422, "invalid_input", (1, "gender"))
    assert strict.post("/predict", json={"instances": missing, "strict": False}).status_code == 200
    assert strict.post("/predict", json={"instances": complete}).status_code == 200
    context = {"context": {"gender": None}, "instances": [{k: v for k, v in complete[0].items() if k != "gender"}]}
    assert_error(strict.post("/predict", json=context), 422, "invalid_input", (None, "gender"))


def test_unknown_route_and_method_use_the_error_shape(client: TestClient) -> None:
    assert_error(client.get("/nope"), 404, "not_found")
    assert_error(client.get("/predict"), 405, "method_not_allowed")
    assert_error(client.get("/schema", params={"version": "x"}), 422, "invalid_input", (None, "version"))


def test_schema_lists_request_fields_with_examples_that_score_as_known(client: TestClient) -> None:
    body = client.get("/schema").json()
    assert (body["model"], body["version"], body["metrics"]) == (MODEL_NAME, 1, {"auc": 0.75})
    fields = {f["name"]: f for f in body["fields"]}
    assert list(fields) == ["user_id", "movie_id", "gender", "age", "occupation", "zip_code", "genres"]
    assert fields["zip_code"]["features"][0]["name"] == "zip_prefix"
    assert fields["zip_code"]["features"][0]["transform"] == {"kind": "prefix", "length": 3}
    assert (fields["genres"]["multi_valued"], fields["age"]["type"]) == (True, "numeric")
    assert fields["gender"]["features"][0] | {"transform": None} == {
        "name": "gender", "feature_type": "sparse", "transform": None, "vocabulary_size": 2, "known_values": ["F", "M"]
    }  # fmt: skip
    assert len(fields["zip_code"]["example"]) == 5  # a raw zip code whose prefix is the most frequent one
    assert fields["zip_code"]["example"][:3] == fields["zip_code"]["features"][0]["known_values"][0]
    user_ids = fields["user_id"]["features"][0]
    assert user_ids["known_values"] is not None and len(user_ids["known_values"]) == user_ids["vocabulary_size"] <= 100
    oov_before = sum(metric(client, "deepfm_oov_rows_total", model=MODEL_NAME, field=f) for f in fields)
    example = {name: field["example"] for name, field in fields.items()}
    assert client.post("/predict", json={"instances": [example]}).status_code == 200
    assert sum(metric(client, "deepfm_oov_rows_total", model=MODEL_NAME, field=f) for f in fields) == oov_before


def test_schema_lists_known_values_of_small_vocabularies_only() -> None:
    small, large = (
        FieldSchema(name, FeatureType.SPARSE, vocabulary=tuple(map(str, range(n))), vocabulary_size=n + 1)
        for name, n in (("small", KNOWN_VALUES_LISTED), ("large", KNOWN_VALUES_LISTED + 1))
    )
    spec = RequestSpec(DatasetSchema([small, large]))
    infos = {name: field.info().features[0] for name, field in spec.fields.items()}
    assert infos["small"].known_values == [str(i) for i in range(KNOWN_VALUES_LISTED)]
    assert (infos["large"].known_values, infos["large"].vocabulary_size) == (None, KNOWN_VALUES_LISTED + 1)


def test_models_lists_loaded_versions_and_metadata(client: TestClient) -> None:
    body = client.get("/models").json()
    assert body["default_model"] == MODEL_NAME
    (model,) = body["models"]
    assert (model["name"], model["version"], model["loaded_versions"], model["pinned"]) == (MODEL_NAME, 1, [1], False)
    assert model["metadata"]["metrics"] == {"auc": 0.75}
    assert model["refused_versions"] == []


def test_health(store: Path) -> None:
    app = create_app(Settings(models_store=store, poll_interval_s=0))
    unstarted = TestClient(app)  # the lifespan has not run: nothing is loaded
    assert unstarted.get("/health/live").json() == {"status": "alive"}
    assert_error(unstarted.get("/health/ready"), 503, "not_ready")
    with TestClient(app) as started:
        assert started.get("/health/ready").json() == {"status": "ready"}


def test_metrics_count_requests_by_route_and_status(client: TestClient, trained: Trained) -> None:
    client.post("/predict", json={"instances": trained.instances(5)})
    client.post("/predict", json={"instances": [{"agee": 1}]})
    client.get("/health/ready")
    assert metric(client, "deepfm_http_requests_total", route="/predict", status="200") == 1
    assert metric(client, "deepfm_http_requests_total", route="/predict", status="422") == 1
    assert metric(client, "deepfm_http_request_duration_seconds_count", route="/predict", status="200") == 1
    assert metric(client, "deepfm_http_requests_total", route="/health/ready") == 0
    assert metric(client, "deepfm_request_rows_sum", model=MODEL_NAME) == 5
    assert metric(client, "deepfm_prediction_score_bucket_total", model=MODEL_NAME, le="+Inf") == 5
    assert metric(client, "deepfm_model_loads_total", model=MODEL_NAME, result="loaded") == 1
    assert metric(client, "deepfm_model_version_info", model=MODEL_NAME, version="1") == 1


def test_request_id_is_echoed_or_generated(client: TestClient) -> None:
    assert client.get("/models", headers={"X-Request-ID": "abc-123"}).headers["X-Request-ID"] == "abc-123"
    generated = {client.get("/models").headers["X-Request-ID"] for _ in range(3)}
    assert len(generated) == 3 and all(re.fullmatch(r"[0-9a-f]{12}-[0-9a-f]+", rid) for rid in generated)
    invalid = "a b" + "c" * 200
    assert client.get("/models", headers={"X-Request-ID": invalid}).headers["X-Request-ID"] != invalid
    assert client.get("/nope", headers={"X-Request-ID": "e-1"}).headers["X-Request-ID"] == "e-1"


def test_the_app_changes_nothing_process_wide(store: Path) -> None:
    """Process knobs belong to the worker process (`service.main.worker_app`), not to an app a test builds."""
    before = (gc.get_threshold(), gc.get_freeze_count(), torch.get_num_threads())
    with TestClient(create_app(Settings(models_store=store, poll_interval_s=0, torch_threads=1))):
        assert (gc.get_threshold(), gc.get_freeze_count(), torch.get_num_threads()) == before
    assert (gc.get_threshold(), gc.get_freeze_count(), torch.get_num_threads()) == before


def test_access_log_is_json_with_the_request_id(
    client: TestClient, trained: Trained, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="service.access"):
        client.post("/predict", json={"instances": trained.instances(1)}, headers={"X-Request-ID": "log-test-1"})
    (line,) = [json.loads(record.getMessage()) for record in caplog.records if record.name == "service.access"]
    assert line["request_id"] == "log-test-1"
    assert (line["message"], line["path"], line["status"], line["level"]) == ("request", "/predict", 200, "info")
    assert line["duration_ms"] > 0
    assert line["pid"] == os.getpid()


def test_openapi_documents_the_serving_models_fields_and_examples(client: TestClient, trained: Trained) -> None:
    document = client.get("/openapi.json").json()
    predict = document["paths"]["/predict"]["post"]
    body = predict["requestBody"]["content"]["application/json"]
    assert body["schema"] == {"$ref": "#/components/schemas/PredictRequest"}
    schemas = document["components"]["schemas"]
    assert schemas["PredictRequest"]["properties"]["instances"]["items"] == {"$ref": "#/components/schemas/Instance"}
    instance = schemas["Instance"]
    assert list(instance["properties"]) == list(trained.schema.source_fields) and not instance["additionalProperties"]
    assert {"type": "array"}.items() <= instance["properties"]["genres"]["anyOf"][0].items()
    assert {"batch", "ranking", "model_version"} == set(body["examples"])
    assert set(body["examples"]["ranking"]["value"]["context"]) == {
        "user_id",
        "gender",
        "age",
        "occupation",
        "zip_code",
    }
    for name, example in body["examples"].items():  # every example is a request the model scores
        response = client.post("/predict", json=example["value"])
        assert response.status_code == 200, (name, response.text)
    assert {"200", "400", "404", "413", "422", "500", "503", "504"} <= set(predict["responses"])
    error_examples = [
        example["value"]
        for response in predict["responses"].values()
        for example in response.get("content", {}).get("application/json", {}).get("examples", {}).values()
    ]
    codes = [example["error"]["code"] for example in error_examples]
    assert len(codes) == len(set(codes)) >= 7  # one example per error, not one shared by every status
    assert client.get("/docs").status_code == 200


def test_docs_and_redoc_are_served_from_the_package(client: TestClient) -> None:
    for page in ("/docs", "/redoc"):
        html = client.get(page).text
        assert "cdn" not in html.lower() and "https://" not in html.split("<body>")[0], page
        assets = re.findall(r'(?:src|href)="([^"]+)"', html)
        assert assets, page
        for asset in assets:
            assert client.get(asset).status_code == 200, asset


def test_admin_reload_needs_the_configured_token(make_client: MakeClient) -> None:
    assert_error(make_client().post("/admin/reload"), 403, "forbidden")
    client = make_client(admin_token="x" * 20)
    response = client.post("/admin/reload")
    assert_error(response, 401, "unauthorized")
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert_error(client.post("/admin/reload", headers={"Authorization": "Bearer wrong"}), 401, "unauthorized")
    ok = client.post("/admin/reload", headers={"Authorization": f"Bearer {'x' * 20}"})
    assert ok.json() == {
        "results": [{"model": MODEL_NAME, "previous_version": 1, "version": 1, "refused": [], "held": []}]
    }

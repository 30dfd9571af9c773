"""No request wedges the scorer, no store fault stops a start, no worse model goes live (in process)."""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr
from serving_helpers import MODEL_NAME, MakeClient, Trained, metric
from torch import nn

from deepfm.artifact import METADATA_FILE, Artifact, export_artifact
from service.app import create_app
from service.metrics import ServiceMetrics
from service.settings import Settings
from tools.faults import NaNEmbeddingRow, NaNForOnePair

TOKEN = "hardening-test-token-0123"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def predict(client: TestClient, instances: list[dict[str, Any]], **extra: Any) -> Any:
    return client.post("/predict", json={"instances": instances, **extra})


def export_model(trained: Trained, store: Path, model: nn.Module, test_auc: float | None = None) -> int:
    metrics = {} if test_auc is None else {"test": {"auc": test_auc}}
    path = export_artifact(model, trained.schema, store, MODEL_NAME, config={}, metrics=metrics)
    return int(path.name)


def rewrite_metadata(version_dir: Path, **changes: Any) -> None:
    meta = json.loads((version_dir / METADATA_FILE).read_text())
    (version_dir / METADATA_FILE).write_text(json.dumps(meta | changes))


# --- scoring never takes the worker down -------------------------------------------------------------------------


def test_a_version_with_a_nan_embedding_row_is_refused_at_load(
    make_client: MakeClient, store: Path, trained: Trained
) -> None:
    vocabulary_size = trained.schema.fields["movie_id"].vocabulary_size
    broken = export_model(
        trained, store, NaNEmbeddingRow(trained.model, "movie_id", vocabulary_size - 1, vocabulary_size)
    )
    client = make_client(admin_token=TOKEN)
    models = client.get("/models").json()["models"][0]
    assert models["version"] == 1
    (refused,) = models["refused_versions"]
    assert (
        refused["version"] == broken
        and f"holds NaN or infinite values (rows [{vocabulary_size - 1}])" in refused["reason"]
    )
    assert predict(client, trained.instances(3)).status_code == 200


def test_non_finite_scores_fail_their_requests_and_the_worker_goes_on(
    make_client: MakeClient, store: Path, trained: Trained
) -> None:
    shutil.rmtree(store / MODEL_NAME / "1")
    export_model(trained, store, NaNForOnePair(trained.model, user_index=3, movie_index=5))
    client = make_client()
    poison = {
        **trained.instances(1)[0],
        "user_id": trained.index_of("user_id", 3),
        "movie_id": trained.index_of("movie_id", 5),
    }
    for _ in range(3):
        response = predict(client, [*trained.instances(2), poison])
        assert response.status_code == 500, response.text
        error = response.json()["error"]
        assert error["code"] == "model_error"
        assert f"model {MODEL_NAME!r} version 1" in error["message"] and "instances [2]" in error["message"]
        healthy = predict(client, trained.instances(4))
        assert healthy.status_code == 200
        np.testing.assert_allclose(healthy.json()["predictions"], trained.eager_scores(trained.instances(4)), atol=1e-6)
    assert client.get("/health/ready").status_code == 200
    assert metric(client, "deepfm_non_finite_scores_total", model=MODEL_NAME, version="1") == 3


def test_a_failure_in_the_bookkeeping_fails_the_batch_not_the_worker(
    client: TestClient, trained: Trained, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(self: ServiceMetrics, model: str, scores: np.ndarray) -> None:
        raise ValueError("a bug in the metrics")

    monkeypatch.setattr(ServiceMetrics, "observe_scores", broken)
    response = predict(client, trained.instances(2))
    assert (response.status_code, response.json()["error"]["code"]) == (500, "model_error")
    monkeypatch.undo()
    assert predict(client, trained.instances(2)).status_code == 200
    assert client.get("/health/ready").status_code == 200


def test_a_stuck_model_call_times_out_and_readiness_says_so(
    make_client: MakeClient, trained: Trained, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = make_client(request_timeout_s=0.5)
    release = threading.Event()
    scores = Artifact.scores

    def stuck(self: Artifact, features: Mapping[str, np.ndarray]) -> np.ndarray:
        release.wait(30)
        return scores(self, features)

    monkeypatch.setattr(Artifact, "scores", stuck)
    started = time.monotonic()
    response = predict(client, trained.instances(1))
    assert time.monotonic() - started < 5
    assert (response.status_code, response.json()["error"]["code"]) == (504, "deadline_exceeded")
    time.sleep(0.1)
    assert client.get("/health/ready").status_code == 503  # the worker is stuck in a call past the deadline
    release.set()
    monkeypatch.undo()
    deadline = time.monotonic() + 10
    while client.get("/health/ready").status_code != 200 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert predict(client, trained.instances(2)).status_code == 200


# --- every store fault is a refusal of that version only ----------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        ("version not an integer", "'version' must be an integer"),
        ("schema is a directory", "schema.json: missing from the artifact"),
        ("metadata is a directory", "cannot read"),
        ("metadata names another version", "version 1 in a directory named 2"),
    ],
)
def test_a_malformed_version_is_refused_and_the_rest_loads(
    store: Path, trained: Trained, fault: str, reason: str
) -> None:
    shutil.copytree(store / MODEL_NAME / "1", store / "xdeepfm" / "1")  # a second model in the same store
    rewrite_metadata(store / "xdeepfm" / "1", model_name="xdeepfm")
    version_dir = Path(shutil.copytree(store / MODEL_NAME / "1", store / MODEL_NAME / "2"))
    if fault == "version not an integer":
        rewrite_metadata(version_dir, version="2")
    elif fault == "schema is a directory":
        (version_dir / "schema.json").unlink()
        (version_dir / "schema.json").mkdir()
    elif fault == "metadata is a directory":
        (version_dir / METADATA_FILE).unlink()
        (version_dir / METADATA_FILE).mkdir()
    else:
        pass  # the copy still says version 1
    with TestClient(create_app(Settings(models_store=store, poll_interval_s=0, torch_threads=1))) as client:
        listed = {m["name"]: m for m in client.get("/models").json()["models"]}
        assert {name: m["version"] for name, m in listed.items()} == {MODEL_NAME: 1, "xdeepfm": 1}
        (refused,) = listed[MODEL_NAME]["refused_versions"]
        assert refused["version"] == 2 and reason in refused["reason"], refused
        assert metric(client, "deepfm_model_loads_total", model=MODEL_NAME, result="refused") == 1
        assert predict(client, trained.instances(2), model="xdeepfm").status_code == 200


def test_a_model_with_nothing_to_serve_does_not_stop_the_others(store: Path, trained: Trained) -> None:
    shutil.copytree(store / MODEL_NAME / "1", store / "xdeepfm" / "1")  # metadata says deepfm: refused
    with TestClient(create_app(Settings(models_store=store, poll_interval_s=0, torch_threads=1))) as client:
        body = client.get("/models").json()
        assert [m["name"] for m in body["models"]] == [MODEL_NAME]
        (unavailable,) = body["unavailable_models"]
        assert unavailable["name"] == "xdeepfm" and "names 'deepfm'" in unavailable["refused_versions"][0]["reason"]
        assert predict(client, trained.instances(2)).status_code == 200


# --- the promotion gate -------------------------------------------------------------------------------------------


@pytest.fixture
def gated_store(tmp_path: Path, trained: Trained, retrained: nn.Module) -> Path:
    """Version 1 with test AUC 0.90, version 2 (another model) with 0.85: worse by more than the tolerance."""
    store = tmp_path / "gated" / "models_store"
    trained.export(store, test_auc=0.90)
    trained.export(store, retrained, test_auc=0.85)
    return store


def gated_client(store: Path, **overrides: Any) -> TestClient:
    settings = Settings(
        models_store=store, poll_interval_s=0, torch_threads=1, admin_token=SecretStr(TOKEN), **overrides
    )
    return TestClient(create_app(settings))


def test_a_worse_version_is_held_at_start_and_on_reload(
    gated_store: Path, trained: Trained, retrained: nn.Module
) -> None:
    with gated_client(gated_store) as client:
        info = client.get("/models").json()["models"][0]
        assert info["version"] == 1
        (held,) = info["held_versions"]
        assert held["version"] == 2 and "0.8500 is below the serving version's 0.9000" in held["reason"]
        assert info["loaded_versions"] == [1, 2]
        assert predict(client, trained.instances(2)).json()["version"] == 1
        named = predict(client, trained.instances(3), version=2).json()  # a held version scores when named
        np.testing.assert_allclose(
            named["predictions"], trained.eager_scores(trained.instances(3), retrained), atol=1e-6
        )
        assert metric(client, "deepfm_model_loads_total", model=MODEL_NAME, result="held") == 1
        trained.export(gated_store, retrained, test_auc=0.897)  # within the tolerance of 0.90
        (result,) = client.post("/admin/reload", headers=AUTH).json()["results"]
        assert (result["previous_version"], result["version"], result["held"]) == (1, 3, [])
        trained.export(gated_store, test_auc=0.80)
        (result,) = client.post("/admin/reload", headers=AUTH).json()["results"]
        assert (result["version"], [h["version"] for h in result["held"]]) == (3, [4])


def test_an_operator_promotes_a_held_version_or_rolls_back(gated_store: Path, trained: Trained) -> None:
    with gated_client(gated_store) as client:
        assert client.post("/admin/promote", json={"model": MODEL_NAME, "version": 2}).status_code == 401
        promoted = client.post("/admin/promote", headers=AUTH, json={"model": MODEL_NAME, "version": 2})
        assert promoted.json()["results"][0] | {"refused": [], "held": []} == {
            "model": MODEL_NAME, "previous_version": 1, "version": 2, "refused": [], "held": []
        }  # fmt: skip
        assert predict(client, trained.instances(1)).json()["version"] == 2
        assert client.get("/models").json()["models"][0]["held_versions"] == []
        rollback = client.post("/admin/promote", headers=AUTH, json={"model": MODEL_NAME, "version": 1})
        assert rollback.json()["results"][0]["version"] == 1
        assert client.post("/admin/reload", headers=AUTH).json()["results"][0]["version"] == 1  # the rollback holds
        missing = client.post("/admin/promote", headers=AUTH, json={"model": MODEL_NAME, "version": 9})
        assert missing.status_code == 404
        assert (
            client.post("/admin/promote", headers=AUTH, json={"model": MODEL_NAME, "version": "2"}).status_code == 422
        )


def test_a_pin_serves_a_held_version_and_tolerance_one_turns_the_gate_off(gated_store: Path) -> None:
    with gated_client(gated_store, pinned_versions={MODEL_NAME: 2}) as client:
        assert client.get("/models").json()["models"][0]["version"] == 2
    with gated_client(gated_store, promotion_tolerance=1.0) as client:
        assert client.get("/models").json()["models"][0]["version"] == 2


def test_deleting_the_serving_version_falls_back_to_what_the_store_holds(
    gated_store: Path, trained: Trained, retrained: nn.Module
) -> None:
    trained.export(gated_store, retrained, test_auc=0.91)
    with gated_client(gated_store) as client:
        assert client.get("/models").json()["models"][0]["version"] == 3
        shutil.rmtree(gated_store / MODEL_NAME / "3")
        (result,) = client.post("/admin/reload", headers=AUTH).json()["results"]
        assert (result["previous_version"], result["version"]) == (3, 1)  # 2 is worse than 1: held, as at a start
        info = client.get("/models").json()["models"][0]
        assert (info["loaded_versions"], [h["version"] for h in info["held_versions"]]) == ([1, 2], [2])
        assert metric(client, "deepfm_model_version_info", model=MODEL_NAME, version="3") == 0


def test_models_hides_paths_and_library_versions_unless_admin(store: Path, trained: Trained) -> None:
    version_dir = store / MODEL_NAME / "1"
    rewrite_metadata(version_dir, config={"data": {"data_dir": "/home/someone/data/ml-100k"}})
    meta = json.loads((version_dir / METADATA_FILE).read_text())
    assert meta["library_versions"]
    with gated_client(store) as client:
        public = client.get("/models").json()["models"][0]["metadata"]
        assert "library_versions" not in public and public["config"]["data"]["data_dir"] == "<hidden>"
        full = client.get("/models", headers=AUTH).json()["models"][0]["metadata"]
        assert full["library_versions"] == meta["library_versions"]
        assert full["config"]["data"]["data_dir"] == "/home/someone/data/ml-100k"

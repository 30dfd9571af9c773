"""Model lifecycle in process: start-up loading, hot reload, refused versions, pins."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from serving_helpers import MODEL_NAME, MakeClient, Trained, add_broken_version, metric
from torch import nn

from deepfm.errors import ArtifactError
from service.app import create_app
from service.settings import Settings

TOKEN = "reload-test-token-0123"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def scores(client: TestClient, trained: Trained, **selection: int) -> tuple[int, list[float]]:
    body = client.post("/predict", json={"instances": trained.instances(6), **selection}).json()
    return body["version"], body["predictions"]


def test_reload_swaps_in_a_new_version_and_keeps_the_previous_one(
    make_client: MakeClient, store: Path, trained: Trained, retrained: nn.Module
) -> None:
    client = make_client(admin_token=TOKEN)
    trained.export(store, retrained)
    result = client.post("/admin/reload", headers=AUTH).json()
    assert result == {
        "results": [{"model": MODEL_NAME, "previous_version": 1, "version": 2, "refused": [], "held": []}]
    }
    version, new = scores(client, trained)
    assert version == 2
    np.testing.assert_allclose(new, trained.eager_scores(trained.instances(6), retrained), atol=1e-6, rtol=0)
    old_version, old = scores(client, trained, version=1)
    assert old_version == 1
    np.testing.assert_allclose(old, trained.eager_scores(trained.instances(6)), atol=1e-6, rtol=0)
    assert client.get("/models").json()["models"][0]["loaded_versions"] == [1, 2]
    assert metric(client, "deepfm_model_version_info", model=MODEL_NAME, version="1") == 0
    assert metric(client, "deepfm_model_version_info", model=MODEL_NAME, version="2") == 1


def test_a_broken_version_is_refused_once_and_the_old_one_keeps_serving(
    make_client: MakeClient, store: Path, trained: Trained
) -> None:
    client = make_client(admin_token=TOKEN)
    broken = add_broken_version(store)
    (result,) = client.post("/admin/reload", headers=AUTH).json()["results"]
    assert (result["version"], [r["version"] for r in result["refused"]]) == (1, [broken])
    assert "sha256" in result["refused"][0]["reason"]
    assert scores(client, trained)[0] == 1
    assert client.get("/models").json()["models"][0]["refused_versions"][0]["version"] == broken
    again = client.post("/admin/reload", headers=AUTH).json()["results"][0]
    assert again["refused"] == []  # remembered, not tried again
    assert metric(client, "deepfm_model_loads_total", model=MODEL_NAME, result="refused") == 1
    model_file = store / MODEL_NAME / str(broken) / "model.pt"
    os.utime(model_file, ns=(0, 0))  # its files changed: worth another try
    assert client.post("/admin/reload", headers=AUTH).json()["results"][0]["refused"][0]["version"] == broken
    assert metric(client, "deepfm_model_loads_total", model=MODEL_NAME, result="refused") == 2


def test_start_skips_a_broken_newest_version(make_client: MakeClient, store: Path, trained: Trained) -> None:
    add_broken_version(store)
    client = make_client()
    assert scores(client, trained)[0] == 1
    assert [r["version"] for r in client.get("/models").json()["models"][0]["refused_versions"]] == [2]


def test_a_pinned_version_is_served_and_never_reloaded(
    make_client: MakeClient, store: Path, trained: Trained, retrained: nn.Module
) -> None:
    trained.export(store, retrained)
    client = make_client(pinned_versions={MODEL_NAME: 1}, admin_token=TOKEN)
    assert scores(client, trained)[0] == 1
    trained.export(store, retrained)
    assert client.post("/admin/reload", headers=AUTH).json() == {"results": []}
    assert scores(client, trained)[0] == 1
    assert client.get("/models").json()["models"][0]["pinned"] is True


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"default_model": "xdeepfm"}, "default model 'xdeepfm' has no version to serve"),
        ({"pinned_versions": "deepfm=4"}, "default model 'deepfm' has no version to serve.*deepfm/4"),
    ],
)
def test_start_fails_without_a_default_model_to_serve(store: Path, overrides: dict[str, str], message: str) -> None:
    app = create_app(Settings(models_store=store, poll_interval_s=0, **overrides))  # type: ignore[arg-type]
    with pytest.raises(ArtifactError, match=message), TestClient(app):
        pass


def test_a_listed_model_without_versions_does_not_stop_the_start(make_client: MakeClient, trained: Trained) -> None:
    client = make_client(models="deepfm,xdeepfm")
    assert scores(client, trained)[0] == 1
    assert client.get("/models").json()["unavailable_models"] == [{"name": "xdeepfm", "refused_versions": []}]


def test_the_poller_picks_up_new_versions(
    make_client: MakeClient, store: Path, trained: Trained, retrained: nn.Module
) -> None:
    client = make_client(poll_interval_s=0.05)
    trained.export(store, retrained)
    deadline = time.monotonic() + 30
    while scores(client, trained)[0] != 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert scores(client, trained)[0] == 2

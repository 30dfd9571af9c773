"""The service as deployed: `python -m service` in a subprocess, configured by environment, over HTTP."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from serving_helpers import ADMIN_TOKEN, MODEL_NAME, UNKNOWN_INSTANCES, Trained, add_broken_version
from torch import nn

from tools.load import Load
from tools.processes import Server, run_server

REQUEST_TIMEOUT = 30.0
STOPPED_BY_SIGTERM = (0, -signal.SIGTERM)  # uvicorn re-raises the signal once it has shut down gracefully


def total(metrics_text: str, name: str, **labels: str) -> float:
    """Sum of the samples of `name` carrying `labels` in a Prometheus exposition."""
    wanted = [f'{k}="{v}"' for k, v in labels.items()]
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics_text.splitlines()
        if line.startswith(name + "{") and all(w in line for w in wanted)
    )


def wait_for(condition: Any, timeout: float = 30, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, trained: Trained) -> Path:
    root = tmp_path_factory.mktemp("http") / "models_store"
    trained.export(root)
    return root


@pytest.fixture(scope="module")
def server(store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    env = {
        "DEEPFM_SERVE_MODELS_STORE": str(store),
        "DEEPFM_SERVE_POLL_INTERVAL_S": "0.2",
        "DEEPFM_SERVE_ADMIN_TOKEN": ADMIN_TOKEN,
        "DEEPFM_SERVE_MAX_BODY_BYTES": str(1 << 20),
        "DEEPFM_SERVE_TORCH_THREADS": "1",
        "DEEPFM_SERVE_REQUEST_TIMEOUT_S": "60",  # the SIGTERM test's 4,800-row requests queue on a busy machine
    }
    with run_server(tmp_path_factory.mktemp("logs"), env) as running:
        yield running


@pytest.fixture
def http(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=REQUEST_TIMEOUT) as client:
        yield client


def test_scores_over_http_equal_the_eager_model(http: httpx.Client, trained: Trained) -> None:
    instances = trained.instances(50) + UNKNOWN_INSTANCES
    response = http.post("/predict", json={"instances": instances}, headers={"X-Request-ID": "parity-1"})
    assert response.status_code == 200
    assert response.headers["X-Request-ID"] == "parity-1"
    body = response.json()
    assert (body["model"], body["version"]) == (MODEL_NAME, 1)
    np.testing.assert_allclose(body["predictions"], trained.eager_scores(instances), atol=1e-6, rtol=0)


def test_errors_over_http(http: httpx.Client, trained: Trained) -> None:
    malformed = http.post(
        "/predict", content=b'{"instances": [{"age": 1}', headers={"content-type": "application/json"}
    )
    assert (malformed.status_code, malformed.json()["error"]["code"]) == (400, "malformed_json")
    nan = http.post("/predict", content=b'{"instances": [{"age": 1}, {"age": NaN}]}')
    assert (nan.status_code, nan.json()["error"]["code"]) == (400, "malformed_json")  # NaN is not JSON
    text = http.post("/predict", json={"instances": [{"age": 1}, {"age": "old"}]})
    assert text.status_code == 422
    assert text.json()["error"]["details"][0] | {"message": ""} == {"instance": 1, "field": "age", "message": ""}
    huge = json.dumps({"instances": trained.instances(1) * 12_000}).encode()
    assert len(huge) > 1 << 20
    assert http.post("/predict", content=huge).status_code == 413
    assert http.post("/predict", json={"instances": trained.instances(1), "model": "x"}).status_code == 404


def test_every_endpoint_over_http(http: httpx.Client, server: Server) -> None:
    assert http.get("/health/live").json() == {"status": "alive"}
    assert http.get("/health/ready").json() == {"status": "ready"}
    assert [f["name"] for f in http.get("/schema").json()["fields"]][-2:] == ["zip_code", "genres"]
    assert http.get("/models").json()["models"][0]["version"] == 1
    assert "swagger" in http.get("/docs").text.lower()
    assert http.post("/admin/reload").status_code == 401
    metrics = http.get("/metrics")
    assert metrics.headers["content-type"].startswith("text/plain")
    assert total(metrics.text, "deepfm_http_requests_total", route="/predict", status="200") >= 1
    assert total(metrics.text, "deepfm_rows_scored_total", model=MODEL_NAME) >= 54
    log = [json.loads(line) for line in server.log_lines()]
    access = [line for line in log if line["message"] == "request" and line.get("request_id") == "parity-1"]
    assert access and access[0]["status"] == 200


def test_hot_reload_under_load_fails_no_request(
    http: httpx.Client, store: Path, server: Server, trained: Trained, retrained: nn.Module
) -> None:
    instances = trained.instances(8)
    expected = {1: trained.eager_scores(instances), 2: trained.eager_scores(instances, retrained)}
    with Load(
        server.url, clients=1, max_seconds=120, max_requests=3000, pause_s=0, body={"instances": instances}
    ) as load:
        load.wait_for(5, timeout=30)
        trained.export(store, retrained)
        wait_for(lambda: load.snapshot()[-1].version == 2, what="version 2 in responses")
        broken = add_broken_version(store)
        wait_for(lambda: http.get("/models").json()["models"][0]["refused_versions"], what="the broken version refused")
        refused = total(http.get("/metrics").text, "deepfm_model_loads_total", result="refused")
        load.wait_for(len(load.snapshot()) + 20, timeout=30)
    seen = load.snapshot()
    assert not load.failures(), load.failures()[:3]
    versions = [outcome.version or 0 for outcome in seen]  # every outcome is a 200 with a version
    assert versions == sorted(versions) and versions[0] == 1 and versions[-1] == 2
    for outcome, version in zip(seen, versions, strict=True):
        np.testing.assert_allclose(outcome.predictions, expected[version], atol=1e-6, rtol=0)
    time.sleep(0.5)  # a few more polls: the refused version is not tried again
    assert total(http.get("/metrics").text, "deepfm_model_loads_total", result="refused") == refused == 1
    assert http.get("/models").json()["models"][0]["refused_versions"][0]["version"] == broken


def raw_exchange(server: Server, request: bytes, read_s: float = 10) -> bytes:
    """Send raw bytes on a new connection; what the server sends back until it closes."""
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=read_s) as sock:
        sock.sendall(request)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
        return received


def test_a_client_that_sends_its_whole_body_first_sees_its_413(server: Server, trained: Trained) -> None:
    """urllib writes the whole body before it reads: the server reads it (up to a bound) and answers 413."""
    body = json.dumps({"instances": trained.instances(1) * 20_000}).encode()
    assert 1 << 20 < len(body) < 4 << 20
    request = urllib.request.Request(
        f"{server.url}/predict", data=body, headers={"content-type": "application/json"}, method="POST"
    )
    with pytest.raises(urllib.error.HTTPError) as raised:
        urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT)
    assert raised.value.code == 413
    assert json.loads(raised.value.read())["error"]["code"] == "payload_too_large"


def test_a_1_mib_header_gets_431(server: Server) -> None:
    response = raw_exchange(server, b"GET /health/live HTTP/1.1\r\nhost: x\r\nx-big: " + b"a" * (1 << 20) + b"\r\n\r\n")
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 431")
    assert json.loads(body)["error"]["code"] == "header_too_large"


def test_a_client_hanging_up_mid_body_is_no_server_error(http: httpx.Client, server: Server) -> None:
    before = total(http.get("/metrics").text, "deepfm_http_requests_total", status="500")
    head = b"POST /predict HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 5000\r\n\r\n"
    host, port = server.url.removeprefix("http://").split(":")
    for _ in range(3):
        with socket.create_connection((host, int(port)), timeout=5) as sock:
            sock.sendall(head + b'{"instances": [')
    wait_for(
        lambda: total(http.get("/metrics").text, "deepfm_http_requests_total", route="/predict", status="499") >= 3,
        what="the hang-ups counted as 499",
    )
    assert total(http.get("/metrics").text, "deepfm_http_requests_total", status="500") == before
    assert not [line for line in server.log_lines() if '"unhandled error"' in line]


def test_405_names_the_allowed_methods(http: httpx.Client) -> None:
    response = http.get("/predict")
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
    assert response.json()["error"]["code"] == "method_not_allowed"


def test_the_worker_process_sets_its_threads_and_garbage_collector(server: Server) -> None:
    (line,) = [json.loads(line) for line in server.log_lines() if '"worker process"' in line]
    assert line["torch_threads"] == 1
    assert line["gc_frozen_objects"] > 10_000
    assert line["gc_thresholds"][0] == 20_000


CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--no-first-run",
    "--virtual-time-budget=15000",
)


@pytest.mark.skipif(
    shutil.which("chromium") is None, reason="chromium is not installed (Debian: apt-get install chromium)"
)
@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_the_docs_render_in_a_browser_from_the_service_alone(server: Server, tmp_path: Path, page: str) -> None:
    """Headless Chromium, on a machine with no route to any CDN, renders the operations of the API."""
    chromium = ["chromium", *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run(
        [*chromium, "--dump-dom", server.url + page], capture_output=True, text=True, timeout=120, check=True
    ).stdout
    assert "Score instances" in dom and "Request fields of a model" in dom, dom[-2000:]  # operations rendered
    screenshot = tmp_path / "docs.png"
    subprocess.run(
        [*chromium, f"--screenshot={screenshot}", "--window-size=1280,1600", server.url + page],
        capture_output=True,
        timeout=120,
        check=True,
    )
    assert screenshot.stat().st_size > 20_000  # a rendered page, not a blank one


def test_sigterm_finishes_requests_in_flight(server: Server, trained: Trained) -> None:
    big = {"instances": trained.instances(400) * 12}  # 4800 rows: long enough to still be queued at SIGTERM

    def post(_: int) -> int:
        with httpx.Client(base_url=server.url, timeout=REQUEST_TIMEOUT) as client:
            return client.post("/predict", json=big).status_code

    with ThreadPoolExecutor(max_workers=3) as executor:
        futures = [executor.submit(post, i) for i in range(3)]
        wait_for(lambda: any(f.done() for f in futures), what="a first response")
        assert server.terminate() in STOPPED_BY_SIGTERM
        assert [f.result() for f in futures] == [200, 200, 200]
    messages = [json.loads(line)["message"] for line in server.log_lines()]
    assert "service stopped" in messages


def test_several_workers_share_their_metrics(store: Path, tmp_path: Path, trained: Trained) -> None:
    env = {"DEEPFM_SERVE_MODELS_STORE": str(store), "DEEPFM_SERVE_WORKERS": "2", "DEEPFM_SERVE_TORCH_THREADS": "1"}
    with run_server(tmp_path, env) as server:

        def post(i: int) -> int:
            with httpx.Client(base_url=server.url, timeout=REQUEST_TIMEOUT) as client:  # a new connection each
                return client.post("/predict", json={"instances": trained.instances(2, start=i)}).status_code

        with ThreadPoolExecutor(max_workers=4) as executor:
            assert set(executor.map(post, range(40))) == {200}
        for _ in range(4):  # whichever worker answers the scrape, it reports every worker's values
            metrics = httpx.get(f"{server.url}/metrics", timeout=REQUEST_TIMEOUT).text
            assert total(metrics, "deepfm_model_loads_total", result="loaded") == 2  # one load in each worker
            assert total(metrics, "deepfm_http_requests_total", route="/predict", status="200") == 40
            assert total(metrics, "deepfm_rows_scored_total", model=MODEL_NAME) == 80
        assert server.terminate() in STOPPED_BY_SIGTERM

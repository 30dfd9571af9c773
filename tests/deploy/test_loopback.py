"""The compose deployment run for real on 127.0.0.1: replicas (`python -m service` through
deploy/start-scorer.sh, with the compose file's environment) behind nginx (deploy/nginx/nginx.conf).

Traffic goes only to 127.0.0.1 and every load is bounded in requests and seconds.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest
from deploy_support import BODY, INSTANCES, REPO, export_next_version, loopback

from deepfm.artifact import SCHEMA_FILE
from deepfm.data.schema import DatasetSchema
from tools.faults import NaNForOnePair
from tools.load import Load, upstreams
from tools.processes import free_port, http_get


def replica_logs(dep: loopback.Deployment) -> str:
    """The ends of the replicas' logs and nginx's error lines, for failure messages."""
    logs = [f"--- {p.name}\n{p.log_tail(1500)}" for p in dep.replicas.values()]
    errors = [line for line in dep.nginx.access_log().splitlines() if re.search(r"\[(error|warn|crit|alert)\]", line)]
    return "\n".join([*logs, "--- nginx errors", *errors[-30:]])


def fail_timeout_s() -> float:
    """The passive health check's fail_timeout of the upstream servers in nginx.conf."""
    match = re.search(r"fail_timeout=(\d+)s", loopback.NGINX_CONF.read_text())
    assert match, "nginx.conf: no fail_timeout on the upstream servers"
    return float(match.group(1))


def predict_direct(replica: loopback.Replica, instances: list[dict[str, object]]) -> dict[str, object]:
    with httpx.Client(base_url=replica.url, timeout=10) as client:
        response = client.post("/predict", json={"instances": instances})
    assert response.status_code == 200, response.text
    data: dict[str, object] = response.json()
    return data


def version_of(replica: loopback.Replica) -> int:
    return int(predict_direct(replica, INSTANCES[:1])["version"])  # type: ignore[call-overload]


def test_replicas_run_the_compose_command_and_environment(deployment: loopback.Deployment) -> None:
    compose = loopback.load_compose()
    assert set(deployment.replicas) == set(loopback.scorer_services(compose))
    for name, replica in deployment.replicas.items():
        service = compose["services"][name]
        assert replica.argv == service["command"]
        assert replica.cwd == deployment.app_dir
        expected = loopback.compose_environment(service)
        # Only what Docker itself provides differs: the address, and paths inside the container.
        assert expected.pop("DEEPFM_SERVE_HOST") == "0.0.0.0"
        assert replica.env["DEEPFM_SERVE_HOST"] == "127.0.0.1"
        assert expected.pop("DEEPFM_SERVE_PORT") == "8000"
        assert replica.env["DEEPFM_SERVE_PORT"] == str(replica.port)
        for key, value in expected.items():
            if value.startswith(("/app", "/tmp")):
                assert replica.env[key].endswith(value[4:]), key
            else:
                assert replica.env[key] == value, key
        assert replica.env["DEEPFM_SERVE_MODELS_STORE"] == str(deployment.store)


def test_healthcheck_script_follows_readiness(deployment: loopback.Deployment) -> None:
    """The image's HEALTHCHECK command passes on a ready replica and fails where nothing listens."""
    replica = next(iter(deployment.replicas.values()))
    script = str(deployment.app_dir / "deploy" / "healthcheck.py")
    ready = subprocess.run([sys.executable, script], env=replica.env, capture_output=True, timeout=30)
    assert ready.returncode == 0, ready.stderr
    nobody = dict(replica.env, DEEPFM_SERVE_PORT=str(free_port()))
    absent = subprocess.run([sys.executable, script], env=nobody, capture_output=True, timeout=30)
    assert absent.returncode == 1
    assert status_of(f"{replica.url}/health/live") == 200


def status_of(url: str) -> int:
    status, _ = http_get(url)
    return status


def test_keepalive_client_is_spread_over_every_replica(deployment: loopback.Deployment) -> None:
    """One client, one keep-alive connection to nginx, and yet every replica answers in turn."""
    addresses = {r.address for r in deployment.replicas.values()}
    seen: Counter[str] = Counter()
    request_ids = []
    with httpx.Client(base_url=deployment.url, timeout=10) as client:
        for _ in range(10 * len(addresses)):
            response = client.post("/predict", json=BODY)
            assert response.status_code == 200, response.text
            (address,) = upstreams(response.headers["x-upstream"])
            seen[address] += 1
            request_ids.append(response.headers["x-request-id"])
    assert set(seen) == addresses, replica_logs(deployment)
    assert min(seen.values()) >= 0.5 * sum(seen.values()) / len(addresses), seen
    # nginx's access log: every one of those requests came over the same client connection.
    # nginx logs a request after answering it, so the last lines may lag the responses a little.
    deadline = time.monotonic() + 5
    while not all(f"rid={rid}" in (log := deployment.nginx.access_log()) for rid in request_ids):
        assert time.monotonic() < deadline, f"request ids missing from nginx's access log:\n{log}"
        time.sleep(0.05)
    connections = {re.search(rf"conn=(\d+) rid={rid}", log).group(1) for rid in request_ids}  # type: ignore[union-attr]
    assert len(connections) == 1


def test_new_connections_are_spread_too(deployment: loopback.Deployment) -> None:
    seen: Counter[str] = Counter()
    for _ in range(4 * len(deployment.replicas)):
        with httpx.Client(base_url=deployment.url, timeout=10) as client:
            response = client.post("/predict", json=BODY)
        assert response.status_code == 200
        seen[upstreams(response.headers["x-upstream"])[0]] += 1
    assert set(seen) == {r.address for r in deployment.replicas.values()}


def test_scores_through_nginx_equal_a_single_replica(deployment: loopback.Deployment) -> None:
    replicas = list(deployment.replicas.values())
    direct = predict_direct(replicas[0], INSTANCES)
    for other in replicas[1:]:
        assert predict_direct(other, INSTANCES)["predictions"] == pytest.approx(direct["predictions"], abs=1e-6)
    answered = set()
    with httpx.Client(base_url=deployment.url, timeout=10) as client:
        for _ in range(3 * len(replicas)):
            response = client.post("/predict", json={"instances": INSTANCES})
            assert response.status_code == 200
            data = response.json()
            assert data["model"] == direct["model"] and data["version"] == direct["version"]
            assert data["predictions"] == pytest.approx(direct["predictions"], abs=1e-6)
            answered.update(upstreams(response.headers["x-upstream"]))
    assert answered == {r.address for r in replicas}


def test_other_endpoints_pass_through(deployment: loopback.Deployment) -> None:
    for path in ("/health/ready", "/health/live", "/models", "/schema"):
        assert status_of(deployment.url + path) == 200, path
    status, body = http_get(deployment.url + "/metrics")
    assert status == 200 and body


def test_body_size_limit(deployment: loopback.Deployment) -> None:
    """nginx refuses bodies over client_max_body_size itself, without troubling a replica."""
    limit = re.search(r"client_max_body_size\s+(\d+)m;", loopback.NGINX_CONF.read_text())
    assert limit
    too_big = b'{"instances": [' + b" " * (int(limit.group(1)) << 20) + b"]}"
    with httpx.Client(base_url=deployment.url, timeout=10) as client:
        response = client.post("/predict", content=too_big, headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert "x-upstream" not in response.headers or not response.headers["x-upstream"]


def test_new_version_reaches_every_replica_within_the_poll_interval(deployment: loopback.Deployment) -> None:
    """A version written into the shared store is served by every replica, with no failed request."""
    poll_s = float(deployment.replicas["scorer-1"].env["DEEPFM_SERVE_POLL_INTERVAL_S"])
    before = version_of(deployment.replicas["scorer-1"])
    with Load(deployment.url, clients=2, max_seconds=60, max_requests=20000) as load:
        load.wait_for(20, timeout=20)
        new_version = export_next_version(deployment.store)
        written = time.monotonic()
        assert new_version == before + 1
        switched: dict[str, float] = {}
        while len(switched) < len(deployment.replicas) and time.monotonic() - written < poll_s + 20:
            for name, replica in deployment.replicas.items():
                if name not in switched and version_of(replica) == new_version:
                    switched[name] = time.monotonic() - written
            time.sleep(0.1)
        count = len(load.snapshot())
        load.wait_for(count + 40, timeout=20)  # traffic after every replica switched
    outcomes = load.snapshot()
    assert not load.failures(), load.failures()[:5]
    assert set(switched) == set(deployment.replicas), f"not switched after {poll_s + 20}s: {switched}"
    # Each replica polls every poll_s; loading and warming the new version adds a little.
    assert max(switched.values()) <= poll_s + 5, switched
    assert {o.version for o in outcomes} == {before, new_version}
    assert {o.version for o in outcomes[-20:]} == {new_version}


def test_a_request_a_model_scores_nan_fails_alone_and_wedges_no_replica(tmp_path: Path, source_store: Path) -> None:
    """A version that scores NaN for one user and movie (past the load-time probe) serves behind nginx:
    that request gets 500 model_error from one replica, not retried on the other, and every other
    request keeps being answered by both."""
    store = Path(shutil.copytree(source_store, tmp_path / "models_store"))
    nan_version = export_next_version(store, wrap=lambda model: NaNForOnePair(model, user_index=3, movie_index=5))
    schema = DatasetSchema.from_json((store / "deepfm" / str(nan_version) / SCHEMA_FILE).read_text())
    vocabulary = {name: schema.fields[name].vocabulary or () for name in ("user_id", "movie_id")}
    poison = {**INSTANCES[0], "user_id": int(vocabulary["user_id"][2]), "movie_id": int(vocabulary["movie_id"][4])}
    with (
        loopback.deployment(tmp_path / "deployment", store=store) as dep,
        Load(dep.url, clients=2, max_seconds=60, max_requests=5000) as load,
        httpx.Client(base_url=dep.url, timeout=15) as client,
    ):
        load.wait_for(20, timeout=20)
        answered_by = set()
        for _ in range(10):
            response = client.post("/predict", json={"instances": [INSTANCES[1], poison]})
            assert response.status_code == 500, response.text
            error = response.json()["error"]
            assert error["code"] == "model_error" and f"'deepfm' version {nan_version}" in error["message"]
            (replica,) = upstreams(response.headers["x-upstream"])  # answered once, never retried
            answered_by.add(replica)
        count = len(load.snapshot())
        load.wait_for(count + 40, timeout=20)
        assert answered_by == {r.address for r in dep.replicas.values()}  # both took a poisoned request
        for running in dep.replicas.values():
            assert httpx.get(f"{running.url}/health/ready", timeout=5).status_code == 200
    outcomes = load.snapshot()
    assert not load.failures(), load.failures()[:5]
    assert {o.version for o in outcomes} == {nan_version}


def test_nginx_answers_its_own_errors_as_json(deployment: loopback.Deployment) -> None:
    with httpx.Client(base_url=deployment.url, timeout=10) as client:
        response = client.post("/predict", content=b"x" * (9 << 20), headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"]["code"] == "payload_too_large"
    assert response.headers["x-request-id"] in response.json()["error"]["message"]


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_killing_a_replica_under_load_loses_no_request(deployment: loopback.Deployment, sig: signal.Signals) -> None:
    """Under steady load, one replica is killed (SIGTERM: docker stop, a rolling update; SIGKILL: a
    crash, docker kill) and later started again: the clients see no error, nginx stops sending to the
    dead replica, and once it is back it gets traffic again. (A SIGKILL loses no response half-written:
    a replica writes each response in one piece, see service/connection.py.)"""
    victim = deployment.replicas["scorer-1"]
    fail_timeout = fail_timeout_s()
    with Load(deployment.url, clients=2, max_seconds=90, max_requests=30000) as load:
        load.wait_for(50, timeout=20)
        killed = time.monotonic()
        victim.signal(sig)
        assert victim.wait(20) is not None, "the replica did not exit"
        time.sleep(fail_timeout + 1)  # long enough for nginx to probe the dead replica again
        restarted = time.monotonic()
        victim.start()
        victim.wait_ready()
        back = time.monotonic()
        deadline = back + fail_timeout + 10
        while time.monotonic() < deadline:
            if any(o.end > back and o.upstream[-1:] == [victim.address] for o in load.snapshot()):
                break
            time.sleep(0.1)
        count = len(load.snapshot())
        load.wait_for(count + 20, timeout=20)
    outcomes = load.snapshot()
    failures = load.failures()
    assert not failures, f"{len(failures)} failed of {len(outcomes)}: {failures[:5]}\n{replica_logs(deployment)}"
    while_dead = [o for o in outcomes if killed + 0.5 < o.end < restarted]
    tried_dead = [o for o in while_dead if victim.address in o.upstream]
    served_by_dead = [o for o in while_dead if o.upstream[-1:] == [victim.address]]
    assert len(while_dead) > 50
    assert not served_by_dead
    # Taken out: at most one probe per fail_timeout window, not one try in N requests.
    assert len(tried_dead) <= math.ceil((restarted - killed) / fail_timeout) + 2, (len(tried_dead), len(while_dead))
    came_back = [o for o in outcomes if o.end > back and o.upstream[-1:] == [victim.address]]
    assert came_back, "the restarted replica got no traffic"


def test_prometheus_scrapes_every_replica(deployment: loopback.Deployment) -> None:
    if deployment.prometheus is None:
        pytest.skip("prometheus is not installed (Debian: apt-get install prometheus)")
    deadline = time.monotonic() + 20
    health: dict[str, str] = {}
    while time.monotonic() < deadline:
        status, body = http_get(f"{deployment.prometheus.url}/api/v1/targets")
        if status == 200:
            targets = json.loads(body)["data"]["activeTargets"]
            health = {t["labels"]["replica"]: t["health"] for t in targets}
            if health == {name: "up" for name in deployment.replicas}:
                break
        time.sleep(0.5)
    assert health == {name: "up" for name in deployment.replicas}, health


def test_loopback_runs_the_repo_files() -> None:
    """The deploy scripts the replicas run are the repo's (copied as the Dockerfile copies them)."""
    for name in loopback.APP_FILES:
        assert (REPO / name).is_file()
    assert Path(loopback.__file__).resolve() == REPO / "tools" / "loopback.py"

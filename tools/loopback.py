"""Run the pieces of docker-compose.yml as plain processes on 127.0.0.1, without Docker.

No Docker engine is needed to check what the compose file describes: this module starts

- each scorer-<N> service of docker-compose.yml with its own `command`, `working_dir` layout and
  `environment`, changing only what a container gets from Docker (see `scorer_environment`);
- nginx with deploy/nginx/nginx.conf, changing only addresses (see `render_nginx_conf`);
- optionally Prometheus with deploy/prometheus.yml, changing only its targets and, for tests, the
  scrape interval (see `render_prometheus_config`).

tests/deploy/ and benchmarks/deploy_bench.py use it; by hand, from the repository root (Ctrl-C
stops everything):

    .venv/bin/python -m tools.loopback                 # every replica of the compose file
    .venv/bin/python -m tools.loopback --replicas 1 --port 8080

Needs nginx on PATH (Debian: apt-get install nginx-light) and, for --prometheus, prometheus.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from tools.processes import Process, free_port

REPO = Path(__file__).resolve().parents[1]
COMPOSE_FILE = REPO / "docker-compose.yml"
NGINX_CONF = REPO / "deploy" / "nginx" / "nginx.conf"
PROMETHEUS_CONF = REPO / "deploy" / "prometheus.yml"
REPO_STORE = REPO / "models_store"
APP_DIR = "/app"
"""The image's WORKDIR: the compose file's paths under it map to the loopback app directory."""
APP_FILES = ("deploy/start-scorer.sh", "deploy/healthcheck.py")
"""What the Dockerfile copies into /app besides the models store (the packages are installed)."""
SCORER_RE = re.compile(r"^scorer-(\d+)$")
LISTEN_RE = re.compile(r"^(\s*)listen\s+(\d+)\s*;", re.MULTILINE)
SERVER_RE = re.compile(r"^(\s*)server\s+(scorer-\d+):(\d+)(\s[^;]*)?;[^\n]*\n", re.MULTILINE)


def load_compose(path: Path = COMPOSE_FILE) -> dict[str, Any]:
    """The compose file as plain data (YAML merge keys resolved)."""
    data = yaml.safe_load(path.read_text())
    if not isinstance(data, dict):
        raise ValueError(f"{path}: not a mapping")
    return data


def scorer_services(compose: Mapping[str, Any]) -> list[str]:
    """Names of the scorer-<N> services, by N."""
    names = [name for name in compose["services"] if SCORER_RE.match(name)]
    return sorted(names, key=lambda name: int(SCORER_RE.match(name).group(1)))  # type: ignore[union-attr]


def compose_environment(service: Mapping[str, Any]) -> dict[str, str]:
    """A service's `environment` (mapping or list form) as strings; interpolation is not supported."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    out = {str(k): "" if v is None else str(v) for k, v in env.items()}
    for key, value in out.items():
        if "${" in value:
            raise ValueError(f"environment {key}={value!r}: variable interpolation is not supported here")
    return out


def scorer_environment(
    service: Mapping[str, Any], *, port: int, app_dir: Path, tmp_dir: Path, overrides: Mapping[str, str] = {}
) -> dict[str, str]:
    """The environment a loopback replica gets: the service's own, with what Docker provides replaced.

    - DEEPFM_SERVE_HOST -> 127.0.0.1 and DEEPFM_SERVE_PORT -> `port` (Docker gives each container its
      own address; here the replicas share the loopback address and differ by port);
    - values that are paths under /app -> under `app_dir`, under /tmp -> under `tmp_dir` (the
      container's private tmpfs);
    - PATH starts with this interpreter's directory, so `python` in the start script is the one
      that runs this module (the image's PATH starts with its venv in the same way).
    Variables of the same names inherited from this process are dropped first.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEEPFM_SERVE_") and k != "PROMETHEUS_MULTIPROC_DIR"}
    for key, value in compose_environment(service).items():
        if value == APP_DIR or value.startswith(APP_DIR + "/"):
            value = str(app_dir) + value[len(APP_DIR) :]
        elif value == "/tmp" or value.startswith("/tmp/"):
            value = str(tmp_dir) + value[len("/tmp") :]
        env[key] = value
    env["DEEPFM_SERVE_HOST"] = "127.0.0.1"
    env["DEEPFM_SERVE_PORT"] = str(port)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(overrides)
    return env


def render_nginx_conf(text: str, listen_port: int, upstreams: Mapping[str, int]) -> str:
    """deploy/nginx/nginx.conf for loopback: the documented address substitution, nothing else.

    `listen <port>;` becomes `listen 127.0.0.1:<listen_port>;` and `server scorer-<N>:<port> ...;`
    becomes `server 127.0.0.1:<upstreams[scorer-N]> ...;` with its parameters kept. A server line of
    a replica missing from `upstreams` is dropped (a deployment with fewer replicas); every name in
    `upstreams` must have a server line.
    """
    rendered, listens = LISTEN_RE.subn(rf"\g<1>listen 127.0.0.1:{listen_port};", text)
    if listens != 1:
        raise ValueError(f"expected one listen directive, found {listens}")
    seen: list[str] = []

    def server(match: re.Match[str]) -> str:
        name = match.group(2)
        seen.append(name)
        if name not in upstreams:
            return ""
        return f"{match.group(1)}server 127.0.0.1:{upstreams[name]}{match.group(4) or ''};\n"

    rendered = SERVER_RE.sub(server, rendered)
    missing = sorted(set(upstreams) - set(seen))
    if missing:
        raise ValueError(f"no upstream server line for {missing}")
    if not set(upstreams) & set(seen):
        raise ValueError("no upstream server left")
    return rendered


def nginx_upstream_names(text: str) -> list[str]:
    """The scorer-<N> names of the upstream server lines, in file order."""
    return [m.group(2) for m in SERVER_RE.finditer(text)]


def render_prometheus_config(
    text: str, targets: Mapping[str, str], scrape_interval: str | None = None
) -> tuple[str, dict[str, Any]]:
    """deploy/prometheus.yml with each `scorer-<N>:<port>` target replaced by `targets[scorer-N]`.

    Returns the rendered text (the YAML re-serialised) and its data. `scrape_interval` replaces the
    global one (tests do not wait 15 s for a first scrape).
    """
    config = yaml.safe_load(text)
    replaced = 0
    for job in config["scrape_configs"]:
        for static in job.get("static_configs", []):
            new = []
            for target in static["targets"]:
                name = target.split(":", 1)[0]
                if SCORER_RE.match(name):
                    if name not in targets:
                        continue
                    target = targets[name]
                    replaced += 1
                new.append(target)
            static["targets"] = new
        job["static_configs"] = [s for s in job.get("static_configs", []) if s["targets"]]
    if replaced != len(targets):
        raise ValueError(f"replaced {replaced} scorer targets, expected {len(targets)}")
    if scrape_interval:
        config["global"]["scrape_interval"] = scrape_interval
        config["global"]["scrape_timeout"] = scrape_interval
    return yaml.safe_dump(config, sort_keys=False), config


def has_store_versions(store: Path, model: str) -> bool:
    """Whether `store/model` holds at least one complete (integer-named) version."""
    root = store / model
    return root.is_dir() and any(p.is_dir() and p.name.isdigit() for p in root.iterdir())


def prepare_app_dir(app_dir: Path, store: Path = REPO_STORE) -> Path:
    """Lay out `app_dir` as the image's /app: a copy of the models store and the deploy scripts."""
    app_dir.mkdir(parents=True, exist_ok=True)
    shutil.copytree(store, app_dir / "models_store", ignore=shutil.ignore_patterns(".*"), dirs_exist_ok=True)
    for name in APP_FILES:
        (app_dir / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, app_dir / name)
    return app_dir


class Replica(Process):
    """One scorer-<N> service of the compose file, on 127.0.0.1:`port`."""

    def __init__(
        self,
        name: str,
        service: Mapping[str, Any],
        *,
        port: int,
        app_dir: Path,
        work_dir: Path,
        overrides: Mapping[str, str] = {},
    ) -> None:
        tmp_dir = work_dir / f"{name}-tmp"  # the container's own /tmp
        tmp_dir.mkdir(parents=True, exist_ok=True)
        env = scorer_environment(service, port=port, app_dir=app_dir, tmp_dir=tmp_dir, overrides=overrides)
        command = service["command"]
        if isinstance(command, str):
            raise ValueError(f"{name}: give the compose command in exec (list) form")
        working_dir = str(service.get("working_dir", APP_DIR))
        if working_dir != APP_DIR:
            raise ValueError(f"{name}: working_dir {working_dir!r}, the image's WORKDIR is {APP_DIR}")
        super().__init__(name, command, cwd=app_dir, env=env, log=work_dir / f"{name}.log")
        self.port = port
        self.url = f"http://127.0.0.1:{port}"

    @property
    def address(self) -> str:
        """How nginx names this replica in $upstream_addr."""
        return f"127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float = 90.0) -> None:
        self.wait_http(f"{self.url}/health/ready", timeout)


class Nginx(Process):
    """nginx running the rendered deploy/nginx/nginx.conf from its own prefix directory."""

    def __init__(self, prefix: Path, conf_text: str, port: int) -> None:
        prefix.mkdir(parents=True, exist_ok=True)
        (prefix / "conf").mkdir(exist_ok=True)
        self.conf_path = prefix / "conf" / "nginx.conf"
        self.conf_path.write_text(conf_text)
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        argv = [
            nginx,
            "-p", str(prefix),
            "-c", str(self.conf_path),
            "-e", str(prefix / "error.log"),
            "-g", f"daemon off; pid {prefix / 'nginx.pid'};",
        ]  # fmt: skip
        super().__init__("nginx", argv, cwd=prefix, env=os.environ, log=prefix / "nginx.log")
        self.port = port
        self.url = f"http://127.0.0.1:{port}"

    def start(self) -> None:
        super().start()
        self.wait_http(f"{self.url}/lb/health", timeout=15)

    def log_tail(self, chars: int = 4000) -> str:
        error_log = self.conf_path.parent.parent / "error.log"
        errors = error_log.read_text(errors="replace")[-chars:] if error_log.exists() else ""
        return super().log_tail(chars) + errors

    def access_log(self) -> str:
        """nginx's access log (it goes to stdout, which is this process's log file)."""
        return self.log_path.read_text(errors="replace")


class Prometheus(Process):
    """Prometheus running the rendered deploy/prometheus.yml."""

    def __init__(self, work_dir: Path, conf_text: str, port: int) -> None:
        work_dir.mkdir(parents=True, exist_ok=True)
        conf = work_dir / "prometheus.yml"
        conf.write_text(conf_text)
        argv = [
            shutil.which("prometheus") or "prometheus",
            f"--config.file={conf}",
            f"--storage.tsdb.path={work_dir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ]
        super().__init__("prometheus", argv, cwd=work_dir, env=os.environ, log=work_dir / "prometheus.log")
        self.url = f"http://127.0.0.1:{port}"

    def start(self) -> None:
        super().start()
        self.wait_http(f"{self.url}/-/ready", timeout=30)


class Deployment:
    """The compose deployment on loopback: replicas and nginx (and Prometheus), stopped on exit.

    Args:
        work_dir: where the app directory, logs and nginx's prefix go.
        replicas: how many of the compose file's scorer services to start (all by default).
        store: the models store to copy into the app directory.
        overrides: extra environment for every replica (e.g. a shorter poll interval).
        nginx_port: nginx's port (a free one by default).
        prometheus: also run Prometheus scraping every replica (`scrape_interval` for its config).
    """

    def __init__(
        self,
        work_dir: Path,
        *,
        replicas: int | None = None,
        store: Path = REPO_STORE,
        overrides: Mapping[str, str] = {},
        nginx_port: int | None = None,
        prometheus: bool = False,
        scrape_interval: str | None = None,
    ) -> None:
        self.work_dir = work_dir
        self.compose = load_compose()
        names = scorer_services(self.compose)
        if replicas is not None:
            if not 1 <= replicas <= len(names):
                raise ValueError(f"replicas must be 1..{len(names)} (the compose file's scorer services)")
            names = names[:replicas]
        self.app_dir = prepare_app_dir(work_dir / "app", store)
        self.replicas = {
            name: Replica(
                name,
                self.compose["services"][name],
                port=free_port(),
                app_dir=self.app_dir,
                work_dir=work_dir,
                overrides=overrides,
            )
            for name in names
        }
        port = nginx_port or free_port()
        ports = {name: r.port for name, r in self.replicas.items()}
        self.nginx = Nginx(work_dir / "nginx", render_nginx_conf(NGINX_CONF.read_text(), port, ports), port)
        self.prometheus: Prometheus | None = None
        if prometheus:
            text, _ = render_prometheus_config(
                PROMETHEUS_CONF.read_text(), {n: r.address for n, r in self.replicas.items()}, scrape_interval
            )
            self.prometheus = Prometheus(work_dir / "prometheus", text, free_port())

    @property
    def url(self) -> str:
        return self.nginx.url

    @property
    def store(self) -> Path:
        return self.app_dir / "models_store"

    def start(self) -> None:
        """Start every replica (in parallel), wait until all are ready, then nginx (and Prometheus)."""
        for replica in self.replicas.values():
            replica.start()
        for replica in self.replicas.values():
            replica.wait_ready()
        self.nginx.start()
        if self.prometheus is not None:
            self.prometheus.start()

    def stop(self) -> None:
        """Stop everything that runs; safe to call twice."""
        processes: list[Process] = [self.nginx, *self.replicas.values()]
        if self.prometheus is not None:
            processes.insert(0, self.prometheus)
        for process in processes:
            process.signal(signal.SIGTERM)
        for process in processes:
            process.stop()

    def __enter__(self) -> Deployment:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def deployment(work_dir: Path | None = None, **kwargs: Any) -> Iterator[Deployment]:
    """`Deployment` in a temporary directory (removed afterwards) unless `work_dir` is given."""
    with contextlib.ExitStack() as stack:
        if work_dir is None:
            work_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="deepfm-loopback-")))
        yield stack.enter_context(Deployment(work_dir, **kwargs))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--replicas", type=int, default=None, help="scorer replicas (default: all in the compose file)")
    parser.add_argument("--port", type=int, default=8080, help="nginx port on 127.0.0.1 (default 8080)")
    parser.add_argument("--store", type=Path, default=REPO_STORE, help="models store to copy (default models_store)")
    parser.add_argument("--prometheus", action="store_true", help="also run Prometheus scraping every replica")
    args = parser.parse_args(argv)
    stop = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    with deployment(replicas=args.replicas, store=args.store, nginx_port=args.port, prometheus=args.prometheus) as dep:
        for name, replica in dep.replicas.items():
            print(f"{name}: {replica.url}  (log {replica.log_path})")
        if dep.prometheus is not None:
            print(f"prometheus: {dep.prometheus.url}")
        print(f"nginx: {dep.url}  (access log {dep.nginx.log_path}); Ctrl-C stops")
        with contextlib.suppress(KeyboardInterrupt):
            while not stop:
                time.sleep(0.5)
    return 0


if __name__ == "__main__":
    sys.exit(main())

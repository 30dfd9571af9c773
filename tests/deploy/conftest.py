"""Fixtures of the deployment tests: the models store, and the compose deployment run on loopback.

The loopback deployment is tools/loopback.py: every scorer-<N> service of docker-compose.yml
started with its own command and environment (`python -m service` via deploy/start-scorer.sh) on a
127.0.0.1 port, nginx running deploy/nginx/nginx.conf with only its addresses substituted, and,
where the binary is installed, Prometheus running deploy/prometheus.yml. Tests that need nginx skip
when it is not installed (CI installs it: apt-get install nginx-light).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from deploy_support import build_synthetic_store, loopback


def nginx_binary() -> str | None:
    """nginx on PATH, or Debian's /usr/sbin/nginx (not on a non-root PATH)."""
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
    return found


def prometheus_binary() -> str | None:
    return shutil.which("prometheus")


@pytest.fixture(scope="session")
def source_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The store the replicas serve (copied again into each deployment, never written to).

    The repo's models_store/ when it holds a deepfm version; until then a small synthetic store with
    a deepfm artifact exported by deepfm.artifact (same format, same service code path).
    """
    if loopback.has_store_versions(loopback.REPO_STORE, "deepfm"):
        return loopback.REPO_STORE
    return build_synthetic_store(tmp_path_factory.mktemp("synthetic-store"))


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory, source_store: Path) -> Iterator[loopback.Deployment]:
    """Every replica of the compose file behind nginx (and Prometheus, if installed) on loopback."""
    if nginx_binary() is None:
        pytest.skip("nginx is not installed (Debian: apt-get install nginx-light); CI installs it")
    dep = loopback.Deployment(
        tmp_path_factory.mktemp("deployment"),
        store=source_store,
        prometheus=prometheus_binary() is not None,
        scrape_interval="1s",
    )
    try:
        dep.start()
    except Exception as exc:
        dep.stop()
        pytest.fail(f"the loopback deployment did not start: {exc}")
    except BaseException:
        dep.stop()
        raise
    try:
        yield dep
    finally:
        dep.stop()

"""Virtualenvs that benchmarks make for their peers (TorchServe, DeepCTR-Torch, py-spy), apart from .venv."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

VENVS = Path(__file__).resolve().parents[1] / ".bench-venvs"  # git-ignored
INSTALL_TIMEOUT_S = 1800


class UnavailableError(Exception):
    """A peer or tool that cannot be installed or started here; the message says why."""


def torch_pin() -> str:
    """This virtualenv's torch as a pip pin (the CPU build's version): a bare `torch` pulls CUDA wheels."""
    return f"torch=={metadata.version('torch').split('+')[0]}"


def _pip(venv: Path, *arguments: str) -> None:
    log = venv / "install.log"
    with log.open("a") as out:
        done = subprocess.run(
            [str(venv / "bin" / "pip"), "install", "--disable-pip-version-check", *arguments],
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=INSTALL_TIMEOUT_S,
            check=False,
        )
    if done.returncode:
        tail = log.read_text().strip().splitlines()[-3:]
        raise UnavailableError(f"pip install {' '.join(arguments)} failed: {' / '.join(tail)}")


def bench_venv(name: str, steps: list[list[str]]) -> Path:
    """A virtualenv under VENVS made by running `pip install` steps in order; reused while its steps stand."""
    venv = VENVS / name
    marker, wanted = venv / ".installed", json.dumps(steps)
    if marker.exists() and marker.read_text() == wanted:
        return venv
    shutil.rmtree(venv, ignore_errors=True)
    print(f"installing {venv} ...", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=INSTALL_TIMEOUT_S)
    for step in steps:
        _pip(venv, *step)
    marker.write_text(wanted)
    return venv

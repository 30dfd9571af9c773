"""The process-wide settings of the deepfm command (deepfm.process), each in a fresh interpreter."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from deepfm.process import MALLOC_SETTINGS

CHECK = "from deepfm.process import keep_freed_memory; print(keep_freed_memory())"


def run_check(env: dict[str, str]) -> str:
    done = subprocess.run(
        [sys.executable, "-c", CHECK], env=env, capture_output=True, text=True, timeout=60, check=True
    )
    return done.stdout.strip()


def clean_env() -> dict[str, str]:
    return {name: value for name, value in os.environ.items() if name not in MALLOC_SETTINGS}


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_malloc_thresholds_are_set_where_the_environment_sets_none() -> None:
    assert run_check(clean_env()) == "True"


@pytest.mark.parametrize("name", sorted(MALLOC_SETTINGS))
def test_a_threshold_the_environment_sets_wins(name: str) -> None:
    assert run_check(clean_env() | {name: "65536"}) == "False"

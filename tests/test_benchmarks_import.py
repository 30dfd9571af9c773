"""Every benchmark script imports: a change to the code they measure must not break them unnoticed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.mark.parametrize("script", sorted(p.stem for p in BENCHMARKS.glob("*.py")))
def test_the_benchmark_imports(script: str) -> None:
    result = subprocess.run(
        [sys.executable, "-c", f"import {script}"], cwd=BENCHMARKS, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-3000:]

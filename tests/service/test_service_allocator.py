"""glibc malloc thresholds: freed model-sized blocks are reused, not refaulted page by page."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc's mallopt only"
)

# One "model call": four 1 MiB activations, written, then freed together (more than glibc's
# default trim threshold returns to the kernel). Prints whether the thresholds were set, and the
# page faults of 20 calls after 3 warm-ups.
CALLS = """
import resource, sys
import numpy as np
from service.allocator import keep_freed_memory
print(sys.argv[1] == "tuned" and keep_freed_memory())
def call():
    blocks = [np.ones(1 << 18, dtype=np.float32) for _ in range(4)]
    del blocks
for _ in range(3):
    call()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    call()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


PAGES_PER_CALL = 4 * (1 << 20) // os.sysconf("SC_PAGE_SIZE")


def run_calls(mode: str, **env: str) -> tuple[bool, int]:
    """(whether the thresholds were set, page faults of the 20 calls), in a fresh interpreter."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "GLIBC_"))} | env
    done = subprocess.run(
        [sys.executable, "-c", CALLS, mode], capture_output=True, text=True, check=True, env=environment
    )
    tuned, faults = done.stdout.split()
    return tuned == "True", int(faults)


def test_tuned_thresholds_keep_freed_blocks_for_the_next_call() -> None:
    assert run_calls("default")[1] > 10 * PAGES_PER_CALL  # glibc's defaults fault most pages anew
    tuned, faults = run_calls("tuned")
    assert tuned
    assert faults < PAGES_PER_CALL  # the blocks come back from the heap


def test_thresholds_the_operator_set_are_left_alone() -> None:
    tuned, faults = run_calls("tuned", MALLOC_TRIM_THRESHOLD_="1000000")
    assert not tuned
    assert faults > 10 * PAGES_PER_CALL

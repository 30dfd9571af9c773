"""Process-wide settings that the `deepfm` command makes once, at its start; the library never makes them."""

from __future__ import annotations

import ctypes
import os
import sys

# glibc's mallopt parameters and the values deploy/start-scorer.sh gives the scorer through the environment
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
MALLOC_SETTINGS = {
    "MALLOC_MMAP_THRESHOLD_": (M_MMAP_THRESHOLD, 32 << 20),
    "MALLOC_TRIM_THRESHOLD_": (M_TRIM_THRESHOLD, 128 << 20),
}


def keep_freed_memory() -> bool:
    """Fix glibc malloc's thresholds high, unless the environment sets them (glibc has read it then).

    A training step frees and allocates buffers of megabytes; with glibc's adaptive thresholds such a
    buffer is mapped, unmapped and faulted in again at every step (docs/decisions.md). Returns whether
    the thresholds were set: False off glibc or where the environment sets them.
    """
    if not sys.platform.startswith("linux") or any(name in os.environ for name in MALLOC_SETTINGS):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl, for one)
        return False
    return all(mallopt(parameter, value) == 1 for parameter, value in MALLOC_SETTINGS.values())

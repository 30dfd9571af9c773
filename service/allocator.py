"""glibc malloc settings for a process that runs a model on batches of changing size.

Every model call allocates its activations afresh and frees them on return. glibc serves a block
above its mmap threshold (128 KiB at first; 1,000 rows of a 256-wide layer take 1 MiB) with a fresh
`mmap`, and gives freed memory at the top of the heap back to the kernel past its trim threshold:
either way the next call touches new pages, one page fault per 4 KiB. glibc raises the threshold
after such a block is freed, but not for good: measured on a 1,000-row DeepFM call, some processes
took ~490 page faults and 1.5 ms of kernel time per call, others none (`resource.getrusage`
around 200 calls). Fixed, high thresholds keep freed blocks in the heap for the next call, at the
cost of holding up to `TRIM_THRESHOLD_BYTES` of freed memory.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os

logger = logging.getLogger(__name__)

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt parameters, from glibc's malloc.h
MMAP_THRESHOLD_BYTES = 32 * 1024 * 1024  # glibc's largest allowed value on 64-bit systems
TRIM_THRESHOLD_BYTES = 128 * 1024 * 1024
SETTINGS = ((M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES), (M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))
OPERATOR_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES")


def keep_freed_memory() -> bool:
    """Set glibc's mmap and trim thresholds high (see the module docstring); True if they were set.

    Nothing changes where the C library is not glibc, or where the operator set malloc tunables in
    the environment.
    """
    if any(name in os.environ for name in OPERATOR_SETTINGS):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):  # no C library found, or not glibc
        return False
    done = all(mallopt(param, value) for param, value in SETTINGS)
    if not done:
        logger.warning("mallopt refused the thresholds; model calls may page-fault on fresh memory")
    return done

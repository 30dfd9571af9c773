"""What the machine did while a benchmark ran, from /proc: the machine may be shared."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

CoreTicks = dict[int, tuple[int, int, int]]
"""CPU number -> (busy, stolen, all) clock ticks since boot."""


def core_ticks() -> CoreTicks:
    """Per CPU, (busy, stolen, all) ticks so far."""
    cores = {}
    for line in Path("/proc/stat").read_text().splitlines():
        if re.match(r"cpu\d", line):
            ticks = [int(t) for t in line.split()[1:]]
            # user nice system idle iowait irq softirq steal (guest is inside user)
            cores[int(line.split()[0][3:])] = (sum(ticks[:3]) + ticks[5] + ticks[6], ticks[7], sum(ticks[:8]))
    return cores


@dataclass(frozen=True)
class MachineUse:
    """The whole machine between two readings: cores kept busy on average, and the share stolen."""

    busy_cores: float
    steal: float

    @classmethod
    def between(cls, before: CoreTicks, after: CoreTicks) -> MachineUse:
        busy = sum(after[c][0] - before[c][0] for c in after)
        stolen = sum(after[c][1] - before[c][1] for c in after)
        total = max(1, sum(after[c][2] - before[c][2] for c in after))
        return cls(busy_cores=len(after) * busy / total, steal=stolen / total)


def rss_mib(pid: int) -> float:
    """A process's resident memory now, MiB (NaN if /proc does not say)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")

"""Threads or processes for a scorer: what a second torch thread buys one model call, against a second process.

    .venv/bin/python benchmarks/cores_bench.py [--store models_store] [--rounds 15] [--calls 200]

For each committed default model (frozen TorchScript, as the service loads it) and batch sizes 1, 100
and 1,000 (the service's calls: single requests, coalesced ones, its 1,024-row cap), one process
times encoded model calls with 1 and with 2 torch threads, interleaved round by round, pinned to
both cores; the report gives the median wall time per call and the process's CPU time per call.
A second thread pays if it cuts the wall time by nearly half for a little more CPU: else a second
worker process (each 1 thread) serves twice the requests for the same CPU, which is what the
scorer's defaults choose. Writes benchmarks/results/cores_bench.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tools/, the harnesses tests share

from deepfm.artifact import list_versions, load_artifact, vocabulary_probes
from tools.machine import MachineUse, core_ticks

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "cores_bench.md"
COMMAND = ".venv/bin/python benchmarks/cores_bench.py"
MODELS = ("deepfm", "xdeepfm", "attention_deepfm")
BATCHES = (1, 100, 1000)
THREADS = (1, 2)


def timed(call: Callable[[], object], calls: int) -> tuple[float, float]:
    """(wall, CPU) seconds per call of `calls` calls."""
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(calls):
        call()
    return (time.perf_counter() - wall) / calls, (time.process_time() - cpu) / calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", type=Path, default=ROOT / "models_store")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    os.sched_setaffinity(0, {0, 1})
    ticks, started, own_cpu = core_ticks(), time.monotonic(), time.process_time()
    rows = []
    for name in MODELS:
        artifact = load_artifact(args.store / name / str(max(list_versions(args.store, name))))
        probe = next(vocabulary_probes(artifact.schema, rows_per_batch=max(BATCHES)))
        for batch in BATCHES:
            call = partial(artifact.predict, {field: values[:batch] for field, values in probe.items()})
            calls = max(1, int(args.calls / batch**0.5))  # bigger batches: fewer calls, each longer
            results: dict[int, list[tuple[float, float]]] = {threads: [] for threads in THREADS}
            for _ in range(args.rounds):
                for threads in THREADS:
                    torch.set_num_threads(threads)
                    timed(call, max(2, calls // 10))  # warm: the new thread count's first calls are slower
                    results[threads].append(timed(call, calls))
            wall = {t: statistics.median(w for w, _ in results[t]) for t in THREADS}
            cpu = {t: statistics.median(c for _, c in results[t]) for t in THREADS}
            rows.append(
                f"| {name} | {batch} | {wall[1] * 1e3:.3f} | {wall[2] * 1e3:.3f} | {wall[1] / wall[2]:.2f} | "
                f"{cpu[1] * 1e3:.3f} | {cpu[2] * 1e3:.3f} | {cpu[2] / cpu[1]:.2f} |"
            )
            print(rows[-1], flush=True)
    seconds = time.monotonic() - started
    use = MachineUse.between(ticks, core_ticks())
    other = use.busy_cores - (time.process_time() - own_cpu) / seconds
    lines = [
        "# Threads or processes per scorer core",
        "",
        f"Command: `{COMMAND}` (rounds {args.rounds}, calls {args.calls}); {__doc__.split(chr(10))[0]}",
        "",
        "Encoded model calls of the committed default models (frozen TorchScript), 1 against 2 torch threads,",
        "interleaved; medians over rounds. Wall time is what one request waits; CPU time is what the core",
        "pays (both threads' time for 2 threads).",
        "",
        "| model | rows | wall ms, 1 thread | wall ms, 2 threads | speed-up | CPU ms, 1 thread | CPU ms, 2 threads "
        "| CPU ratio |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        *rows,
        "",
        f"Machine: {os.cpu_count()} CPUs; while it ran, other work kept {other:.2f} cores busy on average, and the "
        f"hypervisor stole {use.steal:.1%} of the CPU time.",
        "",
    ]
    args.output.write_text("\n".join(lines))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()

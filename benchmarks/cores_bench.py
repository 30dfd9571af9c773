"""Threads or processes for a scorer: what a second torch thread buys one model call, against a second process.

    .venv/bin/python benchmarks/cores_bench.py [--store models_store] [--rounds 7] [--calls 200]

For each committed default model (frozen TorchScript, as the service loads it) and batch sizes 1, 100
and 1,000 (the service's calls: single requests, coalesced ones, its 1,024-row cap), a fresh child
process with OMP_NUM_THREADS and torch threads set to 1 or 2 times encoded model calls, pinned to
both cores; children of the two thread counts alternate round by round (a process never switches its
thread count: OpenMP's spinning pool threads would bill one setting's CPU to the other). The report
gives the median wall time and the process's CPU time per call, and what two 1-thread processes (two
workers) score per second against one 2-thread process on the same two cores when both are saturated.
Writes benchmarks/results/cores_bench.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
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


def child(store: Path, threads: int, calls: int) -> None:
    """Print {model: {rows: [wall, CPU]}} seconds per call with `threads` torch threads."""
    torch.set_num_threads(threads)
    results: dict[str, dict[int, tuple[float, float]]] = {}
    for name in MODELS:
        artifact = load_artifact(store / name / str(max(list_versions(store, name))))
        probe = vocabulary_probes(artifact.schema, max_rows=max(BATCHES))
        results[name] = {}
        for batch in BATCHES:
            call = partial(artifact.predict, {field: values[:batch] for field, values in probe.items()})
            count = max(1, int(calls / batch**0.5))  # bigger batches: fewer calls, each longer
            timed(call, max(2, count // 5))  # warm
            results[name][batch] = timed(call, count)
    print(json.dumps(results))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", type=Path, default=ROOT / "models_store")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--child-threads", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_threads:
        child(args.store, args.child_threads, args.calls)
        return
    ticks, started = core_ticks(), time.monotonic()
    runs: dict[int, list[dict[str, dict[str, list[float]]]]] = {threads: [] for threads in THREADS}
    for round_ in range(args.rounds):
        for threads in THREADS if round_ % 2 == 0 else THREADS[::-1]:
            env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
            command = ["taskset", "-c", "0,1", sys.executable, __file__, "--store", str(args.store)]
            command += ["--calls", str(args.calls), "--child-threads", str(threads)]
            output = subprocess.run(command, env=env, capture_output=True, text=True, check=True, timeout=600)
            runs[threads].append(json.loads(output.stdout))
        print(f"round {round_ + 1} of {args.rounds}", flush=True)
    rows = []
    for name in MODELS:
        for batch in BATCHES:
            wall = {t: statistics.median(r[name][str(batch)][0] for r in runs[t]) for t in THREADS}
            cpu = {t: statistics.median(r[name][str(batch)][1] for r in runs[t]) for t in THREADS}
            rows.append(
                f"| {name} | {batch} | {wall[1] * 1e3:.3f} | {wall[2] * 1e3:.3f} | {wall[1] / wall[2]:.2f} | "
                f"{cpu[1] * 1e3:.3f} | {cpu[2] * 1e3:.3f} | {2 * wall[2] / wall[1]:.2f} |"
            )
    minutes = (time.monotonic() - started) / 60
    use = MachineUse.between(ticks, core_ticks())
    lines = [
        "# Threads or processes per scorer core",
        "",
        f"Command: `{COMMAND}` (rounds {args.rounds}, calls {args.calls}; {minutes:.1f} min).",
        "",
        "Encoded model calls of the committed default models (frozen TorchScript), 1 against 2 torch threads,",
        "one child process per thread count and round, alternating; medians over rounds. Wall time is what",
        "one call waits; CPU time is what the process pays (both threads' time, spinning included, for 2).",
        "The last column, 2 x wall(2 threads) / wall(1 thread), is how many calls two 1-thread workers make",
        "on two saturated cores for each call of one 2-thread worker: above 1, processes serve more.",
        "",
        "| model | rows | wall ms, 1 thread | wall ms, 2 threads | speed-up of one call | CPU ms, 1 thread "
        "| CPU ms, 2 threads | 2 workers x 1 thread / 1 x 2, calls per second |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        *rows,
        "",
        f"Machine: {os.cpu_count()} CPUs; while it ran (benchmark included: one busy core with 1 thread, up to two",
        f"with 2), {use.busy_cores:.2f} cores were busy on average, and the hypervisor stole {use.steal:.1%} of the "
        "CPU time.",
        "",
    ]
    args.output.write_text("\n".join(lines))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()

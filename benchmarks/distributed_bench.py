"""Data-parallel CPU training: 1 process x 2 threads against 2 torchrun processes x 1 thread.

    .venv/bin/python benchmarks/distributed_bench.py [--models deepfm xdeepfm] [--repeats 1]
    .venv/bin/python benchmarks/distributed_bench.py -o training.epochs=1 -o data.max_users=100 --output smoke

Each run is the `deepfm train` command on a model's default config (the full MovieLens-100K
leave-one-out protocol, early stopping on validation AUC), on the CPU, launched either as one
process with training.num_threads=2 or by `torchrun --standalone --nproc-per-node=2` with one thread
per process (gloo over loopback). The two ways of a model run back to back, alternating when
repeated, so that they see the same machine. Reported per run: training samples/s (median over
epochs: rows of the epoch / seconds of its training steps), wall seconds of the whole command, the
epoch kept and the test metrics; and what else the machine did meanwhile, from /proc/stat and the
runs' own CPU time: the cores' busy and steal fractions and the CPU other processes took.
Writes benchmarks/results/NAME.md and NAME.json (NAME: --output, default distributed_bench).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from deepfm.training.experiment import METRICS_FILE

RESULTS = Path(__file__).parent / "results"
WAYS = {"1x2": (1, 2), "2x1": (2, 1)}  # processes x torch threads each
TEST_METRICS = ("auc", "hr@10", "ndcg@10")


def cpu_times() -> tuple[float, float, float]:
    """(busy, steal, total) jiffies of all cores since boot, from /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]  # guest time is inside user
    return user + nice + system + irq + softirq, steal, sum(fields[:8])


def command(model: str, way: str, run_dir: Path, overrides: list[str]) -> tuple[list[str], dict[str, str]]:
    """The `deepfm train` command line of one run and its environment."""
    processes, threads = WAYS[way]
    settings = ["training.device=cpu", "training.progress=false", f"training.num_threads={threads}", *overrides]
    train = ["-m", "deepfm", "train", "--config", f"configs/{model}_movielens.yaml", "--run-dir", str(run_dir)]
    train += [arg for item in settings for arg in ("-o", item)]
    launcher = ["-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}"] if processes > 1 else []
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    return [sys.executable, *launcher, *train], env


def run(model: str, way: str, overrides: list[str], scratch: Path) -> dict[str, Any]:
    """Train and test once; the figures of the run and of the machine while it ran."""
    run_dir = scratch / f"{model}-{way}-{time.monotonic_ns()}"
    argv, env = command(model, way, run_dir, overrides)
    busy0, steal0, total0 = cpu_times()
    children0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    busy, steal, total = (b - a for a, b in zip((busy0, steal0, total0), cpu_times(), strict=True))
    jiffy = os.sysconf("SC_CLK_TCK")
    ours = (children.ru_utime + children.ru_stime) - (children0.ru_utime + children0.ru_stime)
    cores = os.cpu_count() or 1
    metrics = json.loads((run_dir / METRICS_FILE).read_text())
    epochs = metrics["history"]["epochs"]
    return {
        "model": model,
        "way": way,
        "samples_per_second": statistics.median(e["samples_per_second"] for e in epochs),
        "epoch_samples_per_second": [e["samples_per_second"] for e in epochs],
        "wall_seconds": wall,
        "epochs": len(epochs),
        "best_epoch": metrics["history"]["best_epoch"],
        "test": {k: metrics["test"][k] for k in TEST_METRICS},
        "machine_busy": busy / total,  # of all cores, ours included
        "machine_steal": steal / total,
        "others_cpu": max(0.0, busy / jiffy - ours) / (wall * cores),  # of all cores
        "command": " ".join(argv[1:]),
    }


def report(results: list[dict[str, Any]], invocation: str) -> str:
    """The Markdown report."""
    lines = [
        "# Data-parallel CPU training: 1 process x 2 threads vs 2 processes x 1 thread",
        "",
        f"Command: `{invocation}`",
        "",
        f"Machine: {os.cpu_count()} CPU cores, Python {platform.python_version()}, torch {torch.__version__}; "
        "gloo over loopback for the 2-process runs.",
        "",
        "| model | processes x threads | samples/s: median (min-max) over epochs | wall s | epochs | kept epoch | "
        + " | ".join(f"test {k}" for k in TEST_METRICS)
        + " | cores busy | steal | others' CPU |",
        "|---|---|---|---|---|---|" + "---|" * len(TEST_METRICS) + "---|---|---|",
    ]
    for r in results:
        test = " | ".join(f"{r['test'][k]:.4f}" for k in TEST_METRICS)
        low, high = min(r["epoch_samples_per_second"]), max(r["epoch_samples_per_second"])
        lines.append(
            f"| {r['model']} | {r['way'].replace('x', ' x ')} "
            f"| {r['samples_per_second']:,.0f} ({low:,.0f}-{high:,.0f}) | {r['wall_seconds']:.0f} "
            f"| {r['epochs']} | {r['best_epoch']} | {test} "
            f"| {r['machine_busy']:.0%} | {r['machine_steal']:.1%} | {r['others_cpu']:.0%} |"
        )
    lines += ["", "Ratio 2 x 1 / 1 x 2 of training samples/s, per model (medians over repeats):", ""]
    for model in dict.fromkeys(r["model"] for r in results):
        speed = {
            w: statistics.median(r["samples_per_second"] for r in results if (r["model"], r["way"]) == (model, w))
            for w in WAYS
        }
        lines.append(f"- {model}: {speed['2x1'] / speed['1x2']:.2f}")
    lines += [
        "",
        "Cores busy and steal: fractions of all cores' time during the run, from /proc/stat; others' CPU: "
        "the busy time that was not the run's own (its processes' user + system time), as a fraction of "
        "all cores: the load other work put on the machine meanwhile.",
        "",
        "Commands of the runs:",
        "",
        *[f"- `{r['command']}`" for r in results],
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["deepfm", "xdeepfm"])
    parser.add_argument("--repeats", type=int, default=1, help="runs of each way per model, alternating")
    parser.add_argument("--override", "-o", action="append", default=[], help="config override for every run")
    parser.add_argument("--output", default="distributed_bench", help="report name: results/NAME.md and NAME.json")
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory(prefix="distributed_bench-") as scratch:
        for model in args.models:
            for repeat in range(args.repeats):
                for way in WAYS if repeat % 2 == 0 else reversed(WAYS):
                    results.append(run(model, way, args.override, Path(scratch)))
                    print(json.dumps(results[-1]), flush=True)
    invocation = "python benchmarks/distributed_bench.py " + " ".join(sys.argv[1:])
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.output}.json").write_text(json.dumps(results, indent=2))
    (RESULTS / f"{args.output}.md").write_text(report(results, invocation.strip()))


if __name__ == "__main__":
    main()

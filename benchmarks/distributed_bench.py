"""Data-parallel CPU training: 1 process x 2 threads against 2 torchrun processes x 1 thread.

    .venv/bin/python benchmarks/distributed_bench.py [--models deepfm xdeepfm] [--parts full paired] [--pairs 3]
    .venv/bin/python benchmarks/distributed_bench.py -o data.max_users=100 --pairs 1 --output smoke

Each run is the `deepfm train` command on a model's default config (the full MovieLens-100K
leave-one-out protocol), on the CPU, launched either as one process with training.num_threads=2 or
by `torchrun --standalone --nproc-per-node=2` with one thread per process (gloo over loopback).

- full: one run of each way per model to the end (early stopping on validation AUC): the quality of
  each way, and its training speed over those epochs;
- paired: `--pairs` pairs of one-epoch runs per model, the two ways back to back in alternating
  order (A B, B A, ...), so that each ratio compares two runs a minute apart: the speed comparison.

Reported per run: training samples/s (rows of an epoch / seconds of its training steps; median and
range over epochs), wall seconds of the whole command, the epoch kept and the test metrics; and what
else the machine did meanwhile, from /proc/stat and the runs' own CPU time: the cores' busy and steal
fractions and the CPU that other processes took. Writes benchmarks/results/NAME.md and NAME.json
(NAME: --output, default distributed_bench); a part not run keeps its results from NAME.json.
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
QUIET = 0.10  # a pair counts as quiet when other work took less than this fraction of the cores in both runs


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


def report(parts: dict[str, dict[str, Any]]) -> str:
    """The Markdown report of both parts."""
    lines = [
        "# Data-parallel CPU training: 1 process x 2 threads vs 2 processes x 1 thread",
        "",
        f"Machine: {os.cpu_count()} CPU cores, Python {platform.python_version()}, torch {torch.__version__}; "
        "gloo over loopback for the 2-process runs. Cores busy and steal: fractions of all cores' time "
        "during a run, from /proc/stat; others' CPU: the busy time that was not the run's own (its "
        "processes' user + system time), as a fraction of all cores: the load other work put on the "
        "machine meanwhile.",
        "",
    ]
    if "paired" in parts:
        lines += paired_section(parts["paired"])
    if "full" in parts:
        lines += full_section(parts["full"])
    return "\n".join(lines)


def header(part: dict[str, Any]) -> list[str]:
    return [f"Command: `{part['command']}`", "", *([part["note"], ""] if part.get("note") else [])]


def paired_section(part: dict[str, Any]) -> list[str]:
    """Speed side by side: one-epoch runs, the two ways back to back."""
    runs = part["runs"]
    lines = ["## Speed: one-epoch runs in alternating pairs", "", *header(part)]
    lines += ["| model | pair | 1 x 2 samples/s | 2 x 1 samples/s | ratio 2 x 1 / 1 x 2 | others' CPU (1 x 2, 2 x 1) |"]
    lines += ["|---|---|---|---|---|---|"]
    summary = []
    for model in dict.fromkeys(r["model"] for r in runs):
        pairs = [r for r in runs if r["model"] == model]
        ratios, quiet = [], []
        for index in range(0, len(pairs), 2):
            by_way = {r["way"]: r for r in pairs[index : index + 2]}
            one, two = by_way["1x2"], by_way["2x1"]
            ratios.append(two["samples_per_second"] / one["samples_per_second"])
            if max(one["others_cpu"], two["others_cpu"]) < QUIET:
                quiet.append(ratios[-1])
            lines.append(
                f"| {model} | {index // 2 + 1} | {one['samples_per_second']:,.0f} | {two['samples_per_second']:,.0f} "
                f"| {ratios[-1]:.2f} | {one['others_cpu']:.0%}, {two['others_cpu']:.0%} |"
            )
        medians = {w: statistics.median(r["samples_per_second"] for r in pairs if r["way"] == w) for w in WAYS}
        summary.append(
            f"- {model}: 1 x 2 {medians['1x2']:,.0f}, 2 x 1 {medians['2x1']:,.0f} samples/s (medians); "
            f"ratio {statistics.median(ratios):.2f} (median of {len(ratios)} pairs, "
            f"{min(ratios):.2f}-{max(ratios):.2f}); in quiet pairs (others' CPU under {QUIET:.0%} in both runs): "
            + (", ".join(f"{r:.2f}" for r in quiet) or "none")
        )
    return [*lines, "", *summary, ""]


def full_section(part: dict[str, Any]) -> list[str]:
    """Quality and speed of whole runs, one per way and model."""
    results = part["runs"]
    lines = [
        "## Quality: whole runs (early stopping), one per way",
        "",
        *header(part),
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
    return [*lines, "", "Commands of the runs:", "", *[f"- `{r['command']}`" for r in results], ""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["deepfm", "xdeepfm"])
    parser.add_argument("--parts", nargs="+", choices=["full", "paired"], default=["full", "paired"])
    parser.add_argument("--pairs", type=int, default=3, help="paired part: pairs of one-epoch runs per model")
    parser.add_argument("--override", "-o", action="append", default=[], help="config override for every run")
    parser.add_argument("--note", help="what the report should say about the conditions of this invocation")
    parser.add_argument("--output", default="distributed_bench", help="report name: results/NAME.md and NAME.json")
    parser.add_argument("--report-only", action="store_true", help="only rewrite the report from NAME.json")
    args = parser.parse_args()
    json_path = RESULTS / f"{args.output}.json"
    parts: dict[str, dict[str, Any]] = json.loads(json_path.read_text()) if json_path.is_file() else {}
    given = sys.argv[1:]
    if "--note" in given:  # the note is printed beside the command, not inside it
        del given[given.index("--note") : given.index("--note") + 2]
    invocation = " ".join(["python benchmarks/distributed_bench.py", *given])
    with tempfile.TemporaryDirectory(prefix="distributed_bench-") as scratch:
        for name in [] if args.report_only else args.parts:
            runs = []
            for model in args.models:
                if name == "full":
                    schedule = [(way, args.override) for way in WAYS]
                else:
                    orders = [list(WAYS) if pair % 2 == 0 else list(reversed(WAYS)) for pair in range(args.pairs)]
                    schedule = [(way, [*args.override, "training.epochs=1"]) for order in orders for way in order]
                for way, overrides in schedule:
                    runs.append(run(model, way, overrides, Path(scratch)))
                    print(json.dumps(runs[-1]), flush=True)
            parts[name] = {"command": invocation, "note": args.note, "runs": runs}
    RESULTS.mkdir(exist_ok=True)
    json_path.write_text(json.dumps(parts, indent=2))
    (RESULTS / f"{args.output}.md").write_text(report(parts))


if __name__ == "__main__":
    main()

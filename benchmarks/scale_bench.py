"""Scale benchmark: how preparation, training, memory, the artifact and serving grow with the rows.

    .venv/bin/python benchmarks/scale_bench.py [--datasets movielens-1m,criteo-1m,...] [--work DIR]

Datasets, generated into `--work` (not timed; reused when already there):
  - movielens-100k: GroupLens's own ml-100k (`../shared/data/ml-100k`), the baseline the training
    loop's samples/s at 10M+ rows is held to;
  - movielens-1m / movielens-10m: synthetic GroupLens ml-100k folders (`tools.synthetic`, log-normal
    user activity, Zipf-like movie popularity) of 1M ratings (6,000 users, 4,000 movies) and 10M
    (70,000 users, 10,000 movies), trained as the MovieLens config does (leave-one-out, 4 negatives a
    rating) but with 99 test candidates a user, as validation has (999 would be 70M test rows at 10M);
  - criteo-1m / criteo-10m / criteo-45m: Criteo-shaped Parquet logs (`tools.synthetic.write_criteo`:
    13 integer and 26 categorical fields, Zipf ids, some fields of millions of values), trained with
    `deepfm train --data` (fields inferred, values seen fewer than 10 times in training OOV as in
    FuxiCTR's Criteo setting, random 80/10/10 split).
Each is trained for one epoch by `deepfm train ... --export` in a child process (its peak RSS from
wait4), then served by `python -m service` from the exported store: seconds until /health/ready (first
straight after training, then restarted), and sequential /predict latencies of 1- and 100-row requests
of the data's own raw rows. The report gives each size's figures and the ratio per 10x rows. Writes
benchmarks/results/scale_bench.md (or --output).
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tools/, the harnesses tests share

from tools.machine import MachineUse, core_ticks, rss_mib
from tools.processes import Server
from tools.synthetic import criteo_rows, write_criteo, write_movielens_100k_layout

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "scale_bench.md"
ML_100K = ROOT.parent / "shared" / "data" / "ml-100k"
COMMAND = ".venv/bin/python benchmarks/scale_bench.py"
DEEPFM = [sys.executable, "-m", "deepfm"]
REQUESTS = 300  # per batch size, sequential


@dataclasses.dataclass(frozen=True)
class Dataset:
    name: str
    rows: int
    kind: str  # movielens | criteo
    users: int = 0
    movies: int = 0


DATASETS = {
    d.name: d
    for d in (
        Dataset("movielens-100k", 100_000, "movielens"),
        Dataset("movielens-1m", 1_000_000, "movielens", users=6_000, movies=4_000),
        Dataset("movielens-10m", 10_000_000, "movielens", users=70_000, movies=10_000),
        Dataset("criteo-1m", 1_000_000, "criteo"),
        Dataset("criteo-10m", 10_000_000, "criteo"),
        Dataset("criteo-45m", 45_000_000, "criteo"),
    )
}


@dataclasses.dataclass
class Serving:
    first_ready_s: float  # straight after the training and export
    dirty_mib: float  # the page cache's dirty memory at that start
    ready_s: float  # a restart over the same store
    rss_mib: float  # the scorer process once ready
    latency_ms: dict[int, tuple[float, float]]  # rows per request -> (p50, p99)


@dataclasses.dataclass
class Result:
    dataset: Dataset
    preparation_s: float
    train_samples_per_s: float
    total_s: float
    peak_rss_mib: float
    artifact_mib: float
    serving: Serving
    test_auc: float


def generate(dataset: Dataset, work: Path) -> Path:
    """The dataset's files under `work`, written once."""
    if dataset.name == "movielens-100k":
        return ML_100K
    if dataset.kind == "movielens":
        folder = work / dataset.name
        if not (folder / "u.data").is_file():
            write_movielens_100k_layout(folder, dataset.users, dataset.movies, dataset.rows, seed=1)
        return folder
    path = work / f"{dataset.name}.parquet"
    if not path.is_file():  # written beside, then renamed: an interrupted run leaves no partial log
        partial = work / f".{dataset.name}.parquet"
        write_criteo(partial, dataset.rows, seed=1)
        partial.rename(path)
    return path


def train_command(dataset: Dataset, data: Path, store: Path, run_dir: Path) -> list[str]:
    """One epoch of DeepFM, exported into `store`."""
    common = ["--data", str(data), "--export", "--store", str(store), "--run-dir", str(run_dir)]
    common += ["-o", "training.epochs=1", "-o", "training.progress=false"]
    if dataset.kind == "movielens":
        config = str(ROOT / "configs" / "deepfm_movielens.yaml")
        return [*DEEPFM, "train", "--config", config, "-o", "data.num_eval_negatives=99", *common]
    return [*DEEPFM, "train", "--label", "label", "--model", "deepfm", "-o", "data.min_frequency=10", *common]


def run_measured(command: list[str], log: Path) -> tuple[int, float]:
    """Run `command` with its output into `log`: (exit status, peak RSS in MiB of the child)."""
    with log.open("w") as out:
        child = subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    return child.returncode, usage.ru_maxrss / 1024


def raw_rows(dataset: Dataset, data: Path, count: int) -> list[dict[str, Any]]:
    """Request rows of the dataset's own raw values (missing values left out, as a client sends them)."""
    if dataset.kind == "criteo":
        frame = criteo_rows(count, seed=99).drop(columns="label")
    else:
        ratings = pd.read_csv(data / "u.data", sep="\t", names=["user_id", "movie_id", "r", "t"], nrows=count)
        users = pd.read_csv(
            data / "u.user", sep="|", names=["user_id", "age", "gender", "occupation", "zip_code"], dtype=str
        ).astype({"user_id": int, "age": int})
        frame = ratings[["user_id", "movie_id"]].merge(users, on="user_id", how="left")
        frame["genres"] = [["genre1", "genre3"]] * len(frame)
    records = frame.to_dict("records")
    return [{str(k): v for k, v in row.items() if not (isinstance(v, float) and math.isnan(v))} for row in records]


def dirty_mib() -> float:
    """The page cache's dirty and under-writeback memory now, MiB: what a start competes with for the disk."""
    fields = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
    return sum(int(fields[name].split()[0]) for name in ("Dirty", "Writeback")) / 1024


def ready_seconds(server: Server) -> float:
    """Start `server`: seconds until /health/ready answers."""
    started = time.perf_counter()
    server.start()
    server.wait_http(f"{server.url}/health/ready", timeout=600)
    return time.perf_counter() - started


def serve(store: Path, rows: list[dict[str, Any]], log_dir: Path) -> Serving:
    """The service over `store` started twice: its first start straight after training (what the
    machine's page cache then holds included), then a restart, measured."""
    import httpx

    settings = {"DEEPFM_SERVE_MODELS_STORE": str(store), "DEEPFM_SERVE_DEFAULT_MODEL": "deepfm"}
    dirty = dirty_mib()
    first = Server(log_dir, settings)
    try:
        first_ready = ready_seconds(first)
    finally:
        first.stop(timeout=60)
    server = Server(log_dir, settings)
    try:
        ready = ready_seconds(server)
        assert server.proc is not None
        rss = rss_mib(server.proc.pid)
        latency = {}
        with httpx.Client(base_url=server.url, timeout=30) as client:
            for size in (1, 100):
                bodies = [json.dumps({"instances": rows[i : i + size]}) for i in range(0, REQUESTS)]
                times = []
                for number, body in enumerate(bodies):
                    sent = time.perf_counter()
                    response = client.post("/predict", content=body, headers={"content-type": "application/json"})
                    if number >= 20:  # the first requests warm the model up
                        times.append(time.perf_counter() - sent)
                    response.raise_for_status()
                latency[size] = (float(np.percentile(times, 50)) * 1e3, float(np.percentile(times, 99)) * 1e3)
        return Serving(first_ready, dirty, ready, rss, latency)
    finally:
        server.stop(timeout=60)


def measure(dataset: Dataset, work: Path) -> Result:
    data = generate(dataset, work)
    out = work / "runs" / dataset.name
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    store, run_dir, log = out / "store", out / "run", out / "train.log"
    status, peak = run_measured(train_command(dataset, data, store, run_dir), log)
    if status != 0:
        raise SystemExit(f"{dataset.name}: training failed ({status}); see {log}")
    text = log.read_text()
    prepared = re.search(r"data prepared in ([0-9.]+) s", text)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    version = next((store / "deepfm").iterdir())
    artifact = sum(f.stat().st_size for f in version.iterdir()) / 2**20
    serving = serve(store, raw_rows(dataset, data, REQUESTS + 100), out)
    return Result(
        dataset=dataset,
        preparation_s=float(prepared.group(1)) if prepared else float("nan"),
        train_samples_per_s=metrics["train_samples_per_second"],
        total_s=metrics["total_seconds"],
        peak_rss_mib=peak,
        artifact_mib=artifact,
        serving=serving,
        test_auc=metrics["test"]["auc"],
    )


def growth_rows(results: list[Result]) -> list[str]:
    """Per kind, each measure's ratio between consecutive sizes, per 10x rows."""
    lines = []
    for kind in ("movielens", "criteo"):
        own = [r for r in results if r.dataset.kind == kind]
        for small, large in itertools.pairwise(own):
            decades = math.log10(large.dataset.rows / small.dataset.rows)

            def per_10x(a: float, b: float, decades: float = decades) -> str:
                return f"{(b / a) ** (1 / decades):.2f}"

            lines.append(
                f"| {small.dataset.name} -> {large.dataset.name} | "
                f"{per_10x(small.preparation_s, large.preparation_s)} | "
                f"{per_10x(small.total_s, large.total_s)} | "
                f"{per_10x(small.train_samples_per_s, large.train_samples_per_s)} | "
                f"{per_10x(small.peak_rss_mib, large.peak_rss_mib)} | "
                f"{per_10x(small.artifact_mib, large.artifact_mib)} | "
                f"{per_10x(small.serving.ready_s, large.serving.ready_s)} | "
                f"{per_10x(small.serving.latency_ms[1][0], large.serving.latency_ms[1][0])} |"
            )
    return lines


def write_report(results: list[Result], args: argparse.Namespace, minutes: float, use: MachineUse) -> None:
    lines = [
        "# Scale: preparation, training, memory, artifact and serving against rows",
        "",
        f"Command: `{COMMAND} --datasets {args.datasets}` ({minutes:.0f} min). See the script's docstring for",
        "the data and the protocol. One training epoch, 1 torch thread; preparation is reading, splitting,",
        "fitting and encoding (the trainer's `data prepared in` line); samples/s is the training loop's;",
        "peak RSS is the training process's; ready is from the service's start to /health/ready, first",
        "straight after the training (with the page cache's dirty MiB then) and then restarted over the same",
        "store, and the service's RSS is its one process's (one worker) once the restart is ready;",
        f"/predict latencies are of {REQUESTS - 20} sequential requests after 20 warm-up ones.",
        "",
        f"Measured {len(results)} of the {len(args.datasets.split(','))} datasets asked for.",
        "",
        "| dataset | rows | preparation s | train samples/s | total s | peak RSS MiB | artifact MiB "
        "| ready s, first (dirty MiB) / restart | service RSS MiB | /predict p50 / p99 ms, 1 row | 100 rows "
        "| test AUC |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        serving, latency = r.serving, r.serving.latency_ms
        lines.append(
            f"| {r.dataset.name} | {r.dataset.rows:,} | {r.preparation_s:.1f} | {r.train_samples_per_s:,.0f} | "
            f"{r.total_s:.0f} | {r.peak_rss_mib:,.0f} | {r.artifact_mib:.1f} | "
            f"{serving.first_ready_s:.1f} ({serving.dirty_mib:,.0f}) / {serving.ready_s:.1f} | "
            f"{serving.rss_mib:,.0f} | {latency[1][0]:.2f} / {latency[1][1]:.2f} | "
            f"{latency[100][0]:.2f} / {latency[100][1]:.2f} | {r.test_auc:.4f} |"
        )
    growth = growth_rows(results)
    if growth:
        lines += [
            "",
            "Growth per 10x rows (1.00: constant; 10.0: linear):",
            "",
            "| sizes | preparation | total | train samples/s | peak RSS | artifact | ready | /predict p50, 1 row |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
            *growth,
        ]
    lines += [
        "",
        f"Machine: {os.cpu_count()} CPUs; {use.busy_cores:.2f} cores busy on average while it ran (the benchmark "
        f"included), {use.steal:.1%} of the CPU time stolen by the hypervisor.",
        "",
    ]
    args.output.write_text("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--work", type=Path, default=Path("/tmp/deepfm-scale"))
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    chosen = [DATASETS[name] for name in args.datasets.split(",")]
    args.work.mkdir(parents=True, exist_ok=True)
    ticks, started = core_ticks(), time.monotonic()
    results = []
    for dataset in chosen:
        results.append(measure(dataset, args.work))
        print(json.dumps(dataclasses.asdict(results[-1]), default=str), flush=True)
        # after each size, so that a long run that stops part-way keeps what it measured
        write_report(results, args, (time.monotonic() - started) / 60, MachineUse.between(ticks, core_ticks()))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()

"""Quality benchmark: the three models x 3 seeds on MovieLens-100K, plus the plain CTR protocol.

    .venv/bin/python benchmarks/quality_bench.py [--seeds 1 2 3] [--models deepfm xdeepfm attention_deepfm] [--jobs 2]

Leave-one-out protocol (each held-out rating ranked against 999 unrated movies): test AUC, logloss,
HR@K and NDCG@K, mean and std over seeds, against the seed project's published figures. Random-split
protocol (explicit ratings only, 80/10/10): test AUC and logloss. Also training speed on this machine.
Writes benchmarks/results/quality_bench.md and .json (`--output` names them otherwise); run directories
go under runs/quality_bench/. Runs are seeded and deterministic on the CPU: rerunning one gives the same
figures, so a run directory that already ran the same config is reused, not retrained (delete it after
a code change). The report covers every run in the existing .json too, so `--models xdeepfm` re-runs one
model and keeps the others' results; each result records the command that produced it.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import os
import platform
import statistics
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import torch

from deepfm.config import ExperimentConfig, TrainingConfig
from deepfm.process import keep_freed_memory
from deepfm.training.experiment import METRICS_FILE, train_experiment

RESULTS = Path(__file__).parent / "results"
RUNS = Path("runs/quality_bench")
TARGETS = {  # the seed project's published test figures under the leave-one-out protocol
    "deepfm": {"auc": 0.906, "hr@10": 0.216, "ndcg@10": 0.117},
    "xdeepfm": {"auc": 0.907, "hr@10": 0.220, "ndcg@10": 0.114},
    "attention_deepfm": {"auc": 0.905, "hr@10": 0.202, "ndcg@10": 0.107},
}
LOO_METRICS = ("auc", "logloss", "hr@5", "ndcg@5", "hr@10", "ndcg@10", "hr@20", "ndcg@20")


def run(model: str, seed: int, protocol: str, overrides: list[str]) -> dict[str, Any]:
    """Train and test one (model, seed, protocol), or reuse its run directory if it ran this very config.

    Returns its metrics.json content, without the per-epoch history.
    """
    logging.basicConfig(
        level=logging.INFO, format=f"%(asctime)s {model}-{protocol}-seed{seed}: %(message)s", force=True
    )
    config = ExperimentConfig.from_yaml(Path("configs") / f"{model}_movielens.yaml").with_overrides(
        [
            f"training.seed={seed}",
            f"data.sample_seed={seed}",
            f"data.protocol={protocol}",
            "training.progress=false",
            *overrides,
        ]
    )
    run_dir = RUNS / f"{model}-{protocol}-seed{seed}"
    done = run_dir / METRICS_FILE
    if done.is_file() and ExperimentConfig.from_yaml(run_dir / "config.yaml") == config:
        logging.info("reusing %s: it ran this config", run_dir)
        metrics: dict[str, Any] = json.loads(done.read_text())
    else:
        metrics = dict(train_experiment(config, run_dir).metrics)
    metrics.pop("history", None)
    return metrics


def mean_std(values: list[float]) -> str:
    """'mean ± std' with 4 decimals."""
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.4f} ± {spread:.4f}"


Results = dict[str, dict[str, list[dict[str, Any]]]]
"""model -> protocol -> one metrics dict per seed, each with the `command` that made it and its `jobs`."""


def report(results: Results) -> str:
    """The markdown report."""
    every_run = [r for by_protocol in results.values() for runs in by_protocol.values() for r in runs]
    commands = sorted({r["command"] for r in every_run})
    jobs = " or ".join(str(j) for j in sorted({r["jobs"] for r in every_run}))
    lines = [
        "# Quality benchmark: MovieLens-100K",
        "",
        "Command" + ("s" if len(commands) > 1 else "") + ": " + ", ".join(f"`{c}`" for c in commands),
        "",
        f"Machine: {os.cpu_count()} CPU cores, Python {platform.python_version()}, torch {torch.__version__}; "
        f"each run with training.num_threads={TrainingConfig().num_threads}, {jobs} runs at a time.",
        "",
        "## Leave-one-out protocol (test: each user's last rating + 999 unrated movies)",
        "",
        "Mean ± std over seeds. HR@K and NDCG@K over users whose held-out rating is a click (rating >= 4).",
        "",
        "| model | seeds | " + " | ".join(LOO_METRICS) + " | target AUC / HR@10 / NDCG@10 | met |",
        "|---|---|" + "---|" * len(LOO_METRICS) + "---|---|",
    ]
    for model, by_protocol in results.items():
        runs = by_protocol.get("leave_one_out", [])
        if not runs:
            continue
        means = {m: statistics.fmean(r["test"][m] for r in runs) for m in LOO_METRICS}
        target = TARGETS[model]
        met = all(means[m] >= target[m] for m in target)
        cells = " | ".join(mean_std([r["test"][m] for r in runs]) for m in LOO_METRICS)
        goal = f"{target['auc']} / {target['hr@10']} / {target['ndcg@10']}"
        lines.append(f"| {model} | {len(runs)} | {cells} | {goal} | {'yes' if met else 'no'} |")
    lines += ["", "Per seed:", "", "| model | seed | best epoch | AUC | HR@10 | NDCG@10 |", "|---|---|---|---|---|---|"]
    for model, by_protocol in results.items():
        for r in by_protocol.get("leave_one_out", []):
            t = r["test"]
            lines.append(
                f"| {model} | {r['seed']} | {r['val']['best_epoch']} | {t['auc']:.4f} | {t['hr@10']:.4f} "
                f"| {t['ndcg@10']:.4f} |"
            )
    random_split = {
        model: by_protocol["random_split"] for model, by_protocol in results.items() if "random_split" in by_protocol
    }
    if random_split:
        lines += [
            "",
            "## Random-split protocol (explicit ratings only, 80/10/10, label rating >= 4)",
            "",
            "| model | seeds | AUC | logloss |",
            "|---|---|---|---|",
        ]
        for model, runs in random_split.items():
            auc = mean_std([r["test"]["auc"] for r in runs])
            logloss = mean_std([r["test"]["logloss"] for r in runs])
            lines.append(f"| {model} | {len(runs)} | {auc} | {logloss} |")
    lines += [
        "",
        "## Training speed (leave-one-out, 490,570 rows per epoch; median over runs)",
        "",
        f"Each run in its own process with one torch thread, {jobs} runs at a time on the machine's cores.",
        "",
        "| model | parameters | samples/s | seconds/epoch (training only) |",
        "|---|---|---|---|",
    ]
    for model, by_protocol in results.items():
        runs = by_protocol.get("leave_one_out", [])
        if runs:
            speed = statistics.median(r["train_samples_per_second"] for r in runs)
            epoch = statistics.median(r["seconds_per_epoch"] for r in runs)
            lines.append(f"| {model} | {runs[0]['num_parameters']:,} | {speed:,.0f} | {epoch:.1f} |")
    return "\n".join(lines) + "\n"


def merge(results: Results, runs: list[dict[str, Any]]) -> Results:
    """`results` with `runs` added, each replacing a result of the same model, protocol and seed."""
    merged = {
        model: {protocol: list(rs) for protocol, rs in by_protocol.items()} for model, by_protocol in results.items()
    }
    for new in runs:
        seeds = merged.setdefault(new["model"], {}).setdefault(new["protocol"], [])
        seeds[:] = sorted([r for r in seeds if r["seed"] != new["seed"]] + [new], key=lambda r: r["seed"])
    return merged


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(TARGETS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[42, 43, 44])  # 42: the default configs
    parser.add_argument("--protocols", nargs="+", default=["leave_one_out", "random_split"])
    parser.add_argument("--override", "-o", action="append", default=[], help="config override for every run")
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time, each in its own process (1 thread each)")
    parser.add_argument("--report-only", action="store_true", help="only rewrite the report from the existing .json")
    parser.add_argument("--output", default="quality_bench", help="report name: results/NAME.md and NAME.json")
    args = parser.parse_args()
    command = "python benchmarks/quality_bench.py " + " ".join(
        [f"--models {' '.join(args.models)}", f"--seeds {' '.join(map(str, args.seeds))}"]
        + [f"--protocols {' '.join(args.protocols)}"]
        + [f"-o {o}" for o in args.override]
        + ([] if args.output == "quality_bench" else [f"--output {args.output}"])
    )
    RESULTS.mkdir(exist_ok=True)
    json_path = RESULTS / f"{args.output}.json"
    results: Results = json.loads(json_path.read_text()) if json_path.is_file() else {}
    if not args.report_only:
        tasks = [(m, s, p) for p in args.protocols for m in args.models for s in args.seeds]
        spawn = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(args.jobs, mp_context=spawn, initializer=keep_freed_memory) as pool:  # as `deepfm`
            futures = [pool.submit(run, m, s, p, args.override) for m, s, p in tasks]
            results = merge(results, [f.result() | {"command": command, "jobs": args.jobs} for f in futures])
        json_path.write_text(json.dumps(results, indent=2))
    text = report(results)
    (RESULTS / f"{args.output}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()

"""Training speed against DeepCTR-Torch, side by side, on the same rows and the same model shapes.

    .venv/bin/python benchmarks/train_peer_bench.py [--models deepfm,xdeepfm] [--repeats 5] [--epochs 2]

Rows: the first epoch's training rows of the MovieLens-100K leave-one-out protocol (each of the 98,114
training ratings and 4 sampled negatives: 490,570 rows), drawn and encoded once by deepfm and saved as
arrays; both trainers read those arrays, every epoch (no resampling on either side).

Models: each of deepfm's default configs (`configs/<model>_movielens.yaml`: DNN, CIN, dropout, batch norm,
batch size, learning rate, and for xDeepFM its weight decay and weight average), with every field's
embedding 16 wide (`feature.embedding_dims`), since DeepCTR-Torch's FM and CIN take one width; DeepCTR-Torch
gets the same DNN and CIN sizes, dropout, batch norm, batch size, learning rate (its Adam) and its own
defaults otherwise (L2 on the embeddings, its DataLoader). Both are trained through their own fit loop:
deepfm's `Trainer.fit` (prefetching batches, gradient clipping), DeepCTR-Torch's `BaseModel.fit`.

Each run is one process, pinned to CPU 1 with one torch thread (intra- and inter-op), training `--epochs`
epochs; samples/s is an epoch's rows over its training loop's seconds (deepfm's epoch record, a callback
at DeepCTR-Torch's epoch begin and end), the last epoch's reported (the first holds one-time warm-up).
Runs alternate sides and models in each round (which side goes first alternates too), `--repeats` rounds.
DeepCTR-Torch 0.3.0 is installed by this script into `.bench-venvs/` with this virtualenv's torch pinned.

Then one deepfm epoch per model is timed by phase (`--phases`): the same loop's steps timed one by one.

Writes benchmarks/results/train_peer_bench.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tools/, the harnesses tests share

from deepfm.config import DATA_DIR_ENV, ExperimentConfig
from deepfm.data.dataset import CTRDataset, ResampledDataset, to_tensors
from deepfm.data.schema import DatasetSchema, FeatureType
from deepfm.data.source import open_source
from deepfm.process import MALLOC_SETTINGS, keep_freed_memory
from deepfm.training.experiment import build_model_for
from deepfm.training.trainer import STEP_PHASES, Trainer, seed_everything
from tools.machine import MachineUse, core_ticks
from tools.venvs import UnavailableError, bench_venv, torch_pin

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "train_peer_bench.md"
COMMAND = ".venv/bin/python benchmarks/train_peer_bench.py"
ML_100K = ROOT.parent / "shared" / "data" / "ml-100k"  # unless DEEPFM_DATA_DIR names another copy
PEER_SCRIPT = ROOT / "benchmarks" / "deepctr" / "train.py"
DEEPCTR_PIN = "deepctr-torch==0.3.0"
CPU = 1
EMBED_DIM = 16
OURS, PEER, PEER_MALLOC = "deepfm", "DeepCTR-Torch", "DeepCTR-Torch, deepfm's malloc settings"
SIDES = (OURS, PEER, PEER_MALLOC)
RUN_TIMEOUT_S = 1800


def config_of(model: str, epochs: int, schema: DatasetSchema | None = None) -> ExperimentConfig:
    """The model's default config for a run of `epochs` epochs, every field `EMBED_DIM` wide when a schema is given."""
    config = ExperimentConfig.from_yaml(ROOT / "configs" / f"{model}_movielens.yaml")
    overrides = [f"training.epochs={epochs}", f"training.patience={epochs}", "training.progress=false"]
    config = config.with_overrides([*overrides, "training.num_threads=1", "training.device=cpu"])
    if schema is None:
        return config
    return replace(config, feature=replace(config.feature, embedding_dims=dict.fromkeys(schema.fields, EMBED_DIM)))


def write_rows(folder: Path, models: list[str]) -> tuple[DatasetSchema, int]:
    """The protocol's first-epoch training rows and the fitted schema, into `folder`; the schema and the count."""
    data = {config_of(m, 1).data for m in models}
    if len(data) != 1:
        raise SystemExit(f"the configs of {models} prepare different data: {data}")
    config = config_of(models[0], 1)
    seed_everything(config.training.seed)
    schema, train, _, _ = open_source(config.data).build()
    assert isinstance(train, ResampledDataset)
    arrays = {name: values.numpy() for name, values in train.features.items()} | {"labels": train.labels.numpy()}
    np.savez(folder / "rows.npz", allow_pickle=False, **arrays)
    (folder / "schema.json").write_text(json.dumps(schema.to_dict()))
    return schema, len(train)


def read_rows(folder: Path) -> tuple[DatasetSchema, CTRDataset]:
    schema = DatasetSchema.from_dict(json.loads((folder / "schema.json").read_text()))
    with np.load(folder / "rows.npz") as saved:
        arrays = {name: saved[name] for name in saved.files}
    labels = torch.from_numpy(arrays.pop("labels"))
    return schema, CTRDataset(to_tensors(arrays), labels)


def peer_spec(model: str, schema: DatasetSchema, epochs: int) -> dict[str, Any]:
    """What the DeepCTR-Torch run builds: deepfm's config's sizes and settings, in its terms."""
    config = config_of(model, epochs, schema)
    hyper = config.model.hyperparameters()
    fields = [
        {"name": f.name, "vocabulary_size": f.vocabulary_size, "max_length": f.max_length, "kind": f.feature_type.value}
        for f in schema.fields.values()
    ]
    assert all(f.feature_type is not FeatureType.DENSE for f in schema.fields.values())  # the spec has no dense field
    return {
        "model": model,
        "epochs": epochs,
        "embedding_dim": EMBED_DIM,
        "batch_size": config.training.batch_size,
        "lr": config.training.lr,
        "dnn_hidden_units": list(hyper["dnn_hidden_units"]),
        "dnn_dropout": hyper["dnn_dropout"],
        "dnn_use_bn": hyper["dnn_use_batch_norm"],
        "cin_layer_size": list(hyper.get("cin_layer_sizes", [])),
        "cin_split_half": hyper.get("cin_split_half", True),
        "fields": fields,
    }


def deepfm_run(folder: Path, model: str, epochs: int) -> tuple[ExperimentConfig, Trainer, CTRDataset, CTRDataset]:
    """A seeded deepfm trainer of the model over the saved rows: its config, the trainer, train and a small val."""
    schema, train = read_rows(folder)
    config = config_of(model, epochs, schema)
    seed_everything(config.training.seed)
    network = build_model_for(config, schema.with_embedding_dims(config.feature.embedding_dims))
    val = CTRDataset({name: values[:4096] for name, values in train.features.items()}, train.labels[:4096])
    return config, Trainer(network, config.training), train, val


def ours(folder: Path, model: str, epochs: int) -> dict[str, Any]:
    """One deepfm run in this process: the epochs' samples/s and losses, the parameter count."""
    _, trainer, train, val = deepfm_run(folder, model, epochs)
    history = trainer.fit(train, val)
    return {
        "samples_per_second": [e.samples_per_second for e in history.epochs],
        "train_loss": [e.train_loss for e in history.epochs],
        "parameters": sum(p.numel() for p in trainer.model.parameters()),
    }


def phases(folder: Path, model: str) -> dict[str, float]:
    """Seconds of one deepfm training epoch by phase: the Trainer's labelled step parts (`STEP_PHASES`), read by
    torch's profiler over a one-epoch fit, and batch assembly alone (an epoch's batches drawn without training,
    which the fit does in its prefetch thread, overlapped with the step)."""
    config, trainer, train, val = deepfm_run(folder, model, 1)
    started = time.perf_counter()
    for _ in train.batches(config.training.batch_size, torch.Generator().manual_seed(0)):
        pass
    seconds = {"batch assembly (prefetch thread)": time.perf_counter() - started}
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profiler:
        history = trainer.fit(train, val)
    totals = {event.key: event.cpu_time_total / 1e6 for event in profiler.key_averages()}
    for label in STEP_PHASES:
        seconds[label] = totals.get(label, 0.0)
    seconds["optimizer step"] = sum(t for key, t in totals.items() if key.startswith("Optimizer.step#"))
    seconds["zero_grad"] = sum(t for key, t in totals.items() if key.startswith("Optimizer.zero_grad#"))
    seconds["epoch (profiled)"] = history.epochs[0].seconds
    return seconds


def deepctr_venv() -> Path:
    """DeepCTR-Torch with this virtualenv's torch pinned first (a bare torch pulls CUDA wheels) and numpy;
    requests, which it imports to look for a newer release (the benchmark's runs have no proxy to reach)."""
    pin, numpy_pin = torch_pin(), f"numpy=={np.__version__}"
    return bench_venv(DEEPCTR_PIN.replace("==", "-"), [[pin], [pin, numpy_pin, DEEPCTR_PIN, "requests"]])


def run_child(command: list[str], extra_env: dict[str, str] | None = None) -> dict[str, Any]:
    """One pinned, single-threaded training process; its JSON line."""
    env = os.environ | {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)} | (extra_env or {})
    env |= {"HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9"}  # DeepCTR's release check
    done = subprocess.run(
        ["taskset", "-c", str(CPU), *command], capture_output=True, text=True, env=env, timeout=RUN_TIMEOUT_S
    )
    if done.returncode:
        raise SystemExit(f"{' '.join(command[:3])} failed ({done.returncode}): {done.stderr.strip()[-800:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def median_range(values: list[float], digits: int = 0) -> str:
    return f"{statistics.median(values):,.{digits}f} ({min(values):,.{digits}f}-{max(values):,.{digits}f})"


def write_report(
    args: argparse.Namespace, num_rows: int, runs: dict[tuple[str, str], list[dict[str, Any]]],
    timings: dict[str, dict[str, float]], use: MachineUse, minutes: float,
) -> None:  # fmt: skip
    last = args.epochs - 1
    lines = [
        "# Training speed against DeepCTR-Torch",
        "",
        f"Command: `{COMMAND} --models {','.join(args.models)} --repeats {args.repeats} --epochs {args.epochs}`"
        f" ({minutes:.0f} min). See the script's docstring for the protocol.",
        "",
        f"Rows: {num_rows:,} (MovieLens-100K leave-one-out, first epoch's training rows: ratings and 4 negatives"
        f" each). One process per run pinned to CPU {CPU}, one torch thread; {args.repeats} interleaved rounds."
        f" {DEEPCTR_PIN}, torch {torch.__version__}. Machine: {os.cpu_count()} CPUs,"
        f" {use.busy_cores:.2f} cores busy on average while it ran (the benchmark's one included),"
        f" {use.steal:.1%} stolen.",
        "",
        f"Samples/s of epoch {args.epochs} (median and range over the rounds); ratios paired by round. The third"
        f" side is DeepCTR-Torch with the glibc malloc settings the deepfm command makes at its start"
        f" (`deepfm.process`), given through the environment.",
        "",
        f"| model | parameters: {OURS} / {PEER} | {OURS} | {PEER} | {PEER_MALLOC} | {OURS} / {PEER} |"
        f" {OURS} / {PEER_MALLOC} | >= 2.0 | epoch 1: {OURS} / {PEER} |"
        f" train loss, epoch {args.epochs}: {OURS} / {PEER} |",
        "|---|---:|---:|---:|---:|---:|---:|---|---:|---:|",
    ]
    for model in args.models:
        sides = [runs[model, side] for side in SIDES]
        speeds = [[r["samples_per_second"][last] for r in side] for side in sides]
        ratios = [[a / b for a, b in zip(speeds[0], other, strict=True)] for other in speeds[1:]]
        first = [statistics.median(r["samples_per_second"][0] for r in side) for side in sides[:2]]
        loss = [statistics.median(r["train_loss"][last] for r in side) for side in sides[:2]]
        cells = [
            f"{sides[0][0]['parameters']:,} / {sides[1][0]['parameters']:,}",
            *(median_range(side) for side in speeds),
            *(median_range(r, 2) for r in ratios),
            "met" if statistics.median(ratios[0]) >= 2.0 else "not met",
            f"{first[0]:,.0f} / {first[1]:,.0f}",
            f"{loss[0]:.4f} / {loss[1]:.4f}",
        ]
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    if timings:
        lines += [
            "",
            f"## Where a {OURS} epoch goes",
            "",
            "One epoch of each model under torch.profiler (CPU; the profiler's own cost is in these figures), by"
            " the Trainer's labelled step parts and the optimizers' own labels, and an epoch's batches drawn alone"
            " (the fit draws them in its prefetch thread, overlapped with the step). Seconds per epoch:",
            "",
            "| phase | " + " | ".join(timings) + " |",
            "|---|" + "---:|" * len(timings),
        ]
        for phase in next(iter(timings.values())):
            lines.append(f"| {phase} | " + " | ".join(f"{t[phase]:.2f}" for t in timings.values()) + " |")
    RESULTS.write_text("\n".join(lines) + "\n")
    print(RESULTS.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=lambda s: s.split(","), default=["deepfm", "xdeepfm"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--no-phases", dest="phases", action="store_false")
    parser.add_argument("--child", choices=["train", "phases"], help=argparse.SUPPRESS)
    parser.add_argument("--rows", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        model = args.models[0]
        keep_freed_memory()  # as the deepfm command does at its start
        print(json.dumps(ours(args.rows, model, args.epochs) if args.child == "train" else phases(args.rows, model)))
        return
    try:
        python = deepctr_venv() / "bin" / "python"
    except UnavailableError as exc:
        raise SystemExit(f"DeepCTR-Torch cannot be installed here: {exc}") from exc
    os.environ.setdefault(DATA_DIR_ENV, str(ML_100K))
    started, before = time.perf_counter(), core_ticks()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        schema, num_rows = write_rows(folder, args.models)
        mine = [sys.executable, __file__, "--rows", str(folder), "--epochs", str(args.epochs)]
        runs: dict[tuple[str, str], list[dict[str, Any]]] = {(m, s): [] for m in args.models for s in SIDES}
        malloc = {name: str(value) for name, (_, value) in MALLOC_SETTINGS.items()}
        for model in args.models:
            (folder / f"{model}.json").write_text(json.dumps(peer_spec(model, schema, args.epochs)))
        for round_ in range(args.repeats):
            for model in args.models:
                peer = [str(python), str(PEER_SCRIPT), str(folder), str(folder / f"{model}.json")]
                commands = {OURS: [*mine, "--child", "train", "--models", model], PEER: peer, PEER_MALLOC: peer}
                for side in SIDES if round_ % 2 == 0 else SIDES[::-1]:
                    extra = malloc if side == PEER_MALLOC else None
                    runs[model, side].append(result := run_child(commands[side], extra))
                    speed = result["samples_per_second"][-1]
                    print(f"round {round_ + 1} {model} {side}: {speed:,.0f} samples/s", flush=True)
        timings = {}
        if args.phases:
            for model in args.models:
                timings[model] = run_child([*mine, "--child", "phases", "--models", model])
    use = MachineUse.between(before, core_ticks())
    write_report(args, num_rows, runs, timings, use, (time.perf_counter() - started) / 60)


if __name__ == "__main__":
    main()

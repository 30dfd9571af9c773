"""Embedding benchmark: the scored model call and the training step, across implementations of the embedding.

    .venv/bin/python benchmarks/embedding_bench.py [--arms LABEL=SOURCE:FORM ...] [--rounds 40] [--cpu 1]

An arm is a `deepfm` package and the form its models are scored in. SOURCE is a git revision of this
repository (its `deepfm/` is extracted with `git archive`), `.` for the working tree, or a directory
holding a `deepfm` package; FORM is
`export` (the source's `export_artifact`, then `load_artifact`: exactly what the service loads, a
frozen TorchScript model) or `plain` (the model as built, scripted, saved, loaded and frozen the same
way, with no serving form). The default arms are the implementations issue 21 weighs, from the
revision before it: `serving`, the ServingEmbedding form its artifacts hold (the reference), and
`feature`, its FeatureEmbedding as trained; against `fused`, the working tree's export.

Every arm runs in its own worker process, all pinned to one CPU with one torch thread, driven in lock
step by this process so that only one runs at a time: each round times a sample of calls in every arm,
in an order rotated from round to round. Times are the worker thread's CPU time, so that time the
worker spends descheduled on a shared machine does not count. Reported: the median CPU time per call
per arm and, per arm, the median over rounds of its ratio to the first arm in the same round.
Models: DeepFM, xDeepFM and AttentionDeepFM with the hyperparameters of the committed artifacts
(models_store/deepfm/1, xdeepfm/3, attention_deepfm/1) over their MovieLens-100K schema, built from
seed 0 (untrained: speed does not depend on the weights), batches of 1, 8, 100 and 1000 random rows
with OOV values and padded genres. Each arm's scores of one batch are compared with the first arm's:
arms built from the same seed compute the same function.

Training: one worker per distinct source times AdamW steps (forward, backward, step) on 2048-row
batches, DeepFM, xDeepFM and AttentionDeepFM on the MovieLens schema and DeepFM on the same schema with
4,096 users and movies (tables still fused) and with 1,000,000 users and 100,000 movies (each looked up
by itself), and reports how far the losses of the first steps are apart (0: bit-identical training).
Writes benchmarks/results/embedding_bench.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import warnings
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import IO, Any

import torch
from torch import Tensor
from torch.nn import functional

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "embedding_bench.md"
COMMAND = ".venv/bin/python benchmarks/embedding_bench.py"
BASELINE = "51baf95"  # main before issue 21's embedding change: FeatureEmbedding and ServingEmbedding
DEFAULT_ARMS = [f"serving={BASELINE}:export", f"feature={BASELINE}:plain", "fused=.:export"]
ARTIFACTS = {"deepfm": "deepfm/1", "xdeepfm": "xdeepfm/3", "attention_deepfm": "attention_deepfm/1"}
BATCH_SIZES = (1, 8, 100, 1000)
SAMPLE_SECONDS = 0.025  # CPU time of one timed sample of calls
TRAIN_BATCH = 2048
TRAIN_SAMPLE_SECONDS = 0.3
# (label, user_id rows, movie_id rows) of the schemas the training step runs on besides MovieLens-100K's own:
# tables at the size up to which FeatureEmbedding fuses them, and tables far beyond it
LARGER_TABLES = [("4,096 users and movies", 4096, 4096), ("1M users, 100k movies", 1_000_000, 100_000)]
FIRST_LOSSES = 3


# ---------------------------------------------------------------- worker: runs inside one arm's process
# (it imports deepfm inside functions: the package is the arm's, on PYTHONPATH; the parent never imports it)


def _batch(schema: Any, size: int, seed: int) -> dict[str, Tensor]:
    """Random encoded rows: indices from 0 (OOV) up, sequences padded after a random length."""
    generator = torch.Generator().manual_seed(seed)
    batch = {}
    for field in schema.fields.values():
        kind = field.feature_type.value
        if kind == "dense":
            batch[field.name] = torch.randn(size, generator=generator)
            continue
        shape = (size, field.max_length) if kind == "sequence" else (size,)
        values = torch.randint(0, field.vocabulary_size, shape, generator=generator)
        if kind == "sequence":
            lengths = torch.randint(0, field.max_length + 1, (size, 1), generator=generator)
            values = values.masked_fill(torch.arange(field.max_length) >= lengths, 0)  # (B, L), 0-padded
        batch[field.name] = values
    return batch


def _build(name: str, schema: Any, config: dict[str, Any]) -> Any:
    """The artifact config's model over `schema`, from seed 0."""
    from deepfm.models import build_model, model_hyperparameters

    accepted = model_hyperparameters(name)
    hyperparameters = {k: v for k, v in config["model"].items() if k in accepted}
    torch.manual_seed(0)
    return build_model(name, schema, fm_embed_dim=config["feature"]["fm_embed_dim"], **hyperparameters)


def _served(model: Any, schema: Any, config: dict[str, Any], form: str, store: Path) -> Any:
    """The frozen TorchScript model the service would run."""
    from deepfm import jit
    from deepfm.artifact import ProbabilityModel, export_artifact, load_artifact

    if form == "export":
        path = export_artifact(model, schema, store, config["model"]["name"], config=config, metrics={})
        return load_artifact(path).model
    scripted = jit.script(ProbabilityModel(model.eval(), schema.field_names))
    path = store / f"{config['model']['name']}.pt"
    jit.save(scripted, path)
    return jit.freeze(jit.load(path), preserved_attrs=["field_names"])


def _train_steps(
    model: Any, optimizer: Any, batches: list[tuple[dict[str, Tensor], Tensor]], steps: int
) -> list[float]:
    """`steps` AdamW steps cycling over `batches`; the losses."""
    losses = []
    for step in range(steps):
        batch, labels = batches[step % len(batches)]
        optimizer.zero_grad(set_to_none=True)
        loss: Tensor = functional.binary_cross_entropy_with_logits(model(batch), labels)
        loss.backward()
        optimizer.step()
        losses.append(float(loss))
    return losses


def worker(form: str) -> None:
    """Answer the parent's JSON commands, one per line, until stdin closes."""
    warnings.filterwarnings("ignore")
    from deepfm.data.schema import DatasetSchema

    torch.set_num_threads(1)
    served: dict[str, Any] = {}
    batches: dict[tuple[str, int], dict[str, Any]] = {}
    training: dict[tuple[str, str], tuple[Any, Any, list[tuple[dict[str, Any], Any]]]] = {}
    store = Path(tempfile.mkdtemp(prefix="embedding-bench-"))
    for line in sys.stdin:
        command = json.loads(line)
        reply: dict[str, Any] = {}
        if command["do"] == "setup":
            for name, spec in command["models"].items():
                schema = DatasetSchema.from_dict(spec["schema"])
                served[name] = _served(_build(name, schema, spec["config"]), schema, spec["config"], form, store)
                for size in BATCH_SIZES:
                    batches[name, size] = _batch(schema, size, seed=size)
            with torch.inference_mode():
                reply["scores"] = {name: model(batches[name, 8]).tolist() for name, model in served.items()}
        elif command["do"] == "time":
            model, batch = served[command["model"]], batches[command["model"], command["batch"]]
            with torch.inference_mode():
                start = time.thread_time()
                for _ in range(command["calls"]):
                    model(batch)
                reply["seconds"] = time.thread_time() - start
        elif command["do"] == "train_setup":
            key = (command["model"], command["schema_name"])
            schema = DatasetSchema.from_dict(command["schema"])
            model = _build(command["model"], schema, command["config"]).train()
            optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
            generator = torch.Generator().manual_seed(1)
            data = [
                (
                    _batch(schema, TRAIN_BATCH, seed=100 + i),
                    torch.randint(0, 2, (TRAIN_BATCH,), generator=generator).float(),
                )
                for i in range(4)
            ]
            training[key] = (model, optimizer, data)
            reply["losses"] = _train_steps(model, optimizer, data, FIRST_LOSSES)
        elif command["do"] == "train":
            model, optimizer, data = training[command["model"], command["schema_name"]]
            start = time.thread_time()
            _train_steps(model, optimizer, data, command["steps"])
            reply["seconds"] = time.thread_time() - start
        print(json.dumps(reply), flush=True)


# ---------------------------------------------------------------- parent: drives the workers


@dataclass
class Arm:
    """One implementation under test, in its own worker process."""

    label: str
    source: str
    form: str
    process: subprocess.Popen[str] | None = None

    def ask(self, **command: Any) -> dict[str, Any]:
        if self.process is None or self.process.stdin is None or self.process.stdout is None:
            raise RuntimeError(f"arm {self.label}: no worker")
        self.process.stdin.write(json.dumps({**command}) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"arm {self.label}: worker exited")
        reply: dict[str, Any] = json.loads(line)
        return reply


def parse_arm(text: str) -> Arm:
    label, _, rest = text.partition("=")
    source, _, form = rest.rpartition(":")
    if not label or not source or form not in ("export", "plain"):
        raise SystemExit(f"--arms: expected LABEL=SOURCE:export|plain, got {text!r}")
    return Arm(label, source, form)


def package_root(source: str, scratch: Path) -> Path:
    """A directory holding the `deepfm` package of `source`: a git revision, `.` (the working tree) or a directory."""
    if source == ".":
        return ROOT
    if (Path(source) / "deepfm").is_dir():
        return Path(source).resolve()
    commit = subprocess.run(
        ["git", "rev-parse", "--verify", f"{source}^{{commit}}"], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout.strip()
    target = scratch / commit
    if not target.exists():
        archive = subprocess.run(["git", "archive", commit, "deepfm"], cwd=ROOT, check=True, capture_output=True)
        with tarfile.open(fileobj=BytesIO(archive.stdout)) as tar:
            tar.extractall(target, filter="data")
    return target


def start(arm: Arm, root: Path, cpu: int, log: IO[str]) -> None:
    environment = {**os.environ, "PYTHONPATH": str(root)}
    arm.process = subprocess.Popen(
        ["taskset", "-c", str(cpu), sys.executable, __file__, "--worker", arm.form],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
        env=environment,
    )


def quartiles(values: list[float]) -> tuple[float, float, float]:
    q1, median, q3 = statistics.quantiles(values, n=4) if len(values) > 1 else (values[0],) * 3
    return q1, median, q3


def timed_rounds(arms: list[Arm], rounds: int, command: dict[str, Any], per_sample: int) -> dict[str, list[float]]:
    """Seconds per call (or step) of every arm, `rounds` times, arms in a rotated order each round."""
    times: dict[str, list[float]] = {arm.label: [] for arm in arms}
    for r in range(rounds):
        for arm in arms[r % len(arms) :] + arms[: r % len(arms)]:
            times[arm.label].append(arm.ask(**command)["seconds"] / per_sample)
    return times


def ratio_cells(times: dict[str, list[float]], labels: list[str]) -> list[str]:
    base = times[labels[0]]
    cells = []
    for label in labels:
        ratios = [t / b for t, b in zip(times[label], base, strict=True)]
        q1, median, q3 = quartiles(ratios)
        cells.append(f"{statistics.median(times[label]) * 1e6:,.0f} µs ({median:.3f} [{q1:.3f}, {q3:.3f}])")
    return cells


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arms", nargs="+", default=DEFAULT_ARMS, help="LABEL=SOURCE:FORM, the first is the reference")
    parser.add_argument("--rounds", type=int, default=40, help="timed samples per arm, model and batch size")
    parser.add_argument("--train-rounds", type=int, default=20, help="timed training samples per source and model")
    parser.add_argument("--cpu", type=int, default=1, help="the CPU every worker is pinned to")
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--worker", choices=["export", "plain"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker)
        return

    arms = [parse_arm(a) for a in args.arms]
    labels = [a.label for a in arms]
    specs = {}
    for name, where in ARTIFACTS.items():
        artifact = ROOT / "models_store" / where
        specs[name] = {
            "schema": json.loads((artifact / "schema.json").read_text()),
            "config": json.loads((artifact / "metadata.json").read_text())["config"],
        }
    with tempfile.TemporaryDirectory() as scratch, open(Path(scratch) / "workers.log", "w+") as log:
        roots = {a.source: package_root(a.source, Path(scratch)) for a in arms}
        try:
            for arm in arms:
                start(arm, roots[arm.source], args.cpu, log)
            scores = {arm.label: arm.ask(do="setup", models=specs)["scores"] for arm in arms}
            call_rows = []
            for name in ARTIFACTS:
                for size in BATCH_SIZES:
                    command = {"do": "time", "model": name, "batch": size}
                    for arm in arms:  # warm-up
                        arm.ask(**command, calls=20)
                    once = arms[0].ask(**command, calls=5)["seconds"] / 5
                    calls = max(1, round(SAMPLE_SECONDS / once))
                    times = timed_rounds(arms, args.rounds, {**command, "calls": calls}, calls)
                    call_rows.append((name, size, ratio_cells(times, labels)))
                    print(name, size, call_rows[-1][2], flush=True)
            gaps = {
                arm.label: max(
                    abs(a - b)
                    for name in ARTIFACTS
                    for a, b in zip(scores[arm.label][name], scores[labels[0]][name], strict=True)
                )
                for arm in arms
            }
        finally:
            for arm in arms:
                if arm.process is not None and arm.process.stdin is not None:
                    arm.process.stdin.close()
                    arm.process.wait()

        labels_of = {".": "working tree"}
        trainers = list({a.source: Arm(labels_of.get(a.source, a.source), a.source, "plain") for a in arms}.values())
        train_rows = []
        losses: dict[tuple[str, str], dict[str, list[float]]] = {}
        try:
            for trainer in trainers:
                start(trainer, roots[trainer.source], args.cpu, log)
            cases = [(name, "MovieLens-100K", specs[name]["schema"]) for name in ARTIFACTS]
            for schema_name, users, movies in LARGER_TABLES:
                rows = {"user_id": users, "movie_id": movies}
                fields = [
                    {**f, "vocabulary_size": rows[f["name"]], "vocabulary": None} if f["name"] in rows else f
                    for f in specs["deepfm"]["schema"]["fields"]
                ]
                cases.append(("deepfm", schema_name, {**specs["deepfm"]["schema"], "fields": fields}))
            for name, schema_name, schema in cases:
                key = {"model": name, "schema_name": schema_name}
                losses[name, schema_name] = {
                    t.label: t.ask(do="train_setup", schema=schema, config=specs[name]["config"], **key)["losses"]
                    for t in trainers
                }
                once = trainers[0].ask(do="train", steps=2, **key)["seconds"] / 2
                steps = max(1, round(TRAIN_SAMPLE_SECONDS / once))
                times = timed_rounds(trainers, args.train_rounds, {"do": "train", "steps": steps, **key}, steps)
                cells = ratio_cells(times, [t.label for t in trainers])
                train_rows.append((name, schema_name, cells))
                print(name, schema_name, cells, flush=True)
        finally:
            for trainer in trainers:
                if trainer.process is not None and trainer.process.stdin is not None:
                    trainer.process.stdin.close()
                    trainer.process.wait()

    write_report(args, arms, call_rows, gaps, trainers, train_rows, losses)


def write_report(
    args: argparse.Namespace,
    arms: list[Arm],
    call_rows: list[tuple[str, int, list[str]]],
    gaps: dict[str, float],
    trainers: list[Arm],
    train_rows: list[tuple[str, str, list[str]]],
    losses: dict[tuple[str, str], dict[str, list[float]]],
) -> None:
    command = shlex.join([*COMMAND.split(), *sys.argv[1:]])
    load = os.getloadavg()
    reference = arms[0].label
    lines = [
        "# Embedding benchmark",
        "",
        "The scored model call (frozen TorchScript as `load_artifact` gives it, one torch thread, every worker",
        f"pinned to CPU {args.cpu}) and the training step, per implementation of the embedding, in CPU time of",
        "the worker thread. See the module docstring of benchmarks/embedding_bench.py for the method.",
        "",
        f"Command: `{command}`",
        "",
        "Arms (the first is the reference of the ratios):",
        "",
        *(
            f"- `{a.label}`: `{a.source}`, form `{a.form}`; scores {gaps[a.label]:.2g} from `{reference}`'s"
            for a in arms
        ),
        "",
        f"## Model call: median CPU time per call (median ratio to `{reference}`, {args.rounds} rounds [quartiles])",
        "",
        "| model | batch | " + " | ".join(f"`{a.label}`" for a in arms) + " |",
        "|---|---:|" + "---:|" * len(arms),
        *(f"| {name} | {size} | " + " | ".join(cells) + " |" for name, size, cells in call_rows),
        "",
        f"## Training step: AdamW, {TRAIN_BATCH}-row batches, median CPU time per step",
        "",
        f"Median ratio to `{trainers[0].label}` over {args.train_rounds} rounds [quartiles]; the last column is the",
        f"largest relative difference of the first {FIRST_LOSSES} losses from `{trainers[0].label}`'s.",
        "",
        "| model | schema | " + " | ".join(f"`{t.label}`" for t in trainers) + " | first losses |",
        "|---|---|" + "---:|" * len(trainers) + "---:|",
    ]
    for name, schema_name, cells in train_rows:
        first = losses[name, schema_name]
        base = first[trainers[0].label]
        apart = max(abs(a - b) / abs(b) for run in first.values() for a, b in zip(run, base, strict=True))
        lines.append(f"| {name} | {schema_name} | " + " | ".join(cells) + f" | {apart:.2g} |")
    lines += [
        "",
        "Machine:",
        "",
        f"- {platform.processor() or platform.machine()}, nproc {os.cpu_count()}",
        f"- Python {platform.python_version()}, torch {torch.__version__}",
        f"- load average at the end of the run: {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} (1 / 5 / 15 min)",
        "",
    ]
    args.output.write_text("\n".join(lines))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()

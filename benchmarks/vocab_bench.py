"""Million-value vocabulary benchmark: an artifact with one 1,000,000-value field against the MovieLens model.

    .venv/bin/python benchmarks/vocab_bench.py [--values 1000000] [--repeats 3] [--requests 300]

The large model is an untrained DeepFM (default hyperparameters; speed does not depend on the weights)
over a Criteo-like schema: `ad_id`, a sparse field whose vocabulary holds `--values` distinct 8-digit
hex strings, beside `site_id` (300 values), `device` (7 values) and a dense `price`. Its reference is
the committed MovieLens-100K model (models_store/deepfm). Measured:
  - export: seconds, schema.json size, the other files' sizes;
  - in process: `load_artifact` (whole, and its schema read and vocabulary probe pass apart), and the
    `FeatureEncoder` build (its lookup tables: seconds and the memory tracemalloc counts);
  - `python -m service` (one torch thread) on each store: seconds from start until /health/ready
    answers 200, and the server's RSS then; interleaved, `--repeats` times, medians;
  - POST /predict latency at batch 1 and 100 over one keep-alive connection per server, both servers up
    together and requests interleaved between them; p50 and p99 of `--requests` requests each.
Writes benchmarks/results/vocab_bench.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tools/, the harnesses tests share

from deepfm.artifact import load_artifact, read_schema, vocabulary_probes
from deepfm.data.encoding import FeatureEncoder
from deepfm.data.schema import DatasetSchema, FeatureType, FieldSchema, embedding_dim_for
from tools.machine import rss_mib
from tools.processes import Server, run_server
from tools.requests import MOVIELENS_INSTANCES

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "vocab_bench.md"
COMMAND = ".venv/bin/python benchmarks/vocab_bench.py"
MOVIELENS_STORE = ROOT / "models_store"
MODEL_NAME = "deepfm"
LARGE, MOVIELENS = "1M-value field", "MovieLens-100K (committed)"


def hex_ids(count: int, seed: int) -> list[str]:
    """`count` distinct 8-digit hex strings, as Criteo's categorical values look."""
    values = np.random.default_rng(seed).choice(2**32, size=count, replace=False)
    return [f"{v:08x}" for v in values.tolist()]


def large_schema(values: int) -> DatasetSchema:
    """A fitted Criteo-like schema: one field of `values` known values beside a few small ones."""
    fields = [
        FieldSchema("ad_id", FeatureType.SPARSE, vocabulary=tuple(hex_ids(values, 0)), vocabulary_size=values + 1),
        FieldSchema("site_id", FeatureType.SPARSE, vocabulary=tuple(hex_ids(300, 1)), vocabulary_size=301),
        FieldSchema("device", FeatureType.SPARSE, vocabulary=tuple(map(str, range(7))), vocabulary_size=8),
        FieldSchema("price", FeatureType.DENSE, mean=3.0, std=2.0, example=2.5),
    ]
    schema = DatasetSchema(fields)
    return schema.with_embedding_dims(
        {f.name: embedding_dim_for(f.vocabulary_size) for f in schema.fields.values() if f.is_categorical}
    )


def large_store(root: Path, values: int) -> tuple[Path, float]:
    """A store holding the large model; and the export's seconds."""
    from deepfm.artifact import export_artifact
    from deepfm.models import build_model  # the benchmark builds a model; the service never does

    schema = large_schema(values)
    torch.manual_seed(0)
    model = build_model(MODEL_NAME, schema)
    start = time.perf_counter()
    export_artifact(model, schema, root, MODEL_NAME, config={}, metrics={})
    return root, time.perf_counter() - start


def large_payload(schema: DatasetSchema, rows: int, seed: int) -> dict[str, Any]:
    """`rows` instances of known values (one in ten ad ids unknown)."""
    rng = np.random.default_rng(seed)
    ads, sites = schema.fields["ad_id"].vocabulary or (), schema.fields["site_id"].vocabulary or ()
    instances = [
        {
            "ad_id": ads[int(rng.integers(len(ads)))] if i % 10 else "ffffffffff",
            "site_id": sites[int(rng.integers(len(sites)))],
            "device": int(rng.integers(7)),
            "price": round(float(rng.uniform(0, 10)), 2),
        }
        for i in range(rows)
    ]
    return {"instances": instances}


def movielens_payload(rows: int) -> dict[str, Any]:
    return {"instances": [MOVIELENS_INSTANCES[i % len(MOVIELENS_INSTANCES)] for i in range(rows)]}


def timed(run: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    result = run()
    return result, time.perf_counter() - start


def server_env(store: Path) -> dict[str, str]:
    return {
        "DEEPFM_SERVE_MODELS_STORE": str(store),
        "DEEPFM_SERVE_MODELS": MODEL_NAME,
        "DEEPFM_SERVE_DEFAULT_MODEL": MODEL_NAME,
        "DEEPFM_SERVE_TORCH_THREADS": "1",
    }


def ready_seconds(store: Path, log_dir: Path) -> tuple[float, float]:
    """Seconds from starting `python -m service` on `store` to /health/ready 200; its RSS (MiB) then."""
    server = Server(log_dir, server_env(store))
    start = time.perf_counter()
    server.start()
    try:
        server.wait_http(f"{server.url}/health/ready", timeout=300)
        elapsed = time.perf_counter() - start
        assert server.proc is not None
        return elapsed, rss_mib(server.proc.pid)
    finally:
        server.stop()


def in_process(path: Path) -> dict[str, float]:
    """Seconds of loading a version directory in this process, by step; the lookup tables' memory."""
    schema, read = timed(lambda: read_schema(path))
    artifact, load = timed(lambda: load_artifact(path))
    _, probes = timed(lambda: artifact.predict(vocabulary_probes(artifact.schema)))
    _, encoder = timed(lambda: FeatureEncoder(schema))
    tracemalloc.start()  # a second build, traced: tracing slows allocation
    kept = FeatureEncoder(schema)
    memory = tracemalloc.get_traced_memory()[0] / 2**20
    tracemalloc.stop()
    del kept
    return {"schema read": read, "load_artifact": load, "probe pass": probes, "encoder": encoder, "encoder MiB": memory}


def latencies(clients: dict[str, tuple[httpx.Client, dict[str, Any]]], requests: int) -> dict[str, list[float]]:
    """Milliseconds of each POST /predict, the servers taking turns request by request."""
    times: dict[str, list[float]] = {name: [] for name in clients}
    for client, body in clients.values():  # warm-up
        for _ in range(20):
            client.post("/predict", json=body).raise_for_status()
    for _ in range(requests):
        for name, (client, body) in clients.items():
            start = time.perf_counter()
            client.post("/predict", json=body).raise_for_status()
            times[name].append((time.perf_counter() - start) * 1000)
    return times


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def sizes(path: Path) -> Iterator[tuple[str, int]]:
    for file in sorted(path.iterdir()):
        yield file.name, file.stat().st_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--values", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(1)
    lines = [
        "# Million-value vocabulary benchmark",
        "",
        f"Command: `{COMMAND} --values {args.values} --repeats {args.repeats} --requests {args.requests}`",
        "",
        (__doc__ or "").split("\n\n", 2)[2].strip(),
        "",
    ]
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="vocab-bench-")))
        store, export_s = large_store(tmp / "store", args.values)
        large_dir = store / MODEL_NAME / "1"
        movielens_dir = MOVIELENS_STORE / MODEL_NAME / "1"
        lines += [f"Export of the large model: {export_s:.2f} s.", "", "| artifact | file | bytes |", "|---|---|---:|"]
        for label, path in ((LARGE, large_dir), (MOVIELENS, movielens_dir)):
            lines += [f"| {label} | {name} | {size:,} |" for name, size in sizes(path)]
        steps = {LARGE: in_process(large_dir), MOVIELENS: in_process(movielens_dir)}
        lines += [
            "",
            "In process (one torch thread), seconds:",
            "",
            f"| step | {LARGE} | {MOVIELENS} |",
            "|---|---:|---:|",
        ]
        for step in steps[LARGE]:
            lines.append(f"| {step} | {steps[LARGE][step]:.3f} | {steps[MOVIELENS][step]:.3f} |")
        ready: dict[str, list[tuple[float, float]]] = {LARGE: [], MOVIELENS: []}
        for _ in range(args.repeats):
            for label, root in ((LARGE, store), (MOVIELENS, MOVIELENS_STORE)):
                ready[label].append(ready_seconds(root, tmp))
        lines += [
            "",
            f"`python -m service` start to ready, median of {args.repeats} (interleaved):",
            "",
            "| model | ready (s) | runs (s) | RSS when ready (MiB) |",
            "|---|---:|---:|---:|",
        ]
        for label, runs in ready.items():
            seconds = [r[0] for r in runs]
            lines.append(
                f"| {label} | {statistics.median(seconds):.2f} | {', '.join(f'{s:.2f}' for s in seconds)} "
                f"| {statistics.median(r[1] for r in runs):.0f} |"
            )
        servers = {
            label: stack.enter_context(run_server(tmp, server_env(root), ready_timeout=300))
            for label, root in ((LARGE, store), (MOVIELENS, MOVIELENS_STORE))
        }
        schema = read_schema(large_dir)
        lines += [
            "",
            f"POST /predict, {args.requests} requests per cell, servers interleaved, ms:",
            "",
            "| batch | model | p50 | p99 | p50 ratio to MovieLens |",
            "|---:|---|---:|---:|---:|",
        ]
        for rows in (1, 100):
            bodies = {LARGE: large_payload(schema, rows, seed=rows), MOVIELENS: movielens_payload(rows)}
            clients = {
                label: (stack.enter_context(httpx.Client(base_url=server.url, timeout=30)), bodies[label])
                for label, server in servers.items()
            }
            times = latencies(clients, args.requests)
            base = percentile(times[MOVIELENS], 50)
            for label, values in times.items():
                p50 = percentile(values, 50)
                lines.append(f"| {rows} | {label} | {p50:.2f} | {percentile(values, 99):.2f} | {p50 / base:.2f} |")
        status = httpx.get(f"{servers[LARGE].url}/schema", timeout=30)
        lines += ["", f"GET /schema of the large model: {len(status.content):,} bytes.", ""]
    load = os.getloadavg()
    lines += [
        "Machine:",
        "",
        f"- nproc {os.cpu_count()}; Python {platform.python_version()}, torch {torch.__version__}, "
        f"numpy {np.__version__}",
        f"- load average at the end of the run: {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} (1 / 5 / 15 min)",
        "",
    ]
    report = "\n".join(lines)
    args.output.write_text(report)
    print(report)


if __name__ == "__main__":
    main()

"""Serving benchmark: the scoring service over loopback HTTP against its floors, in one run.

    .venv/bin/python benchmarks/serve_bench.py [--duration 4] [--repeats 3] [--connections 16] [--store DIR]

Servers, each one uvicorn worker pinned to CPU 1:
  - bare (raw body): a FastAPI endpoint that validates the raw body with a typed request model (every
    value a RawValue, about what the service's encoder checks) and returns a constant list; no logging or
    metrics.
  - bare (FastAPI body): the idiomatic FastAPI endpoint, `async def predict(body: TypedPredictRequest)`,
    served with uvicorn's defaults (its access log included); returns a constant list.
  - service: `python -m service` with its default settings (coalescing on, JSON access log) and
    DEEPFM_SERVE_TORCH_THREADS=1.
  - service, coalescing off: the same with DEEPFM_SERVE_COALESCE=false.
The load generator runs in this process, pinned to CPU 0: asyncio keep-alive connections speaking raw
HTTP/1.1 (tens of microseconds of CPU per request), its garbage collector held off during each run.
Closed loop: `--connections` connections send back to back for `--duration` s after a 1 s warm-up;
runs are interleaved across servers and repeated, and medians are reported. Each run records the
server's and the load generator's CPU use: on a machine shared with other work a server gets only part
of its core, so requests per CPU-second of the server are reported too, and ratios are given both ways.
Then the service is driven open loop at 80% of its peak request rate (latency counted from each
request's scheduled send time). In-process floors, on CPU 1 with one torch thread: the TorchScript
model alone, and encoding plus model (the service's scoring path without HTTP), on the same batches.
For the open-loop tail the report also gives each run's p99 with the share of the machine's CPU the
hypervisor stole during it, and the CPU cost of an encoding + model call after the core idled for a
while (as it does between open-loop arrivals).

The model is DeepFM with its default hyperparameters over a MovieLens-100K-shaped schema (943 users,
1682 movies, ...; untrained weights: speed does not depend on them), or the deepfm model of `--store`.
Writes benchmarks/results/serve_bench.md.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch
import uvicorn
from fastapi import FastAPI, Request
from pydantic import AllowInfNan, Field, Strict, StrictStr

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tools/, the harnesses tests share

from deepfm.artifact import export_artifact, list_versions
from deepfm.data.dataset import to_tensors
from deepfm.data.fitting import fit_schema
from deepfm.data.movielens import movielens_schema
from deepfm.data.schema import embedding_dim_for
from service.schemas import PredictRequest, PredictResponse
from service.scoring import LoadedModel
from tools.processes import Process, cpu_seconds, free_port
from tools.synthetic import MOVIELENS_100K, movielens_rows

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "serve_bench.md"
COMMAND = ".venv/bin/python benchmarks/serve_bench.py"
SERVER_CPU, LOADGEN_CPU = 1, 0
MODEL_NAME = "deepfm"
USER_FIELDS = ("user_id", "gender", "age", "occupation", "zip_code")
OPEN_LOOP_FRACTION = 0.8
IDLE_GAPS_MS = (0.0, 1.0, 4.0)  # idle time before each in-process call, for the cost of a call after a pause
BARE_RAW, BARE_FASTAPI = "bare (raw body)", "bare (FastAPI body)"
SERVICE, SERVICE_UNCOALESCED = "service", "service, coalescing off"
ALL_BATCHES = ("1", "100", "100 (context)")


# ----------------------------------------------------------------------------- artifact and payloads


def synthetic_store(root: Path) -> Path:
    """A store with an untrained default-hyperparameter DeepFM over a MovieLens-shaped fitted schema."""
    from deepfm.models import build_model  # the benchmark builds a model; the service never does

    schema = movielens_schema()
    fitted = fit_schema(schema, movielens_rows(20_000, shape=MOVIELENS_100K))
    schema = fitted.with_embedding_dims({f.name: embedding_dim_for(f.vocabulary_size) for f in fitted.fields.values()})
    torch.manual_seed(0)
    export_artifact(build_model(MODEL_NAME, schema), schema, root, MODEL_NAME, config={}, metrics={})
    return root


def payloads() -> dict[str, dict[str, Any]]:
    """Request bodies: 1 row, 100 rows, and a ranking call (one user in the context, 100 movies)."""
    rows = movielens_rows(100, seed=1, shape=MOVIELENS_100K).drop(columns="label").to_dict("records")
    for row in rows:
        row["genres"] = row["genres"].split("|")
    ranking = {
        "context": {k: rows[0][k] for k in USER_FIELDS},
        "instances": [{"movie_id": r["movie_id"], "genres": r["genres"]} for r in rows],
    }
    return {"1": {"instances": rows[:1]}, "100": {"instances": rows}, "100 (context)": ranking}


def num_rows(payload: dict[str, Any]) -> int:
    return len(payload["instances"])


# ----------------------------------------------------------------------------- servers


INT64 = Annotated[int, Strict(), Field(ge=-(2**63), le=2**63 - 1)]
RawValue = Annotated[
    StrictStr | INT64 | Annotated[float, Strict(), AllowInfNan(False)] | list[StrictStr | INT64] | None,
    Field(union_mode="left_to_right"),
]
"""A raw value as a typed FastAPI endpoint would declare it (the service's encoder judges them instead)."""


class TypedPredictRequest(PredictRequest):
    """The predict request as a plain FastAPI app declares it: pydantic validates every value as a
    RawValue, about what the service's encoder checks (`deepfm.data.encoding`)."""

    instances: list[dict[str, RawValue]] = Field(min_length=1)
    context: dict[str, RawValue] | None = None


def bare_app(idiomatic: bool) -> FastAPI:
    """A floor: parse and validate the payload with a typed request model, return a constant list.

    Args:
        idiomatic: take the body as a FastAPI body parameter (json.loads, then pydantic) rather than
            validating the raw bytes.
    """
    app = FastAPI()
    constant = [0.5] * 10_000

    def respond(body: PredictRequest) -> PredictResponse:
        return PredictResponse.model_construct(model="bare", version=0, predictions=constant[: len(body.instances)])

    if idiomatic:

        @app.post("/predict")
        async def predict(body: TypedPredictRequest) -> PredictResponse:
            return respond(body)

    else:

        @app.post("/predict")
        async def predict_raw(request: Request) -> PredictResponse:
            return respond(TypedPredictRequest.model_validate_json(await request.body()))

    @app.get("/health/ready")
    async def ready() -> dict[str, str]:
        return {"status": "ready"}

    return app


@dataclass(frozen=True)
class ServerSpec:
    """How to start one of the compared servers, and the payloads it is measured on."""

    name: str
    arguments: tuple[str, ...]  # after the Python interpreter; "{port}" is replaced
    env: dict[str, str]
    batches: tuple[str, ...]


def server_specs(store: Path) -> list[ServerSpec]:
    service = ("-m", "service")
    env = {
        "DEEPFM_SERVE_MODELS_STORE": str(store),
        "DEEPFM_SERVE_PORT": "{port}",
        "DEEPFM_SERVE_TORCH_THREADS": "1",
        "DEEPFM_SERVE_POLL_INTERVAL_S": "0",
    }
    bare = (__file__, "--bare-server", "{port}")
    return [
        ServerSpec(BARE_RAW, (*bare, "--bare-kind", "raw"), {}, ALL_BATCHES),
        ServerSpec(BARE_FASTAPI, (*bare, "--bare-kind", "idiomatic", "--bare-access-log"), {}, ALL_BATCHES),
        ServerSpec(SERVICE, service, env, ALL_BATCHES),
        ServerSpec(SERVICE_UNCOALESCED, service, {**env, "DEEPFM_SERVE_COALESCE": "false"}, ("1", "100")),
    ]


@dataclass
class Server:
    """A server subprocess pinned to SERVER_CPU."""

    spec: ServerSpec
    port: int
    process: subprocess.Popen[bytes]

    def cpu_seconds(self) -> float:
        """User + system CPU time of the process so far."""
        return cpu_seconds(self.process.pid)


@contextmanager
def start_server(spec: ServerSpec, log: Path | None = None) -> Iterator[Server]:
    """Start a server on SERVER_CPU and wait until it is ready; its output appended to `log`, if given."""
    port = free_port()
    runner = Process(
        spec.name,
        ["taskset", "-c", str(SERVER_CPU), sys.executable, *(a.format(port=port) for a in spec.arguments)],
        cwd=ROOT,
        env={**os.environ, **{k: v.format(port=port) for k, v in spec.env.items()}},
        log=log or Path(os.devnull),
    )
    runner.start()
    try:
        runner.wait_http(f"http://127.0.0.1:{port}/health/ready", timeout=120)
        assert runner.proc is not None
        yield Server(spec, port, runner.proc)
    finally:
        runner.stop(timeout=60)


# ----------------------------------------------------------------------------- load generator


@dataclass
class Run:
    """Latencies (s) of the requests that completed inside the measured window."""

    rows_per_request: int
    seconds: float
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    server_cpu: float = 0.0
    loadgen_cpu: float = 0.0
    steal: float = 0.0  # the share of the machine's CPU time the hypervisor gave to others during the run

    @property
    def rps(self) -> float:
        return len(self.latencies) / self.seconds

    @property
    def rows_ps(self) -> float:
        return self.rps * self.rows_per_request

    @property
    def rps_per_cpu(self) -> float:
        """Requests per CPU-second of the server."""
        return self.rps / self.server_cpu

    def percentile_ms(self, q: float) -> float:
        return float(np.percentile(self.latencies, q) * 1000)


class Connection:
    """One keep-alive HTTP/1.1 connection sending the same POST."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> None:
        self.reader, self.writer, self.request = reader, writer, request

    @classmethod
    async def open(cls, port: int, body: bytes, path: str = "/predict") -> Connection:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        head = (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        return cls(reader, writer, head.encode() + body)

    async def call(self) -> int:
        """Send the request; the response status."""
        self.writer.write(self.request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        length = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
        await self.reader.readexactly(int(length.group(1)) if length else 0)
        return int(head[9:12])

    def close(self) -> None:
        self.writer.close()


async def closed_loop(
    port: int, body: bytes, rows: int, connections: int, duration: float, path: str = "/predict"
) -> Run:
    """`connections` connections sending back to back to `path`; 1 s warm-up, then `duration` s measured."""
    conns = [await Connection.open(port, body, path) for _ in range(connections)]
    start = time.perf_counter() + 1.0
    end = start + duration
    run = Run(rows, duration)

    async def drive(conn: Connection) -> None:
        while (sent := time.perf_counter()) < end:
            status = await conn.call()
            done = time.perf_counter()
            if sent >= start and done <= end:
                run.latencies.append(done - sent)
                run.errors += status != 200

    await asyncio.gather(*(drive(c) for c in conns))
    for conn in conns:
        conn.close()
    return run


async def open_loop(port: int, body: bytes, rows: int, rate: float, duration: float, connections: int = 64) -> Run:
    """Requests sent at `rate`/s on a pool of connections; latency from each request's scheduled time."""
    pool: asyncio.Queue[Connection] = asyncio.Queue()
    for _ in range(connections):
        pool.put_nowait(await Connection.open(port, body))
    run = Run(rows, duration)
    warmup = int(rate)  # the first second is warm-up
    tasks = []

    async def send(index: int, scheduled: float) -> None:
        conn = await pool.get()
        status = await conn.call()
        pool.put_nowait(conn)
        if index >= warmup:
            run.latencies.append(time.perf_counter() - scheduled)
            run.errors += status != 200

    begin = time.perf_counter()
    for index in range(warmup + int(rate * duration)):
        scheduled = begin + index / rate
        await asyncio.sleep(max(0.0, scheduled - time.perf_counter()))
        tasks.append(asyncio.create_task(send(index, scheduled)))
    await asyncio.gather(*tasks)
    while not pool.empty():
        pool.get_nowait().close()
    return run


def machine_cpu_ticks() -> tuple[int, int]:
    """(stolen, all) CPU ticks of the machine so far, from /proc/stat."""
    ticks = [int(t) for t in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return ticks[7], sum(ticks)


@contextmanager
def no_collector_pauses() -> Iterator[None]:
    """Keep this process's garbage collector out of a timed stretch: collect and freeze what exists, and
    collect nothing until the stretch ends. This process holds torch and pandas (about 220,000 objects),
    and a full collection over them pauses it for about 140 ms: inside a run, every request scheduled
    meanwhile would count that pause as the server's latency."""
    gc.collect()
    gc.freeze()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def measure(server: Server, drive: Callable[[], Coroutine[Any, Any, Run]]) -> Run:
    """Run a load generator coroutine against `server`, recording both sides' CPU use and the steal."""
    with no_collector_pauses():
        cpu_before, loadgen_before, wall_before = server.cpu_seconds(), time.process_time(), time.perf_counter()
        stolen_before, ticks_before = machine_cpu_ticks()
        run = asyncio.run(drive())
        wall = time.perf_counter() - wall_before
        stolen, ticks = machine_cpu_ticks()
    run.server_cpu = (server.cpu_seconds() - cpu_before) / wall
    run.loadgen_cpu = (time.process_time() - loadgen_before) / wall
    run.steal = (stolen - stolen_before) / max(1, ticks - ticks_before)
    return run


# ----------------------------------------------------------------------------- in-process floors


@dataclass
class Floors:
    """In-process runs on one payload: the model alone, encoding + model back to back, and the CPU
    milliseconds of one encoding + model call after each of IDLE_GAPS_MS of idling."""

    model: Run
    scoring: Run
    cpu_ms_after_gap: list[float]


def in_process(store: Path, payload: dict[str, Any], duration: float) -> Floors:
    """The floors on SERVER_CPU with one torch thread, timed call by call (malloc as the environment sets it)."""
    loaded = LoadedModel.load(store / MODEL_NAME / str(max(list_versions(store, MODEL_NAME))), max_rows=10_000)
    rows = loaded.spec.rows(payload["instances"], payload.get("context"), strict=False)
    tensors = to_tensors(loaded.encoder.encode(rows.columns, rows.num_rows).features)
    runs = []
    for call in (lambda: loaded.artifact.predict(tensors), lambda: loaded.score([rows], 10_000)):
        run = Run(rows.num_rows, 0.0)
        start = time.perf_counter()
        while time.perf_counter() - start < duration:
            began = time.perf_counter()
            call()
            run.latencies.append(time.perf_counter() - began)
        run.seconds = sum(run.latencies)
        runs.append(run)
    cpu_ms = []
    for gap_ms in IDLE_GAPS_MS:
        calls, start, cpu = 0, time.perf_counter(), 0.0
        while time.perf_counter() - start < duration / len(IDLE_GAPS_MS):
            time.sleep(gap_ms / 1000)
            began = time.thread_time()
            loaded.score([rows], 10_000)
            cpu, calls = cpu + time.thread_time() - began, calls + 1
        cpu_ms.append(cpu / calls * 1000)
    return Floors(runs[0], runs[1], cpu_ms)


# ----------------------------------------------------------------------------- report


@dataclass
class Summary:
    """Medians over repeated runs."""

    rps: float
    rows_ps: float
    p50_ms: float
    p99_ms: float
    server_cpu: float
    loadgen_cpu: float
    errors: int

    @classmethod
    def of(cls, runs: list[Run]) -> Summary:
        med = statistics.median
        return cls(
            med(r.rps for r in runs),
            med(r.rows_ps for r in runs),
            med(r.percentile_ms(50) for r in runs),
            med(r.percentile_ms(99) for r in runs),
            med(r.server_cpu for r in runs),
            med(r.loadgen_cpu for r in runs),
            sum(r.errors for r in runs),
        )

    @property
    def rps_per_cpu(self) -> float:
        """Requests per CPU-second of the server."""
        return self.rps / self.server_cpu if self.server_cpu else float("nan")

    def row(self, name: str, batch: str) -> str:
        cpu = (
            f"{self.server_cpu:.0%} / {self.loadgen_cpu:.0%} | {self.rps_per_cpu:,.0f}" if self.server_cpu else "- | -"
        )
        return (
            f"| {name} | {batch} | {self.rps:,.0f} | {self.rows_ps:,.0f} | {self.p50_ms:.2f} | {self.p99_ms:.2f} | "
            f"{cpu} | {self.errors} |"
        )


def machine() -> str:
    model = (line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name"))
    cpu = next(model, ":?").split(":", 1)[1].strip()
    versions = f"Python {platform.python_version()}, torch {torch.__version__}"
    return f"{platform.platform()}, {os.cpu_count()} CPUs ({cpu}), {versions}"


def run_benchmark(
    args: argparse.Namespace, store: Path
) -> tuple[dict[tuple[str, str], list[Run]], dict[str, list[Run]], dict[str, Floors]]:
    """Closed-loop runs by (server, batch), the service's open-loop runs by batch, in-process floors."""
    bodies = payloads()
    os.sched_setaffinity(0, {SERVER_CPU})
    torch.set_num_threads(1)
    with no_collector_pauses():
        floors = {batch: in_process(store, body, args.duration) for batch, body in bodies.items()}
    os.sched_setaffinity(0, {LOADGEN_CPU})
    with ExitStack() as stack:
        servers = [stack.enter_context(start_server(spec)) for spec in server_specs(store)]
        closed: dict[tuple[str, str], list[Run]] = {}
        for _ in range(args.repeats):
            for batch, body in bodies.items():
                encoded = json.dumps(body).encode()
                for server in (s for s in servers if batch in s.spec.batches):
                    drive = partial(closed_loop, server.port, encoded, num_rows(body), args.connections, args.duration)
                    closed.setdefault((server.spec.name, batch), []).append(measure(server, drive))
        peak = {batch: Summary.of(closed[(SERVICE, batch)]).rps for batch in ("1", "100")}
        service = next(s for s in servers if s.spec.name == SERVICE)
        opened: dict[str, list[Run]] = {}
        for _ in range(args.repeats):
            for batch in ("1", "100"):
                rate = OPEN_LOOP_FRACTION * peak[batch]
                encoded = json.dumps(bodies[batch]).encode()
                drive = partial(open_loop, service.port, encoded, num_rows(bodies[batch]), rate, args.duration)
                opened.setdefault(batch, []).append(measure(service, drive))
    return closed, opened, floors


def paired_ratios(ours: list[Run], floor: list[Run], per_cpu: bool) -> list[float]:
    """Throughput ratios of the runs made side by side (the i-th of each, seconds apart, so both saw the
    machine in much the same state), raw or per server CPU-second."""
    if per_cpu:
        return [a.rps_per_cpu / b.rps_per_cpu for a, b in zip(ours, floor, strict=True)]
    return [a.rps / b.rps for a, b in zip(ours, floor, strict=True)]


def target_rows(closed_runs: dict[tuple[str, str], list[Run]], opened: dict[str, Summary]) -> list[str]:
    """The issue's targets, against each bare floor: medians (and ranges) of paired-run ratios, raw and per
    server CPU-second."""
    rows = []
    for bare in (BARE_RAW, BARE_FASTAPI):
        for batch, what, goal in (("1", "batch-1 requests/s", 0.70), ("100", "batch-100 rows/s", 0.50)):
            ours, floor = closed_runs[(SERVICE, batch)], closed_runs[(bare, batch)]
            raw, per_cpu = (paired_ratios(ours, floor, by_cpu) for by_cpu in (False, True))
            median_raw, median_cpu = statistics.median(raw), statistics.median(per_cpu)
            met = "yes" if min(median_raw, median_cpu) >= goal else "yes (raw)" if median_raw >= goal else "NO"
            rows.append(
                f"| {what} vs {bare} | {median_raw:.2f} ({min(raw):.2f}-{max(raw):.2f}) "
                f"| {median_cpu:.2f} ({min(per_cpu):.2f}-{max(per_cpu):.2f}) | >= {goal:.2f} | {met} |"
            )
    for batch, summary in opened.items():
        met = "yes" if summary.p99_ms < 50 else "NO"
        rows.append(f"| p99 ms, batch {batch}, open loop at 80% of peak | {summary.p99_ms:.1f} | | < 50 | {met} |")
    return rows


def tail_section(
    closed: dict[tuple[str, str], Summary], opened_runs: dict[str, list[Run]], floors: dict[str, Floors]
) -> list[str]:
    """Each open-loop run's p99 and the machine's CPU steal during it, the server's CPU per request open
    and closed loop, and the CPU cost of a scoring call after idling."""
    gaps = " | ".join(f"after {gap:g} ms idle" for gap in IDLE_GAPS_MS)
    lines = [
        "## The open-loop tail",
        "",
        "| batch | p99 ms of each run | CPU steal of each run | server CPU ms per request: open / closed loop |",
        "|---|---|---|---|",
    ]
    for batch, runs in opened_runs.items():
        p99s = ", ".join(f"{run.percentile_ms(99):.0f}" for run in runs)
        steals = ", ".join(f"{run.steal:.1%}" for run in runs)
        open_ms = statistics.median(1000 / run.rps_per_cpu for run in runs)
        closed_ms = 1000 / closed[(SERVICE, batch)].rps_per_cpu
        lines.append(f"| {batch} | {p99s} | {steals} | {open_ms:.2f} / {closed_ms:.2f} |")
    lines += [
        "",
        "CPU ms of one in-process encoding + model call, by the idle time before it:",
        "",
        f"| batch | {gaps} |",
        f"|---|{'---:|' * len(IDLE_GAPS_MS)}",
        *(f"| {b} | {' | '.join(f'{ms:.2f}' for ms in f.cpu_ms_after_gap)} |" for b, f in floors.items()),
        "",
    ]
    return lines


def write_report(
    args: argparse.Namespace,
    closed_runs: dict[tuple[str, str], list[Run]],
    opened_runs: dict[str, list[Run]],
    floors: dict[str, Floors],
    load: tuple[float, float],
) -> None:
    """Print and write the results."""
    closed = {key: Summary.of(runs) for key, runs in closed_runs.items()}
    opened = {batch: Summary.of(runs) for batch, runs in opened_runs.items()}
    results = [
        "| server | batch | requests/s | rows/s | p50 ms | p99 ms | CPU server / loadgen | requests per server CPU-s "
        "| errors |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
        *(summary.row(name, batch) for (name, batch), summary in closed.items()),
        *(summary.row(f"{SERVICE}, open loop at {OPEN_LOOP_FRACTION:.0%} of peak", b) for b, summary in opened.items()),
    ]
    for batch, floor in floors.items():
        results.append(Summary.of([floor.model]).row("TorchScript model alone (in-process)", batch))
        results.append(Summary.of([floor.scoring]).row("encoding + model (in-process)", batch))
    coalesced, uncoalesced = closed[(SERVICE, "1")], closed[(SERVICE_UNCOALESCED, "1")]
    command = f"{COMMAND} --duration {args.duration:g} --repeats {args.repeats} --connections {args.connections}"
    text = "\n".join(
        [
            "# Serving benchmark",
            "",
            f"Command: `{command}{f' --store {args.store}' if args.store else ''}`",
            "",
            f"Machine: {machine()}. Load average (1 min) before / after: {load[0]:.2f} / {load[1]:.2f}.",
            "",
            f"Core split: every server (1 uvicorn worker, torch_threads=1) on CPU {SERVER_CPU}; the load generator on "
            f"CPU {LOADGEN_CPU}; the in-process floors on CPU {SERVER_CPU}. Closed loop: {args.connections} keep-alive "
            f"connections, {args.duration:g} s per run after a 1 s warm-up, medians of {args.repeats} interleaved "
            "runs. CPU: the share of one core each process used during the run.",
            "",
            "## Targets",
            "",
            "Ratios: the median (and range) over the repeats of the service's run against the floor's run made "
            "seconds before it.",
            "",
            "| measure | ratio, raw | ratio, per server CPU-s | target | met |",
            "|---|---:|---:|---:|---|",
            *target_rows(closed_runs, opened),
            "",
            f"Coalescing, batch 1: {coalesced.rps:,.0f} requests/s with it, {uncoalesced.rps:,.0f} without "
            f"({coalesced.rps / uncoalesced.rps:.2f}x; "
            f"per server CPU-s {coalesced.rps_per_cpu / uncoalesced.rps_per_cpu:.2f}x).",
            "",
            "## Results",
            "",
            *results,
            "",
            *tail_section(closed, opened_runs, floors),
        ]
    )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(text)
    print(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=4.0, help="measured seconds per run")
    parser.add_argument("--repeats", type=int, default=3, help="runs per configuration (medians reported)")
    parser.add_argument("--connections", type=int, default=16, help="closed-loop connections")
    parser.add_argument("--store", type=Path, help="a models store with a deepfm model (default: a synthetic one)")
    parser.add_argument("--bare-server", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--bare-kind", choices=["raw", "idiomatic"], default="raw", help=argparse.SUPPRESS)
    parser.add_argument("--bare-access-log", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bare_server:
        app = bare_app(args.bare_kind == "idiomatic")
        uvicorn.run(app, host="127.0.0.1", port=args.bare_server, access_log=args.bare_access_log)
        return
    if len(os.sched_getaffinity(0)) < 2:
        raise SystemExit("needs 2 CPUs: one for the servers, one for the load generator")
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as scratch:
        store = args.store or synthetic_store(Path(scratch) / "store")
        closed, opened, floors = run_benchmark(args, store)
    write_report(args, closed, opened, floors, (load_before, os.getloadavg()[0]))


if __name__ == "__main__":
    main()

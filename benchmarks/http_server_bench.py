"""What the HTTP server costs a request: the service and two floors under uvicorn and under granian, in one run.

    .venv/bin/python benchmarks/http_server_bench.py [--duration 5] [--repeats 3] [--store models_store]

Issue 22's CPU targets (0.6 ms per batch-1 request at 1 connection, 0.1 at 32) sit near or below what
the bare FastAPI floor takes under uvicorn (`serve_peer_bench.md`). This measures how much of that is
the HTTP server's, and what a Rust HTTP server under the same ASGI app buys: granian (its ASGI
interface, one worker process, one runtime thread, uvloop).

Servers, each one process tree pinned to CPU 1 (every thread checked), all up for the whole run:
  - service: `python -m service` with its defaults (uvicorn, httptools, the service's HTTP limits),
    DEEPFM_SERVE_TORCH_THREADS=1, serving the latest deepfm version of `--store`;
  - service on granian: the same worker app (`service.main:worker_app`: the same settings, torch
    threads, garbage collector and JSON logs, the access log included) under granian;
  - bare (raw body), and on granian: serve_bench's floor, a FastAPI endpoint that only validates the body;
  - minimal ASGI, and on granian: an ASGI callable that reads the body and sends a constant answer,
    so the HTTP server's own cost per request.
granian is installed by this script into `.bench-venvs/` without dependencies (click, its one
dependency, comes from this virtualenv) and put on the server's PYTHONPATH; where that fails the
script stops and says why. Before the load the script checks that the service gives the same scores
under both servers.

Load: serve_bench's generator in this process, pinned to CPU 0, the same bodies as serve_peer_bench
(batch 1 and 100 x 1, 8 and 32 connections, closed loop), `--repeats` interleaved rounds with the
server order rotated; medians, paired ratios granian / uvicorn per app, CPU of each server's process
tree per request. Writes benchmarks/results/http_server_bench.md.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import tempfile
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, replace
from functools import partial
from importlib import metadata
from pathlib import Path

from fastapi import FastAPI
from serve_bench import (
    BARE_RAW,
    LOADGEN_CPU,
    MODEL_NAME,
    SERVICE,
    ServerSpec,
    bare_app,
    machine,
    paired_ratios,
    server_specs,
    start_server,
)
from serve_peer_bench import (
    BATCHES,
    CONNECTIONS,
    Cell,
    Fleet,
    as_tree,
    busy_table,
    check_pinned,
    check_same_scores,
    raise_on_sigterm,
    request_bodies,
    row,
    run_rounds,
    warm_up,
)
from starlette.types import Receive, Scope, Send

from deepfm.artifact import list_versions
from service.logging import log_config
from tools.venvs import bench_venv

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "http_server_bench.md"
COMMAND = ".venv/bin/python benchmarks/http_server_bench.py"
GRANIAN_PIN = "granian==2.8.9"
ON_GRANIAN = " on granian"
MINIMAL = "minimal ASGI"
GRANIAN_OPTIONS = ("--interface", "asgi", "--workers", "1", "--runtime-threads", "1", "--loop", "uvloop", "--no-ws")
ANSWER = b'{"model":"minimal","version":0,"predictions":[0.5]}'


async def minimal_app(scope: Scope, receive: Receive, send: Send) -> None:
    """Read the whole body, send a constant JSON answer; lifespan messages acknowledged."""
    if scope["type"] == "lifespan":
        await receive()  # startup
        await send({"type": "lifespan.startup.complete"})
        await receive()  # shutdown
        await send({"type": "lifespan.shutdown.complete"})
        return
    while (await receive()).get("more_body", False):
        pass
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(ANSWER)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": ANSWER})


def bare_raw_app() -> FastAPI:
    """serve_bench's raw-body floor, as a factory granian can call."""
    return bare_app(idiomatic=False)


@dataclass(frozen=True)
class Granian:
    """How to run granian: its site-packages, and the service's log configuration as a file."""

    site: Path
    log_config: Path

    def spec(self, name: str, target: str, env: dict[str, str], factory: bool) -> ServerSpec:
        """A server of `target` (module:attribute) on granian, on `{port}`."""
        factory_flag = ("--factory",) if factory else ()
        arguments = ("-m", "granian", *GRANIAN_OPTIONS, *factory_flag, "--log-config", str(self.log_config))
        path = os.pathsep.join([str(self.site), str(ROOT / "benchmarks"), str(ROOT)])
        return ServerSpec(
            name, (*arguments, "--host", "127.0.0.1", "--port", "{port}", target), {**env, "PYTHONPATH": path}, ()
        )


def granian(scratch: Path) -> Granian:
    venv = bench_venv(GRANIAN_PIN.replace("==", "-"), [["--no-deps", GRANIAN_PIN]])
    site = next((venv / "lib").glob("python*/site-packages"))
    config = scratch / "log_config.json"
    config.write_text(json.dumps(log_config("info")))
    return Granian(site, config)


def specs(store: Path, runner: Granian) -> list[ServerSpec]:
    """The six servers: each app under uvicorn, then under granian."""
    given = {s.name: s for s in server_specs(store)}
    service = replace(given[SERVICE], env={**given[SERVICE].env, "DEEPFM_SERVE_MODELS": MODEL_NAME})
    uvicorn = ("-m", "uvicorn", "--app-dir", str(ROOT / "benchmarks"), "--no-access-log", "--log-level", "warning")
    minimal = ServerSpec(
        MINIMAL, (*uvicorn, "--host", "127.0.0.1", "--port", "{port}", "http_server_bench:minimal_app"), {}, ()
    )
    return [
        service,
        runner.spec(SERVICE + ON_GRANIAN, "service.main:worker_app", service.env, factory=True),
        given[BARE_RAW],
        runner.spec(BARE_RAW + ON_GRANIAN, "http_server_bench:bare_raw_app", {}, factory=True),
        minimal,
        runner.spec(MINIMAL + ON_GRANIAN, "http_server_bench:minimal_app", {}, factory=False),
    ]


def table(
    cells: dict[tuple[str, str, int], Cell], names: list[str], title: str, value: Callable[[Cell], str]
) -> list[str]:
    """One measure per cell and server."""
    lines = [row("batch / connections", names), row("---", ["---:"] * len(names))]
    for batch in BATCHES:
        for conns in CONNECTIONS:
            lines.append(row(f"{batch} / {conns}", [value(cells[(n, batch, conns)]) for n in names]))
    return [f"{title}:", "", *lines, ""]


def ratio_table(cells: dict[tuple[str, str, int], Cell], apps: list[str]) -> list[str]:
    """Per app and cell, granian against uvicorn: paired ratios of req/s and of CPU per request."""
    lines = [
        row("batch / connections", [f"{app}: req/s, CPU per request" for app in apps]),
        row("---", ["---:"] * len(apps)),
    ]
    for batch in BATCHES:
        for conns in CONNECTIONS:
            ratios = []
            for app in apps:
                ours, base = cells[(app + ON_GRANIAN, batch, conns)].runs, cells[(app, batch, conns)].runs
                rps = statistics.median(paired_ratios(ours, base, False))
                # per CPU-second ratio inverted: CPU per request on granian over that on uvicorn
                cpu = 1 / statistics.median(paired_ratios(ours, base, True))
                ratios.append(f"{rps:.2f}x, {cpu:.2f}x")
            lines.append(row(f"{batch} / {conns}", ratios))
    return lines


def write_report(
    args: argparse.Namespace,
    cells: dict[tuple[str, str, int], Cell],
    names: list[str],
    notes: dict[str, str],
) -> None:
    apps = [n for n in names if not n.endswith(ON_GRANIAN)]
    lines = [
        "# The HTTP server's share of a request: uvicorn and granian under the same apps",
        "",
        f"Command: `{COMMAND} --duration {args.duration:g} --repeats {args.repeats} --store {args.store}`",
        "",
        f"Machine: {machine()}.",
        "",
        f"Artifact: `{notes['artifact']}`. granian: {GRANIAN_PIN} ({' '.join(GRANIAN_OPTIONS)}); "
        f"uvicorn {metadata.version('uvicorn')}, httptools {metadata.version('httptools')}, "
        f"uvloop {metadata.version('uvloop')}.",
        f"Same scores from the service under both servers: {notes['scores']}. Threads: {notes['threads']}.",
        f"Server restarts during the run: {notes['restarts']}.",
        "",
        f"Closed loop, {args.duration:g} s per run after a 1 s warm-up, {args.repeats} interleaved rounds "
        "(server order rotated), medians; each server's process tree on CPU 1, the load generator on CPU 0. "
        "CPU per request: the server's process tree CPU time over the run divided by its requests.",
        "",
        "Granian against uvicorn, per app: paired ratios (the two runs of a round, seconds apart) of "
        "requests/s and of CPU per request (below 1: granian takes less):",
        "",
        *ratio_table(cells, apps),
        "",
        *table(cells, names, "Requests/s", lambda c: f"{c.rps:,.0f}"),
        *table(cells, names, "Server CPU ms per request", lambda c: f"{c.cpu_ms:.3f}"),
        *table(cells, names, "p99 ms", lambda c: f"{c.p99_ms:.1f}"),
        "How busy the machine was (as in serve_peer_bench):",
        "",
        *busy_table(cells, names),
        "",
    ]
    RESULTS.write_text("\n".join(lines))
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=5.0, help="measured seconds per run")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds (medians reported)")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of load per server and batch first")
    parser.add_argument("--store", type=Path, default=Path("models_store"), help="models store with a deepfm model")
    args = parser.parse_args()
    if len(os.sched_getaffinity(0)) < 2:
        raise SystemExit("needs 2 CPUs: one for the servers, one for the load generator")
    signal.signal(signal.SIGTERM, raise_on_sigterm)
    store = (ROOT / args.store).resolve()
    version_dir = store / MODEL_NAME / str(max(list_versions(store, MODEL_NAME)))
    bodies, rows = request_bodies()
    notes = {"artifact": str(version_dir.relative_to(ROOT) if version_dir.is_relative_to(ROOT) else version_dir)}
    os.sched_setaffinity(0, {LOADGEN_CPU})
    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="http-server-") as scratch:
        fleet = Fleet(stack, {}, partial(warm_up, bodies=bodies, rows=rows, seconds=args.warmup))
        for spec in specs(store, granian(Path(scratch))):
            log = Path(scratch) / f"{len(fleet.launchers)}.log"
            fleet.launchers[spec.name] = (partial(as_tree, partial(start_server, spec, log)), "/predict", log)
        names = list(fleet.launchers)
        for name in names:
            fleet.start(name)
        threads = {name: check_pinned(name, t.server.process.pid) for name, t in fleet.targets.items()}
        notes["threads"] = ", ".join(f"{name}: {count}" for name, count in threads.items())
        notes["scores"] = check_same_scores([fleet.targets[SERVICE], fleet.targets[SERVICE + ON_GRANIAN]], bodies)
        for target in fleet.targets.values():
            fleet.warmup(target)
        cells = run_rounds(fleet, names, bodies, rows, args.repeats, args.duration)
        for name, target in fleet.targets.items():
            check_pinned(name, target.server.process.pid)
        notes["restarts"] = "; ".join(fleet.restarts) or "none"
    write_report(args, cells, names, notes)


if __name__ == "__main__":
    main()

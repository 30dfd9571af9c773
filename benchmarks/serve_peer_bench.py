"""Serving benchmark against the peer: the scoring service and TorchServe on the same artifact, in one run.

    .venv/bin/python benchmarks/serve_peer_bench.py [--duration 10] [--repeats 3] [--store models_store]

Servers, each one process tree pinned to CPU 1 (every thread checked), all up for the whole run:
  - service: `python -m service` with its default settings (coalescing on, JSON access log),
    DEEPFM_SERVE_TORCH_THREADS=1, serving the latest deepfm version of `--store`.
  - TorchServe b1 / b16: TorchServe (Java front end, one Python worker, one netty thread each way,
    OMP_NUM_THREADS=1) serving the same version directory through `benchmarks/torchserve/handler.py`,
    which loads it with deepfm's `load_artifact` and encodes raw rows with deepfm's `FeatureEncoder`;
    b1 hands the handler one request at a time, b16 up to 16 requests waiting at most 5 ms
    (`benchmarks/torchserve/b1.yaml`, `b16.yaml`; server settings in `config.properties`, logging in
    `log4j2.xml`: an access log line per request, as the service writes). Token auth and model
    snapshots off, every address on 127.0.0.1.
  - bare (raw body): serve_bench's floor, a FastAPI endpoint that only validates the body (no model).
TorchServe is installed by this script into `.bench-venvs/` (torch pinned first, then TorchServe and
deepfm itself with the numpy / pandas of this virtualenv; Java 17 from Debian if there is none); where
that fails, TorchServe is skipped and the report says why.

Load: serve_bench's generator in this process, pinned to CPU 0 (asyncio keep-alive connections speaking
raw HTTP/1.1, every request's latency recorded, its garbage collector held off): every server gets the
same body bytes and the same headers, only the path differs (`/predict`, `/predictions/deepfm`). Before
the load the script checks that every server returns the same scores for the same bodies, and stops
otherwise. Cells: batch 1 and 100 x 1, 8 and 32 connections, closed loop, `--duration` s per run after
a 1 s warm-up; each round runs every cell on every server (server order rotated each round), and
`--repeats` rounds are interleaved. Reported: medians, paired ratios (the service's run against the
peer's run of the same round, seconds apart), and the CPU each server's process tree used per request.
Each run also records the hypervisor's steal and the CPU time on each core not charged to the server or
the load generator (other processes, interrupts), from /proc/stat: the machine may be shared.

Then the service is profiled under load: py-spy (installed into `.bench-venvs/` too) samples every
thread of the uvicorn worker while the generator drives it; each sample is put in one step of the
request path by the innermost frame that names one, and each thread's CPU time (from /proc) is split
over its steps in proportion, which gives CPU milliseconds per request by step.

The load generator is serve_bench's rather than wrk: it records every request's latency (exact
percentiles, not wrk's histogram), its CPU is measured in this process, and it sends the bytes
serve_bench's runs send, so both benchmarks compare.

Writes benchmarks/results/serve_peer_bench.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager, suppress
from dataclasses import dataclass, field, replace
from functools import partial
from importlib import metadata
from pathlib import Path
from types import FrameType
from typing import Any

import httpx
import numpy as np
from serve_bench import (
    BARE_RAW,
    LOADGEN_CPU,
    MODEL_NAME,
    SERVER_CPU,
    SERVICE,
    Run,
    Server,
    ServerSpec,
    closed_loop,
    machine,
    measure,
    num_rows,
    paired_ratios,
    payloads,
    server_specs,
    start_server,
)

from deepfm.artifact import METADATA_FILE, list_versions, read_metadata
from tools.machine import core_ticks
from tools.processes import free_port
from tools.venvs import INSTALL_TIMEOUT_S, UnavailableError, bench_venv, torch_pin

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "serve_peer_bench.md"
COMMAND = ".venv/bin/python benchmarks/serve_peer_bench.py"
TORCHSERVE_DIR = ROOT / "benchmarks" / "torchserve"
TORCHSERVE_PINS = ("torchserve==0.12.0", "torch-model-archiver==0.12.0")
PY_SPY_PIN = "py-spy==0.4.3"
JAVA_PACKAGE, JAVA_MAJOR = "openjdk-17-jre-headless", 17
TS_B1, TS_B16 = "TorchServe b1", "TorchServe b16"
BATCHES = ("1", "100")
CONNECTIONS = (1, 8, 32)
RATIO_TARGET = 2.0
CPU_MS_TARGETS = {1: 0.6, 32: 0.1}  # batch-1 requests, by connections
PROFILE_CELLS = (("1", 1), ("1", 32), ("100", 1), ("100", 32))
PROFILE_RATE_HZ = 200
START_TIMEOUT_S, STOP_TIMEOUT_S = 180, 30
MAX_RESTARTS = 3


# ----------------------------------------------------------------------------- process trees


def _proc_stat(pid: int) -> list[str]:
    """Fields of /proc/PID/stat after the command name (state first)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def process_tree(root: int) -> list[int]:
    """`root` and its live descendants."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                children.setdefault(int(_proc_stat(int(entry.name))[1]), []).append(int(entry.name))
            except (OSError, IndexError):
                continue  # exited meanwhile
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo += children.get(pid, [])
    return tree


def tree_cpu_seconds(root: int) -> float:
    """User + system CPU time of a process tree, its reaped children's included, so far."""
    ticks = 0
    for pid in process_tree(root):
        try:
            ticks += sum(int(t) for t in _proc_stat(pid)[11:15])
        except (OSError, IndexError):
            continue
    return ticks / os.sysconf("SC_CLK_TCK")


def check_pinned(name: str, root: int) -> int:
    """Every thread of the tree may run on SERVER_CPU only; the number of threads."""
    threads = 0
    for pid in process_tree(root):
        for task in Path(f"/proc/{pid}/task").glob("*"):
            try:
                allowed = os.sched_getaffinity(int(task.name))
            except OSError:
                continue
            if allowed != {SERVER_CPU}:
                raise RuntimeError(f"{name}: thread {task.name} of process {pid} may run on CPUs {sorted(allowed)}")
            threads += 1
    return threads


class TreeServer(Server):
    """A server whose CPU use is that of its whole process tree (TorchServe: launcher, Java, Python worker)."""

    def cpu_seconds(self) -> float:
        return tree_cpu_seconds(self.process.pid)


@contextmanager
def as_tree(start: Callable[[], AbstractContextManager[Server]]) -> Iterator[TreeServer]:
    """A serve_bench server, its CPU counted over its process tree."""
    with start() as server:
        yield TreeServer(server.spec, server.port, server.process)


@dataclass(frozen=True)
class Target:
    """A running server and the path it scores on."""

    server: TreeServer
    path: str

    @property
    def name(self) -> str:
        return self.server.spec.name


def stop_group(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process group `process` leads, wait for all of it, SIGKILL what is left."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    with suppress(subprocess.TimeoutExpired):
        process.wait(timeout=STOP_TIMEOUT_S)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            os.killpg(process.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=STOP_TIMEOUT_S)


# ----------------------------------------------------------------------------- installs


def java_version() -> str:
    """The `java -version` line, installing Debian's Java 17 if there is no Java 17 or newer."""

    def version() -> tuple[int, str] | None:
        java = shutil.which("java")
        if java is None:
            return None
        text = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=60).stderr
        found = re.search(r'version "(\d+)', text)
        return (int(found.group(1)), text.splitlines()[0]) if found else None

    found = version()
    if found and found[0] >= JAVA_MAJOR:
        return found[1]
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        raise UnavailableError(f"TorchServe needs Java {JAVA_MAJOR} or newer, found {found}; cannot apt-get it")
    print(f"installing {JAVA_PACKAGE} ...", flush=True)
    for command in (["apt-get", "update"], ["apt-get", "install", "-y", JAVA_PACKAGE]):
        if subprocess.run(command, capture_output=True, timeout=INSTALL_TIMEOUT_S, check=False).returncode:
            raise UnavailableError(f"`{' '.join(command)}` failed; TorchServe needs Java {JAVA_MAJOR}")
    found = version()
    if not found or found[0] < JAVA_MAJOR:
        raise UnavailableError(f"no Java {JAVA_MAJOR} after installing {JAVA_PACKAGE}")
    return found[1]


def torchserve_venv() -> Path:
    """TorchServe, torch (pinned first, so that nothing pulls a CUDA build) and deepfm, with this virtualenv's
    numpy, pandas, PyYAML and onnxruntime so that both servers encode and score with the same libraries."""
    pin = torch_pin()
    same = [f"{name}=={metadata.version(name)}" for name in ("numpy", "pandas", "PyYAML", "onnxruntime")]
    venv = bench_venv(
        "torchserve-" + TORCHSERVE_PINS[0].split("==")[1],
        [[pin], [pin, *TORCHSERVE_PINS, *same], ["--no-deps", "-e", str(ROOT)]],
    )
    python = str(venv / "bin" / "python")
    check = "import torch, ts, deepfm.artifact; print(torch.__version__)"
    found = subprocess.run([python, "-c", check], capture_output=True, text=True, timeout=120, check=False)
    if found.returncode or found.stdout.strip().split("+")[0] != pin.split("==")[1]:
        raise UnavailableError(f"{venv}: torch or TorchServe does not import as pinned: {found.stderr.strip()[-300:]}")
    return venv


# ----------------------------------------------------------------------------- TorchServe


def runtime_of(python: Path, directory: Path) -> str:
    """What scores a version directory loaded by `load_artifact` under `python` with one thread, as the servers."""
    code = "import sys, torch; torch.set_num_threads(1); from deepfm.artifact import load_artifact as load; "
    code += "print(load(sys.argv[1]).runtime)"
    done = subprocess.run([str(python), "-c", code, str(directory)], capture_output=True, text=True, timeout=300)
    return done.stdout.strip() or f"unknown ({done.stderr.strip()[-200:]})"


def torchserve_archive(venv: Path, version_dir: Path, config: str, store: Path) -> Path:
    """A model store holding the artifact's files and the handler as one unpacked model archive."""
    files = ",".join(str(version_dir / name) for name in [*read_metadata(version_dir)["files"], METADATA_FILE])
    store.mkdir(parents=True)
    done = subprocess.run(
        [
            str(venv / "bin" / "torch-model-archiver"),
            *("--model-name", MODEL_NAME, "--version", version_dir.name, "--archive-format", "no-archive"),
            *("--handler", str(TORCHSERVE_DIR / "handler.py"), "--extra-files", files),
            *("--config-file", str(TORCHSERVE_DIR / f"{config}.yaml"), "--export-path", str(store)),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if done.returncode:
        raise RuntimeError(f"torch-model-archiver failed: {done.stderr.strip()[-1000:]}")
    return store


@contextmanager
def start_torchserve(name: str, venv: Path, store: Path, work: Path, probe: bytes) -> Iterator[TreeServer]:
    """TorchServe on SERVER_CPU in its own process group, ready once it scores `probe`; stopped as a group."""
    port, management, metrics, grpc, grpc_management = (free_port() for _ in range(5))
    properties = work / "config.properties"
    properties.write_text(
        (TORCHSERVE_DIR / "config.properties").read_text()
        + f"inference_address=http://127.0.0.1:{port}\nmanagement_address=http://127.0.0.1:{management}\n"
        f"metrics_address=http://127.0.0.1:{metrics}\nmodel_store={store}\n"
        # gRPC cannot be turned off; its ports too are this instance's own
        f"grpc_inference_address=127.0.0.1\ngrpc_inference_port={grpc}\n"
        f"grpc_management_address=127.0.0.1\ngrpc_management_port={grpc_management}\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("TS_")}  # TS_CONFIG_FILE would win over ours
    env |= {
        "PATH": f"{venv / 'bin'}:{env.get('PATH', '')}",
        "TMPDIR": str(work),  # its pid file, so that another TorchServe on the machine is none of its business
        "LOG_LOCATION": str(work / "logs"),
        "METRICS_LOCATION": str(work / "logs"),
        "OMP_NUM_THREADS": "1",
    }
    command = [
        *("taskset", "-c", str(SERVER_CPU), str(venv / "bin" / "torchserve"), "--start", "--foreground"),
        *("--ncs", "--disable-token-auth", "--ts-config", str(properties)),
        *("--log-config", str(TORCHSERVE_DIR / "log4j2.xml"), "--models", f"{MODEL_NAME}={MODEL_NAME}"),
    ]
    with (work / "console.log").open("wb") as console:
        process = subprocess.Popen(
            command, cwd=work, env=env, stdout=console, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        url = f"http://127.0.0.1:{port}/predictions/{MODEL_NAME}"
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if process.poll() is not None or time.monotonic() > deadline:
                logs = (work / "console.log", work / "logs" / "ts_log.log")
                tail = " / ".join(path.read_text()[-1500:] for path in logs if path.exists())
                raise RuntimeError(f"{name} did not start (exit code {process.poll()}): {tail}")
            try:
                response = httpx.post(url, content=probe, headers={"Content-Type": "application/json"}, timeout=5)
                if response.status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        yield TreeServer(ServerSpec(name, (), {}, BATCHES), port, process)
    finally:
        stop_group(process)


# ----------------------------------------------------------------------------- runs


@dataclass
class Busy:
    """What else used the machine during a run: steal, and CPU on each core charged to neither the server
    nor the load generator (other processes, interrupts), as shares of one core."""

    steal: float
    others_server_core: float
    others_loadgen_core: float


@dataclass
class Cell:
    """The runs of one server in one (batch, connections) cell, in round order."""

    runs: list[Run] = field(default_factory=list)
    busy: list[Busy] = field(default_factory=list)

    def median(self, value: Callable[[Run], float]) -> float:
        return statistics.median(value(run) for run in self.runs)

    @property
    def rps(self) -> float:
        return self.median(lambda r: r.rps)

    @property
    def p99_ms(self) -> float:
        return self.median(lambda r: r.percentile_ms(99))

    @property
    def cpu_ms(self) -> float:
        """Server CPU milliseconds per request."""
        return self.median(lambda r: 1000 / r.rps_per_cpu)


def bounded(drive: Callable[[], Coroutine[Any, Any, Run]], timeout: float) -> Callable[[], Coroutine[Any, Any, Run]]:
    """`drive`, failing with TimeoutError instead of waiting on a server that stopped answering."""

    async def run() -> Run:
        return await asyncio.wait_for(drive(), timeout)

    return run


def load_run(target: Target, body: bytes, rows: int, connections: int, duration: float) -> tuple[Run, Busy]:
    """One closed-loop run of `target`, with what else the machine did meanwhile."""
    if target.server.process.poll() is not None:
        raise RuntimeError(f"{target.name} exited (code {target.server.process.returncode}) before a run")
    drive = partial(closed_loop, target.server.port, body, rows, connections, duration, target.path)
    before, wall = core_ticks(), time.perf_counter()
    run = measure(target.server, bounded(drive, duration + 60))
    after, wall = core_ticks(), time.perf_counter() - wall
    hz = os.sysconf("SC_CLK_TCK")

    def delta(core: int, index: int) -> float:
        return (after[core][index] - before[core][index]) / hz / wall

    stolen = sum(delta(c, 1) for c in after) / max(1e-9, sum(delta(c, 2) for c in after))
    server, loadgen = delta(SERVER_CPU, 0) - run.server_cpu, delta(LOADGEN_CPU, 0) - run.loadgen_cpu
    return run, Busy(stolen, max(0.0, server), max(0.0, loadgen))


def stop_tree(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM a process and its descendants, and wait for the process."""
    for pid in reversed(process_tree(process.pid)):
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    with suppress(subprocess.TimeoutExpired):
        process.wait(timeout=STOP_TIMEOUT_S)


@dataclass
class Fleet:
    """The compared servers, each started again if a run finds it dead or not answering (a process on a shared
    machine can be killed from outside); every restart is reported."""

    stack: ExitStack
    launchers: dict[str, tuple[Callable[[], AbstractContextManager[TreeServer]], str, Path]]  # start, path, log
    warmup: Callable[[Target], None]
    targets: dict[str, Target] = field(default_factory=dict)
    restarts: list[str] = field(default_factory=list)

    def start(self, name: str) -> Target:
        """Start `name`, check that all its threads are pinned, and keep it until the fleet's stack closes."""
        launch, path, _ = self.launchers[name]
        server = self.stack.enter_context(launch())
        check_pinned(name, server.process.pid)
        self.targets[name] = Target(server, path)
        return self.targets[name]

    def run(self, name: str, body: bytes, rows: int, connections: int, duration: float) -> tuple[Run, Busy]:
        """One load run of `name`; if it fails, the server is stopped, started, warmed and the run made again."""
        target = self.targets[name]
        try:
            return load_run(target, body, rows, connections, duration)
        except (OSError, EOFError, TimeoutError, RuntimeError) as exc:
            log = self.launchers[name][2]
            tail = " | ".join(log.read_text(errors="replace").strip().splitlines()[-3:]) if log.exists() else ""
            reason = f"{name}: {exc!r}, exit code {target.server.process.poll()}, log: {tail[-400:]}"
            print(f"restarting {reason}", file=sys.stderr, flush=True)
            self.restarts.append(reason)
            if len(self.restarts) > MAX_RESTARTS:
                raise RuntimeError(f"more than {MAX_RESTARTS} server restarts: {self.restarts}") from exc
            stop_tree(target.server.process)
            self.warmup(self.start(name))
            return load_run(self.targets[name], body, rows, connections, duration)


def request_bodies() -> tuple[dict[str, bytes], dict[str, int]]:
    """The request bodies of the cells, by batch, and the rows of each."""
    requests = {batch: body for batch, body in payloads().items() if batch in BATCHES}
    return (
        {batch: json.dumps(body).encode() for batch, body in requests.items()},
        {batch: num_rows(body) for batch, body in requests.items()},
    )


def warm_up(target: Target, bodies: dict[str, bytes], rows: dict[str, int], seconds: float) -> None:
    """Load `target` with every body for `seconds` each, before its measured runs."""
    for batch, body in bodies.items():
        load_run(target, body, rows[batch], 8, seconds)


def run_rounds(
    fleet: Fleet, names: list[str], bodies: dict[str, bytes], rows: dict[str, int], repeats: int, duration: float
) -> dict[tuple[str, str, int], Cell]:
    """`repeats` rounds of every cell on every server, the server order rotated each round."""
    cells: dict[tuple[str, str, int], Cell] = {}
    for round_ in range(repeats):
        for batch in BATCHES:
            for conns in CONNECTIONS:
                for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
                    run, busy = fleet.run(name, bodies[batch], rows[batch], conns, duration)
                    cell = cells.setdefault((name, batch, conns), Cell())
                    cell.runs.append(run)
                    cell.busy.append(busy)
                    print(
                        f"round {round_ + 1} batch {batch} x {conns}: {name} {run.rps:,.0f} req/s, "
                        f"p99 {run.percentile_ms(99):.1f} ms, {1000 / run.rps_per_cpu:.2f} CPU ms/req, "
                        f"steal {busy.steal:.1%}, "
                        f"others {busy.others_server_core:.0%} / {busy.others_loadgen_core:.0%}",
                        flush=True,
                    )
    return cells


def check_same_scores(targets: list[Target], bodies: dict[str, bytes]) -> str:
    """Every scoring server gives the same scores for the same body; SystemExit naming the first that does not."""
    lines = []
    for batch, body in bodies.items():
        scores = {}
        for target in targets:
            url = f"http://127.0.0.1:{target.server.port}{target.path}"
            response = httpx.post(url, content=body, headers={"Content-Type": "application/json"}, timeout=30)
            if response.status_code != 200:
                raise SystemExit(
                    f"{target.name} answered {response.status_code} to the batch-{batch} body: {response.text}"
                )
            scores[target.name] = np.asarray(response.json()["predictions"], dtype=np.float64)
        reference = scores[SERVICE]
        for name, got in scores.items():
            if got.shape != reference.shape or not np.allclose(got, reference, rtol=0, atol=1e-6):
                raise SystemExit(
                    f"{name} scores the batch-{batch} body differently from the service: {got[:5]} vs {reference[:5]}"
                )
        worst = max(float(np.abs(got - reference).max()) for got in scores.values())
        lines.append(f"batch {batch}: {len(reference)} scores, largest difference {worst:.1e}")
    return "; ".join(lines)


# ----------------------------------------------------------------------------- profile

IDLE_LEAVES = (  # innermost frames of a waiting thread: for a job, for a pool task, in the event loop's C code
    "Batcher._work (service/batching.py",
    "_worker (concurrent/futures/thread.py",
    "Runner.run (asyncio/runners.py",
    "wait (threading.py",
)
STEPS: tuple[tuple[str, tuple[str, ...]], ...] = (  # matched on "function (file:line)" frames, innermost first
    ("model call (ONNX Runtime or TorchScript)", ("deepfm/onnx_form.py", "onnxruntime/", "Artifact.scores", "torch/")),
    ("encoding (FeatureEncoder)", ("deepfm/data/encoding.py", "encode_rows (service/scoring.py")),
    ("scoring glue (service/scoring.py)", ("service/scoring.py",)),
    ("row checks and columns (service/inputs.py)", ("service/inputs.py",)),
    ("response JSON (pydantic dump)", ("model_dump_json", "model_construct")),
    ("request JSON + envelope validation (pydantic)", ("model_validate_json", "parse_predict_request", "pydantic")),
    (
        "hand-offs (batcher queue, futures, thread switch)",
        ("service/batching.py", "queue.py", "asyncio/futures", "threading.py"),
    ),
    ("access log", ("service/logging.py", "logging/")),
    ("metrics (prometheus_client)", ("prometheus_client", "service/metrics.py")),
    ("request middleware (service/middleware.py)", ("service/middleware.py",)),
    ("endpoint (service/routes.py)", ("service/routes.py",)),
    ("FastAPI / Starlette (routing, middleware, request)", ("fastapi/", "starlette/")),
    ("HTTP parse / response write (uvicorn httptools)", ("uvicorn/protocols", "httptools", "service/protocol.py")),
    ("event loop callbacks (asyncio, uvicorn)", ("asyncio/", "uvicorn/", "uvloop")),
)
NO_FRAME = "thread CPU with no busy sample"


def classify(frames: list[str]) -> str | None:
    """The request-path step of one sample (its innermost frame that names one); None for a waiting thread."""
    if len(frames) < 2 or frames[-1].startswith(IDLE_LEAVES):
        return None
    for frame in reversed(frames[1:]):
        for step, patterns in STEPS:
            if any(pattern in frame for pattern in patterns):
                return step
    return "other"


def thread_cpu_seconds(pid: int) -> dict[int, float]:
    """User + system CPU time of each thread of a process so far."""
    seconds = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        with suppress(OSError, IndexError):
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
            seconds[int(task.name)] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return seconds


@dataclass
class Profile:
    """The service's CPU milliseconds per request by request-path step, and the load while it was sampled."""

    batch: str
    connections: int
    cpu_ms: dict[str, float]
    busy_samples: int
    idle_samples: int
    run: Run


def py_spy() -> Path:
    return bench_venv(PY_SPY_PIN.replace("==", "-"), [[PY_SPY_PIN]]) / "bin" / "py-spy"


def profile(
    spy: Path, target: Target, batch: str, body: bytes, rows: int, connections: int, seconds: float, out: Path
) -> Profile:
    """py-spy (on the load generator's core) sampling every thread of the server while the generator drives it.

    Each thread's CPU time over the run (from /proc) is split over the steps in proportion to that thread's
    busy samples, so that the threads' shares are measured, not sampled."""
    pid = target.server.process.pid
    raw = out / f"profile-{batch}-{connections}.txt"
    sampler = subprocess.Popen(
        [
            *("taskset", "-c", str(LOADGEN_CPU), str(spy), "record", "--pid", str(pid), "--threads", "--idle"),
            *("--rate", str(PROFILE_RATE_HZ), "--duration", f"{seconds:g}", "--format", "raw", "--output", str(raw)),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        before, wall = thread_cpu_seconds(pid), time.perf_counter()
        run, _ = load_run(target, body, rows, connections, seconds + 1)  # the 1 s warm-up covers py-spy attaching
        after, wall = thread_cpu_seconds(pid), time.perf_counter() - wall
        sampler.wait(timeout=seconds + 60)
    finally:
        if sampler.poll() is None:
            sampler.kill()
            sampler.wait()
    by_thread: dict[int, Counter[str]] = {}
    idle = 0
    for line in raw.read_text().splitlines():
        stack, samples = line.rsplit(" ", 1)
        frames = stack.split(";")
        step = classify(frames)
        found = re.match(r"thread \((\d+)\)", frames[0])
        if step is None or found is None:
            idle += int(samples)
        else:
            by_thread.setdefault(int(found.group(1)), Counter())[step] += int(samples)
    cpu_ms: dict[str, float] = {}
    for tid, used in after.items():
        per_request_ms = 1000 * (used - before.get(tid, 0.0)) / wall / run.rps
        steps = by_thread.get(tid, Counter({NO_FRAME: 1}))
        for step, count in steps.items():
            if per_request_ms > 0:
                cpu_ms[step] = cpu_ms.get(step, 0.0) + per_request_ms * count / sum(steps.values())
    busy = sum(sum(steps.values()) for steps in by_thread.values())
    return Profile(batch, connections, cpu_ms, busy, idle, run)


# ----------------------------------------------------------------------------- report


def best_peer(cells: dict[tuple[str, str, int], Cell], peers: list[str], batch: str, conns: int) -> str:
    """The TorchServe configuration with the higher median requests/s in a cell."""
    return max(peers, key=lambda n: cells[(n, batch, conns)].rps)


def cell_table(cells: dict[tuple[str, str, int], Cell], names: list[str]) -> list[str]:
    """Medians per cell and server; service / best TorchServe as the median (range) of paired ratios."""
    peers = [n for n in names if n.startswith("TorchServe")]
    head = " | ".join(names)
    lines = [
        f"| batch / connections | req/s: {head} | service / best TorchServe (paired) | p99 ms: {head} "
        f"| server CPU ms per request: {head} |",
        f"|---|{'---:|' * len(names)}---:|{'---:|' * len(names)}{'---:|' * len(names)}",
    ]
    for batch in BATCHES:
        for conns in CONNECTIONS:
            got = [cells[(n, batch, conns)] for n in names]
            ratio = "-"
            if peers:
                best = best_peer(cells, peers, batch, conns)
                paired = paired_ratios(cells[(SERVICE, batch, conns)].runs, cells[(best, batch, conns)].runs, False)
                ratio = f"{statistics.median(paired):.2f} ({min(paired):.2f}-{max(paired):.2f}) vs {best[11:]}"
            lines.append(
                f"| {batch} / {conns} | {' | '.join(f'{c.rps:,.0f}' for c in got)} | {ratio} "
                f"| {' | '.join(f'{c.p99_ms:.1f}' for c in got)} | {' | '.join(f'{c.cpu_ms:.2f}' for c in got)} |"
            )
    return lines


def target_table(cells: dict[tuple[str, str, int], Cell], peers: list[str]) -> list[str]:
    """The issue's targets per cell, met or not; the ratio target judged on raw and on per-CPU-second ratios."""
    lines = [
        "| batch / connections | service / best TorchServe, raw | per server CPU-s | >= 2.0 "
        "| p99 ms, service vs that TorchServe | p99 no worse | service CPU ms per batch-1 request |",
        "|---|---:|---:|---|---:|---|---|",
    ]
    for batch in BATCHES:
        for conns in CONNECTIONS:
            ours = cells[(SERVICE, batch, conns)]
            best = best_peer(cells, peers, batch, conns)
            theirs = cells[(best, batch, conns)]
            raw, per_cpu = (statistics.median(paired_ratios(ours.runs, theirs.runs, by)) for by in (False, True))
            met = "met" if min(raw, per_cpu) >= RATIO_TARGET else "raw only" if raw >= RATIO_TARGET else "not met"
            cpu = "-"
            if batch == "1" and conns in CPU_MS_TARGETS:
                goal = CPU_MS_TARGETS[conns]
                cpu = f"{ours.cpu_ms:.2f} (<= {goal}): {'met' if ours.cpu_ms <= goal else 'not met'}"
            lines.append(
                f"| {batch} / {conns} | {raw:.2f} vs {best[11:]} | {per_cpu:.2f} | {met} "
                f"| {ours.p99_ms:.1f} vs {theirs.p99_ms:.1f} | {'met' if ours.p99_ms <= theirs.p99_ms else 'not met'} "
                f"| {cpu} |"
            )
    floor = {conns: cells[(BARE_RAW, "1", conns)].cpu_ms for conns in CPU_MS_TARGETS}
    lines += [
        "",
        "The bare FastAPI floor (body validation only, no model, no logging or metrics) takes "
        + ", ".join(f"{ms:.2f} ms per batch-1 request at {conns} connection(s)" for conns, ms in floor.items())
        + " in the same runs.",
    ]
    return lines


def busy_table(cells: dict[tuple[str, str, int], Cell], names: list[str]) -> list[str]:
    """Per server, median and largest steal and other CPU over all its runs, and the load generator's CPU."""
    lines = [
        "| server | runs | CPU steal, median / max | other CPU on the server's core, median / max "
        "| other CPU on the load generator's core, median / max | load generator CPU, max |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name in names:
        busy = [b for (n, _, _), c in cells.items() if n == name for b in c.busy]
        loadgen = max(r.loadgen_cpu for (n, _, _), c in cells.items() if n == name for r in c.runs)

        def share(values: list[float]) -> str:
            return f"{statistics.median(values):.1%} / {max(values):.1%}"

        lines.append(
            f"| {name} | {len(busy)} | {share([b.steal for b in busy])} "
            f"| {share([b.others_server_core for b in busy])} | {share([b.others_loadgen_core for b in busy])} "
            f"| {loadgen:.0%} |"
        )
    return lines


def row(*cells: str | list[str]) -> str:
    """A markdown table row of cells and lists of cells."""
    flat = [c for cell in cells for c in ([cell] if isinstance(cell, str) else cell)]
    return f"| {' | '.join(flat)} |"


def profile_section(profiles: list[Profile], seconds: float, plain: dict[tuple[str, int], float]) -> list[str]:
    """The service's CPU per request by request-path step, per profiled cell."""
    if not profiles:
        return []
    steps = sorted({s for p in profiles for s in p.cpu_ms}, key=lambda s: -sum(p.cpu_ms.get(s, 0) for p in profiles))
    heads = " | ".join(f"batch {p.batch} / {p.connections} conn." for p in profiles)
    lines = [
        "## Where the service's CPU goes",
        "",
        f"py-spy {PY_SPY_PIN.split('==')[1]} `record --threads --idle --rate {PROFILE_RATE_HZ}` (pausing the process "
        f"for each sample; on CPU {LOADGEN_CPU}), {seconds:g} s per cell while the load generator drives the service. "
        "Each sample of a thread is put in the step of its innermost frame that names one (`STEPS` in the script: "
        "JSON parsing inside pydantic counts as pydantic, encoding inside scoring as encoding); samples whose "
        "innermost frame is a wait (the scorer waiting for a job, the event loop inside uvloop's C code, idle pool "
        "threads) are left out. Each thread's CPU time over the run, read from /proc, is then split over its steps "
        "in proportion to its busy samples, so the columns add up to the server's CPU per request. Caveats: the "
        "event loop's own C code (epoll, socket reads in uvloop) has no Python frame and counts as a wait, so its "
        "cost is spread over the thread's other steps; `--native` would show it, but made py-spy pause the process "
        "so long here (libtorch's unwind tables) that throughput fell 5-10x.",
        "",
        "Server CPU ms per request (share of the total):",
        "",
        f"| step | {heads} |",
        f"|---|{'---:|' * len(profiles)}",
    ]
    for step in steps:
        cells = []
        for p in profiles:
            ms, total = p.cpu_ms.get(step, 0.0), sum(p.cpu_ms.values())
            cells.append(f"{ms:.3f} ({ms / total:.0%})")
        lines.append(row(step, cells))
    lines += [
        row("**total**", [f"**{sum(p.cpu_ms.values()):.3f}**" for p in profiles]),
        row("busy samples (wait samples left out)", [f"{p.busy_samples:,} ({p.idle_samples:,})" for p in profiles]),
        row(
            "req/s while sampled / in the runs above",
            [f"{p.run.rps:,.0f} / {plain[(p.batch, p.connections)]:,.0f}" for p in profiles],
        ),
        "",
    ]
    return lines


def write_report(
    args: argparse.Namespace,
    cells: dict[tuple[str, str, int], Cell],
    names: list[str],
    notes: dict[str, str],
    profiles: list[Profile],
    load: tuple[float, float],
) -> None:
    """Print and write the results."""
    peers = [n for n in names if n.startswith("TorchServe")]
    plain = {(b, c): cells[(SERVICE, b, c)].rps for b in BATCHES for c in CONNECTIONS}
    text = [
        "# Serving benchmark against TorchServe",
        "",
        f"Command: `{COMMAND} --duration {args.duration:g} --repeats {args.repeats} --warmup {args.warmup:g} "
        f"--profile-duration {args.profile_duration:g} --store {args.store}`",
        "",
        f"Machine: {machine()}. Load average (1 min) before / after: {load[0]:.2f} / {load[1]:.2f}.",
        "",
        f"Artifact: `{notes['artifact']}`, served by every server. {notes['torchserve']}",
        f"What scores the artifact in each (`deepfm.artifact.Runtime`, the same `load_artifact`): {notes['runtimes']}.",
        f"Same scores from every server: {notes['scores']}. Server restarts during the run: {notes['restarts']}.",
        "",
        "Load generator: serve_bench's asyncio one (every latency recorded; see the script's docstring for why "
        "not wrk).",
        "",
        f"Core split: each server's whole process tree on CPU {SERVER_CPU} ({notes['threads']}), the load generator "
        f"on CPU {LOADGEN_CPU}. Closed loop, the same body bytes to every server, {args.duration:g} s per run after a "
        f"1 s warm-up ({args.warmup:g} s per server and batch before the first), {args.repeats} interleaved rounds "
        "(server order rotated each round); medians. CPU per request: the server's process tree CPU time over the "
        "run divided by its requests.",
        "",
        "## Targets",
        "",
        *(target_table(cells, peers) if peers else ["TorchServe skipped: no targets to check."]),
        "",
        "## Results",
        "",
        *cell_table(cells, names),
        "",
        "## How busy the machine was",
        "",
        "Per run, from /proc/stat: the hypervisor's steal (share of the machine's CPU time), and CPU time on each "
        "core charged to neither the server's process tree nor the load generator (other engineers' processes, "
        "interrupts: loopback networking's softirqs land here too), as shares of one core. Where the other "
        "processes are CPU-bound they take whatever a server leaves of its core: a server that waits on round trips "
        "(one connection, TorchServe's hand-offs) then waits for its core too, so its requests per second suffer more "
        "than its CPU per request.",
        "",
        *busy_table(cells, names),
        "",
        *profile_section(profiles, args.profile_duration, plain),
    ]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("\n".join(text))
    print("\n".join(text))


# ----------------------------------------------------------------------------- main


def raise_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(f"signal {signum}: stopping every server")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds per run")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds (medians reported)")
    parser.add_argument(
        "--warmup", type=float, default=5.0, help="seconds of load per server and batch before the runs"
    )
    parser.add_argument("--store", type=Path, default=Path("models_store"), help="models store with a deepfm model")
    parser.add_argument("--profile-duration", type=float, default=10.0, help="seconds per profiled cell; 0: no profile")
    args = parser.parse_args()
    if len(os.sched_getaffinity(0)) < 2:
        raise SystemExit("needs 2 CPUs: one for the servers, one for the load generator")
    signal.signal(signal.SIGTERM, raise_on_sigterm)  # so that the servers are stopped on the way out
    store = (ROOT / args.store).resolve()
    version_dir = store / MODEL_NAME / str(max(list_versions(store, MODEL_NAME)))
    bodies, rows = request_bodies()
    notes = {"artifact": str(version_dir.relative_to(ROOT) if version_dir.is_relative_to(ROOT) else version_dir)}
    try:
        venv: Path | None = torchserve_venv()
        notes["torchserve"] = (
            f"TorchServe: {', '.join(TORCHSERVE_PINS)}, {java_version()}; handler, settings and logging in "
            "`benchmarks/torchserve/` (one netty thread each way, one worker, access log only, Prometheus-mode "
            "metrics, compact JSON responses)."
        )
    except UnavailableError as exc:
        venv, notes["torchserve"] = None, f"**TorchServe skipped**: {exc}."
        print(notes["torchserve"], file=sys.stderr)
    load_before = os.getloadavg()[0]
    os.sched_setaffinity(0, {LOADGEN_CPU})
    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="serve-peer-") as scratch:
        # TorchServe's JIT compiler needs seconds: 2-3x the CPU per request before
        warmup = partial(warm_up, bodies=bodies, rows=rows, seconds=args.warmup)
        fleet = Fleet(stack, {}, warmup)
        notes["runtimes"] = f"service {runtime_of(Path(sys.executable), version_dir)}"
        specs = {s.name: s for s in server_specs(store)}
        service = replace(specs[SERVICE], env={**specs[SERVICE].env, "DEEPFM_SERVE_MODELS": MODEL_NAME})
        for spec in (service, specs[BARE_RAW]):
            log = Path(scratch) / f"{len(fleet.launchers)}.log"
            fleet.launchers[spec.name] = (partial(as_tree, partial(start_server, spec, log)), "/predict", log)
        if venv is not None:
            for name, config in ((TS_B1, "b1"), (TS_B16, "b16")):
                work = Path(scratch) / config
                archive = torchserve_archive(venv, version_dir, config, work / "store")
                notes["runtimes"] += f", {name} {runtime_of(venv / 'bin' / 'python', archive / MODEL_NAME)}"
                launch = partial(start_torchserve, name, venv, archive, work, bodies["1"])
                fleet.launchers[name] = (launch, f"/predictions/{MODEL_NAME}", work / "console.log")
        names = list(fleet.launchers)
        for name in names:
            fleet.start(name)
        threads = {name: check_pinned(name, t.server.process.pid) for name, t in fleet.targets.items()}
        notes["threads"] = ", ".join(f"{name}: {count} threads" for name, count in threads.items())
        notes["scores"] = check_same_scores([t for n, t in fleet.targets.items() if n != BARE_RAW], bodies)
        for target in fleet.targets.values():
            warmup(target)
        cells = run_rounds(fleet, names, bodies, rows, args.repeats, args.duration)
        profiles = []
        if args.profile_duration > 0:
            try:
                spy = py_spy()
                for batch, conns in PROFILE_CELLS:
                    how = (batch, bodies[batch], rows[batch], conns)
                    profiles.append(profile(spy, fleet.targets[SERVICE], *how, args.profile_duration, Path(scratch)))
            except UnavailableError as exc:
                print(f"profile skipped: {exc}", file=sys.stderr)
        for name, target in fleet.targets.items():
            check_pinned(name, target.server.process.pid)
        notes["restarts"] = "; ".join(fleet.restarts) or "none"
    write_report(args, cells, names, notes, profiles, (load_before, os.getloadavg()[0]))


if __name__ == "__main__":
    main()

"""Deployment benchmark: throughput and latency through nginx with 1 and 2 scorer replicas.

    .venv/bin/python benchmarks/deploy_bench.py [--duration 15] [--connections 8] [--batches 1,64]

Runs the docker-compose deployment on loopback exactly as tests/deploy does (tools/loopback.py:
the compose file's scorer command and environment, 1 uvicorn worker x 1 torch thread per replica,
behind deploy/nginx/nginx.conf), with the first 1 and then 2 of the compose file's replicas, and
also one replica without nginx as a baseline. Load: wrk (Debian: apt-get install wrk), one thread,
closed loop on `--connections` keep-alive connections, POST /predict with `batch` instances per
request, after a warm-up. Reports requests/s, instances/s, latency percentiles, errors, and the
share of requests each replica served (from its /metrics), and writes
benchmarks/results/deploy_bench.md.

Everything shares this machine's CPUs: on 2 cores, wrk and nginx take CPU from the replicas, so the
2-replica figure is what 2 replicas give on the same 2 cores, not on 2 machines.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tools/, the harnesses tests share
sys.path.insert(0, str(ROOT / "tests" / "deploy"))  # deploy_support, for a store without the default models

from tools import loopback  # noqa: E402
from tools.processes import http_get  # noqa: E402
from tools.requests import MOVIELENS_INSTANCES  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
COMMAND = ".venv/bin/python benchmarks/deploy_bench.py"

UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


@dataclass
class Result:
    setup: str
    replicas: int
    batch: int
    connections: int
    seconds: float
    requests: int
    rps: float
    latency_ms: dict[str, float]
    errors: int
    share: dict[str, float]

    @property
    def rows_per_s(self) -> float:
        return self.rps * self.batch


def wrk_script(path: Path, batch: int) -> Path:
    body = json.dumps({"instances": [MOVIELENS_INSTANCES[0]] * batch})
    path.write_text(
        f'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\nwrk.body = [==[{body}]==]\n'
    )
    return path


def run_wrk(url: str, script: Path, connections: int, seconds: float) -> dict[str, Any]:
    """One wrk run: requests, requests/s, latency percentiles (ms) and errors."""
    command = ["wrk", "-t1", f"-c{connections}", f"-d{round(seconds)}s", "--latency", "--timeout", "10s"]
    out = subprocess.run([*command, "-s", str(script), f"{url}/predict"], capture_output=True, text=True, check=True)
    text = out.stdout
    percentiles = {
        f"p{p}": float(value) * UNITS[unit]
        for p, value, unit in re.findall(r"^\s+(\d+)%\s+([\d.]+)(us|ms|s)\s*$", text, re.MULTILINE)
    }
    requests = int(re.search(r"(\d+) requests in", text).group(1))  # type: ignore[union-attr]
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))  # type: ignore[union-attr]
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", text))
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    errors += int(non_2xx.group(1)) if non_2xx else 0
    return {"requests": requests, "rps": rps, "latency_ms": percentiles, "errors": errors, "raw": text}


def served(replica: loopback.Replica) -> float:
    """POST /predict requests this replica has answered with 200, from its /metrics."""
    _, body = http_get(f"{replica.url}/metrics")
    pattern = r"^deepfm_http_requests_total\{([^}]*)\}\s+([\d.e+]+)$"
    total = 0.0
    for labels, value in re.findall(pattern, body.decode(), re.MULTILINE):
        if 'route="/predict"' in labels and 'status="200"' in labels:
            total += float(value)
    return total


def measure(dep: loopback.Deployment, url: str, setup: str, batch: int, args: argparse.Namespace, work: Path) -> Result:
    script = wrk_script(work / f"post-{batch}.lua", batch)
    run_wrk(url, script, args.connections, args.warmup)
    before = {name: served(r) for name, r in dep.replicas.items()}
    stats = run_wrk(url, script, args.connections, args.duration)
    after = {name: served(r) for name, r in dep.replicas.items()}
    counts = {name: after[name] - before[name] for name in before}
    total = sum(counts.values()) or 1.0
    result = Result(
        setup=setup,
        replicas=len(dep.replicas) if url == dep.url else 1,
        batch=batch,
        connections=args.connections,
        seconds=args.duration,
        requests=stats["requests"],
        rps=stats["rps"],
        latency_ms=stats["latency_ms"],
        errors=stats["errors"],
        share={name: count / total for name, count in counts.items() if count},
    )
    print(
        f"{setup:28s} batch={batch:<4d} {result.rps:9.1f} req/s {result.rows_per_s:10.0f} rows/s "
        f"p50={result.latency_ms.get('p50', 0):.2f}ms p99={result.latency_ms.get('p99', 0):.2f}ms "
        f"errors={result.errors} share={ {k: round(v, 2) for k, v in result.share.items()} }",
        flush=True,
    )
    return result


def environment() -> dict[str, str]:
    def version(command: list[str]) -> str:
        try:
            out = subprocess.run(command, capture_output=True, text=True, timeout=10)
        except OSError:
            return "not installed"
        return (out.stdout + out.stderr).strip().splitlines()[0]

    import torch

    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if "model name" in line
        ),
        platform.processor(),
    )
    return {
        "CPU": f"{cpu}, {os.cpu_count()} cores",
        "load average (1, 5, 15 min) after the run": ", ".join(f"{x:.2f}" for x in os.getloadavg()),
        "Python": platform.python_version(),
        "torch": torch.__version__,
        "nginx": version(["nginx", "-v"]),
        "wrk": version(["wrk", "--version"]),
    }


def write_markdown(path: Path, results: list[Result], env: dict[str, str], args: argparse.Namespace) -> None:
    lines = [
        "# Deployment benchmark",
        "",
        "Throughput and latency of POST /predict through nginx (deploy/nginx/nginx.conf) to 1 and 2 scorer",
        "replicas (docker-compose.yml's scorer command and environment: 1 uvicorn worker x 1 torch thread",
        "each), run on loopback by tools/loopback.py; `direct` is one replica without nginx.",
        "",
        "```",
        f"{COMMAND} --duration {args.duration:g} --connections {args.connections} "
        f"--batches {','.join(map(str, args.batches))}",
        "```",
        "",
        f"wrk, 1 thread, {args.connections} keep-alive connections (closed loop), {args.duration:g} s per row "
        f"after a {args.warmup:g} s warm-up; latency is wrk's, in ms; share is each replica's part of the",
        "requests, from its /metrics.",
        "",
        "| setup | replicas | instances/request | requests/s | instances/s "
        "| p50 ms | p90 ms | p99 ms | errors | share |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in results:
        share = ", ".join(f"{k} {v:.0%}" for k, v in r.share.items())
        lat = r.latency_ms
        lines.append(
            f"| {r.setup} | {r.replicas} | {r.batch} | {r.rps:,.0f} | {r.rows_per_s:,.0f} | {lat.get('p50', 0):.1f} | "
            f"{lat.get('p90', 0):.1f} | {lat.get('p99', 0):.1f} | {r.errors} | {share} |"
        )
    lines += ["", "Machine:", ""]
    lines += [f"- {key}: {value}" for key, value in env.items()]
    lines += [f"- load average (1, 5, 15 min) before the run: {args.load_before}"]
    lines += [f"- models store: {args.store_note}"]
    if args.busy:
        lines += [
            "",
            f"**The machine was busy with other work when this ran (1-minute load average {args.load_before}"
            " before it): the figures are lower and noisier than on an idle machine. Rerun on an idle one.**",
        ]
    lines += [
        "",
        "Everything (wrk, nginx, the replicas) shares the machine's CPUs: with 2 cores, 2 replicas of",
        "1 CPU each compete with wrk and nginx, so the gain from the second replica is smaller than it",
        "would be with the replicas on CPUs of their own (compose's `cpus: 1` per scorer on a larger host,",
        "or one pod per CPU on Kubernetes).",
        "",
    ]
    path.write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=15.0, help="seconds measured per row (default 15)")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of warm-up per row (default 3)")
    parser.add_argument("--connections", type=int, default=8, help="wrk keep-alive connections (default 8)")
    parser.add_argument(
        "--batches", type=lambda s: [int(x) for x in s.split(",")], default=[1, 64], help="instances per request"
    )
    parser.add_argument("--store", type=Path, default=None, help="models store (default: models_store/)")
    parser.add_argument("--output", type=Path, default=RESULTS / "deploy_bench.md")
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        parser.error("wrk is not installed (Debian: apt-get install wrk)")
    load = os.getloadavg()
    args.load_before = ", ".join(f"{x:.2f}" for x in load)
    args.busy = load[0] > 0.5
    if args.busy:
        print(f"warning: the machine is busy (load average {args.load_before}); the figures will be low and noisy")
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="deploy-bench-") as tmp:
        work = Path(tmp)
        store = args.store
        args.store_note = str(store)
        if store is None:
            args.store_note = "models_store/ (the committed default models)"
            if loopback.has_store_versions(loopback.REPO_STORE, "deepfm"):
                store = loopback.REPO_STORE
            else:  # until models_store/ holds the default artifacts
                from deploy_support import build_synthetic_store

                store = build_synthetic_store(work / "synthetic-store")
                args.store_note = "a synthetic deepfm artifact (models_store/ had no deepfm version yet)"
                print(f"models_store/ has no deepfm version: using a synthetic one ({store})")
        for replicas in (1, 2):
            with loopback.deployment(work / f"r{replicas}", replicas=replicas, store=store) as dep:
                for batch in args.batches:
                    if replicas == 1:
                        only = next(iter(dep.replicas.values()))
                        results.append(measure(dep, only.url, "direct (no nginx)", batch, args, work))
                    results.append(measure(dep, dep.url, f"nginx, {replicas} replica(s)", batch, args, work))
        env = environment()
    results.sort(key=lambda r: (r.batch, r.setup != "direct (no nginx)", r.replicas))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    write_markdown(args.output, results, env, args)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Encoding benchmark: 100,000 raw MovieLens rows through the one encoding path.

    .venv/bin/python benchmarks/encoding_bench.py [--rows 100000] [--repeats 7]

The rows are the training ratings of the default leave-one-out split (98,114) topped up with
uniformly sampled (user, movie) pairs, expanded to raw request columns by `MovieLensAdapter.raw_rows`.
They are encoded with the fitted `FeatureEncoder` three ways: `encode_frame` on the DataFrame (the
trainer's path), and `encode` on plain Python lists as the service receives them, with genres as
JSON lists and as '|'-separated strings. Reports the median of the timed runs (after one warm-up)
and rows/s, per path and per field, and per call for request-sized batches (1 and 100 rows, where
the per-field cost of a call dominates), and writes benchmarks/results/encoding_bench.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from deepfm.config import DATA_DIR_ENV, ExperimentConfig, MovieLensConfig
from deepfm.data.encoding import EncodedBatch, FeatureEncoder
from deepfm.data.movielens import MovieLensAdapter

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
COMMAND = ".venv/bin/python benchmarks/encoding_bench.py"
TARGET_SECONDS = 1.0  # per 100,000 rows
REQUEST_SIZES = (1, 100)  # the rows of serve_bench's and serve_peer_bench's requests
CALLS = 2_000


def raw_frame(adapter: MovieLensAdapter, num_rows: int, seed: int = 0) -> pd.DataFrame:
    """`num_rows` raw rows: the training ratings, then uniformly drawn (user, movie) pairs."""
    pairs = adapter.splits["train"][["user_id", "movie_id"]]
    extra = max(0, num_rows - len(pairs))
    rng = np.random.default_rng(seed)
    sampled = pd.DataFrame(
        {
            "user_id": rng.choice(adapter.tables.users["user_id"].to_numpy(), extra),
            "movie_id": rng.choice(adapter.tables.movies["movie_id"].to_numpy(), extra),
        }
    )
    pairs = pd.concat([pairs, sampled], ignore_index=True).iloc[:num_rows]
    return adapter.raw_rows(pairs)


def median_seconds(run: Callable[[], Any], repeats: int) -> float:
    """Median wall time of `repeats` calls, after one untimed warm-up call."""
    run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def per_call_seconds(encoder: FeatureEncoder, columns: dict[str, list[Any]], num_rows: int, repeats: int) -> float:
    """Median seconds of one `encode` call, timed over runs of CALLS calls (one is too short to time alone)."""

    def calls() -> None:
        for _ in range(CALLS):
            encoder.encode(columns, num_rows)

    return median_seconds(calls, repeats) / CALLS


def assert_same(a: EncodedBatch, b: EncodedBatch) -> None:
    """The paths must agree exactly, or their timings compare different work."""
    assert a.features.keys() == b.features.keys()
    for name, values in a.features.items():
        np.testing.assert_array_equal(values, b.features[name], err_msg=name)
    assert a.oov_rows == b.oov_rows


def machine() -> list[str]:
    """CPU, core count, library versions and the load the timings were taken under."""
    cpu = "unknown"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        cpu = next(
            (line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if "model name" in line), cpu
        )
    return [
        f"- CPU: {cpu}, nproc {os.cpu_count()}",
        f"- Python {platform.python_version()}, torch {torch.__version__}, numpy {np.__version__}, "
        f"pandas {pd.__version__}",
        f"- {platform.platform()}",
        f"- load average at the end of the run: {' / '.join(f'{x:.2f}' for x in os.getloadavg())} (1 / 5 / 15 min)",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    # As in tests/conftest.py: the shared data beside the repository, unless DEEPFM_DATA_DIR says otherwise.
    shared = ROOT.parent / "shared" / "data" / "ml-100k"
    if shared.is_dir():
        os.environ.setdefault(DATA_DIR_ENV, str(shared))

    config = ExperimentConfig().data
    assert isinstance(config, MovieLensConfig)
    adapter = MovieLensAdapter(config)
    adapter.build()
    encoder: FeatureEncoder = adapter.encoder
    frame = raw_frame(adapter, args.rows)
    num_rows = len(frame)
    lists = {column: frame[column].tolist() for column in frame.columns}  # genres: lists of names
    piped = lists | {"genres": ["|".join(genres) for genres in lists["genres"]]}

    paths: dict[str, Callable[[], EncodedBatch]] = {
        "`encode_frame(DataFrame)` (trainer)": lambda: encoder.encode_frame(frame),
        "`encode(lists)`, genres as lists (service)": lambda: encoder.encode(lists, num_rows),
        "`encode(lists)`, genres as pipe-separated strings": lambda: encoder.encode(piped, num_rows),
    }
    reference = encoder.encode_frame(frame)
    for run in paths.values():
        assert_same(run(), reference)

    lines = [
        "# Encoding benchmark",
        "",
        f"{num_rows:,} raw MovieLens-100K rows ({len(adapter.splits['train']):,} training ratings plus sampled "
        "(user, movie) pairs, expanded by `MovieLensAdapter.raw_rows`) encoded into the 7 model fields by the "
        f"fitted `FeatureEncoder`. Median of {args.repeats} runs after one warm-up. "
        f"Target: well under {TARGET_SECONDS:.0f} s per 100,000 rows.",
        "",
        f"Command: `{COMMAND}`",
        "",
        "| path | median (ms) | rows/s |",
        "|---|---:|---:|",
    ]
    for label, run in paths.items():
        seconds = median_seconds(run, args.repeats)
        lines.append(f"| {label} | {seconds * 1e3:.1f} | {num_rows / seconds:,.0f} |")
        print(f"{label}: {seconds * 1e3:.1f} ms, {num_rows / seconds:,.0f} rows/s", flush=True)

    lines += [
        "",
        "Per field, from plain lists (genres as lists):",
        "",
        "| field | transform | median (ms) |",
        "|---|---|---:|",
    ]
    for field in encoder.schema.fields.values():
        only = [field.name]
        seconds = median_seconds(lambda: encoder.encode(lists, num_rows, fields=only), args.repeats)  # noqa: B023
        kind = f"{field.feature_type.value}, {field.transform.kind.value}"
        lines.append(f"| {field.name} | {kind} | {seconds * 1e3:.1f} |")

    lines += [
        "",
        f"Request-sized calls, as the service makes them (`encode(lists)` of a request's rows, genres as lists): "
        f"median of {args.repeats} runs of {CALLS:,} calls each, per call:",
        "",
        "| rows | median (us per call) | rows/s |",
        "|---:|---:|---:|",
    ]
    for size in REQUEST_SIZES:
        part = {column: values[:size] for column, values in lists.items()}
        seconds = per_call_seconds(encoder, part, size, args.repeats)
        lines.append(f"| {size} | {seconds * 1e6:.1f} | {size / seconds:,.0f} |")

    lines += ["", "Machine:", "", *machine(), ""]
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "encoding_bench.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()

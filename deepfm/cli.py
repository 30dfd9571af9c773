"""The `deepfm` command: train, evaluate and export models, and serve them.

deepfm train --config configs/deepfm_movielens.yaml [--override training.lr=5e-4 ...] [--export]
deepfm train --data clicks.csv --label clicked [--time-column ts] [--model xdeepfm] [--export]
deepfm init --data clicks.csv --label clicked > my.yaml      # the inferred fields, to edit
deepfm evaluate --artifact models_store/deepfm/1 [--data PATH]
deepfm export --run runs/deepfm_movielens/<run> [--store models_store]
deepfm serve [--host 0.0.0.0] [--port 8000] [--workers 1]

`python -m deepfm` is the same command. Training runs on a GPU when there is one (training.device=auto);
under torchrun it is data-parallel over the processes it starts (see `deepfm train --help`).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import logging
import os
import sys
import typing
from collections.abc import Sequence
from pathlib import Path

from deepfm.config import (
    DATA_DIR_ENV,
    MODEL_CONFIGS,
    DataConfig,
    ExperimentConfig,
    MovieLensConfig,
    TableConfig,
    located,
)
from deepfm.errors import ConfigError, DeepFMError
from deepfm.process import keep_freed_memory

DEFAULT_STORE = "models_store"
TRAIN_DESCRIPTION = """\
Train a model with early stopping on validation AUC, test it, and write config.yaml, metrics.json,
curves.png and checkpoint.pt into a run directory. With --data and no --config, a table's fields
are inferred from the data; the run's config.yaml holds them, to edit and pass back with --config.

Devices: -o training.device=auto (the default: CUDA when available) | cpu | cuda, and
-o training.amp=true for mixed precision on CUDA.
  one GPU:      deepfm train --config C.yaml -o training.device=cuda
  N processes:  torchrun --standalone --nproc-per-node=N -m deepfm train --config C.yaml
  N machines:   on each: torchrun --nnodes=N --nproc-per-node=GPUS_PER_MACHINE --rdzv-backend=c10d \\
                  --rdzv-endpoint=HOST:29400 --rdzv-id=JOB -m deepfm train --config C.yaml
Under torchrun each process trains on its shard of every epoch's rows (one GPU each with NCCL, or
the CPU with gloo); training.batch_size is the rows of one step over all processes; rank 0 alone
writes the run directory and exports.
"""


def _is_movielens(path: Path) -> bool:
    """Whether `path` is a folder in one of GroupLens's MovieLens layouts."""
    from deepfm.data.movielens import detect_layout

    try:
        detect_layout(path)
    except DeepFMError:
        return False
    return True


def _data_config(args: argparse.Namespace, base: DataConfig | None) -> DataConfig:
    """The data section for `--data PATH` (`--label`, `--time-column`): a MovieLens folder or a table."""
    if base is None:
        movielens = Path(args.data).is_dir() and _is_movielens(Path(args.data))
        base = MovieLensConfig(path=args.data) if movielens else TableConfig(path=args.data)
    if isinstance(base, MovieLensConfig):
        if args.label or args.time_column:
            raise ConfigError(
                "--label and --time-column are for tables; a MovieLens click is rating >= data.label_threshold"
            )
        return dataclasses.replace(base, path=args.data)
    changes = {"label": args.label, "time_column": args.time_column}
    return dataclasses.replace(base, **{k: v for k, v in changes.items() if v is not None})


def _config(args: argparse.Namespace) -> ExperimentConfig:
    base = ExperimentConfig.from_yaml(args.config) if args.config else None
    if getattr(args, "data", None):
        config = located(base, args.data) if base is not None else ExperimentConfig()
        config = dataclasses.replace(config, data=_data_config(args, base.data if base else None))
        if base is None:
            model = args.model or "deepfm"
            stem = Path(args.data).resolve().name.split(".")[0]
            config = dataclasses.replace(config, name=f"{model}_{stem}", model=MODEL_CONFIGS[model]())
    elif getattr(args, "label", None) or getattr(args, "time_column", None):
        raise ConfigError("--label and --time-column go with --data")
    else:
        config = base or ExperimentConfig()
    if getattr(args, "model", None):
        config = config.with_overrides([f"model.name={args.model}"])
    return config.with_overrides(args.override)


def _train(args: argparse.Namespace) -> int:
    from deepfm.training.distributed import process_group
    from deepfm.training.experiment import export_run, train_experiment

    config = _config(args)
    with process_group(config.training.device) as world:
        run = train_experiment(config, args.run_dir)
    if not world.is_primary:
        return 0
    summary = {"run_dir": str(run.run_dir), "config": str(run.run_dir / "config.yaml"), "test": run.metrics["test"]}
    print(json.dumps(summary, indent=2))
    if args.export:
        print(f"exported {export_run(run, args.store, args.name)}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from deepfm.artifact import load_artifact
    from deepfm.training.experiment import evaluate_scorer_on_raw_test, load_run
    from deepfm.training.trainer import Scorer, probabilities_of

    if args.artifact:
        artifact = load_artifact(args.artifact)
        recorded = artifact.metadata.get("config")
        if not isinstance(recorded, dict):
            raise ConfigError(f"{args.artifact}: its metadata.json holds no experiment config to evaluate with")
        config = ExperimentConfig.from_dict(recorded)
        schema, scorer = artifact.schema, typing.cast(Scorer, artifact.predict)
    else:
        run = load_run(args.run)
        config, schema, scorer = run.config, run.schema, probabilities_of(run.model)
    data = args.data or (os.environ.get(DATA_DIR_ENV) if isinstance(config.data, MovieLensConfig) else None)
    if data:
        config = located(config, data)
    metrics = evaluate_scorer_on_raw_test(config.with_overrides(args.override), schema, scorer)
    print(json.dumps(metrics, indent=2))
    return 0


def _init(args: argparse.Namespace) -> int:
    from deepfm.data.table import inferred_config

    config = _config(args)
    if isinstance(config.data, TableConfig):
        config = dataclasses.replace(config, data=inferred_config(config.data))
    print(config.yaml(), end="")
    return 0


def _export(args: argparse.Namespace) -> int:
    from deepfm.training.experiment import export_run, load_run

    print(f"exported {export_run(load_run(args.run), args.store, args.name)}")
    return 0


def _serve(args: argparse.Namespace) -> int:
    """Become `python -m service` (the app is a separate package the library never imports)."""
    if importlib.util.find_spec("service") is None or importlib.util.find_spec("fastapi") is None:
        raise DeepFMError("the scoring service is not installed: pip install 'deepfm[serve]'")
    given = {"host": args.host, "port": args.port, "workers": args.workers}
    options = [f"--{name}={value}" for name, value in given.items() if value is not None]
    os.execv(sys.executable, [sys.executable, "-m", "service", *options])


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(prog="deepfm", description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def with_config(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--config", type=Path, help="experiment YAML (default: built-in DeepFM on MovieLens-100K)")
        with_overrides(sub)

    def with_overrides(sub: argparse.ArgumentParser) -> None:
        sub.add_argument(
            "--override", "-o", action="append", default=[], metavar="KEY=VALUE",
            help="override a config value, e.g. training.lr=5e-4 or model.dnn.dropout=0.1 (repeatable)",
        )  # fmt: skip

    def with_data(sub: argparse.ArgumentParser) -> None:
        sub.add_argument(
            "--data", metavar="PATH",
            help="a CSV or Parquet click log (or a folder of Parquet files), or a MovieLens folder; "
            "with --config: where that config's data is",
        )  # fmt: skip
        sub.add_argument("--label", metavar="COLUMN", help="the table's 0/1 label column (default: label)")
        sub.add_argument(
            "--time-column", metavar="COLUMN",
            help="split by this column: the last 10%% of rows test, the 10%% before them validation "
            "(default: a seeded random 80/10/10 split)",
        )  # fmt: skip
        sub.add_argument("--model", choices=sorted(MODEL_CONFIGS), help="the model (default: deepfm, or the config's)")

    def with_store(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--store", default=DEFAULT_STORE, help=f"models store root (default {DEFAULT_STORE})")
        sub.add_argument("--name", help="artifact model name (default: the config's model.name)")

    train = commands.add_parser(
        "train",
        help="train and test a model on a click log or MovieLens; writes a run directory",
        description=TRAIN_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    with_config(train)
    with_data(train)
    train.add_argument("--run-dir", type=Path, help="run directory (default: <training.output_dir>/<name>/<stamp>)")
    train.add_argument("--export", action="store_true", help="also export the trained model into the store")
    with_store(train)
    train.set_defaults(handler=_train)

    evaluate = commands.add_parser(
        "evaluate",
        help="test metrics of an exported artifact or a run, encoded from raw rows",
        description="Evaluate on the test split (AUC, logloss, HR@K, NDCG@K). An artifact is evaluated through "
        "its own schema.json and TorchScript model, exactly as the service scores; the data settings come "
        "from its metadata unless overridden.",
    )
    source = evaluate.add_mutually_exclusive_group(required=True)
    source.add_argument("--artifact", type=Path, help="artifact version directory, e.g. models_store/deepfm/1")
    source.add_argument("--run", type=Path, help="run directory written by `deepfm train`")
    evaluate.add_argument(
        "--data", metavar="PATH",
        help=f"where the data is on this machine (default for MovieLens: ${DATA_DIR_ENV}; else the recorded path)",
    )  # fmt: skip
    with_overrides(evaluate)
    evaluate.set_defaults(handler=_evaluate)

    init = commands.add_parser(
        "init",
        help="print the experiment YAML for a click log, with the fields inferred from it",
        description="Print a complete experiment config for --data: the table's fields as inferred from its "
        "training rows (every key of a field is in the README). Edit it and train with --config.",
    )
    with_config(init)
    with_data(init)
    init.set_defaults(handler=_init)

    export = commands.add_parser(
        "export",
        help="export a run as the next artifact version",
        description="Write model.pt (TorchScript, probabilities), model.onnx (its ONNX form, where the exporter "
        "captures the model and ONNX Runtime scores as it does), schema.json and metadata.json as the next "
        "version under <store>/<name>/, atomically.",
    )
    export.add_argument("--run", type=Path, required=True, help="run directory written by `deepfm train`")
    with_store(export)
    export.set_defaults(handler=_export)

    serve = commands.add_parser(
        "serve",
        help="serve the models store over HTTP",
        description="Run the scoring service (settings: DEEPFM_SERVE_* environment variables).",
    )
    serve.add_argument("--host", default=None, help="bind address (default: DEEPFM_SERVE_HOST or 127.0.0.1)")
    serve.add_argument("--port", type=int, default=None, help="port (default: DEEPFM_SERVE_PORT or 8000)")
    serve.add_argument("--workers", type=int, default=None, help="worker processes (default: DEEPFM_SERVE_WORKERS)")
    serve.set_defaults(handler=_serve)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `deepfm` command."""
    keep_freed_memory()
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        return int(args.handler(args))
    except DeepFMError as exc:
        print(f"deepfm: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

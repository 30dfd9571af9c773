"""The `deepfm` command: train, evaluate and export models, and serve them.

deepfm train --config configs/deepfm_movielens.yaml [--override training.lr=5e-4 ...] [--export]
deepfm evaluate --artifact models_store/deepfm/1
deepfm export --run runs/deepfm_movielens/<run> [--store models_store]
deepfm serve [--host 0.0.0.0] [--port 8000] [--workers 1]

`python -m deepfm` is the same command. Training runs on a GPU when there is one (training.device=auto);
under torchrun it is data-parallel over the processes it starts (see `deepfm train --help`).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from deepfm.config import ExperimentConfig
from deepfm.errors import DeepFMError

DEFAULT_STORE = "models_store"
TRAIN_DESCRIPTION = """\
Train a model with early stopping on validation AUC, test it, and write config.yaml, metrics.json,
curves.png and checkpoint.pt into a run directory.

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


def _config(args: argparse.Namespace) -> ExperimentConfig:
    base = ExperimentConfig.from_yaml(args.config) if args.config else ExperimentConfig()
    return base.with_overrides(args.override)


def _train(args: argparse.Namespace) -> int:
    from deepfm.training.distributed import process_group
    from deepfm.training.experiment import export_run, train_experiment

    config = _config(args)
    with process_group(config.training.device) as world:
        run = train_experiment(config, args.run_dir)
    if not world.is_primary:
        return 0
    print(json.dumps({"run_dir": str(run.run_dir), "test": run.metrics["test"]}, indent=2))
    if args.export:
        print(f"exported {export_run(run, args.store, args.name)}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from deepfm.artifact import load_artifact
    from deepfm.training.experiment import evaluate_scorer_on_raw_test, load_run
    from deepfm.training.trainer import probabilities_of

    if args.artifact:
        artifact = load_artifact(args.artifact)
        config = ExperimentConfig.from_dict(artifact.metadata["config"]).with_overrides(args.override)
        metrics = evaluate_scorer_on_raw_test(config, artifact.schema, artifact.predict)
    else:
        run = load_run(args.run)
        config = run.config.with_overrides(args.override)
        metrics = evaluate_scorer_on_raw_test(config, run.schema, probabilities_of(run.model))
    print(json.dumps(metrics, indent=2))
    return 0


def _export(args: argparse.Namespace) -> int:
    from deepfm.training.experiment import export_run, load_run

    print(f"exported {export_run(load_run(args.run), args.store, args.name)}")
    return 0


def _serve(args: argparse.Namespace) -> int:
    from service.__main__ import main as serve

    given = {"host": args.host, "port": args.port, "workers": args.workers}
    return serve([f"--{name}={value}" for name, value in given.items() if value is not None])


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(prog="deepfm", description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def with_config(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--config", type=Path, help="experiment YAML (default: built-in DeepFM on MovieLens-100K)")
        sub.add_argument(
            "--override", "-o", action="append", default=[], metavar="KEY=VALUE",
            help="override a config value, e.g. training.lr=5e-4 or data.data_dir=/data/ml-100k (repeatable)",
        )  # fmt: skip

    def with_store(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--store", default=DEFAULT_STORE, help=f"models store root (default {DEFAULT_STORE})")
        sub.add_argument("--name", help="artifact model name (default: the config's model.name)")

    train = commands.add_parser(
        "train",
        help="train and test a model on MovieLens-100K; writes a run directory",
        description=TRAIN_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    with_config(train)
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
    evaluate.add_argument("--override", "-o", action="append", default=[], metavar="KEY=VALUE")
    evaluate.set_defaults(handler=_evaluate)

    export = commands.add_parser(
        "export",
        help="export a run as the next artifact version",
        description="Write model.pt (TorchScript, probabilities), schema.json and metadata.json as the next "
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

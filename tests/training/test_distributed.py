"""Data-parallel training under the real torchrun launcher (2 CPU processes, gloo, loopback), devices.

The torchrun tests start `python -m torch.distributed.run` (the module behind the `torchrun` command)
with `--standalone`, so the rendezvous is on 127.0.0.1 and nothing leaves the machine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch

from deepfm.artifact import list_versions, load_artifact
from deepfm.config import ExperimentConfig, MovieLensConfig, TrainingConfig
from deepfm.data.dataset import CTRDataset, shard
from deepfm.data.encoding import FeatureEncoder
from deepfm.data.movielens import MovieLensAdapter
from deepfm.errors import ConfigError, DeepFMError
from deepfm.training.distributed import World, process_group, resolve_device
from deepfm.training.experiment import load_run, train_experiment
from deepfm.training.trainer import Trainer, evaluate, probabilities_of
from tools.processes import REPO, run_server

WORKER = Path(__file__).with_name("distributed_worker.py")
NUM_PROCESSES = 2
SMALL = [
    "data.max_users=100",
    "data.num_eval_negatives=49",
    "data.num_val_negatives=19",
    "model.dnn.hidden_units=[32,16]",
    "training.epochs=2",
    "training.batch_size=256",
    "training.eval_batch_size=1000",  # several evaluation batches per rank, the last rank's block shorter
    "training.progress=false",
    "training.num_threads=1",
    "training.device=cpu",
]


def torchrun(out: Path, *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    """`torchrun --standalone --nproc-per-node=2 distributed_worker.py OUT ARGS...`; fails on a non-zero exit."""
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={NUM_PROCESSES}",
        str(WORKER), str(out), *args,
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def rank_outcomes(out: Path) -> list[dict[str, Any]]:
    """What each rank ended with (distributed_worker.py): state_dict, epochs, best_epoch, test."""
    return [torch.load(out / f"rank{rank}.pt", weights_only=True) for rank in range(NUM_PROCESSES)]


def assert_identical(outcomes: list[dict[str, Any]]) -> None:
    """The same weights and batch-norm statistics, and the same decisions, on every rank."""
    first, *others = outcomes
    for other in others:
        assert other["state_dict"].keys() == first["state_dict"].keys()
        for name, value in first["state_dict"].items():
            assert torch.equal(other["state_dict"][name], value), f"{name} differs between ranks"
        # Training loss, validation metrics and learning rate per epoch, the kept epoch, the test metrics.
        assert (other["epochs"], other["best_epoch"], other["test"]) == (
            first["epochs"],
            first["best_epoch"],
            first["test"],
        )


def test_torchrun_trains_one_model_that_is_exported_once_and_served(tmp_path: Path, movielens_dir: Path) -> None:
    runs, store = tmp_path / "runs", tmp_path / "store"
    overrides = [*SMALL, f"training.output_dir={runs}"]
    args = [arg for item in overrides for arg in ("-o", item)]
    result = torchrun(tmp_path, "cli", "train", *args, "--export", "--store", str(store))

    # One model: every rank ends with the same weights, batch-norm statistics and decisions.
    outcomes = rank_outcomes(tmp_path)
    assert_identical(outcomes)
    # Rank 0 alone wrote: one run directory, one artifact version, one JSON summary on stdout.
    (run_dir,) = (runs / "deepfm_movielens").iterdir()
    assert list_versions(store, "deepfm") == [1]
    assert result.stdout.count('"run_dir"') == 1 and result.stdout.count("exported ") == 1
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert len(metrics["history"]["epochs"]) == 2
    run = load_run(run_dir)
    torch.testing.assert_close(run.model.state_dict(), outcomes[0]["state_dict"], rtol=0, atol=0)
    assert outcomes[0]["test"] == metrics["test"]

    # The test metrics, sharded over the ranks and gathered, are what one process computes for those weights.
    config = ExperimentConfig().with_overrides(overrides)
    assert isinstance(config.data, MovieLensConfig)
    adapter = MovieLensAdapter(config.data)
    test = adapter.build()[3]
    assert len(test) > NUM_PROCESSES * config.training.eval_batch_size  # both ranks scored some batches
    assert evaluate(probabilities_of(run.model), test, config.training.eval_batch_size) == metrics["test"]

    # The same config and seed in one process reaches the same quality.
    single = train_experiment(config, tmp_path / "single")
    assert abs(single.metrics["test"]["auc"] - metrics["test"]["auc"]) < 0.01

    # The artifact is a CPU artifact that the service serves as it is.
    artifact = load_artifact(store / "deepfm" / "1")
    raw = adapter.raw_rows(adapter.splits["test"].iloc[:50])
    expected = artifact.predict(
        {k: torch.from_numpy(v) for k, v in FeatureEncoder(artifact.schema).encode_frame(raw).features.items()}
    )
    instances = json.loads(raw.to_json(orient="records"))
    env = {"DEEPFM_SERVE_MODELS_STORE": str(store), "DEEPFM_SERVE_DEFAULT_MODEL": "deepfm"}
    with run_server(tmp_path, env) as server:
        response = httpx.post(f"{server.url}/predict", json={"instances": instances}, timeout=30)
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["model"], body["version"]) == ("deepfm", 1)
    np.testing.assert_allclose(body["predictions"], expected.numpy(), rtol=0, atol=1e-6)


def test_a_rank_whose_rows_index_only_the_padding_row_trains_with_gloo(tmp_path: Path) -> None:
    """PyTorch #87497: gloo failed when one process's batch indexed only an embedding's padding_idx."""
    torchrun(tmp_path, "padding")
    outcomes = rank_outcomes(tmp_path)
    assert_identical(outcomes)
    assert len(outcomes[0]["epochs"]) == 2
    state = outcomes[0]["state_dict"]
    tables = {name: v for name, v in state.items() if "embeddings." in name and name.endswith(".weight")}
    assert tables
    for name, table in tables.items():
        assert torch.count_nonzero(table[0]) == 0, f"{name}: the padding (OOV) row was updated"
        assert torch.count_nonzero(table[1:]) > 0, name


# ---- one process: the command, sharding rules and devices ----------------------------------------


def test_python_m_deepfm_is_the_command_and_its_help_says_how_to_launch() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "deepfm", "train", "--help"], capture_output=True, text=True, timeout=60, check=True
    )
    for line in ("-o training.device=cuda", "torchrun --standalone --nproc-per-node=N -m deepfm train", "--nnodes=N"):
        assert line in result.stdout


@pytest.mark.parametrize(("num_rows", "world_size", "batch_size"), [(10, 2, 3), (11, 2, 2), (7, 3, 1), (2, 4, 1)])
def test_rank_batches_together_are_the_single_process_batches(num_rows: int, world_size: int, batch_size: int) -> None:
    rows = torch.arange(num_rows)
    dataset = CTRDataset({"row": rows}, rows.float())
    order = torch.randperm(num_rows, generator=torch.Generator().manual_seed(3))
    per_rank = [
        [f["row"] for f, _ in dataset.batches(batch_size, torch.Generator().manual_seed(3), rank, world_size)]
        for rank in range(world_size)
    ]
    steps = dataset.num_batches(batch_size, world_size)
    assert all(len(batches) == steps for batches in per_rank)  # the same number of steps on every rank
    padded = torch.cat([order] * world_size)[: -(-num_rows // world_size) * world_size]  # wrapped round
    for step in range(steps):
        together = torch.stack([batches[step] for batches in per_rank], dim=1).flatten()
        width = batch_size * world_size
        assert torch.equal(together, padded[step * width : (step + 1) * width])
    seen = torch.cat([torch.cat(batches) for batches in per_rank])
    assert set(seen.tolist()) == set(range(num_rows)) and len(seen) - num_rows < world_size


def test_shard_rejects_a_rank_outside_the_world() -> None:
    with pytest.raises(ValueError, match="rank 2"):
        shard(torch.arange(4), 2, 2)


def test_a_plain_process_is_a_world_of_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with process_group("cpu") as world:
        assert world == World(0, 1, torch.device("cpu"))
        assert world.sum([1.5, 2]) == [1.5, 2] and world.is_primary


def test_a_torchrun_process_outside_the_process_group_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(DeepFMError, match="WORLD_SIZE=2"):
        World.current("cpu")


def test_device_settings() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto") == (torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu"))
    with pytest.raises(ConfigError, match=r"unknown training\.device .gpu."):
        resolve_device("gpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            resolve_device("cuda")
        with pytest.raises(ConfigError, match=r"training\.amp needs a CUDA device"):
            Trainer(torch.nn.Linear(1, 1), TrainingConfig(amp=True))


def test_the_global_batch_must_split_evenly() -> None:
    assert World(1, 4, torch.device("cpu")).share(2048) == 512
    with pytest.raises(ConfigError, match="batch_size=2048 must be a multiple of the 3 processes"):
        World(0, 3, torch.device("cpu")).share(2048)

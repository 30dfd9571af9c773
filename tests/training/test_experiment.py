"""Training on a small MovieLens slice, the run directory, export, parity and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from deepfm.artifact import list_versions, load_artifact
from deepfm.cli import main
from deepfm.config import ExperimentConfig
from deepfm.data.encoding import FeatureEncoder
from deepfm.data.movielens import MovieLensAdapter
from deepfm.errors import ConfigError
from deepfm.training.experiment import RunResult, export_run, load_run, train_experiment
from deepfm.training.trainer import Trainer

SMALL = [
    "data.max_users=40",
    "data.num_eval_negatives=30",
    "model.dnn.hidden_units=[32,16]",
    "training.epochs=2",
    "training.batch_size=256",
    "training.progress=false",
    "training.num_threads=1",  # small batches gain nothing from a second thread
]
UNKNOWN_ROWS = pd.DataFrame(
    {
        "user_id": [99999, 1, None, 5],
        "movie_id": [1, 99999, 3, None],
        "gender": ["X", "M", None, "F"],
        "age": [0, 200, None, 17],
        "occupation": ["astronaut", "writer", None, "student"],
        "zip_code": ["XXXXX", "1", None, 85711],
        "genres": [["Nonexistent", "Comedy"], [], None, "Drama|Sci-Fi|Made-up"],
    }
)


SMALL_BLOCKS = {
    "deepfm": [],
    "xdeepfm": ["model.cin.layer_sizes=[8,8]"],
    "attention_deepfm": ["model.attention.dim=16"],
}


def small_config(model: str, tmp_path: Path) -> ExperimentConfig:
    return ExperimentConfig().with_overrides(
        [f"model.name={model}", *SMALL, *SMALL_BLOCKS[model], f"training.output_dir={tmp_path}"]
    )


@pytest.fixture(scope="module", params=["deepfm", "xdeepfm", "attention_deepfm"])
def trained(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, movielens_dir: Path) -> RunResult:
    tmp = tmp_path_factory.mktemp(request.param)
    return train_experiment(small_config(request.param, tmp), tmp / "run")


def test_run_directory_holds_config_metrics_curves_and_checkpoint(trained: RunResult) -> None:
    files = {p.name for p in trained.run_dir.iterdir()}
    assert {"config.yaml", "metrics.json", "curves.png", "checkpoint.pt"} <= files
    metrics = json.loads((trained.run_dir / "metrics.json").read_text())
    for key in ("auc", "logloss", "hr@5", "hr@10", "hr@20", "ndcg@5", "ndcg@10", "ndcg@20"):
        assert 0.0 <= metrics["test"][key] <= (1.0 if key != "logloss" else 10.0), key
    assert metrics["test"]["auc"] > 0.6  # two epochs on 40 users beat chance clearly
    assert len(metrics["history"]["epochs"]) == 2
    assert ExperimentConfig.from_yaml(trained.run_dir / "config.yaml") == trained.config


def test_exported_artifact_matches_eager_model_on_raw_rows(trained: RunResult, tmp_path: Path) -> None:
    artifact = load_artifact(export_run(trained, tmp_path / "store"))
    assert artifact.schema == trained.schema
    adapter = MovieLensAdapter(trained.config.data)  # type: ignore[arg-type]
    adapter.build()
    test_rows = adapter.splits["test"].iloc[:1020]
    raw = pd.concat([adapter.raw_rows(test_rows), UNKNOWN_ROWS], ignore_index=True)
    training_time = {k: v for k, v in adapter.dataset(test_rows).features.items()}
    unknown = adapter.encoder.encode_frame(UNKNOWN_ROWS).features
    eager_input = {k: torch.cat([v, torch.from_numpy(unknown[k])]) for k, v in training_time.items()}
    with torch.no_grad():
        eager = torch.sigmoid(trained.model(eager_input)).numpy()
    served = FeatureEncoder(artifact.schema).encode_frame(raw).features
    for batch_size in (1, 7, 1024):
        rows = slice(len(raw) - batch_size, len(raw))  # always includes the unknown rows
        batch = {k: torch.from_numpy(v[rows]) for k, v in served.items()}
        scores = artifact.predict(batch).numpy()
        assert scores.shape == (batch_size,)
        np.testing.assert_allclose(scores, eager[rows], rtol=0, atol=1e-6)


def test_unknown_values_encode_to_oov(trained: RunResult) -> None:
    encoded = FeatureEncoder(trained.schema).encode_frame(UNKNOWN_ROWS).features
    assert encoded["user_id"][0] == 0 and encoded["movie_id"][1] == 0
    assert encoded["gender"][0] == 0 and encoded["occupation"][0] == 0 and encoded["zip_prefix"][0] == 0
    assert encoded["age"][0] == 0 and encoded["age"][2] == 0  # below the first bucket; missing
    assert (encoded["genres"][2] == 0).all()


def test_export_versions_increase_and_checkpoint_reloads(trained: RunResult, tmp_path: Path) -> None:
    store = tmp_path / "store"
    first, second = export_run(trained, store), export_run(trained, store, "other")
    assert first.name == "1" and second.name == "1" and second.parent.name == "other"
    export_run(load_run(trained.run_dir), store)
    assert list_versions(store, trained.config.model.name) == [1, 2]
    reloaded = load_run(trained.run_dir).model
    batch = {k: v[:64] for k, v in MovieLensAdapter(trained.config.data).build()[3].features.items()}  # type: ignore[arg-type]
    with torch.no_grad():
        torch.testing.assert_close(reloaded(batch), trained.model(batch), rtol=0, atol=0)


def test_training_is_reproducible(tmp_path: Path, movielens_dir: Path) -> None:
    config = small_config("deepfm", tmp_path).with_overrides(["training.epochs=1", "data.max_users=15"])
    first = train_experiment(config, tmp_path / "a").metrics["test"]
    second = train_experiment(config, tmp_path / "b").metrics["test"]
    assert first == second


def test_weight_averaging_is_what_is_validated_and_kept(tmp_path: Path, movielens_dir: Path) -> None:
    config = small_config("deepfm", tmp_path).with_overrides(["training.epochs=1", "data.max_users=15"])
    plain = train_experiment(config, tmp_path / "plain").metrics["test"]
    latest = train_experiment(config.with_overrides(["training.ema_epochs=1e-9"]), tmp_path / "latest").metrics["test"]
    averaged = train_experiment(config.with_overrides(["training.ema_epochs=0.5"]), tmp_path / "ema").metrics["test"]
    assert latest["auc"] == pytest.approx(plain["auc"], abs=1e-6)  # an average of the last step only
    assert averaged["auc"] != pytest.approx(plain["auc"], abs=1e-6)
    with pytest.raises(ConfigError, match="ema_epochs"):
        Trainer(torch.nn.Linear(1, 1), config.with_overrides(["training.ema_epochs=-1"]).training)


def test_cli_train_export_evaluate(tmp_path: Path, capsys: pytest.CaptureFixture[str], movielens_dir: Path) -> None:
    overrides = [arg for o in [*SMALL, "training.epochs=1", f"training.output_dir={tmp_path}"] for arg in ("-o", o)]
    store = tmp_path / "store"
    assert (
        main(["train", "--config", "configs/deepfm_movielens.yaml", *overrides, "--export", "--store", str(store)]) == 0
    )
    trained = json.loads(capsys.readouterr().out.split("exported")[0])
    assert (store / "deepfm" / "1" / "model.pt").is_file()
    assert main(["evaluate", "--artifact", str(store / "deepfm" / "1")]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["auc"] == pytest.approx(trained["test"]["auc"], abs=1e-6)
    assert main(["export", "--run", trained["run_dir"], "--store", str(store)]) == 0
    assert list_versions(store, "deepfm") == [1, 2]
    recorded = load_artifact(store / "deepfm" / "1").metadata
    assert recorded["config"]["data"]["path"] == movielens_dir.name  # by name: this machine's path stays here
    assert recorded["metrics"]["data"] == movielens_dir.name


def test_cli_evaluate_finds_the_data_by_flag_or_environment(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], movielens_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    overrides = [arg for o in [*SMALL, "training.epochs=1", f"training.output_dir={tmp_path}"] for arg in ("-o", o)]
    store = tmp_path / "store"
    assert main(["train", *overrides, "--export", "--store", str(store)]) == 0
    trained = json.loads(capsys.readouterr().out.split("exported")[0])
    artifact = str(store / "deepfm" / "1")
    monkeypatch.delenv("DEEPFM_DATA_DIR")
    monkeypatch.chdir(tmp_path)  # the recorded name, ml-100k, is no folder here

    assert main(["evaluate", "--artifact", artifact]) == 2
    assert "not found" in capsys.readouterr().err
    assert main(["evaluate", "--artifact", artifact, "--data", str(movielens_dir)]) == 0
    assert json.loads(capsys.readouterr().out)["auc"] == pytest.approx(trained["test"]["auc"], abs=1e-6)
    monkeypatch.setenv("DEEPFM_DATA_DIR", str(movielens_dir))
    assert main(["evaluate", "--artifact", artifact]) == 0
    assert json.loads(capsys.readouterr().out)["auc"] == pytest.approx(trained["test"]["auc"], abs=1e-6)


def test_cli_reports_config_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "-o", "training.nope=1"]) == 2
    assert "unknown key 'training.nope'" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["train", "init", "evaluate", "export", "serve"])
def test_cli_help_explains_each_command(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert len(capsys.readouterr().out.splitlines()) > 5

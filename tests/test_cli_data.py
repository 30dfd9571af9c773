"""`deepfm train --data` and `deepfm init` on a click log: the inferred config round trip, and a one-line error
with a non-zero exit for each kind of bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml
from synthetic_data import click_log, write_movielens

from deepfm.cli import main
from deepfm.config import ExperimentConfig, TableConfig, XDeepFMConfig

QUICK = ["-o", "training.epochs=1", "-o", "training.progress=false", "-o", "training.batch_size=512"]


@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """clicks.csv and a few broken files beside it."""
    root = tmp_path_factory.mktemp("logs")
    log = click_log(3_000, seed=5)
    log.to_csv(root / "clicks.csv", index=False)
    log.assign(clicked=log["clicked"].where(log.index != 17, 2)).to_csv(root / "two.csv", index=False)
    (root / "empty.csv").write_text("")
    log.astype({"price": object}).assign(price=log["price"].where(log.index != 40, "abc")).to_csv(
        root / "mixed.csv", index=False
    )
    return root


def test_init_prints_the_inferred_config_that_trains_as_given(
    logs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["init", "--data", str(logs / "clicks.csv"), "--label", "clicked", "--time-column", "ts"]) == 0
    printed = capsys.readouterr().out
    (tmp_path / "my.yaml").write_text(printed)
    config = ExperimentConfig.from_yaml(tmp_path / "my.yaml")
    assert isinstance(config.data, TableConfig) and config.data.time_column == "ts"
    assert {f.name: f.type for f in config.data.fields} == {
        "user": "sparse", "ad_id": "sparse", "device": "sparse", "price": "dense", "tags": "sequence", "hour": "sparse",
    }  # fmt: skip
    assert config.name == "deepfm_clicks"

    run_dir = tmp_path / "run"
    overrides = [*QUICK, "-o", f"training.output_dir={tmp_path}"]
    assert main(["train", "--config", str(tmp_path / "my.yaml"), "--run-dir", str(run_dir), *overrides]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["config"] == str(run_dir / "config.yaml")
    saved = ExperimentConfig.from_yaml(run_dir / "config.yaml")
    assert saved.data == config.data  # the fields the run used: to edit and pass back


def test_train_data_without_config_infers_and_saves_the_fields(
    logs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["train", "--data", str(logs / "clicks.csv"), "--label", "clicked", "--model", "xdeepfm"]
    assert main([*args, "--run-dir", str(tmp_path / "run"), *QUICK, "-o", "model.cin.layer_sizes=[8]"]) == 0
    summary = json.loads(capsys.readouterr().out)

    saved = ExperimentConfig.from_yaml(tmp_path / "run" / "config.yaml")
    assert isinstance(saved.model, XDeepFMConfig) and saved.model.cin.layer_sizes == (8,)
    assert isinstance(saved.data, TableConfig) and len(saved.data.fields) == 7  # ts is a feature without --time-column
    assert 0.0 <= summary["test"]["auc"] <= 1.0


def test_a_movielens_folder_is_recognised(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = write_movielens(tmp_path / "ml-1m", "ml-1m", 20, 30, 8)

    assert main(["init", "--data", str(root)]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["data"]["kind"] == "movielens" and printed["data"]["path"] == str(root)
    assert main(["init", "--data", str(root), "--label", "rating"]) == 2
    assert "--label and --time-column are for tables" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--data", "{logs}/absent.csv", "--label", "clicked"], "data file {logs}/absent.csv not found"),
        (["--data", "{logs}/clicks.csv", "--label", "click"], "no label column 'click'; columns: ['user', "),
        (
            ["--data", "{logs}/two.csv", "--label", "clicked"],
            "label column 'clicked' must hold 0/1 or booleans; row 17 has 2",
        ),
        (["--data", "{logs}/empty.csv", "--label", "clicked"], "data file {logs}/empty.csv is empty"),
        (["--data", "{logs}/mixed.csv", "--label", "clicked"], "column 'price' mixes numbers and text (row 40: 'abc')"),
        (["--config", "{logs}/absent.yaml"], "data.fields[campaign] reads column 'campaign', which the data lacks"),
        (["--config", "{logs}/dense.yaml"], "mixed.csv: row 40: field 'price' needs a number, got 'abc'"),
        (["--config", "{logs}/badkey.yaml"], "unknown keys in data.fields[price]: ['bukets']"),
        (["--config", "{logs}/badcombo.yaml"], "data.fields[price]: key 'max_length' does not go with a dense field"),
        (["--data", "{logs}/clicks.csv", "--time-column", "when"], "no time column 'when'"),
        (["--data", "{logs}/clicks.csv", "--label", "clicked", "-o", "model.cin.layer_sizes=[8]"], "section 'cin'"),
    ],
)
def test_bad_input_is_one_line_and_a_nonzero_exit(
    logs: Path, args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    table = {"kind": "table", "path": str(logs / "clicks.csv"), "label": "clicked"}
    configs = {
        "absent": {**table, "fields": [{"name": "user"}, {"name": "campaign"}]},
        "dense": {**table, "path": str(logs / "mixed.csv"), "fields": [{"name": "price", "type": "dense"}]},
        "badkey": {**table, "fields": [{"name": "price", "bukets": 4}]},
        "badcombo": {**table, "fields": [{"name": "price", "type": "dense", "max_length": 3}]},
    }
    for name, data in configs.items():
        (logs / f"{name}.yaml").write_text(yaml.safe_dump({"data": data}))

    code = main(["train", *[a.format(logs=logs) for a in args], *QUICK])

    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("deepfm: error: "), err
    assert message.format(logs=logs) in err


def test_parquet_needs_nothing_but_pyarrow(logs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    frame = pd.read_csv(logs / "clicks.csv")
    frame.assign(tags=frame["tags"].str.split("|")).to_parquet(tmp_path / "clicks.parquet")

    assert main(["init", "--data", str(tmp_path / "clicks.parquet"), "--label", "clicked"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert {"name": "tags", "type": "sequence"} in printed["data"]["fields"]


@pytest.mark.parametrize(
    ("command", "message"),
    [
        (["export", "--run", "{tmp}/nope"], "cannot read (No such file or directory)"),
        (["export", "--run", "{tmp}/garbage"], "not a checkpoint of `deepfm train`"),
        (["evaluate", "--run", "{tmp}/nope"], "is {tmp}/nope a run directory"),
        (["evaluate", "--artifact", "{tmp}/nope"], "metadata.json: missing from the artifact"),
    ],
)
def test_a_bad_run_or_artifact_path_is_one_line_and_a_nonzero_exit(
    tmp_path: Path, command: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "garbage").mkdir()
    (tmp_path / "garbage" / "checkpoint.pt").write_bytes(b"not a checkpoint")
    assert main([a.format(tmp=tmp_path) for a in command]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("deepfm: error: "), err
    assert message.format(tmp=tmp_path) in err

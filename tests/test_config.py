"""ExperimentConfig: defaults, the data-dir environment variable, YAML round trip and overrides."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from deepfm.config import DATA_DIR_ENV, DEFAULT_DATA_DIR, DataConfig, ExperimentConfig, ModelConfig
from deepfm.errors import ConfigError


def test_defaults_describe_deepfm_on_movielens(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)

    config = ExperimentConfig()

    assert config.name == "deepfm_movielens"
    assert config.data.data_dir == DEFAULT_DATA_DIR == "data/ml-100k"
    assert config.data.protocol == "leave_one_out"
    assert (config.data.num_negatives, config.data.num_eval_negatives) == (4, 999)
    assert config.data.max_users == 0
    assert config.model.name == "deepfm"
    assert config.model.dnn_hidden_units == (256, 128, 64)
    assert config.feature.fm_embed_dim == 16
    assert config.feature.embedding_dims == {}
    assert config.training.lr == 2e-3
    assert config.training.num_threads == 1


def test_data_dir_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path))

    assert ExperimentConfig().data.data_dir == str(tmp_path)
    assert DataConfig(data_dir="explicit").data_dir == "explicit"


def test_configs_are_frozen() -> None:
    with pytest.raises(AttributeError):
        ExperimentConfig().training.lr = 1.0  # type: ignore[misc]


def test_hyperparameters_are_every_model_field_but_the_name() -> None:
    params = ModelConfig(name="xdeepfm", cin_layer_sizes=(8,)).hyperparameters()

    assert "name" not in params
    assert params["cin_layer_sizes"] == (8,)
    assert params["dnn_dropout"] == 0.2


def test_to_dict_is_plain_values() -> None:
    data = ExperimentConfig().to_dict()

    assert data["model"]["dnn_hidden_units"] == [256, 128, 64]
    assert set(data) == {"name", "data", "feature", "model", "training"}


def test_yaml_round_trip(tmp_path: Path) -> None:
    config = ExperimentConfig().with_overrides(
        ["model.dnn_hidden_units=[32, 16]", "feature.embedding_dims={user_id: 24}", "training.lr=5e-4"]
    )
    path = tmp_path / "experiment.yaml"

    config.to_yaml(path)
    restored = ExperimentConfig.from_yaml(path)

    assert restored == config
    assert restored.model.dnn_hidden_units == (32, 16)


def test_partial_yaml_keeps_the_other_defaults(tmp_path: Path) -> None:
    path = tmp_path / "small.yaml"
    path.write_text("model:\n  name: xdeepfm\ntraining:\n  epochs: 2\n  lr: 2e-3\n")

    config = ExperimentConfig.from_yaml(path, overrides=["training.epochs=5"])

    assert config.model.name == "xdeepfm"
    assert config.training.epochs == 5  # an override wins over the file
    assert config.training.lr == 2e-3  # YAML 1.1 reads 2e-3 as a string: coerced to a float
    assert config.training.batch_size == 2048


def test_empty_yaml_is_the_default_config(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("")

    assert ExperimentConfig.from_yaml(path) == ExperimentConfig()


@pytest.mark.parametrize(
    ("override", "section", "key", "value"),
    [
        ("training.lr=5e-4", "training", "lr", 5e-4),
        ("training.lr=0.01", "training", "lr", 0.01),
        ("training.lr=1", "training", "lr", 1.0),
        ("training.epochs=3", "training", "epochs", 3),
        ("training.progress=false", "training", "progress", False),
        ("model.dnn_hidden_units=[64, 32]", "model", "dnn_hidden_units", (64, 32)),
        ("model.dnn_hidden_units=[]", "model", "dnn_hidden_units", ()),
        (
            "feature.embedding_dims={user_id: 32, movie_id: 8}",
            "feature",
            "embedding_dims",
            {"user_id": 32, "movie_id": 8},
        ),
        ("data.protocol=random_split", "data", "protocol", "random_split"),
        ("data.val_fraction=0.25", "data", "val_fraction", 0.25),
        (" model.name = xdeepfm", "model", "name", "xdeepfm"),
    ],
)
def test_overrides(override: str, section: str, key: str, value: Any) -> None:
    config = ExperimentConfig().with_overrides([override])

    actual = getattr(getattr(config, section), key)
    assert actual == value
    assert type(actual) is type(value)


def test_top_level_override_and_order_of_overrides() -> None:
    config = ExperimentConfig().with_overrides(["name=run_a", "training.epochs=1", "training.epochs=7"])

    assert config.name == "run_a"
    assert config.training.epochs == 7


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("training.lr", "must look like section.key=value"),
        ("training.nope=1", "unknown key 'training.nope'"),
        ("bogus.lr=1", "no config section 'bogus'"),
        ("training.lr.x=1", "no config section 'lr'"),
        ("training.epochs=abc", "training.epochs must be a int"),
        ("training.epochs=2.5", "training.epochs must be a int"),
        ("training.epochs=true", "training.epochs must be a int"),
        ("training.lr=fast", "training.lr must be a float"),
        ("training.progress=1", "training.progress must be a bool"),
        ("model.dnn_hidden_units=64", "model.dnn_hidden_units must be a list"),
        ("model.dnn_hidden_units=[64, x]", "model.dnn_hidden_units must be a int"),
        ("feature.embedding_dims=[1]", "feature.embedding_dims must be a mapping"),
        ("feature.embedding_dims={user_id: big}", "feature.embedding_dims must be a int"),
        ("data=5", "data must be a mapping"),
    ],
)
def test_bad_overrides_raise_config_error(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ExperimentConfig().with_overrides([override])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("bogus: 1\n", r"unknown keys in config: \['bogus'\]"),
        ("training:\n  nope: 1\n", r"unknown keys in training: \['nope'\]"),
        ("training: 3\n", "training must be a mapping"),
        ("model:\n  dnn_dropout: high\n", "model.dnn_dropout must be a float"),
        ("- a\n- b\n", "must be a mapping"),
        ("training: [unclosed\n", "not valid YAML"),
    ],
)
def test_bad_yaml_raises_config_error(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)

    with pytest.raises(ConfigError, match=message):
        ExperimentConfig.from_yaml(path)


def test_missing_yaml_file_raises_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config"):
        ExperimentConfig.from_yaml(tmp_path / "absent.yaml")

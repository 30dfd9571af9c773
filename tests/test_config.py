"""ExperimentConfig: defaults, the data-dir environment variable, YAML round trip, overrides, the data kinds
and model configs, and the migration of the earlier shape."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from deepfm.config import (
    DATA_DIR_ENV,
    DEFAULT_DATA_DIR,
    MODEL_CONFIGS,
    AttentionDeepFMConfig,
    CINConfig,
    DeepFMConfig,
    ExperimentConfig,
    FieldConfig,
    MovieLensConfig,
    TableConfig,
    XDeepFMConfig,
    located,
    migrate,
    portable,
)
from deepfm.data.schema import Transform, TransformKind
from deepfm.errors import ConfigError
from deepfm.models import build_model, model_hyperparameters


def test_defaults_describe_deepfm_on_movielens(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)

    config = ExperimentConfig()

    assert config.name == "deepfm_movielens"
    assert isinstance(config.data, MovieLensConfig)
    assert config.data.path == DEFAULT_DATA_DIR == "data/ml-100k"
    assert config.data.protocol == "leave_one_out"
    assert (config.data.num_negatives, config.data.num_eval_negatives) == (4, 999)
    assert config.data.max_users == 0
    assert config.model.name == "deepfm"
    assert isinstance(config.model, DeepFMConfig)
    assert config.model.dnn.hidden_units == (256, 128, 64)
    assert config.feature.fm_embed_dim == 16
    assert config.feature.embedding_dims == {}
    assert config.training.lr == 2e-3
    assert config.training.num_threads == 1


def test_data_dir_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path))

    assert ExperimentConfig().data.path == str(tmp_path)
    assert MovieLensConfig(path="explicit").path == "explicit"


def test_configs_are_frozen() -> None:
    with pytest.raises(AttributeError):
        ExperimentConfig().training.lr = 1.0  # type: ignore[misc]


def test_hyperparameters_flatten_the_blocks_into_the_constructor_arguments() -> None:
    params = XDeepFMConfig(cin=CINConfig(layer_sizes=(8,))).hyperparameters()

    assert "name" not in params
    assert params["cin_layer_sizes"] == (8,)
    assert params["dnn_dropout"] == 0.2


@pytest.mark.parametrize("name", sorted(MODEL_CONFIGS))
def test_each_model_config_holds_exactly_what_its_model_takes(name: str) -> None:
    assert set(MODEL_CONFIGS[name]().hyperparameters()) | {"fm_embed_dim"} == model_hyperparameters(name)


@pytest.mark.parametrize("name", sorted(MODEL_CONFIGS))
def test_model_defaults_are_the_config_defaults(name: str) -> None:
    import inspect

    from deepfm.models import model_class

    signature = inspect.signature(model_class(name)).parameters
    defaults = {**MODEL_CONFIGS[name]().hyperparameters(), "fm_embed_dim": ExperimentConfig().feature.fm_embed_dim}
    assert {k: signature[k].default for k in defaults} == defaults


def test_to_dict_is_plain_values() -> None:
    data = ExperimentConfig().to_dict()

    assert data["model"]["dnn"]["hidden_units"] == [256, 128, 64]
    assert set(data) == {"name", "data", "feature", "model", "training"}


def test_yaml_round_trip(tmp_path: Path) -> None:
    config = ExperimentConfig().with_overrides(
        ["model.dnn.hidden_units=[32, 16]", "feature.embedding_dims={user_id: 24}", "training.lr=5e-4"]
    )
    path = tmp_path / "experiment.yaml"

    config.to_yaml(path)
    restored = ExperimentConfig.from_yaml(path)

    assert restored == config
    assert restored.model.dnn.hidden_units == (32, 16)


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
        ("model.dnn.hidden_units=[64, 32]", "model.dnn", "hidden_units", (64, 32)),
        ("model.dnn.hidden_units=[]", "model.dnn", "hidden_units", ()),
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

    node: Any = config
    for part in section.split("."):
        node = getattr(node, part)
    actual = getattr(node, key)
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
        ("model.dnn.hidden_units=64", "model.dnn.hidden_units must be a list"),
        ("model.dnn.hidden_units=[64, x]", "model.dnn.hidden_units\\[1\\] must be a int"),
        ("model.cin.layer_sizes=[8]", "no config section 'cin'"),
        ("model.name=fm", r"model.name must be one of \['attention_deepfm', 'deepfm', 'xdeepfm'\]"),
        ("data.kind=sql", r"data.kind must be one of \['movielens', 'table'\]"),
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
        ("model:\n  dnn:\n    dropout: high\n", "model.dnn.dropout must be a float"),
        (
            "model:\n  name: deepfm\n  cin:\n    layer_sizes: [8]\n",
            r"unknown keys in model \(name 'deepfm'\): \['cin'\]",
        ),
        ("model:\n  name: xdeepfm\n  attention: {}\n", r"model \(name 'xdeepfm'\): \['attention'\]"),
        ("data:\n  label: click\n", r"unknown keys in data \(kind 'movielens'\): \['label'\]"),
        ("data:\n  kind: table\n  fields: [{type: dense}]\n", r"data.fields\[0\] needs \['name'\]"),
        ("data:\n  kind: table\n  fields: [{name: p, bukets: 3}]\n", r"unknown keys in data.fields\[p\]: \['bukets'\]"),
        (
            "data:\n  kind: table\n  fields: [{name: p, transform: {kind: hash, bins: 3}}]\n",
            r"data.fields\[p\].transform: transform 'hash' takes no \['bins'\]",
        ),
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


def test_overriding_the_model_name_starts_the_model_section_anew_keeping_what_it_shares() -> None:
    config = ExperimentConfig().with_overrides(
        ["model.dnn.dropout=0.3", "model.name=xdeepfm", "model.cin.layer_sizes=[8, 8]"]
    )

    assert isinstance(config.model, XDeepFMConfig)
    assert config.model.dnn.dropout == 0.3  # the DNN block carries over
    assert config.model.cin.layer_sizes == (8, 8)
    back = config.with_overrides(["model.name=attention_deepfm"])
    assert isinstance(back.model, AttentionDeepFMConfig) and back.model.dnn.dropout == 0.3


def test_overriding_the_data_kind_keeps_the_shared_keys() -> None:
    config = ExperimentConfig().with_overrides(["data.kind=table", "data.label=clicked"])

    assert isinstance(config.data, TableConfig)
    assert config.data.label == "clicked"
    assert config.data.path == ExperimentConfig().data.path


def test_table_fields_round_trip_through_yaml_with_only_the_keys_given(tmp_path: Path) -> None:
    path = tmp_path / "table.yaml"
    path.write_text(
        "data:\n  kind: table\n  path: clicks.csv\n  label: clicked\n  fields:\n"
        "    - {name: ad_id, transform: {kind: hash, buckets: 1000}}\n"
        "    - {name: price, type: dense, transform: log1p}\n"
        "    - {name: tags, type: sequence, max_length: 4, combiner: sum}\n"
    )

    config = ExperimentConfig.from_yaml(path)
    assert isinstance(config.data, TableConfig)
    fields = config.data.fields
    assert fields[0] == FieldConfig("ad_id", transform=Transform(TransformKind.HASH, buckets=1000))
    assert fields[1].transform == Transform(TransformKind.LOG1P)
    assert (fields[2].max_length, fields[2].combiner) == (4, "sum")
    assert config.to_dict()["data"]["fields"] == [
        {"name": "ad_id", "type": "sparse", "transform": {"kind": "hash", "buckets": 1000}},
        {"name": "price", "type": "dense", "transform": {"kind": "log1p"}},
        {"name": "tags", "type": "sequence", "max_length": 4, "combiner": "sum"},
    ]
    config.to_yaml(tmp_path / "again.yaml")
    assert ExperimentConfig.from_yaml(tmp_path / "again.yaml") == config


# --- the earlier shape --------------------------------------------------------------------------------------------

OLD_MODEL_SECTION = {  # what every artifact exported before the redesign recorded, whatever its model
    "dnn_hidden_units": [256, 128, 64],
    "dnn_activation": "relu",
    "dnn_dropout": 0.2,
    "dnn_use_batch_norm": True,
    "cin_layer_sizes": [32, 32],
    "cin_split_half": True,
    "attention_num_heads": 2,
    "attention_dim": 64,
    "attention_num_layers": 2,
    "attention_use_residual": True,
    "attention_dropout": 0.0,
}


def test_the_earlier_flat_shape_is_migrated() -> None:
    old = {
        "data": {"data_dir": "/somewhere/ml-100k", "protocol": "random_split", "max_users": 3},
        "model": {"name": "xdeepfm", **OLD_MODEL_SECTION, "dnn_dropout": 0.1, "cin_layer_sizes": [16]},
    }

    config = ExperimentConfig.from_dict(old)

    assert config.data == MovieLensConfig(path="/somewhere/ml-100k", protocol="random_split", max_users=3)
    assert isinstance(config.model, XDeepFMConfig)
    assert config.model.dnn.dropout == 0.1 and config.model.cin.layer_sizes == (16,)
    assert migrate(config.to_dict()) == config.to_dict()  # the current shape is left as it is


def test_the_earlier_shape_keeps_only_the_blocks_of_its_model() -> None:
    config = ExperimentConfig.from_dict({"model": {"name": "deepfm", **OLD_MODEL_SECTION}})

    assert config.model == DeepFMConfig()


def test_old_style_yaml_without_kind_is_movielens(tmp_path: Path) -> None:
    path = tmp_path / "old.yaml"
    path.write_text("data:\n  protocol: leave_one_out\nmodel:\n  name: deepfm\n  dnn_dropout: 0.25\n")

    config = ExperimentConfig.from_yaml(path)

    assert isinstance(config.data, MovieLensConfig) and config.model.dnn.dropout == 0.25


COMMITTED = sorted(Path(__file__).resolve().parents[1].glob("models_store/*/*/metadata.json"))


@pytest.mark.parametrize("metadata", COMMITTED, ids=[f"{p.parent.parent.name}-{p.parent.name}" for p in COMMITTED])
def test_committed_artifacts_configs_load_and_build_their_model(metadata: Path) -> None:
    import json

    from deepfm.data.schema import DatasetSchema

    recorded = json.loads(metadata.read_text())["config"]
    config = ExperimentConfig.from_dict(recorded)
    schema = DatasetSchema.from_json((metadata.parent / "schema.json").read_text())

    assert config.model.name == recorded["model"]["name"] == metadata.parent.parent.name
    if "dnn" in recorded["model"]:  # today's nested form: written back as it was recorded
        assert config.to_dict()["model"] == recorded["model"]
    else:  # the flat form of the first artifacts: every hyperparameter the model takes, by its flat name
        expected = {k: v for k, v in recorded["model"].items() if k in model_hyperparameters(config.model.name)}
        given = config.model.hyperparameters().items()
        assert {k: list(v) if isinstance(v, tuple) else v for k, v in given} == expected
    model = build_model(
        config.model.name, schema, fm_embed_dim=config.feature.fm_embed_dim, **config.model.hyperparameters()
    )
    assert sum(p.numel() for p in model.parameters()) > 0


def test_portable_records_paths_relative_to_the_working_directory_or_by_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    inside = ExperimentConfig(data=TableConfig(path=str(tmp_path / "logs" / "clicks.csv")))
    outside = ExperimentConfig(data=MovieLensConfig(path="/mnt/data/ml-1m"))
    relative = ExperimentConfig(data=TableConfig(path="logs/clicks.csv"))

    assert portable(inside).data.path == "logs/clicks.csv"
    assert portable(outside).data.path == "ml-1m"
    assert portable(relative) == relative


def test_located_points_the_data_at_this_machine() -> None:
    given = ExperimentConfig(data=TableConfig(train="a/train.csv", val="a/val.csv", test="a/test.csv"))

    assert located(ExperimentConfig(), "/data/ml-1m").data.path == "/data/ml-1m"
    moved = located(given, "/data/log").data
    assert isinstance(moved, TableConfig)
    assert (moved.train, moved.val, moved.test) == ("/data/log/train.csv", "/data/log/val.csv", "/data/log/test.csv")


@pytest.mark.parametrize("path", sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml")), ids=str)
def test_every_shipped_config_loads(path: Path) -> None:
    config = ExperimentConfig.from_yaml(path)

    assert ExperimentConfig.from_dict(config.to_dict()) == config

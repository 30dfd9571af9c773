# mypy: disable-error-code="no-untyped-def"
# (the Unscriptable test model below is untyped on purpose: TorchScript must refuse it)
"""The exported artifact: versioned atomic export, and a loader that names the file at fault."""

# No `from __future__ import annotations`: TorchScript reads the model classes' annotations as objects.

import ast
import hashlib
import io
import itertools
import json
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from deepfm import artifact as artifact_module
from deepfm import jit
from deepfm.artifact import (
    METADATA_FILE,
    MODEL_FILE,
    PROBE_ROWS,
    SCHEMA_FILE,
    VOCABULARY_FILE,
    ProbabilityModel,
    export_artifact,
    list_models,
    list_versions,
    load_artifact,
    probe_batch,
    read_schema,
    vocabulary_probes,
)
from deepfm.data.encoding import FeatureEncoder
from deepfm.data.schema import (
    FILE_VOCABULARIES_FORMAT_VERSION,
    SCHEMA_FORMAT_VERSION,
    DatasetSchema,
    FeatureType,
    FieldSchema,
    Transform,
    TransformKind,
)
from deepfm.errors import ArtifactError
from deepfm.onnx_form import ONNX_FILE

REPO = Path(__file__).resolve().parents[1]
NAME = "tiny"
CONFIG = {"model": {"name": "tiny", "dnn_hidden_units": [4, 2]}, "training": {"lr": 5e-4}}
METRICS = {"auc": 0.75, "logloss": 0.5}


is_scripting = torch.jit.is_scripting  # type: ignore[attr-defined]  # torch.jit does not export it


class TinyCTR(nn.Module):
    """Sum of one-wide embeddings (sequences summed) plus a weighted sum of dense values: logits (B,)."""

    dense_names: list[str]

    def __init__(self, schema: DatasetSchema, vocabulary_shrink: int = 0) -> None:
        super().__init__()
        self.embeddings = nn.ModuleDict(
            {
                f.name: nn.Embedding(f.vocabulary_size - vocabulary_shrink, 1)
                for f in schema.fields.values()
                if f.is_categorical
            }
        )
        self.dense_names = [f.name for f in schema.dense_fields]
        self.dense_weight = nn.Parameter(torch.tensor(0.5))

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        logits = torch.zeros(batch[self.dense_names[0]].shape[0])
        for name, embedding in self.embeddings.items():
            embedded = embedding(batch[name])  # (B, 1) or (B, L, 1)
            if embedded.dim() == 3:
                embedded = embedded.sum(dim=1)  # (B, 1)
            logits = logits + embedded.squeeze(1)
        for name in self.dense_names:
            logits = logits + self.dense_weight * batch[name]
        return logits  # (B,)


class NaNCTR(TinyCTR):
    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        return torch.full((batch[self.dense_names[0]].shape[0],), float("nan"))


class WideCTR(TinyCTR):
    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        return torch.zeros(batch[self.dense_names[0]].shape[0], 2)  # (B, 2), not (B,)


class ScriptShifted(nn.Module):
    """A model whose TorchScript form adds `shift` to its logits (0: the same outputs as the model)."""

    def __init__(self, model: nn.Module, shift: float) -> None:
        super().__init__()
        self.model = model
        self.shift = shift

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        logits: Tensor = self.model(batch)
        if is_scripting():
            return logits + self.shift
        return logits


class Unscriptable(nn.Module):
    """`batch` is unannotated, so TorchScript takes it for a Tensor and cannot index it by name."""

    def forward(self, batch):  # untyped on purpose (no type comment either: TorchScript reads those)
        return batch["user"].float()


@pytest.fixture
def schema() -> DatasetSchema:
    """A fitted schema with a sparse, a sequence and a dense field."""
    return DatasetSchema(
        [
            FieldSchema("user", FeatureType.SPARSE, vocabulary_size=4, embedding_dim=4, vocabulary=("a", "b", "c")),
            FieldSchema(
                "tags",
                FeatureType.SEQUENCE,
                vocabulary_size=3,
                embedding_dim=4,
                max_length=3,
                transform=Transform(TransformKind.SPLIT),
                vocabulary=("x", "y"),
            ),
            FieldSchema("price", FeatureType.DENSE, embedding_dim=1, mean=2.0, std=0.5),
        ]
    )


@pytest.fixture
def model(schema: DatasetSchema) -> TinyCTR:
    torch.manual_seed(0)
    return TinyCTR(schema)


@pytest.fixture
def store(tmp_path: Path) -> Path:
    return tmp_path / "models_store"


def export(model: nn.Module, schema: DatasetSchema, store: Path) -> Path:
    return export_artifact(model, schema, store, NAME, config=CONFIG, metrics=METRICS)


@pytest.fixture
def exported(model: TinyCTR, schema: DatasetSchema, store: Path) -> Path:
    """The directory of version 1 of the tiny model."""
    return export(model, schema, store)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def snapshot(directory: Path) -> dict[str, tuple[bytes, int]]:
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in directory.iterdir()}


def batch_for(schema: DatasetSchema) -> dict[str, Tensor]:
    return {
        "user": torch.tensor([0, 1, 3, 2]),
        "tags": torch.tensor([[1, 2, 0], [0, 0, 0], [2, 2, 2], [1, 0, 0]]),  # (B, L)
        "price": torch.tensor([0.0, -1.5, 2.0, 0.25]),
    }


# --- export -----------------------------------------------------------------------------------------------------


def test_export_writes_the_four_files_with_their_checksums(exported: Path, store: Path, schema: DatasetSchema) -> None:
    metadata = json.loads((exported / METADATA_FILE).read_text())

    assert exported == store / NAME / "1"
    assert sorted(p.name for p in exported.iterdir()) == sorted([MODEL_FILE, ONNX_FILE, SCHEMA_FILE, METADATA_FILE])
    assert metadata["files"] == {name: sha256(exported / name) for name in (MODEL_FILE, SCHEMA_FILE, ONNX_FILE)}
    assert DatasetSchema.from_json((exported / SCHEMA_FILE).read_text()) == schema


def test_metadata_records_the_run(exported: Path) -> None:
    metadata = json.loads((exported / METADATA_FILE).read_text())

    assert metadata["format_version"] == 1
    assert metadata["model_name"] == NAME
    assert metadata["version"] == 1
    assert metadata["config"] == CONFIG
    assert metadata["metrics"] == METRICS
    created = datetime.fromisoformat(metadata["created_at"])
    assert created.utcoffset() == timedelta(0)
    assert abs(datetime.now(UTC) - created) < timedelta(minutes=5)
    versions = metadata["library_versions"]
    assert set(versions) == {"python", "deepfm", "torch", "numpy", "pandas"}
    assert versions["torch"] == torch.__version__


def test_versions_increase_and_earlier_ones_are_untouched(
    exported: Path, model: TinyCTR, schema: DatasetSchema, store: Path
) -> None:
    before = snapshot(exported)

    second = export(model, schema, store)
    third = export(model, schema, store)

    assert [second.name, third.name] == ["2", "3"]
    assert json.loads((third / METADATA_FILE).read_text())["version"] == 3
    assert list_versions(store, NAME) == [1, 2, 3]
    assert snapshot(exported) == before
    assert sorted(p.name for p in (store / NAME).iterdir()) == ["1", "2", "3"]  # no staging directory left


def _failing_save(module: torch.jit.ScriptModule, path: str | Path) -> None:
    Path(path).write_bytes(b"half a model")
    raise OSError("disk full")


def _failing_versions() -> dict[str, str]:
    raise OSError("disk full")


def test_export_checks_the_frozen_scripted_form_against_the_model(schema: DatasetSchema, store: Path) -> None:
    torch.manual_seed(0)
    path = export(ScriptShifted(TinyCTR(schema), shift=0.0), schema, store)
    assert path.name == "1" and load_artifact(path).model is not None

    with pytest.raises(ArtifactError, match=r"TorchScript form differs from it by 0\.2\d* on a probe batch"):
        export(ScriptShifted(TinyCTR(schema), shift=1.0), schema, store)
    assert [p.name for p in (store / NAME).iterdir()] == ["1"]


def test_export_refuses_a_model_that_fails_the_probe_batch(schema: DatasetSchema, store: Path) -> None:
    with pytest.raises(ArtifactError, match="the model fails on a probe batch"):
        export(TinyCTR(schema, vocabulary_shrink=1), schema, store)  # the last index is out of range
    assert list_versions(store, NAME) == []


@pytest.mark.parametrize(
    ("target", "replacement"),
    [("deepfm.artifact.jit.save", _failing_save), ("deepfm.artifact.library_versions", _failing_versions)],
)
def test_failed_export_leaves_no_version_and_no_staging_directory(
    exported: Path,
    model: TinyCTR,
    schema: DatasetSchema,
    store: Path,
    monkeypatch: pytest.MonkeyPatch,
    target: str,
    replacement: Callable[..., Any],
) -> None:
    before = snapshot(exported)
    monkeypatch.setattr(target, replacement)

    with pytest.raises(OSError, match="disk full"):
        export(model, schema, store)

    assert [p.name for p in (store / NAME).iterdir()] == ["1"]
    assert snapshot(exported) == before
    monkeypatch.undo()
    assert export(model, schema, store).name == "2"  # the failure did not use up a version number


def test_unscriptable_model_fails_before_writing_anything(schema: DatasetSchema, store: Path) -> None:
    with pytest.raises(RuntimeError, match="indexing tensor"):
        export(Unscriptable(), schema, store)

    assert list((store / NAME).iterdir()) == []
    assert list_versions(store, NAME) == []
    assert list_models(store) == []


# --- load -------------------------------------------------------------------------------------------------------


def test_load_round_trip_scores_like_the_model(exported: Path, model: TinyCTR, schema: DatasetSchema) -> None:
    loaded = load_artifact(exported)
    batch = batch_for(schema)

    assert (loaded.model_name, loaded.version, loaded.path) == (NAME, 1, exported)
    assert loaded.schema == schema
    assert loaded.metadata["metrics"] == METRICS
    assert list(loaded.model.field_names) == schema.field_names
    with torch.no_grad():
        expected = torch.sigmoid(model(batch))
    torch.testing.assert_close(loaded.predict(batch), expected)


def _rewrite(directory: Path, name: str, change: Callable[[bytes], bytes], *, fix_checksum: bool) -> None:
    """Change a file of an artifact, and (optionally) its recorded sha256 so the loader reads on."""
    path = directory / name
    path.write_bytes(change(path.read_bytes()))
    if fix_checksum:
        metadata = json.loads((directory / METADATA_FILE).read_text())
        metadata["files"][name] = sha256(path)
        (directory / METADATA_FILE).write_text(json.dumps(metadata))


def _json_change(edit: Callable[[dict[str, Any]], None]) -> Callable[[bytes], bytes]:
    def change(raw: bytes) -> bytes:
        data = json.loads(raw)
        edit(data)
        return json.dumps(data).encode()

    return change


def _flip(start: int, stop: int) -> Callable[[bytes], bytes]:
    def change(raw: bytes) -> bytes:
        return raw[:start] + bytes(b ^ 0xFF for b in raw[start:stop]) + raw[stop:]

    return change


def _unfit(data: dict[str, Any]) -> None:
    data["fields"][0]["vocabulary"] = None


def _reorder(data: dict[str, Any]) -> None:
    data["fields"].reverse()


@pytest.mark.parametrize(
    ("name", "change", "fix_checksum", "message"),
    [
        (METADATA_FILE, lambda raw: b"{not json", False, "not valid JSON"),
        (METADATA_FILE, lambda raw: b"[1, 2]", False, "must hold a JSON object"),
        (METADATA_FILE, _json_change(lambda d: d.update(format_version=2)), False, "format_version 2, expected 1"),
        (METADATA_FILE, _json_change(lambda d: d.pop("files")), False, "no 'files' checksums"),
        (METADATA_FILE, _json_change(lambda d: d.update(version=5)), False, "version 5 in a directory named 1"),
        (SCHEMA_FILE, lambda raw: raw + b" ", False, "sha256 does not match"),
        (MODEL_FILE, _flip(100, 104), False, "sha256 does not match"),
        (MODEL_FILE, _flip(0, 16), True, "not a loadable TorchScript model"),
        (MODEL_FILE, lambda raw: raw[: len(raw) // 2], True, "not a loadable TorchScript model"),
        (SCHEMA_FILE, lambda raw: raw[:-10], True, "not valid JSON"),
        (SCHEMA_FILE, _json_change(lambda d: d.update(format_version=9)), True, "format_version 9"),
        (SCHEMA_FILE, _json_change(_unfit), True, "no vocabulary"),
    ],
    ids=[
        "metadata-bad-json",
        "metadata-not-object",
        "metadata-format-version",
        "metadata-no-checksums",
        "metadata-version-mismatch",
        "schema-checksum",
        "model-checksum",
        "model-corrupted-header",
        "model-truncated",
        "schema-bad-json",
        "schema-format-version",
        "schema-unfitted",
    ],
)
def test_load_refuses_a_damaged_artifact_naming_the_file(
    exported: Path, name: str, change: Callable[[bytes], bytes], fix_checksum: bool, message: str
) -> None:
    _rewrite(exported, name, change, fix_checksum=fix_checksum)

    with pytest.raises(ArtifactError, match=message) as info:
        load_artifact(exported)

    assert info.value.path == str(exported / name)
    assert str(exported / name) in str(info.value)


@pytest.mark.parametrize("name", [MODEL_FILE, SCHEMA_FILE, METADATA_FILE])
def test_load_refuses_a_missing_file(exported: Path, name: str) -> None:
    (exported / name).unlink()

    with pytest.raises(ArtifactError, match="missing from the artifact") as info:
        load_artifact(exported)

    assert info.value.path == str(exported / name)


def test_load_refuses_a_schema_that_disagrees_with_the_model(exported: Path) -> None:
    _rewrite(exported, SCHEMA_FILE, _json_change(_reorder), fix_checksum=True)

    with pytest.raises(ArtifactError, match=r"model reads fields \['user', 'tags', 'price'\]") as info:
        load_artifact(exported)

    assert info.value.path == str(exported / MODEL_FILE)


@pytest.mark.parametrize(
    ("make_model", "message"),
    [
        (NaNCTR, "not probabilities"),
        (WideCTR, "not probabilities of shape"),
        (lambda schema: TinyCTR(schema, vocabulary_shrink=1), "fails on a probe batch"),  # last index out of range
    ],
    ids=["nan", "wrong-shape", "index-out-of-range"],
)
def test_load_refuses_a_model_that_fails_the_probe_batch(
    exported: Path, schema: DatasetSchema, make_model: Callable[[DatasetSchema], nn.Module], message: str
) -> None:
    # such a model, written in place of a good one past export's check
    jit.save(jit.script(ProbabilityModel(make_model(schema), schema.field_names)), exported / MODEL_FILE)
    _rewrite(exported, MODEL_FILE, lambda raw: raw, fix_checksum=True)

    with pytest.raises(ArtifactError, match=message) as info:
        load_artifact(exported)

    assert info.value.path == str(exported / MODEL_FILE)


class DataDependent(nn.Module):
    """Branches on a value of its input: TorchScript scripts it, torch.export (the ONNX exporter's) cannot."""

    def __init__(self, schema: DatasetSchema) -> None:
        super().__init__()
        self.tiny = TinyCTR(schema)

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        logits = self.tiny(batch)
        if bool(logits.sum() > 1e9):
            return logits * 2.0
        return logits


def _without_onnx(directory: Path) -> None:
    """The version as an export without an ONNX form (or an older exporter) leaves it."""
    (directory / ONNX_FILE).unlink()
    _rewrite(directory, METADATA_FILE, _json_change(lambda d: d["files"].pop(ONNX_FILE)), fix_checksum=False)


def test_a_loaded_artifact_scores_by_its_onnx_form_as_torchscript_does(exported: Path, schema: DatasetSchema) -> None:
    by_onnx, by_script = load_artifact(exported), load_artifact(exported, "torchscript")
    batch = vocabulary_probes(schema)

    assert (by_onnx.runtime, by_script.runtime) == ("onnx", "torchscript")
    assert load_artifact(exported, "onnx").runtime == "onnx"
    torch.testing.assert_close(by_onnx.predict(batch), by_script.predict(batch), rtol=0.0, atol=1e-6)
    with torch.inference_mode():
        torch.testing.assert_close(by_script.predict(batch), by_script.model(batch), rtol=0.0, atol=0.0)


def test_an_artifact_without_an_onnx_form_scores_by_torchscript_unless_onnx_is_required(exported: Path) -> None:
    _without_onnx(exported)

    assert load_artifact(exported).runtime == "torchscript"
    with pytest.raises(ArtifactError, match=r"no ONNX form to score by: metadata\.json lists no model\.onnx") as info:
        load_artifact(exported, "onnx")
    assert info.value.path == str(exported / ONNX_FILE)


def test_a_damaged_onnx_form_is_refused_as_any_file_is(exported: Path) -> None:
    _rewrite(exported, ONNX_FILE, _flip(100, 104), fix_checksum=False)

    with pytest.raises(ArtifactError, match="sha256 does not match") as info:
        load_artifact(exported)
    assert info.value.path == str(exported / ONNX_FILE)
    assert load_artifact(exported, "torchscript").runtime == "torchscript"  # what does not read it, loads


def test_an_onnx_form_that_scores_otherwise_is_not_used(
    exported: Path, schema: DatasetSchema, store: Path, caplog: pytest.LogCaptureFixture
) -> None:
    torch.manual_seed(1)
    other = export_artifact(TinyCTR(schema), schema, store, "other", config={}, metrics={})
    (exported / ONNX_FILE).write_bytes((other / ONNX_FILE).read_bytes())  # another model's weights, checksum fixed
    _rewrite(exported, ONNX_FILE, lambda raw: raw, fix_checksum=True)

    assert load_artifact(exported).runtime == "torchscript"
    assert "serving from TorchScript: it scores the probe batch" in caplog.text
    with pytest.raises(ArtifactError, match=r"scores the probe batch .* away from model\.pt"):
        load_artifact(exported, "onnx")


def test_a_model_the_onnx_exporter_cannot_capture_is_exported_without_the_form(
    schema: DatasetSchema, store: Path, caplog: pytest.LogCaptureFixture
) -> None:
    torch.manual_seed(0)
    model = DataDependent(schema)

    exported = export(model, schema, store)

    assert not (exported / ONNX_FILE).exists()
    assert ONNX_FILE not in json.loads((exported / METADATA_FILE).read_text())["files"]
    assert "no ONNX form in the artifact (it serves from TorchScript): the ONNX exporter failed" in caplog.text
    loaded = load_artifact(exported)
    batch = batch_for(schema)
    with torch.no_grad():
        expected = torch.sigmoid(model(batch))
    assert loaded.runtime == "torchscript"
    torch.testing.assert_close(loaded.predict(batch), expected)


def test_an_unknown_runtime_is_a_value_error(exported: Path) -> None:
    with pytest.raises(ValueError, match="runtime must be one of"):
        load_artifact(exported, "tensorrt")  # type: ignore[arg-type]


# --- store listing and probe batch ------------------------------------------------------------------------------


def test_list_versions_ignores_hidden_and_temporary_entries(tmp_path: Path) -> None:
    root = tmp_path / NAME
    for name in ("1", "2", "10", ".staging-abc123", ".3", "4.tmp", "tmp", "latest"):
        (root / name).mkdir(parents=True)
    (root / "5").write_text("a file, not a version")
    (tmp_path / "empty_model" / ".staging-x").mkdir(parents=True)

    assert list_versions(tmp_path, NAME) == [1, 2, 10]
    assert list_versions(tmp_path, "absent") == []
    assert list_models(tmp_path) == [NAME]
    assert list_models(tmp_path / "no_store") == []


@pytest.mark.parametrize("batch_size", [1, 2, 5])
def test_probe_batch_touches_index_zero_and_the_last_index(schema: DatasetSchema, batch_size: int) -> None:
    batch = probe_batch(schema, batch_size)

    assert list(batch) == schema.field_names
    assert batch["user"].shape == (batch_size,) and batch["user"].dtype == torch.int64
    assert batch["tags"].shape == (batch_size, 3) and batch["tags"].dtype == torch.int64
    assert batch["price"].shape == (batch_size,) and batch["price"].dtype == torch.float32
    assert batch["user"].tolist() == [0] + [3] * (batch_size - 1)
    assert batch["tags"].tolist() == [[0, 0, 0]] + [[2, 2, 2]] * (batch_size - 1)
    assert not batch["price"].any()


def test_artifact_module_imports_no_model_or_training_code() -> None:
    """The service imports this module: it must not pull in models, training or dataset code."""
    tree = ast.parse(Path(artifact_module.__file__).read_text())

    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:  # `from deepfm import jit` names deepfm.jit
            imported |= {
                f"{node.module}.{alias.name}" if node.module == "deepfm" else node.module for alias in node.names
            }

    assert "deepfm.data.schema" in imported
    forbidden = ("deepfm.models", "deepfm.training", "deepfm.data.dataset", "deepfm.data.movielens", "deepfm.cli")
    assert sorted(m for m in imported if m.startswith(forbidden)) == []


# --- large vocabularies beside schema.json ----------------------------------------------------------------------

LARGE_VALUES = ("a", "é漢字", "196", "line\nbreak", "0.5")
"""A vocabulary with non-ASCII values, a number-like key (reached by 196 too) and a separator inside a value."""


@pytest.fixture
def large_schema(schema: DatasetSchema) -> DatasetSchema:
    """The tiny schema with a `user` vocabulary above the inline limit the tests export with (2)."""
    user = schema.fields["user"]
    return schema.with_fields([replace(user, vocabulary_size=len(LARGE_VALUES) + 1, vocabulary=LARGE_VALUES)])


@pytest.fixture
def large(large_schema: DatasetSchema, store: Path) -> Path:
    """Version 1 of the tiny model over `large_schema`, vocabularies above 2 values in the vocabulary file."""
    torch.manual_seed(0)
    model = TinyCTR(large_schema)
    return export_artifact(model, large_schema, store, NAME, config=CONFIG, metrics=METRICS, inline_vocabulary_max=2)


def test_a_large_vocabulary_goes_beside_schema_json_and_round_trips(large: Path, large_schema: DatasetSchema) -> None:
    metadata = json.loads((large / METADATA_FILE).read_text())
    document = json.loads((large / SCHEMA_FILE).read_text())
    user, tags = document["fields"][0], document["fields"][1]

    assert metadata["files"][VOCABULARY_FILE] == sha256(large / VOCABULARY_FILE)
    assert document["format_version"] == FILE_VOCABULARIES_FORMAT_VERSION
    assert user["vocabulary_file"] == VOCABULARY_FILE and "vocabulary" not in user and user["vocabulary_size"] == 6
    assert tags["vocabulary"] == ["x", "y"] and "vocabulary_file" not in tags  # at the limit: inline
    loaded = load_artifact(large)
    assert loaded.schema == large_schema and read_schema(large) == large_schema
    raw: dict[str, list[Any]] = {
        "user": [*LARGE_VALUES, 196, 0.5, "unknown", None],
        "tags": [["x", "y"]] * 9,
        "price": [1.0] * 9,
    }
    served, trained = FeatureEncoder(loaded.schema).encode(raw, 9), FeatureEncoder(large_schema).encode(raw, 9)
    assert served.features["user"].tolist() == [1, 2, 3, 4, 5, 3, 5, 0, 0]
    for name, values in trained.features.items():
        assert np.array_equal(served.features[name], values)


def test_a_small_schema_is_written_inline_in_the_first_format(exported: Path) -> None:
    document = json.loads((exported / SCHEMA_FILE).read_text())

    assert document["format_version"] == SCHEMA_FORMAT_VERSION
    assert document["fields"][0]["vocabulary"] == ["a", "b", "c"]
    assert not (exported / VOCABULARY_FILE).exists()


@pytest.mark.parametrize("version", ["deepfm/1", "xdeepfm/3", "attention_deepfm/1"])
def test_the_committed_inline_artifacts_still_load(version: str) -> None:
    path = REPO / "models_store" / version
    document = json.loads((path / SCHEMA_FILE).read_text())

    loaded = load_artifact(path)

    assert document["format_version"] == SCHEMA_FORMAT_VERSION and not (path / VOCABULARY_FILE).exists()
    assert loaded.schema == DatasetSchema.from_dict(document)
    assert loaded.schema.fields["movie_id"].vocabulary == tuple(document["fields"][1]["vocabulary"])


def _drop_checksum(data: dict[str, Any]) -> None:
    del data["files"][VOCABULARY_FILE]


def _point_outside(data: dict[str, Any]) -> None:
    data["fields"][0]["vocabulary_file"] = "../vocabularies.npz"


def _short_ends(raw: bytes) -> bytes:
    """The vocabulary file with the user field's last value cut off: 4 values for a size of 6."""
    with np.load(io.BytesIO(raw)) as archive:
        arrays = {key: archive[key] for key in archive.files}
    arrays["user.ends"] = arrays["user.ends"][:-1]
    arrays["user.utf8"] = arrays["user.utf8"][: -len(b"0.5")]
    out = io.BytesIO()
    np.savez(out, **arrays)
    return out.getvalue()


@pytest.mark.parametrize(
    ("name", "change", "fix_checksum", "where", "message"),
    [
        (VOCABULARY_FILE, _flip(200, 204), False, VOCABULARY_FILE, "sha256 does not match"),
        (VOCABULARY_FILE, lambda raw: raw[: len(raw) // 2], True, VOCABULARY_FILE, "not a readable vocabulary file"),
        (VOCABULARY_FILE, lambda raw: b"\x00" * len(raw), True, VOCABULARY_FILE, "not a readable vocabulary file"),
        (VOCABULARY_FILE, _short_ends, True, SCHEMA_FILE, "vocabulary has 4 values"),
        (METADATA_FILE, _json_change(_drop_checksum), False, VOCABULARY_FILE, "has no sha256"),
        (SCHEMA_FILE, _json_change(_point_outside), True, SCHEMA_FILE, "not file names in the version"),
    ],
    ids=["corrupted", "truncated", "zeroed", "fewer-values", "no-checksum", "outside-the-version"],
)
def test_load_refuses_a_damaged_vocabulary_file(
    large: Path, name: str, change: Callable[[bytes], bytes], fix_checksum: bool, where: str, message: str
) -> None:
    _rewrite(large, name, change, fix_checksum=fix_checksum)

    with pytest.raises(ArtifactError, match=message) as info:
        load_artifact(large)

    assert info.value.path == str(large / where)


def test_load_refuses_a_missing_vocabulary_file(large: Path) -> None:
    (large / VOCABULARY_FILE).unlink()

    with pytest.raises(ArtifactError, match="missing from the artifact") as info:
        load_artifact(large)

    assert info.value.path == str(large / VOCABULARY_FILE)


# --- the load-time probe ----------------------------------------------------------------------------------------


def test_vocabulary_probes_read_every_row_of_a_small_field_and_spread_over_a_large_one() -> None:
    schema = DatasetSchema(
        [
            FieldSchema("big", FeatureType.SPARSE, vocabulary_size=10_001, vocabulary=tuple(map(str, range(10_000)))),
            FieldSchema("small", FeatureType.SPARSE, vocabulary_size=4, vocabulary=("a", "b", "c")),
            FieldSchema("price", FeatureType.DENSE),
        ]
    )

    batch = vocabulary_probes(schema, max_rows=100)
    big = batch["big"].tolist()

    assert batch["big"].shape == batch["small"].shape == batch["price"].shape == (100,)
    assert set(batch["small"].tolist()) == {0, 1, 2, 3}
    assert big[0] == 0 and big[-1] == 10_000 and len(set(big)) == 100 and big == sorted(big)
    assert max(b - a for a, b in itertools.pairwise(big)) <= 10_000 / 99 + 1  # evenly spaced


def test_load_refuses_a_nan_embedding_row_the_probe_batch_does_not_read(store: Path) -> None:
    size = PROBE_ROWS + 1000
    schema = DatasetSchema(
        [
            FieldSchema("user", FeatureType.SPARSE, vocabulary_size=size, vocabulary=tuple(map(str, range(size - 1)))),
            FieldSchema("price", FeatureType.DENSE, embedding_dim=1),
        ]
    )
    probed = set(vocabulary_probes(schema)["user"].tolist())
    row = next(i for i in range(1, size) if i not in probed)
    model = TinyCTR(schema)
    embedding = model.embeddings["user"]
    assert isinstance(embedding, nn.Embedding)
    with torch.no_grad():
        embedding.weight[row] = float("nan")
    exported = export_artifact(model, schema, store, NAME, config={}, metrics={})  # export probes 0 and the last

    with pytest.raises(ArtifactError, match=rf"holds NaN or infinite values \(rows \[{row}\]\)") as info:
        load_artifact(exported)

    assert info.value.path == str(exported / MODEL_FILE)

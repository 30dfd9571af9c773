"""The exported artifact: the contract between the trainer and the scoring service.

    models_store/<model_name>/<version>/
        model.pt        TorchScript; forward(Dict[str, Tensor]) -> click probabilities (B,)
        model.onnx      where it could be made: the same model for ONNX Runtime (`deepfm.onnx_form`)
        schema.json     the fitted DatasetSchema: fields, sources, transforms, vocabularies, statistics
        vocabularies.npz  only if some vocabulary has more than INLINE_VOCABULARY_MAX values: those
                        vocabularies, which schema.json then names instead of listing (see below)
        metadata.json   name, version, creation time, config, metrics, library versions, sha256 of each file

Export scripts the model and refuses one whose frozen TorchScript form scores a probe batch differently
from the model itself; the ONNX form is written only where ONNX Runtime scores that batch as the model
does. A loaded artifact scores by its ONNX form where it has one (`Runtime`), checked against
TorchScript on the load-time probe batch. Versions are increasing integers. A version is
written into a hidden temporary directory and then renamed into place, so a half-written export is
never visible and an existing one is never touched.
Loading checks every file (presence, JSON, checksums), that the model and schema agree, that every
floating-point parameter and buffer of the model is finite (every embedding row of every field, so a
diverged row is caught), and scores a probe batch (`vocabulary_probes`) that reads index 0, the last
index and evenly spaced indices between of every field (every row of a field of at most
PROBE_ROWS rows) to probabilities; a failure is an ArtifactError that names the file. This module
imports no training or model-building code: the service depends on it.

schema.json stays the readable contract; a vocabulary of more than INLINE_VOCABULARY_MAX values is
named there (`"vocabulary_file": "vocabularies.npz"`, beside its `vocabulary_size`) and stored in
vocabularies.npz, an uncompressed NumPy archive read with allow_pickle=False: per field `<name>.utf8`,
the values' UTF-8 bytes end to end (uint8), and `<name>.ends`, each value's end offset in code points
(int64). Its sha256 is in metadata.json's `files` as the others', and loading refuses it when it
differs, is missing or does not decode.
"""

import hashlib
import json
import logging
import os
import platform
import tempfile
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import torch
from torch import Tensor, nn

from deepfm import jit
from deepfm.data.schema import DatasetSchema, FeatureType, vocabulary_files
from deepfm.errors import ArtifactError, DeepFMError
from deepfm.onnx_form import ONNX_FILE, OnnxModel, runtime_available, write_onnx

logger = logging.getLogger(__name__)

ARTIFACT_FORMAT_VERSION = 1
MODEL_FILE = "model.pt"
SCHEMA_FILE = "schema.json"
METADATA_FILE = "metadata.json"
VOCABULARY_FILE = "vocabularies.npz"
INLINE_VOCABULARY_MAX = 10_000
"""Vocabularies of more values than this go to VOCABULARY_FILE, where reading them is no JSON parse
(benchmarks/vocab_bench.py); MovieLens's (at most 1,682 values) stay inline, readable."""
PROBE_ROWS = 4096
"""Rows of the load-time probe batch: every index of a field of at most this many, evenly spaced ones beyond."""


class ProbabilityModel(nn.Module):
    """Wraps a logit model for export: click probabilities (B,), and the field names it reads.

    Args:
        model: a module mapping Dict[str, Tensor] to logits (B,).
        field_names: the schema's field names, in model order.
    """

    field_names: list[str]

    def __init__(self, model: nn.Module, field_names: list[str]) -> None:
        super().__init__()
        self.model = model
        self.field_names = list(field_names)

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        return torch.sigmoid(self.model(batch))  # (B,)


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def library_versions() -> dict[str, str]:
    """Versions of Python and of the libraries an artifact depends on."""
    versions = {"python": platform.python_version()}
    for package in ("deepfm", "torch", "numpy", "pandas"):
        try:
            versions[package] = importlib_metadata.version(package)
        except importlib_metadata.PackageNotFoundError:
            versions[package] = "unknown"
    return versions


def list_versions(store: str | Path, model_name: str) -> list[int]:
    """Complete versions of a model in a store, ascending (temporary directories are not versions)."""
    root = Path(store) / model_name
    if not root.is_dir():
        return []
    return sorted(int(p.name) for p in root.iterdir() if p.is_dir() and p.name.isdigit())


def list_models(store: str | Path) -> list[str]:
    """Names of the models in a store that have at least one version."""
    root = Path(store)
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and list_versions(root, p.name))


def probe_batch(schema: DatasetSchema, batch_size: int = 2) -> dict[str, Tensor]:
    """A batch that touches index 0 and the last vocabulary index of every categorical field."""
    batch: dict[str, Tensor] = {}
    for field in schema.fields.values():
        if field.feature_type is FeatureType.DENSE:
            batch[field.name] = torch.zeros(batch_size, dtype=torch.float32)
            continue
        column = torch.full((batch_size,), field.vocabulary_size - 1, dtype=torch.int64)
        column[0] = 0
        if field.feature_type is FeatureType.SEQUENCE:
            column = column.unsqueeze(1).repeat(1, field.max_length)  # (B, L)
        batch[field.name] = column
    return batch


def vocabulary_probes(schema: DatasetSchema, max_rows: int = PROBE_ROWS) -> dict[str, Tensor]:
    """A deterministic batch over the vocabulary rows of every categorical field.

    It has as many rows as the largest vocabulary, at most `max_rows`. A field of at most that many rows
    is read whole (row i reads index i modulo its size); a larger one at evenly spaced indices from 0 to
    its last (a sequence: that index in every slot). Dense values are 0 (the training mean).
    """
    total = min(max((f.vocabulary_size for f in schema.fields.values() if f.is_categorical), default=1), max_rows)
    rows = torch.arange(total)
    batch: dict[str, Tensor] = {}
    for field in schema.fields.values():
        if field.feature_type is FeatureType.DENSE:
            batch[field.name] = torch.zeros(total, dtype=torch.float32)
            continue
        size = field.vocabulary_size
        # (B,) indices; an even spread from 0 to size - 1 where the field has more rows than the batch
        column = (
            rows % size if size <= total else torch.linspace(0, size - 1, total, dtype=torch.float64).round().long()
        )
        batch[field.name] = (
            column.unsqueeze(1).repeat(1, field.max_length) if field.feature_type is FeatureType.SEQUENCE else column
        )  # (B, L) or (B,)
    return batch


def write_vocabularies(path: Path, vocabularies: dict[str, tuple[str, ...]]) -> None:
    """Write field name -> vocabulary as VOCABULARY_FILE's format (see the module docstring)."""
    arrays: dict[str, np.ndarray] = {}
    for name, values in vocabularies.items():
        arrays[f"{name}.utf8"] = np.frombuffer("".join(values).encode("utf-8"), dtype=np.uint8)
        arrays[f"{name}.ends"] = np.cumsum(np.fromiter(map(len, values), dtype=np.int64, count=len(values)))
    with path.open("wb") as handle:
        np.savez(handle, allow_pickle=False, **arrays)


def read_vocabularies(path: Path, names: list[str]) -> dict[str, tuple[str, ...]]:
    """The named fields' vocabularies from a VOCABULARY_FILE; ArtifactError if it is missing or does not decode."""
    if not path.is_file():
        raise ArtifactError(f"{path}: missing from the artifact", path=str(path))
    vocabularies: dict[str, tuple[str, ...]] = {}
    try:
        with path.open("rb") as handle, np.load(handle, allow_pickle=False) as archive:  # closed on failure too
            for name in names:
                data, ends = archive[f"{name}.utf8"], archive[f"{name}.ends"]
                if data.dtype != np.uint8 or ends.dtype != np.int64 or data.ndim != 1 or ends.ndim != 1:
                    raise ValueError(f"{name!r}: expected 1-d uint8 bytes and int64 ends")
                text = data.tobytes().decode("utf-8")
                starts = np.concatenate([np.zeros(1, dtype=np.int64), ends[:-1]])
                if len(ends) and (ends[-1] != len(text) or bool((starts > ends).any())):
                    raise ValueError(f"{name!r}: value ends do not partition its {len(text)} characters")
                vocabularies[name] = tuple(map(text.__getitem__, map(slice, starts.tolist(), ends.tolist())))
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        raise ArtifactError(f"{path}: not a readable vocabulary file: {exc}", path=str(path)) from exc
    return vocabularies


SCRIPT_TOLERANCE = 1e-5


def _export_probe(schema: DatasetSchema) -> dict[str, Tensor]:
    """The export's probe batch: OOV values, full, one-token and empty bags and nonzero dense values."""
    batch = probe_batch(schema, batch_size=3)
    for field in schema.fields.values():
        if field.feature_type is FeatureType.SEQUENCE:
            batch[field.name][2, 1:] = 0  # a bag of one token beside the full (row 1) and empty (row 0) ones
        elif field.feature_type is FeatureType.DENSE:
            batch[field.name] = torch.tensor([0.0, 1.0, -2.0])
    return batch


def _gap(got: Tensor, expected: Tensor) -> float:
    """The largest difference between two score vectors, NaN where both are NaN counting as none; infinite if
    their shapes differ or only one is NaN somewhere."""
    if got.shape != expected.shape:
        return float("inf")
    both = got.isnan() & expected.isnan()
    return float(torch.where(both, 0.0, (got - expected).abs()).nan_to_num(nan=float("inf")).max())


def _checked_script(wrapped: ProbabilityModel, batch: dict[str, Tensor], expected: Tensor) -> torch.jit.ScriptModule:
    """The scripted probability model, checked in its frozen form against the model's `expected` scores
    of the probe batch.

    Raises:
        ArtifactError: the frozen scripted form (what the service runs) fails on the probe batch or
            scores it differently.
    """
    scripted = jit.script(wrapped)
    with torch.no_grad():
        try:
            got = jit.freeze(scripted, preserved_attrs=["field_names"])(batch)
        except RuntimeError as exc:
            raise ArtifactError(f"the model's TorchScript form fails on a probe batch the model scores: {exc}") from exc
    gap = _gap(got, expected)
    if not gap <= SCRIPT_TOLERANCE:
        raise ArtifactError(f"the model's TorchScript form differs from it by {gap:.3g} on a probe batch")
    return scripted


def _checked_onnx(wrapped: ProbabilityModel, batch: dict[str, Tensor], expected: Tensor, path: Path) -> bool:
    """Write the ONNX form to `path` if it can be made and ONNX Runtime scores the probe batch as the model
    does (`expected`); else log why not and write nothing. Returns whether it was written."""
    reason = write_onnx(wrapped, wrapped.field_names, batch, path)
    if reason is None and not runtime_available():
        reason = "onnxruntime is not installed to check it"
    if reason is None:
        got = torch.from_numpy(OnnxModel(path, threads=1)({k: v.numpy() for k, v in batch.items()}))
        gap = _gap(got, expected)
        if not gap <= SCRIPT_TOLERANCE:
            reason = f"ONNX Runtime's scores differ from the model's by {gap:.3g} on a probe batch"
    if reason is not None:
        path.unlink(missing_ok=True)
        logger.warning("no ONNX form in the artifact (it serves from TorchScript): %s", reason)
    return reason is None


def export_artifact(
    model: nn.Module,
    schema: DatasetSchema,
    store: str | Path,
    model_name: str,
    *,
    config: dict[str, Any],
    metrics: dict[str, Any],
    inline_vocabulary_max: int = INLINE_VOCABULARY_MAX,
) -> Path:
    """Script `model` and write it with its schema and metadata as the next version.

    Args:
        model: a trained logit model reading the schema's fields.
        schema: the fitted schema the model was trained with.
        store: the models store root.
        model_name: the artifact's model name (a directory under the store).
        config: the experiment config, as plain values.
        metrics: the test metrics to record.
        inline_vocabulary_max: vocabularies of more values go to VOCABULARY_FILE rather than schema.json.

    Returns:
        The directory of the new version.
    """
    root = Path(store) / model_name
    root.mkdir(parents=True, exist_ok=True)
    model.eval()
    wrapped = ProbabilityModel(model, schema.field_names)
    batch = _export_probe(schema)
    with torch.no_grad():
        try:
            expected = wrapped(batch)
        except (IndexError, RuntimeError) as exc:
            raise ArtifactError(f"the model fails on a probe batch of the schema's shape: {exc}") from exc
    scripted = _checked_script(wrapped, batch, expected)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=root))
    try:
        jit.save(scripted, staging / MODEL_FILE)
        files = [MODEL_FILE, SCHEMA_FILE]
        if _checked_onnx(wrapped, batch, expected, staging / ONNX_FILE):
            files.append(ONNX_FILE)
        large = {
            f.name: f.vocabulary
            for f in schema.fields.values()
            if f.vocabulary is not None and len(f.vocabulary) > inline_vocabulary_max
        }
        (staging / SCHEMA_FILE).write_text(schema.to_json(dict.fromkeys(large, VOCABULARY_FILE)))
        if large:
            write_vocabularies(staging / VOCABULARY_FILE, large)
            files.append(VOCABULARY_FILE)
        while True:  # another exporter may take a version number first: then take the next one
            version = max(list_versions(store, model_name), default=0) + 1
            meta = {
                "format_version": ARTIFACT_FORMAT_VERSION,
                "model_name": model_name,
                "version": version,
                "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
                "config": config,
                "metrics": metrics,
                "library_versions": library_versions(),
                "files": {name: sha256_of(staging / name) for name in files},
            }
            (staging / METADATA_FILE).write_text(json.dumps(meta, indent=2))
            for path in staging.iterdir():
                os.chmod(path, 0o644)
            os.chmod(staging, 0o755)
            try:
                staging.rename(root / str(version))
            except OSError:
                if (root / str(version)).exists():
                    continue
                raise
            return root / str(version)
    finally:
        if staging.exists():
            for path in staging.iterdir():
                path.unlink()
            staging.rmdir()


Runtime = Literal["auto", "onnx", "torchscript"]
"""How a loaded artifact scores: `auto` by its ONNX form where it has one and onnxruntime is installed, else
by TorchScript; `onnx` by its ONNX form or not at all; `torchscript` by TorchScript."""
RUNTIMES: tuple[Runtime, ...] = get_args(Runtime)


@dataclass(frozen=True)
class Artifact:
    """A loaded, verified model version; it scores by its ONNX form where one was loaded, else by TorchScript."""

    path: Path
    model_name: str
    version: int
    schema: DatasetSchema
    metadata: dict[str, Any]
    model: torch.jit.ScriptModule
    onnx: OnnxModel | None = None

    @property
    def runtime(self) -> Literal["onnx", "torchscript"]:
        """The runtime that scores: "onnx" or "torchscript"."""
        return "torchscript" if self.onnx is None else "onnx"

    def scores(self, features: Mapping[str, np.ndarray]) -> np.ndarray:
        """Click probabilities (B,) float32 of an encoded batch's arrays."""
        if self.onnx is not None:
            return self.onnx(features)
        with torch.inference_mode():
            return self.model({k: torch.from_numpy(v) for k, v in features.items()}).numpy()  # type: ignore[no-any-return]

    def predict(self, batch: dict[str, Tensor]) -> Tensor:
        """Click probabilities (B,) for an encoded batch of tensors: `scores` of their arrays."""
        return torch.from_numpy(self.scores({k: v.numpy() for k, v in batch.items()}))


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise ArtifactError(f"{path}: cannot read: {exc.strerror}", path=str(path)) from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{path}: not valid JSON: {exc}", path=str(path)) from exc
    if not isinstance(data, dict):
        raise ArtifactError(f"{path}: must hold a JSON object", path=str(path))
    return data


def read_metadata(path: str | Path) -> dict[str, Any]:
    """A version directory's metadata.json, not yet verified (`load_artifact` verifies it); ArtifactError if
    it cannot be read."""
    return _read_json(Path(path) / METADATA_FILE)


def read_schema(path: str | Path) -> DatasetSchema:
    """A version directory's schema with the vocabularies of its vocabulary file, not verified against
    metadata.json's checksums (`load_artifact` verifies them); ArtifactError if it cannot be read."""
    root = Path(path)
    data = _read_json(root / SCHEMA_FILE)
    return _schema(root, data, _vocabulary_files(root, data))


def _vocabulary_files(root: Path, data: dict[str, Any]) -> dict[str, str]:
    """Field -> vocabulary file a schema document names; ArtifactError unless each is a file of the version."""
    where = root / SCHEMA_FILE
    try:
        files = vocabulary_files(data)
    except DeepFMError as exc:
        raise ArtifactError(f"{where}: {exc}", path=str(where)) from exc
    outside = sorted({f for f in files.values() if Path(f).name != f or f.startswith(".")})
    if outside:
        raise ArtifactError(f"{where}: vocabulary files {outside} are not file names in the version", path=str(where))
    return files


def _schema(root: Path, data: dict[str, Any], files: dict[str, str]) -> DatasetSchema:
    vocabularies: dict[str, tuple[str, ...]] = {}
    for file in sorted(set(files.values())):
        vocabularies |= read_vocabularies(root / file, [name for name, f in files.items() if f == file])
    try:
        return DatasetSchema.from_dict(data, vocabularies)
    except DeepFMError as exc:
        raise ArtifactError(f"{root / SCHEMA_FILE}: {exc}", path=str(root / SCHEMA_FILE)) from exc


def load_artifact(path: str | Path, runtime: Runtime = "auto") -> Artifact:
    """Load and verify one version directory, to score by `runtime` (see Runtime); ArtifactError names the
    file at fault."""
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime must be one of {RUNTIMES}, got {runtime!r}")
    root = Path(path)
    try:
        return _load(root, runtime)
    except OSError as exc:  # e.g. a directory the service's user may not read
        where = exc.filename or root
        raise ArtifactError(f"{where}: cannot read: {exc.strerror or exc}", path=str(where)) from exc


def _load(root: Path, runtime: Runtime) -> Artifact:
    for name in (METADATA_FILE, SCHEMA_FILE, MODEL_FILE):
        if not (root / name).is_file():
            raise ArtifactError(f"{root / name}: missing from the artifact", path=str(root / name))
    meta_path = root / METADATA_FILE
    meta = _read_json(meta_path)
    if meta.get("format_version") != ARTIFACT_FORMAT_VERSION:
        raise ArtifactError(
            f"{meta_path}: format_version {meta.get('format_version')!r}, expected {ARTIFACT_FORMAT_VERSION}",
            path=str(meta_path),
        )
    version, model_name = meta.get("version"), meta.get("model_name", root.parent.name)
    if type(version) is not int or not isinstance(model_name, str):
        raise ArtifactError(
            f"{meta_path}: 'version' must be an integer and 'model_name' a string, got {version!r} and {model_name!r}",
            path=str(meta_path),
        )
    checksums = meta.get("files")
    if not isinstance(checksums, dict):
        raise ArtifactError(f"{meta_path}: no 'files' checksums", path=str(meta_path))
    _check_sums(root, checksums, [SCHEMA_FILE, MODEL_FILE])
    data = _read_json(root / SCHEMA_FILE)
    files = _vocabulary_files(root, data)
    _check_sums(root, checksums, sorted(set(files.values())))
    schema = _schema(root, data, files)
    if not all(f.is_fitted for f in schema.fields.values()):
        raise ArtifactError(f"{root / SCHEMA_FILE}: has fields with no vocabulary", path=str(root / SCHEMA_FILE))
    try:
        model = jit.load(root / MODEL_FILE)
    except (RuntimeError, ValueError) as exc:
        raise ArtifactError(
            f"{root / MODEL_FILE}: not a loadable TorchScript model: {exc}", path=str(root / MODEL_FILE)
        ) from exc
    _check_finite(root / MODEL_FILE, model)
    model = jit.freeze(model, preserved_attrs=["field_names"])
    artifact = Artifact(
        path=root,
        model_name=model_name,
        version=version,
        schema=schema,
        metadata=meta,
        model=model,
    )
    probes, scores = _verify(artifact)
    if runtime == "torchscript":
        return artifact
    onnx = _onnx_form(artifact, checksums, probes, scores, required=runtime == "onnx")
    return artifact if onnx is None else replace(artifact, onnx=onnx)


def _onnx_form(
    artifact: Artifact,
    checksums: dict[str, Any],
    probes: dict[str, np.ndarray],
    expected: np.ndarray,
    required: bool,
) -> OnnxModel | None:
    """The version's ONNX form, checked against its verified TorchScript model's scores (`expected`) of the
    vocabulary probes (`probes`, what `_verify` scored).

    None where metadata.json lists no such file, onnxruntime is not installed, or the form does not load
    or score as TorchScript does (this onnxruntime may be older than the exporter's): the version then
    serves from TorchScript, with a warning. With `required` each of these is an ArtifactError instead, and
    a checksum that does not match is one in any case.
    """
    path = artifact.path / ONNX_FILE
    if ONNX_FILE not in checksums:
        reason = f"{METADATA_FILE} lists no {ONNX_FILE}"
    elif not runtime_available():
        reason = "onnxruntime is not installed"
    else:
        _check_sums(artifact.path, checksums, [ONNX_FILE])
        try:
            form = OnnxModel(path, threads=torch.get_num_threads())
            gap = _gap(torch.from_numpy(form(probes)), torch.from_numpy(expected))
        except Exception as exc:  # onnxruntime's own errors (an opset it lacks, a broken graph)
            reason = f"onnxruntime cannot run it: {str(exc).splitlines()[0][:300]}"
        else:
            if gap <= SCRIPT_TOLERANCE:
                return form
            reason = f"it scores the probe batch {gap:.3g} away from {MODEL_FILE}"
    if required:
        raise ArtifactError(f"{path}: no ONNX form to score by: {reason}", path=str(path))
    if ONNX_FILE in checksums:
        logger.warning("%s: serving from TorchScript: %s", path, reason)
    return None


def _check_sums(root: Path, checksums: dict[str, Any], names: list[str]) -> None:
    """Each named file is present and has the sha256 metadata.json records for it."""
    for name in names:
        if not (root / name).is_file():
            raise ArtifactError(f"{root / name}: missing from the artifact", path=str(root / name))
        if name not in checksums:
            raise ArtifactError(f"{root / name}: has no sha256 in {METADATA_FILE}", path=str(root / name))
        if checksums[name] != sha256_of(root / name):
            raise ArtifactError(f"{root / name}: sha256 does not match {METADATA_FILE}", path=str(root / name))


def _check_finite(path: Path, model: torch.jit.ScriptModule) -> None:
    """Every floating-point parameter and buffer is finite: every row of every embedding table, vectorised."""
    for name, tensor in model.state_dict().items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            rows = (~torch.isfinite(tensor)).reshape(len(tensor), -1).any(dim=1).nonzero().flatten()[:5].tolist()
            raise ArtifactError(f"{path}: {name} holds NaN or infinite values (rows {rows})", path=str(path))


def _verify(artifact: Artifact) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The model reads the schema's fields and scores a probe batch to finite probabilities; returns that
    batch (`vocabulary_probes`, as arrays) and its scores."""
    model_path = str(artifact.path / MODEL_FILE)
    field_names = getattr(artifact.model, "field_names", None)
    if field_names != artifact.schema.field_names:
        raise ArtifactError(
            f"{model_path}: model reads fields {field_names}, schema.json has {artifact.schema.field_names}",
            path=model_path,
        )
    if artifact.path.name.isdigit() and artifact.version != int(artifact.path.name):
        raise ArtifactError(
            f"{artifact.path / METADATA_FILE}: version {artifact.version} in a directory named {artifact.path.name}",
            path=str(artifact.path / METADATA_FILE),
        )
    batch = {name: probe.numpy() for name, probe in vocabulary_probes(artifact.schema).items()}
    try:
        scores = artifact.scores(batch)
    except RuntimeError as exc:
        raise ArtifactError(
            f"{model_path}: fails on a probe batch of schema.json's shape: {exc}", path=model_path
        ) from exc
    rows = len(next(iter(batch.values())))
    valid = (scores >= 0) & (scores <= 1)  # False for NaN too
    if scores.shape != (rows,) or not valid.all():
        bad = scores if scores.shape != (rows,) else scores[~valid][:5]
        raise ArtifactError(
            f"{model_path}: probe batch over the vocabulary rows gave {bad!r}, not probabilities of shape (B,)",
            path=model_path,
        )
    return batch, scores

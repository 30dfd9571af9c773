"""The loaded models, hot reload of new versions from the store, and the promotion gate.

Every model follows one rule, at start and on every `refresh` (run by `ReloadPoller` every
`poll_interval_s`, or by `POST /admin/reload`): the store's versions are taken in ascending order as
if they had arrived one at a time; a version replaces the serving one only if its recorded test AUC
(`metadata.json` `metrics.test.auc`) is no worse than the serving version's by more than
`promotion_tolerance`, and it loads (checksums, schema/model agreement, finite parameters, a probe
over the vocabulary rows, warm-up). A version that loads but fails the gate is held: loaded, scored only by
requests that name it, shown in `/models` with the reason, until `POST /admin/promote` or a pin
serves it on purpose. A version that fails to load is refused, logged and counted, and not tried
again until its files change. Any fault of one version (even an unreadable directory) refuses that
version only: other versions and models load, and start-up fails only when the default model has
nothing to serve. A version deleted from the store is dropped; if it was serving, the rule picks
anew among the versions left, so every replica serves what the store holds.

A swap replaces an immutable snapshot, so a request that took a `LoadedModel` finishes on it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

from deepfm.artifact import list_models, list_versions, read_metadata
from deepfm.errors import ArtifactError
from service.errors import NotFoundError
from service.metrics import ServiceMetrics
from service.schemas import (
    HeldVersion,
    ModelInfo,
    ModelsResponse,
    RefusedVersion,
    ReloadResult,
    UnavailableModel,
)
from service.scoring import LoadedModel
from service.settings import Settings

logger = logging.getLogger(__name__)

Fingerprint = tuple[tuple[str, int, int], ...]
HIDDEN = "<hidden>"


def fingerprint(path: Path) -> Fingerprint:
    """Name, size and modification time of each file of a version directory (empty if unreadable)."""
    try:
        return tuple(sorted((p.name, s.st_size, s.st_mtime_ns) for p in path.iterdir() for s in [p.stat()]))
    except OSError:
        return ()


def test_auc(metadata: Mapping[str, Any]) -> float | None:
    """The test AUC an artifact's metadata records, if any."""
    metrics = metadata.get("metrics")
    test = metrics.get("test") if isinstance(metrics, Mapping) else None
    auc = test.get("auc") if isinstance(test, Mapping) else None
    return float(auc) if isinstance(auc, int | float) and not isinstance(auc, bool) else None


def promotion_verdict(candidate: Mapping[str, Any], serving: Mapping[str, Any], tolerance: float) -> str | None:
    """None if a version with metadata `candidate` may replace one with `serving`; else why it is held."""
    serving_auc, candidate_auc = test_auc(serving), test_auc(candidate)
    if serving_auc is None:
        return None
    if candidate_auc is None:
        return f"its metadata records no test AUC to compare with the serving version's {serving_auc:.4f}"
    if candidate_auc < serving_auc - tolerance:
        return (
            f"test AUC {candidate_auc:.4f} is below the serving version's {serving_auc:.4f} "
            f"by more than the tolerance {tolerance:g}"
        )
    return None


def public_metadata(value: Any) -> Any:
    """Metadata without what only operators need: library versions, and absolute paths."""
    if isinstance(value, Mapping):
        return {k: public_metadata(v) for k, v in value.items() if k != "library_versions"}
    if isinstance(value, list):
        return [public_metadata(v) for v in value]
    if isinstance(value, str) and (value.startswith(("/", "~")) or value[1:3] in (":\\", ":/")):
        return HIDDEN
    return value


@dataclass(frozen=True)
class Refusal:
    """Why a version was refused, and the state of its files then."""

    fingerprint: Fingerprint
    reason: str


@dataclass(frozen=True)
class Held:
    """A version that loaded but failed the promotion gate."""

    model: LoadedModel
    reason: str


@dataclass(frozen=True)
class ModelState:
    """What the service holds of one model; replaced whole on every change."""

    current: LoadedModel
    loaded: Mapping[int, LoadedModel]  # the serving version and those served before it, oldest first
    pinned: bool
    seen: int  # the newest version the rule has decided on: only newer ones are candidates
    held: Held | None = None


class ModelRegistry:
    """The models the service scores with.

    Args:
        settings: store, model names, pins, versions to keep, gate tolerance, rows per model call.
        metrics: where load results and serving versions are recorded.
    """

    def __init__(self, settings: Settings, metrics: ServiceMetrics) -> None:
        self._settings = settings
        self._metrics = metrics
        self._reload_lock = threading.Lock()
        self._models: Mapping[str, ModelState] = MappingProxyType({})
        self._refused: dict[str, dict[int, Refusal]] = {}  # guarded by the reload lock
        self._refused_now: list[int] = []  # versions refused by the update in progress
        self._refusals: Mapping[str, Mapping[int, Refusal]] = MappingProxyType({})  # its snapshot, for readers

    @property
    def ready(self) -> bool:
        """Whether the default model is loaded."""
        return self._settings.default_model in self._models

    def get(self, name: str | None = None, version: int | None = None) -> LoadedModel:
        """The serving (or the given loaded or held) version of a model; the default model if `name` is None.

        Raises:
            NotFoundError: the model, or that version of it, is not loaded.
        """
        name = name or self._settings.default_model
        state = self._models.get(name)
        if state is None:
            raise NotFoundError(f"model {name!r} is not loaded; loaded models: {sorted(self._models)}")
        if version is None:
            return state.current
        loaded = state.loaded.get(version)
        if loaded is None and state.held is not None and state.held.model.version == version:
            loaded = state.held.model
        if loaded is None:
            raise NotFoundError(
                f"version {version} of model {name!r} is not loaded; loaded versions: {_loaded_versions(state)}"
            )
        return loaded

    def load_all(self) -> None:
        """Load every model at start.

        Raises:
            ArtifactError: the default model has no version to serve.
        """
        with self._reload_lock:
            for name in self._model_names():
                self._update(name)
        if not self.ready:
            raise ArtifactError(
                f"default model {self._settings.default_model!r} has no version to serve in "
                f"{str(self._settings.models_store)!r}; refused: {self.describe_refusals()}"
            )

    def refresh(self) -> list[ReloadResult]:
        """Apply the rule to every model that is not pinned: new versions, and versions deleted."""
        with self._reload_lock:
            names = sorted(set(self._model_names()) | set(self._models))
            return [self._update(name) for name in names if name not in self._settings.pinned_versions]

    def promote(self, name: str, version: int) -> ReloadResult:
        """Serve `version` of `name` whatever the promotion gate says (an operator's decision).

        Raises:
            NotFoundError: the model or version is not in the store, or does not load.
        """
        with self._reload_lock:
            state = self._models.get(name)
            if state is not None and state.current.version == version:
                return ReloadResult(model=name, previous_version=version, version=version, refused=[], held=[])
            if version not in self._versions(name):
                raise NotFoundError(f"version {version} of model {name!r} is not in the store")
            known = None if state is None else (state.loaded.get(version) or _held_model(state, version))
            loaded = known or self._load(name, version)
            if loaded is None:
                raise NotFoundError(f"version {version} of model {name!r} does not load: {self._reason(name, version)}")
            previous = None if state is None else state.current.version
            self._install(name, loaded, pinned=False, seen=max(version, 0 if state is None else state.seen))
            logger.warning("model version promoted by an operator", extra={"model": name, "version": version})
            return ReloadResult(model=name, previous_version=previous, version=version, refused=[], held=[])

    def describe(self, full: bool = False) -> ModelsResponse:
        """The loaded models, their versions and metadata (without paths unless `full`), held and refused versions."""
        models, refusals = self._models, self._refusals
        return ModelsResponse(
            default_model=self._settings.default_model,
            models=[
                ModelInfo(
                    name=name,
                    version=state.current.version,
                    runtime=state.current.artifact.runtime,
                    loaded_versions=_loaded_versions(state),
                    pinned=state.pinned,
                    held_versions=[]
                    if state.held is None
                    else [HeldVersion(version=state.held.model.version, reason=state.held.reason)],
                    refused_versions=_refused_versions(refusals.get(name, {})),
                    metadata=metadata if full else public_metadata(metadata),
                )
                for name, state in sorted(models.items())
                for metadata in [state.current.artifact.metadata]
            ],
            unavailable_models=[
                UnavailableModel(name=name, refused_versions=_refused_versions(refusals.get(name, {})))
                for name in sorted({*refusals, *(self._settings.models or ())} - set(models))
            ],
        )

    def describe_refusals(self) -> dict[str, list[RefusedVersion]]:
        """Refused versions by model."""
        return {name: _refused_versions(versions) for name, versions in self._refusals.items()}

    # --- the rule (call with the reload lock held) ------------------------------------------------------------------

    def _model_names(self) -> list[str]:
        if self._settings.models is not None:
            return list(self._settings.models)
        try:
            return list_models(self._settings.models_store)
        except OSError as exc:
            logger.error("models store cannot be listed", extra={"reason": str(exc)})
            return []

    def _versions(self, name: str) -> list[int]:
        try:
            return list_versions(self._settings.models_store, name)
        except OSError as exc:
            logger.error("model versions cannot be listed", extra={"model": name, "reason": str(exc)})
            return []

    def _update(self, name: str) -> ReloadResult:
        """Apply the rule to one model; every fault of a version is a refusal of that version."""
        state = self._models.get(name)
        previous = None if state is None else state.current.version
        self._refused_now = []
        pin = self._settings.pinned_versions.get(name)
        versions = self._versions(name)
        if state is not None and pin is None:
            state = self._drop_deleted(name, state, versions)
        if pin is not None:
            if state is None:
                loaded = self._load(name, pin)
                if loaded is not None:
                    self._install(name, loaded, pinned=True, seen=pin)
        else:
            self._advance(name, state, versions)
        state = self._models.get(name)
        return ReloadResult(
            model=name,
            previous_version=previous,
            version=None if state is None else state.current.version,
            refused=[RefusedVersion(version=v, reason=self._reason(name, v)) for v in sorted(self._refused_now)],
            held=[]
            if state is None or state.held is None
            else [HeldVersion(version=state.held.model.version, reason=state.held.reason)],
        )

    def _advance(self, name: str, state: ModelState | None, versions: list[int]) -> None:
        """Serve the version the rule picks among the versions newer than those it has decided on."""
        while True:
            serving_meta: Mapping[str, Any] | None = None if state is None else state.current.artifact.metadata
            target: int | None = None
            held: tuple[int, str] | None = None
            for version in versions:
                if (state is not None and version <= state.seen) or self._is_refused(name, version):
                    continue
                meta = self._metadata(name, version)
                if meta is None:
                    continue
                verdict = None if serving_meta is None else self._verdict(meta, serving_meta)
                if verdict is None:
                    target, serving_meta, held = version, meta, None
                else:
                    held = (version, verdict)
            if target is None:
                break
            loaded = self._load(name, target)
            if loaded is None:
                continue  # refused now: the rule runs again without it
            self._install(name, loaded, pinned=False, seen=target)
            state = self._models[name]
            break
        if held is not None and state is not None:
            self._hold(name, state, *held)

    def _verdict(self, candidate: Mapping[str, Any], serving: Mapping[str, Any]) -> str | None:
        return promotion_verdict(candidate, serving, self._settings.promotion_tolerance)

    def _hold(self, name: str, state: ModelState, version: int, reason: str) -> None:
        if state.held is not None and state.held.model.version == version:
            return
        loaded = self._load(name, version)
        if loaded is None:
            return
        logger.warning("model version held", extra={"model": name, "version": version, "reason": reason})
        self._metrics.model_loads.labels(name, "held").inc()
        self._set(name, replace(state, held=Held(loaded, reason), seen=max(state.seen, version)))

    def _drop_deleted(self, name: str, state: ModelState, versions: list[int]) -> ModelState | None:
        """Forget loaded versions no longer in the store; None (start again) if the serving one went."""
        present = set(versions)
        if not present:
            logger.error(
                "every version was deleted from the store; the one in memory keeps serving",
                extra={"model": name, "version": state.current.version},
            )
            return state
        loaded = {v: m for v, m in state.loaded.items() if v in present}
        held = state.held if state.held is not None and state.held.model.version in present else None
        if len(loaded) != len(state.loaded) or held is not state.held:
            logger.warning(
                "model versions deleted from the store, dropped",
                extra={"model": name, "versions": sorted(set(_loaded_versions(state)) - present)},
            )
            state = replace(state, loaded=MappingProxyType(loaded), held=held)
            self._set(name, state)  # the serving version, even if deleted, serves until another replaces it
        if state.current.version not in present:
            logger.warning(
                "serving version deleted from the store; choosing again among the versions left",
                extra={"model": name, "version": state.current.version},
            )
            return None
        return state

    def _metadata(self, name: str, version: int) -> Mapping[str, Any] | None:
        """A version's metadata for the gate (the full load checks it again); None, refused, if unreadable."""
        try:
            return read_metadata(self._settings.models_store / name / str(version))
        except ArtifactError as exc:
            self._refuse(name, version, str(exc))
            return None

    def _load(self, name: str, version: int) -> LoadedModel | None:
        """Load and verify a version; None, refused, on any failure."""
        path = self._settings.models_store / name / str(version)
        try:
            loaded = LoadedModel.load(path, self._settings.batch_max_rows, self._settings.runtime)
        except Exception as exc:  # any fault of this version: refuse it, never stop the others
            self._refuse(name, version, str(exc) if isinstance(exc, ArtifactError) else f"{path}: {exc!r}")
            return None
        if loaded.name != name or loaded.version != version:
            self._refuse(name, version, f"{path}: metadata.json names {loaded.name!r} version {loaded.version}")
            return None
        return loaded

    def _is_refused(self, name: str, version: int) -> bool:
        known = self._refused.get(name, {}).get(version)
        return known is not None and known.fingerprint == fingerprint(self._settings.models_store / name / str(version))

    def _reason(self, name: str, version: int) -> str:
        known = self._refused.get(name, {}).get(version)
        return "" if known is None else known.reason

    def _refuse(self, name: str, version: int, reason: str) -> None:
        logger.error("model version refused", extra={"model": name, "version": version, "reason": reason})
        self._metrics.model_loads.labels(name, "refused").inc()
        files = fingerprint(self._settings.models_store / name / str(version))
        self._refused.setdefault(name, {})[version] = Refusal(files, reason)
        self._refused_now.append(version)
        self._refusals = MappingProxyType({n: MappingProxyType(dict(v)) for n, v in self._refused.items()})

    def _install(self, name: str, loaded: LoadedModel, pinned: bool, seen: int) -> None:
        previous = self._models.get(name)
        versions = dict(previous.loaded) if previous is not None else {}
        versions.pop(loaded.version, None)
        versions[loaded.version] = loaded
        while len(versions) > self._settings.keep_versions:
            del versions[next(iter(versions))]
        held = previous.held if previous is not None else None
        if held is not None and held.model.version <= loaded.version:
            held = None
        self._set(name, ModelState(loaded, MappingProxyType(versions), pinned, seen, held))
        old = None if previous is None else previous.current.version
        self._metrics.model_loads.labels(name, "loaded").inc()
        self._metrics.set_serving(name, loaded.version, old)
        logger.info("model version serving", extra={"model": name, "version": loaded.version, "previous_version": old})

    def _set(self, name: str, state: ModelState) -> None:
        self._models = MappingProxyType({**self._models, name: state})


def _held_model(state: ModelState, version: int) -> LoadedModel | None:
    return state.held.model if state.held is not None and state.held.model.version == version else None


def _loaded_versions(state: ModelState) -> list[int]:
    return sorted({*state.loaded, *([] if state.held is None else [state.held.model.version])})


def _refused_versions(refusals: Mapping[int, Refusal]) -> list[RefusedVersion]:
    return [RefusedVersion(version=v, reason=r.reason) for v, r in sorted(refusals.items())]


class ReloadPoller:
    """A thread that calls `registry.refresh()` every `interval_s` seconds until stopped.

    Args:
        registry: the registry to refresh.
        interval_s: seconds between refreshes; 0 starts no thread.
    """

    def __init__(self, registry: ModelRegistry, interval_s: float) -> None:
        self._registry = registry
        self._interval_s = interval_s
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start polling (if an interval is set)."""
        if self._interval_s > 0:
            self._thread = threading.Thread(target=self._run, name="deepfm-reload-poller", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stop polling, waiting for a refresh in progress to finish."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _run(self) -> None:
        while not self._stopping.wait(self._interval_s):
            try:
                self._registry.refresh()
            except Exception:  # a bug: log it and try again next time
                logger.exception("reload poll failed")

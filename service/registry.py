"""The loaded models, and hot reload of new versions from the store.

At start every model is loaded at its newest version that passes `LoadedModel.load` (checksums,
schema/model agreement, probe batch, warm-up) or at its pinned version. Later, `refresh` (run by
`ReloadPoller` every `poll_interval_s`, or by `POST /admin/reload`) loads the newest version above
the serving one and swaps it in. The swap replaces an immutable snapshot, so a request that took a
`LoadedModel` finishes on it. A version that fails to load is refused, logged and counted, the old
one keeps serving, and it is not tried again until its files change.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from deepfm.artifact import list_models, list_versions
from deepfm.errors import ArtifactError, DeepFMError
from service.errors import NotFoundError
from service.metrics import ServiceMetrics
from service.schemas import ModelInfo, ModelsResponse, RefusedVersion, ReloadResult
from service.scoring import LoadedModel
from service.settings import Settings

logger = logging.getLogger(__name__)

Fingerprint = tuple[tuple[str, int, int], ...]


def fingerprint(path: Path) -> Fingerprint:
    """Name, size and modification time of each file of a version directory (empty if unreadable)."""
    try:
        return tuple(sorted((p.name, s.st_size, s.st_mtime_ns) for p in path.iterdir() for s in [p.stat()]))
    except OSError:
        return ()


@dataclass(frozen=True)
class Refusal:
    """Why a version was refused, and the state of its files then."""

    fingerprint: Fingerprint
    reason: str


@dataclass(frozen=True)
class ModelState:
    """What the service holds of one model; replaced whole on every change."""

    current: LoadedModel
    loaded: Mapping[int, LoadedModel]
    pinned: bool


class ModelRegistry:
    """The models the service scores with.

    Args:
        settings: store, model names, pins, versions to keep, rows per model call (for warm-up).
        metrics: where load results and serving versions are recorded.
    """

    def __init__(self, settings: Settings, metrics: ServiceMetrics) -> None:
        self._settings = settings
        self._metrics = metrics
        self._reload_lock = threading.Lock()
        self._models: Mapping[str, ModelState] = MappingProxyType({})
        self._refused: Mapping[str, Mapping[int, Refusal]] = MappingProxyType({})

    @property
    def ready(self) -> bool:
        """Whether the default model is loaded."""
        return self._settings.default_model in self._models

    def get(self, name: str | None = None, version: int | None = None) -> LoadedModel:
        """The serving (or the given loaded) version of a model; the default model if `name` is None.

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
        if loaded is None:
            raise NotFoundError(
                f"version {version} of model {name!r} is not loaded; loaded versions: {sorted(state.loaded)}"
            )
        return loaded

    def load_all(self) -> None:
        """Load every model at start.

        Raises:
            ArtifactError: the default model, a listed model or a pinned version cannot be loaded.
        """
        store = self._settings.models_store
        names = self._settings.models or list_models(store)
        with self._reload_lock:
            for name in names:
                if not list_versions(store, name):
                    raise ArtifactError(f"models_store {str(store)!r} has no version of model {name!r}")
                result = self._update(name)
                pin = self._settings.pinned_versions.get(name)
                if pin is not None and result.version != pin:
                    raise ArtifactError(f"pinned version {pin} of model {name!r} cannot be loaded: {result.refused}")
        if not self.ready:
            raise ArtifactError(
                f"default model {self._settings.default_model!r} cannot be loaded from {str(store)!r}; "
                f"loaded: {sorted(self._models)}, refused: {self.describe_refusals()}"
            )

    def refresh(self) -> list[ReloadResult]:
        """Load the newest new version of every model that is not pinned, and swap it in."""
        store = self._settings.models_store
        with self._reload_lock:
            names = sorted(set(self._settings.models or list_models(store)) | set(self._models))
            return [self._update(name) for name in names if name not in self._settings.pinned_versions]

    def describe(self) -> ModelsResponse:
        """The loaded models, their versions and metadata, and refused versions."""
        models, refused = self._models, self._refused
        return ModelsResponse(
            default_model=self._settings.default_model,
            models=[
                ModelInfo(
                    name=name,
                    version=state.current.version,
                    loaded_versions=sorted(state.loaded),
                    pinned=state.pinned,
                    refused_versions=_refused_versions(refused.get(name, {})),
                    metadata=state.current.artifact.metadata,
                )
                for name, state in sorted(models.items())
            ],
        )

    def describe_refusals(self) -> dict[str, list[RefusedVersion]]:
        """Refused versions by model."""
        return {name: _refused_versions(versions) for name, versions in self._refused.items()}

    def _update(self, name: str) -> ReloadResult:
        """Load the newest loadable candidate version of `name`; call with the reload lock held."""
        state = self._models.get(name)
        current = None if state is None else state.current.version
        pin = self._settings.pinned_versions.get(name)
        if pin is not None:
            candidates = [pin] if state is None else []
        else:
            candidates = [
                v for v in reversed(list_versions(self._settings.models_store, name)) if current is None or v > current
            ]
        refused: list[RefusedVersion] = []
        for version in candidates:
            path = self._settings.models_store / name / str(version)
            files = fingerprint(path)
            known = self._refused.get(name, {}).get(version)
            if known is not None and known.fingerprint == files:
                continue
            try:
                loaded = LoadedModel.load(path, self._settings.batch_max_rows)
            except DeepFMError as exc:
                self._refuse(name, version, files, str(exc))
                refused.append(RefusedVersion(version=version, reason=str(exc)))
                continue
            self._install(name, loaded, pinned=pin is not None)
            return ReloadResult(model=name, previous_version=current, version=version, refused=refused)
        return ReloadResult(model=name, previous_version=current, version=current, refused=refused)

    def _refuse(self, name: str, version: int, files: Fingerprint, reason: str) -> None:
        logger.error("model version refused", extra={"model": name, "version": version, "reason": reason})
        self._metrics.model_loads.labels(name, "refused").inc()
        versions = {**self._refused.get(name, {}), version: Refusal(files, reason)}
        self._refused = MappingProxyType({**self._refused, name: MappingProxyType(versions)})

    def _install(self, name: str, loaded: LoadedModel, pinned: bool) -> None:
        previous = self._models.get(name)
        versions = dict(previous.loaded) if previous is not None else {}
        versions.pop(loaded.version, None)
        versions[loaded.version] = loaded
        while len(versions) > self._settings.keep_versions:
            del versions[next(iter(versions))]
        state = ModelState(loaded, MappingProxyType(versions), pinned)
        self._models = MappingProxyType({**self._models, name: state})
        old = None if previous is None else previous.current.version
        self._metrics.model_loads.labels(name, "loaded").inc()
        self._metrics.set_serving(name, loaded.version, old)
        logger.info("model version serving", extra={"model": name, "version": loaded.version, "previous_version": old})


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
            except Exception:  # a store that vanished, a full disk...: log it and try again next time
                logger.exception("reload poll failed")

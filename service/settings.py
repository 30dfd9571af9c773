"""Service settings: one `BaseSettings`, read from `DEEPFM_SERVE_*` environment variables.

Every field below is documented by its docstring (also shown by `python -m service --help`). A
`DEEPFM_SERVE_*` variable that names no setting is an error at start, not silently ignored.
List-like values are plain text: `DEEPFM_SERVE_MODELS=deepfm,xdeepfm`,
`DEEPFM_SERVE_PINNED_VERSIONS=deepfm=1,xdeepfm=3`. Settings are validated when they are built, so a
bad deploy stops at start with a message that names the variable.

Threads: each worker process runs the model with `torch_threads` intra-op threads, 1 by default: a
scorer's model calls are too small for a second thread to pay (benchmarks/results/cores_bench.md), so
more CPUs are used by more workers or replicas. A setting with `workers * torch_threads` above the CPU
count is refused, because oversubscribed CPU threads are the most common cause of slow CPU serving.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from deepfm.artifact import Runtime

ENV_PREFIX = "DEEPFM_SERVE_"
MIN_TOKEN_LENGTH = 16
LogLevel = Literal["debug", "info", "warning", "error", "critical"]


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask, so `taskset` and cpusets count)."""
    return len(os.sched_getaffinity(0))


class Settings(BaseSettings):
    """Settings of the scoring service."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_ignore_empty=True, use_attribute_docstrings=True, extra="forbid", frozen=True
    )

    models_store: Path = Path("models_store")
    """Root of the models store: `<models_store>/<model>/<version>/` artifacts."""

    default_model: str = "deepfm"
    """Model that scores requests that name none."""

    models: Annotated[tuple[str, ...] | None, NoDecode] = None
    """Comma-separated model names to load; unset: every model in the store, new ones included."""

    pinned_versions: Annotated[dict[str, int], NoDecode] = Field(default_factory=dict)
    """Comma-separated `model=version` pairs served as given and never hot-reloaded."""

    keep_versions: int = Field(default=2, ge=1)
    """Versions of a model kept loaded (the serving one and the newest before it) for requests naming one."""

    promotion_tolerance: float = Field(default=0.005, ge=0)
    """A new version serves only if its test AUC (metadata.json) is at most this far below the serving one's;
    otherwise it is held. 1 turns the gate off."""

    poll_interval_s: float = Field(default=30.0, ge=0)
    """Seconds between scans of the store for new versions; 0 turns polling off."""

    admin_token: SecretStr | None = None
    """Bearer token of `POST /admin/reload` (16 characters at least); unset: the admin API is disabled."""

    max_batch_rows: int = Field(default=10_000, ge=1)
    """Most instances one request may send."""

    max_body_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)
    """Largest request body accepted, in bytes; larger ones get 413."""

    max_header_bytes: int = Field(default=32 * 1024, ge=1024)
    """Largest request head (request line and headers) accepted, in bytes; larger ones get 431."""

    header_timeout_s: float = Field(default=10.0, gt=0)
    """A connection whose next request head is not complete this many seconds after the server waits for it
    (from the accept, or the previous response) is closed; 408 if it sent a part."""

    max_connections: int = Field(default=512, ge=1)
    """Most open connections per worker; a new one past it gets 503 and is closed (keep it under the fd limit)."""

    strict: bool = False
    """Reject instances with missing or null fields instead of scoring them as unknown (OOV)."""

    coalesce: bool = True
    """Merge requests that wait at the same time into one model call."""

    batch_max_rows: int = Field(default=1024, ge=1)
    """Most rows in one model call; larger requests are scored in slices of this size."""

    batch_max_wait_ms: float = Field(default=0.0, ge=0, le=1000)
    """How long a model call waits for more requests; 0: those waiting, or queued while the scorer yields once."""

    request_timeout_s: float = Field(default=5.0, gt=0, le=300)
    """A predict request not scored within this many seconds gets 504; keep it below the proxy's read timeout."""

    drain_timeout_s: int = Field(default=10, ge=1, le=300)
    """On SIGTERM, how long requests in flight may take to finish; the process exits within a second after."""

    torch_threads: int = Field(default=1, ge=1)
    """Torch intra-op threads per worker (ONNX Runtime's too); more CPUs are better spent on more workers."""

    runtime: Runtime = "auto"
    """What scores a model version: its ONNX form by ONNX Runtime where it has one (auto), only that (onnx: a
    version without one is refused), or its TorchScript model."""

    gc_freeze: bool = True
    """Move what exists when a worker starts (the imported libraries: a quarter million objects) out of the
    garbage collector's sight, so a full collection does not walk them while requests wait."""

    gc_young_threshold: int = Field(default=20_000, ge=0)
    """Allocations between young-generation collections in a worker (Python's default: 700; 0 keeps it).
    A 100-row request allocates thousands of short-lived objects that reference counting frees anyway."""

    host: str = "127.0.0.1"
    """Interface to listen on (`0.0.0.0` in a container)."""

    port: int = Field(default=8000, ge=1, le=65535)
    """TCP port to listen on."""

    workers: int = Field(default=1, ge=1)
    """Worker processes; metrics are aggregated across them (prometheus_client multiprocess mode)."""

    log_level: LogLevel = "info"
    """Level of the JSON logs."""

    @model_validator(mode="before")
    @classmethod
    def _no_unknown_variables(cls, values: Any) -> Any:
        """A misspelt variable would be ignored and its default used silently: refuse to start instead."""
        known = {f"{ENV_PREFIX}{name.upper()}" for name in cls.model_fields}
        unknown = sorted(key for key in os.environ if key.upper().startswith(ENV_PREFIX) and key.upper() not in known)
        if unknown:
            raise ValueError(f"unknown settings {unknown}; `python -m service --help` lists the known ones")
        return values

    @field_validator("models", mode="before")
    @classmethod
    def _split_models(cls, value: Any) -> Any:
        if isinstance(value, str):
            names = tuple(name.strip() for name in value.split(",") if name.strip())
            return names or None
        return value

    @field_validator("pinned_versions", mode="before")
    @classmethod
    def _split_pins(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        pins: dict[str, str] = {}
        for item in filter(None, (part.strip() for part in value.split(","))):
            name, sep, version = item.partition("=")
            if not sep or not name.strip() or not version.strip().isdigit():
                raise ValueError(f"{item!r} is not of the form model=version, e.g. deepfm=3")
            pins[name.strip()] = version.strip()
        return pins

    @field_validator("models_store")
    @classmethod
    def _store_exists(cls, value: Path) -> Path:
        if not value.is_dir():
            raise ValueError(f"models_store {str(value)!r} is not a directory")
        return value

    @field_validator("admin_token")
    @classmethod
    def _token_length(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < MIN_TOKEN_LENGTH:
            raise ValueError(f"admin_token must have at least {MIN_TOKEN_LENGTH} characters")
        return value

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if self.models is not None:
            if self.default_model not in self.models:
                raise ValueError(f"default_model {self.default_model!r} is not among models {list(self.models)}")
            unloaded = sorted(set(self.pinned_versions) - set(self.models))
            if unloaded:
                raise ValueError(f"pinned_versions names models that are not loaded: {unloaded}")
        cpus = available_cpus()
        if self.workers * self.torch_threads > cpus:
            raise ValueError(
                f"workers ({self.workers}) x torch_threads ({self.torch_threads}) exceeds the {cpus} CPUs "
                "available; lower one of them"
            )
        return self


def describe_env() -> str:
    """One line per setting: its environment variable, default and description."""
    lines = []
    for name, field in Settings.model_fields.items():
        default = "unset" if field.is_required() else field.get_default(call_default_factory=True)
        lines.append(f"  {ENV_PREFIX}{name.upper()} (default: {default}): {field.description}")
    return "\n".join(lines)

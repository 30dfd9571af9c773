"""TorchScript entry points with exactly torch 2.13's deprecation warnings for them silenced.

TorchScript is the artifact format (`model.pt`); torch 2.13 marks `torch.jit.script/save/load/freeze`
as deprecated. These wrappers filter that one warning and nothing else.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

_DEPRECATION = r"`torch\.jit\.(script|save|load|freeze)` is deprecated"


@contextmanager
def _quiet() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_DEPRECATION, category=DeprecationWarning)
        yield


def script(module: nn.Module) -> torch.jit.ScriptModule:
    """`torch.jit.script` without its deprecation warning."""
    with _quiet():
        return torch.jit.script(module)


def save(module: torch.jit.ScriptModule, path: str | Path) -> None:
    """`torch.jit.save` without its deprecation warning."""
    with _quiet():
        torch.jit.save(module, str(path))


def load(path: str | Path) -> torch.jit.ScriptModule:
    """`torch.jit.load` onto the CPU without its deprecation warning."""
    with _quiet():
        return torch.jit.load(str(path), map_location="cpu")  # type: ignore[no-untyped-call,no-any-return]

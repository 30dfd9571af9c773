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


def freeze(module: torch.jit.ScriptModule, preserved_attrs: list[str]) -> torch.jit.ScriptModule:
    """`torch.jit.freeze` of a module in eval mode, without its deprecation warning.

    Freezing inlines parameters and attributes as constants and folds eval-mode batch norms into the
    layers before them: the same function with fewer operations per call (docs/decisions.md has the
    measured gain). Attributes other than `preserved_attrs` are dropped.
    """
    with _quiet():
        return torch.jit.freeze(module.eval(), preserved_attrs=preserved_attrs)  # type: ignore[no-any-return]

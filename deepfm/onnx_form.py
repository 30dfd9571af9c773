"""The artifact's optional ONNX form (`model.onnx`): the same probability model for ONNX Runtime.

A small model call costs TorchScript's interpreter more than the arithmetic: ONNX Runtime runs the
same graph with less per-call overhead (benchmarks/results/serve_peer_bench.md). The form is written by
torch's torch.export-based ONNX exporter (it needs `onnxscript`) with a dynamic batch dimension, and
only where ONNX Runtime scores the export's probe batch as the model does; TorchScript stays the
contract, so an artifact without this file, or a process without onnxruntime, serves from TorchScript.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import logging
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

ONNX_FILE = "model.onnx"
OUTPUT = "probability"
EXPORTER_LOGGERS = ("onnx_ir", "onnxscript", "torch.onnx")
MAX_BATCH = 1 << 24
"""The largest batch the exported graph declares; the service's model calls are far smaller."""


def runtime_available() -> bool:
    """Whether onnxruntime can be imported here."""
    return importlib.util.find_spec("onnxruntime") is not None


class _Positional(nn.Module):
    """The probability model with one positional input per field: ONNX graphs take named tensors, not a dict."""

    def __init__(self, model: nn.Module, field_names: list[str]) -> None:
        super().__init__()
        self.model = model
        self.field_names = field_names

    def forward(self, *columns: Tensor) -> Tensor:
        return self.model(dict(zip(self.field_names, columns, strict=True)))  # type: ignore[no-any-return]


@contextlib.contextmanager
def _quiet_loggers() -> Iterator[None]:
    """The exporter's libraries' loggers at error level while it runs: its failures raise anyway."""
    loggers = [logging.getLogger(name) for name in EXPORTER_LOGGERS]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def write_onnx(model: nn.Module, field_names: list[str], example: dict[str, Tensor], path: Path) -> str | None:
    """Export `model` (eval mode, CPU) to `path` with a dynamic batch dimension; None when written, else why not.

    A missing exporter dependency or a graph torch.export cannot capture is a reason, not an error: the
    artifact is complete without this form.
    """
    if importlib.util.find_spec("onnxscript") is None:
        return "onnxscript (torch's ONNX exporter) is not installed"
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    columns = tuple(example[name] for name in field_names)
    # the exporter reports its steps on stdout, its passes at info level, and warns about torchvision ops
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings(), _quiet_loggers():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(
                _Positional(model, field_names).eval(),
                columns,
                str(path),
                input_names=field_names,
                output_names=[OUTPUT],
                dynamic_shapes=(tuple({0: batch} for _ in field_names),),
                dynamo=True,
                external_data=False,  # one file, checksummed as the others
                optimize=True,
                verbose=False,
            )
        except Exception as exc:  # any exporter failure leaves TorchScript as the only form
            path.unlink(missing_ok=True)
            return f"the ONNX exporter failed: {str(exc).splitlines()[0][:300]}"
    return None


class OnnxModel:
    """An ONNX Runtime session of an artifact's `model.onnx`: arrays of the encoded fields in, probabilities out.

    Args:
        path: the model.onnx file.
        threads: intra-op threads (the process's torch threads, so both runtimes use the same CPUs).
    """

    def __init__(self, path: Path, threads: int) -> None:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3  # errors only: its graph-optimisation notes are not for our users
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # idle threads sleep, not spin
        self._session: Any = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self._session.get_inputs()]

    def __call__(self, features: Mapping[str, np.ndarray]) -> np.ndarray:
        """(B,) float32 probabilities of the encoded arrays (int64 indices, float32 dense values)."""
        outputs = self._session.run([OUTPUT], {name: features[name] for name in self.input_names})
        return outputs[0].reshape(-1)  # type: ignore[no-any-return]

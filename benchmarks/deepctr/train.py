"""DeepCTR-Torch's side of the training benchmark (`benchmarks/train_peer_bench.py`), run in its own virtualenv.

    python train.py ROWS_DIR SPEC_JSON

Reads the rows deepfm encoded (`rows.npz`) and the spec the benchmark derived from deepfm's config, builds
DeepCTR-Torch's DeepFM or xDeepFM with those sizes, trains it with its own `fit` and prints one JSON line:
each epoch's samples/s (timed by a callback at epoch begin and end), losses and the parameter count.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from deepctr_torch.callbacks import Callback
from deepctr_torch.inputs import SparseFeat, VarLenSparseFeat
from deepctr_torch.models import DeepFM, xDeepFM


class EpochTimer(Callback):  # type: ignore[misc]
    """Wall seconds of each epoch's training loop."""

    def __init__(self) -> None:
        super().__init__()
        self.seconds: list[float] = []
        self._started = 0.0

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._started = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.seconds.append(time.perf_counter() - self._started)


def main() -> None:
    rows, spec = Path(sys.argv[1]), json.loads(Path(sys.argv[2]).read_text())
    torch.set_num_threads(1)
    torch.set_num_interop_threads(1)
    with np.load(rows / "rows.npz") as saved:
        arrays = {name: saved[name] for name in saved.files}
    labels = arrays.pop("labels").astype(np.float32)
    columns: list[SparseFeat | VarLenSparseFeat] = []
    for field in spec["fields"]:
        sparse = SparseFeat(field["name"], field["vocabulary_size"], embedding_dim=spec["embedding_dim"])
        if field["kind"] == "sequence":
            columns.append(VarLenSparseFeat(sparse, maxlen=field["max_length"], combiner="mean"))
        else:
            columns.append(sparse)
    common = {
        "dnn_hidden_units": tuple(spec["dnn_hidden_units"]),
        "dnn_dropout": spec["dnn_dropout"],
        "dnn_use_bn": spec["dnn_use_bn"],
        "task": "binary",
        "device": "cpu",
    }
    if spec["model"] == "xdeepfm":
        cin = {"cin_layer_size": tuple(spec["cin_layer_size"]), "cin_split_half": spec["cin_split_half"]}
        model = xDeepFM(columns, columns, **common, **cin)
    else:
        model = DeepFM(columns, columns, **common)
    model.compile(torch.optim.Adam(model.parameters(), lr=spec["lr"]), "binary_crossentropy")
    timer = EpochTimer()
    history = model.fit(
        arrays, labels, batch_size=spec["batch_size"], epochs=spec["epochs"], verbose=0, shuffle=True, callbacks=[timer]
    )
    print(
        json.dumps(
            {
                "samples_per_second": [len(labels) / s for s in timer.seconds],
                "train_loss": history.history["loss"],
                "parameters": sum(p.numel() for p in model.parameters()),
            }
        )
    )


if __name__ == "__main__":
    main()

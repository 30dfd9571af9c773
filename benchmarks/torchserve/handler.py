"""TorchServe handler of the peer benchmark (`benchmarks/serve_peer_bench.py`): deepfm's artifact, scored on
raw JSON rows with deepfm's own encoder, as a TorchServe user would serve it.

A request's body is the scoring service's, `{"instances": [{field: raw value, ...}, ...]}`, and so is the
response, `{"model": ..., "version": ..., "predictions": [...]}`. The requests TorchServe hands over together
(its `batchSize` / `maxBatchDelay`) are encoded in one `FeatureEncoder.encode` call and scored in one model
call, then split back into one response per request. Runs in TorchServe's Python worker, never in ours.
"""

from __future__ import annotations

import json
from itertools import chain, pairwise
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ts.context import Context
from ts.torch_handler.base_handler import BaseHandler

from deepfm.artifact import load_artifact
from deepfm.data.encoding import FeatureEncoder

Batch = tuple[dict[str, torch.Tensor], list[int]]  # encoded features of all rows, and each request's row count


class DeepFMHandler(BaseHandler):
    """Loads model.pt + schema.json + metadata.json from the archive's directory with `load_artifact`."""

    def initialize(self, context: Context) -> None:
        torch.set_num_threads(1)  # one core per server, as the service's DEEPFM_SERVE_TORCH_THREADS=1
        self.artifact = load_artifact(Path(context.system_properties["model_dir"]))
        self.encoder = FeatureEncoder(self.artifact.schema)
        self.sources = self.artifact.schema.source_fields
        self.initialized = True

    def preprocess(self, data: list[dict[str, Any]]) -> Batch:
        """The requests' rows as one encoded batch; TorchServe has already parsed JSON bodies."""
        bodies = [item.get("body") or item.get("data") for item in data]
        instances = [
            body["instances"] for body in (json.loads(b) if isinstance(b, bytes | bytearray) else b for b in bodies)
        ]
        rows = list(chain.from_iterable(instances))
        columns = {name: [row.get(name) for row in rows] for name in self.sources}
        encoded = self.encoder.encode(columns, len(rows))
        return {name: torch.from_numpy(values) for name, values in encoded.features.items()}, list(map(len, instances))

    def inference(self, data: Batch, *args: Any, **kwargs: Any) -> tuple[np.ndarray, list[int]]:
        features, counts = data
        return self.artifact.predict(features).numpy(), counts

    def postprocess(self, data: tuple[np.ndarray, list[int]]) -> list[str]:
        """One compact JSON body per request (TorchServe would dump a dict with indent=2)."""
        scores, counts = data
        bounds = np.cumsum([0, *counts]).tolist()
        name, version = self.artifact.model_name, self.artifact.version
        for index in range(len(counts)):
            self.context.set_response_content_type(index, "application/json")
        return [
            json.dumps({"model": name, "version": version, "predictions": scores[start:end].tolist()})
            for start, end in pairwise(bounds)
        ]

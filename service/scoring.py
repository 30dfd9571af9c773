"""Scoring: raw rows of one or more requests -> one encoded batch -> click probabilities.

`LoadedModel` is what a request holds on to: the verified artifact, its encoder and request fields.
Requests scored together are encoded in one `FeatureEncoder.encode` call (the per-call cost of
encoding is most of a small request's), each request's context once as a single row broadcast
over that request's rows. The model runs on slices of at most `max_rows` rows.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np

from deepfm.artifact import Artifact, Runtime, load_artifact
from deepfm.data.encoding import EncodedBatch, FeatureEncoder
from deepfm.errors import ArtifactError, EncodingError
from service.inputs import RequestSpec, Rows

logger = logging.getLogger(__name__)

WARMUP_BATCH_SIZES = (1, 64)
WARMUP_ROUNDS = 3


@dataclass(frozen=True)
class Scored:
    """Scores of a batch of rows.

    Args:
        scores: (B,) float32 click probabilities, in row order.
        oov_rows: model field -> rows whose value was missing or unknown.
        call_rows: the number of rows of each model call.
    """

    scores: np.ndarray
    oov_rows: dict[str, int]
    call_rows: list[int]


def _encode_context(encoder: FeatureEncoder, context: dict[str, Any]) -> EncodedBatch | None:
    """A context as one encoded row (None for no context); EncodingError says it is the context's."""
    if not context:
        return None
    try:
        return encoder.encode({k: [v] for k, v in context.items()}, 1, encoder.fields_reading(context))
    except EncodingError as exc:
        problems = [EncodingError(f"context: {p}", field=p.field) for p in exc.problems]
        raise EncodingError("; ".join(map(str, problems)), problems=problems) from exc


def _joined_columns(parts: Sequence[Rows], names: Iterable[str]) -> dict[str, list[Any]]:
    """Each named request field's values over all parts' rows, in order; None where a part lacks it."""
    return {
        name: list(chain.from_iterable(p.columns.get(name) or [None] * p.num_rows for p in parts)) for name in names
    }


def encode_rows(encoder: FeatureEncoder, parts: Sequence[Rows]) -> EncodedBatch:
    """Encode the rows of several requests as one batch, each context once and broadcast over its rows.

    Raises:
        EncodingError: a value the encoder refuses; its row counts from the first part's first row,
            and is None for a value in a context.
    """
    counts = [p.num_rows for p in parts]
    if not any(p.context for p in parts):  # the usual case: columns end to end, nothing to broadcast
        if len(parts) == 1:
            return encoder.encode(parts[0].columns, counts[0])
        return encoder.encode(_joined_columns(parts, set().union(*(p.columns for p in parts))), sum(counts))
    everywhere = set.intersection(*(set(p.context) for p in parts))  # request fields every part sends once
    names = set().union(*(p.columns for p in parts), *(p.context for p in parts)) - everywhere
    columns = _joined_columns(parts, names)
    per_row = encoder.fields_reading(set(encoder.schema.source_fields) - everywhere)
    encoded = encoder.encode(columns, sum(counts), per_row)
    features, oov_rows = dict(encoded.features), dict(encoded.oov_rows)
    shared = [_encode_context(encoder, p.context) for p in parts]
    for name in encoder.fields_reading(everywhere):  # one row per request, repeated over its rows
        rows = [s.features[name] for s in shared if s is not None]
        features[name] = np.repeat(np.concatenate(rows), counts, axis=0)
        oov_rows[name] = sum(n * s.oov_rows[name] for n, s in zip(counts, shared, strict=True) if s is not None)
    starts = np.cumsum([0, *counts]).tolist()
    for start, count, context in zip(starts, counts, shared, strict=False):
        if context is None:
            continue
        for name in context.features.keys() & encoded.features.keys():  # encoded as missing above: overwrite
            features[name][start : start + count] = context.features[name][0]
            oov_rows[name] += count * (context.oov_rows[name] - 1)
    return EncodedBatch(features, oov_rows, encoded.num_rows)


@dataclass(frozen=True, eq=False)
class LoadedModel:
    """A verified, warmed-up model version: the unit a request holds from start to end."""

    artifact: Artifact
    encoder: FeatureEncoder
    spec: RequestSpec

    @property
    def name(self) -> str:
        """The model's name."""
        return self.artifact.model_name

    @property
    def version(self) -> int:
        """The model's version."""
        return self.artifact.version

    @classmethod
    def load(cls, path: Path, max_rows: int, runtime: Runtime = "auto") -> LoadedModel:
        """Load and verify a version directory to score by `runtime` (`load_artifact`), then warm it up
        through the scoring path.

        Raises:
            ArtifactError: the artifact is broken, or fails the warm-up.
        """
        artifact = load_artifact(path, runtime)
        loaded = cls(artifact, FeatureEncoder(artifact.schema), RequestSpec(artifact.schema))
        example = loaded.spec.example_instance()
        for size in WARMUP_BATCH_SIZES * WARMUP_ROUNDS:
            try:
                scores = loaded.score([loaded.spec.rows([example] * size, None, strict=False)], max_rows).scores
            except (EncodingError, RuntimeError) as exc:
                raise ArtifactError(f"{path}: warm-up batch failed: {exc}", path=str(path)) from exc
            if scores.shape != (size,) or not np.all(np.isfinite(scores)):
                raise ArtifactError(f"{path}: warm-up batch of {size} rows gave {scores!r}", path=str(path))
        return loaded

    def score(self, parts: Sequence[Rows], max_rows: int) -> Scored:
        """Scores of the rows of `parts`, in order, from model calls of at most `max_rows` rows.

        Raises:
            EncodingError: as `encode_rows`.
        """
        encoded = encode_rows(self.encoder, parts)
        total, features = encoded.num_rows, encoded.features
        if total <= max_rows:  # the usual case: one call on the whole batch
            return Scored(self.artifact.scores(features), encoded.oov_rows, [total])
        starts = range(0, total, max_rows)
        outputs = [self.artifact.scores({k: a[s : s + max_rows] for k, a in features.items()}) for s in starts]
        return Scored(np.concatenate(outputs), encoded.oov_rows, [min(max_rows, total - s) for s in starts])

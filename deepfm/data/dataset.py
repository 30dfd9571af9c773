"""In-memory datasets of encoded rows, for DataLoader-style access and fast batched iteration.

Index columns may be stored compactly (int32, see `compact`); batches always carry int64 indices.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from deepfm.data.schema import DatasetSchema

Batch = tuple[dict[str, Tensor], Tensor]
"""(features: field -> (B,) or (B, L) tensor, labels: (B,) float32)."""


class CTRDataset(Dataset[Batch]):
    """Encoded feature tensors and labels, optionally grouped into ranking queries.

    Args:
        features: field name -> tensor with B rows.
        labels: (B,) float32 click labels.
        query_ids: (B,) int64 ranking query of each row (one held-out rating and its sampled
            negatives), -1 where a row belongs to no query; None when the set has no queries.
        is_target: (B,) bool, True for the held-out row of each query.
    """

    def __init__(
        self,
        features: dict[str, Tensor],
        labels: Tensor,
        query_ids: Tensor | None = None,
        is_target: Tensor | None = None,
    ) -> None:
        self.features = features
        self.labels = labels
        self.query_ids = query_ids
        self.is_target = is_target

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitem__(self, index: int) -> Batch:
        return {name: _widened(values[index]) for name, values in self.features.items()}, self.labels[index]

    def num_batches(self, batch_size: int, world_size: int = 1) -> int:
        """How many batches `batches(batch_size, ..., world_size=world_size)` yields (to every rank)."""
        per_rank = -(-len(self) // world_size)
        return -(-per_rank // batch_size)

    def batches(
        self, batch_size: int, generator: torch.Generator | None = None, rank: int = 0, world_size: int = 1
    ) -> Iterator[Batch]:
        """Batches by slicing whole tensors; shuffled when a generator is given.

        With `world_size` > 1, only rank `rank`'s share of the (shuffled) order (see `shard`): every
        rank gets as many batches of the same sizes, and the ranks' i-th batches together are the
        rows a single process takes in its i-th batch of `batch_size * world_size` rows.
        """
        order = torch.randperm(len(self), generator=generator) if generator is not None else None
        if world_size > 1:
            order = shard(torch.arange(len(self)) if order is None else order, rank, world_size)
        for start in range(0, len(self) if order is None else len(order), batch_size):
            if order is None:
                rows: slice | Tensor = slice(start, start + batch_size)
            else:
                rows = order[start : start + batch_size]
            yield {name: _widened(values[rows]) for name, values in self.features.items()}, self.labels[rows]


class ResampledDataset(CTRDataset):
    """A training set whose rows are drawn anew each epoch (e.g. fresh negative samples).

    Args:
        draw: epoch -> (features, labels) of that epoch's rows; must be deterministic per epoch.
    """

    def __init__(self, draw: Callable[[int], tuple[dict[str, Tensor], Tensor]]) -> None:
        self._draw = draw
        super().__init__(*draw(0))

    def resample(self, epoch: int) -> None:
        """Replace the rows with those of `epoch`."""
        self.features, self.labels = self._draw(epoch)


def _widened(values: Tensor) -> Tensor:
    """int64 indices of a compactly stored column; other columns as they are."""
    return values.long() if values.dtype == torch.int32 else values


def compact(arrays: dict[str, np.ndarray], schema: DatasetSchema) -> dict[str, np.ndarray]:
    """Encoded index columns as int32 where the field's indices fit (half the memory); dense columns unchanged."""
    fits = {f.name for f in schema.fields.values() if f.is_categorical and f.vocabulary_size <= np.iinfo(np.int32).max}
    return {name: values.astype(np.int32) if name in fits else values for name, values in arrays.items()}


def to_tensors(arrays: dict[str, np.ndarray]) -> dict[str, Tensor]:
    """Encoded numpy arrays as tensors, sharing memory."""
    return {name: torch.from_numpy(np.ascontiguousarray(values)) for name, values in arrays.items()}


def shard(order: Tensor, rank: int, world_size: int) -> Tensor:
    """Rank `rank`'s rows of `order`: positions rank, rank + world_size, ..., after the order is wrapped
    round to a multiple of `world_size` rows, so every rank gets ceil(N / world_size) (as PyTorch's
    DistributedSampler pads; at most world_size - 1 rows are seen twice).

    Args:
        order: (N,) row indices.
        rank: this process's rank, 0 <= rank < world_size.
        world_size: the number of processes.

    Returns:
        (ceil(N / world_size),) row indices.
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in [0, {world_size})")
    if len(order) == 0:
        return order
    per_rank = -(-len(order) // world_size)
    padded = order[torch.arange(per_rank * world_size) % len(order)]
    return padded[rank::world_size]

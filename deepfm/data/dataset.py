"""Datasets of encoded rows, for DataLoader-style access and fast batched iteration: in memory
(`CTRDataset`) or in column files on disk read block by block (`ColumnFiles`, written by `ColumnWriter`);
`prefetched` prepares batches ahead of their use in a background thread.

Index columns may be stored compactly (int32, see `compact`); batches always carry int64 indices.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Generator, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

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
        """Replace the rows with those of `epoch`, the old ones freed first (one epoch's rows in memory)."""
        del self.features, self.labels
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


# --- column files --------------------------------------------------------------------------------------------------

LABELS_FILE = "labels.npy"


class ColumnWriter:
    """Writes the encoded columns of a known number of rows into .npy files in `folder`, block by block.

    One file per field (`<position>.npy`, in `names` order) plus `labels.npy`; a file is created, with its
    header and full size, when its first block comes, and the blocks are appended with plain writes, so
    that memory holds one block whatever the number of rows.

    Args:
        folder: an existing, empty folder.
        names: the fields, in model order.
        num_rows: the rows that `append` will be given in all.
    """

    def __init__(self, folder: Path, names: Sequence[str], num_rows: int) -> None:
        self.folder, self.names, self.num_rows = folder, list(names), num_rows
        self._files: dict[str, Any] = {}
        self._written = 0

    def append(self, features: dict[str, np.ndarray], labels: np.ndarray) -> None:
        """Add the next rows: field -> (B,) or (B, L) array, and (B,) labels."""
        if self._written + len(labels) > self.num_rows:
            raise ValueError(f"{self.folder}: more than the {self.num_rows} rows announced")
        arrays = {str(position): features[name] for position, name in enumerate(self.names)}
        for key, values in (arrays | {"labels": labels}).items():
            if key not in self._files:
                path = self.folder / f"{key}.npy"
                header = np.lib.format.open_memmap(path, "w+", values.dtype, (self.num_rows, *values.shape[1:]))
                offset = header.offset
                del header  # the file exists at its full size; the rows are written below
                self._files[key] = path.open("r+b")
                self._files[key].seek(offset)
            self._files[key].write(np.ascontiguousarray(values).tobytes())
        self._written += len(labels)

    def close(self) -> None:
        """Close the files; ValueError if fewer rows came than announced."""
        for file in self._files.values():
            file.close()
        self._files.clear()
        if self._written != self.num_rows:
            raise ValueError(f"{self.folder}: {self._written} rows written of the {self.num_rows} announced")


class ColumnFiles(CTRDataset):
    """Encoded rows in the column files of a `ColumnWriter`, read block by block.

    Batches are read from the files in blocks of `block_rows` rows, each block a sequential read that is
    copied out of a short-lived memory map, so that memory holds one window of blocks however many rows
    the files have. Shuffled, the order is a block shuffle: the blocks in a random order, taken
    `window_blocks` at a time, the rows of each window in a random order. A dataset of at most one
    window is shuffled as `CTRDataset` shuffles (the same generator gives the same order). `features`
    maps the files into memory for row access; batches do not go through it.

    Args:
        folder: the writer's folder.
        names: the fields, in the writer's order.
        block_rows: rows of a shuffle block and of a read.
        window_blocks: blocks whose rows are shuffled together.
        keep: an object to keep alive while the dataset is (e.g. the owner of a temporary folder).
    """

    def __init__(
        self, folder: Path, names: Sequence[str], block_rows: int, window_blocks: int, keep: object = None
    ) -> None:
        if block_rows < 1 or window_blocks < 1:
            raise ValueError(f"block_rows and window_blocks must be >= 1, got {block_rows} and {window_blocks}")
        self.folder, self.block_rows, self.window_blocks, self._keep = folder, block_rows, window_blocks, keep
        self._paths = {name: folder / f"{position}.npy" for position, name in enumerate(names)}
        # copy-on-write maps: writable, so torch takes them without a warning; nothing is written back
        features = {name: torch.from_numpy(np.load(path, mmap_mode="c")) for name, path in self._paths.items()}
        super().__init__(features, torch.from_numpy(np.load(folder / LABELS_FILE)))

    def batches(
        self, batch_size: int, generator: torch.Generator | None = None, rank: int = 0, world_size: int = 1
    ) -> Iterator[Batch]:
        """Batches in file order, or block-shuffled when a generator is given; with `world_size` > 1 rank
        `rank`'s share of that order, as `shard` takes it (see `CTRDataset.batches`)."""
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, {world_size})")
        size = len(self)
        per_rank = -(-size // world_size)
        padding = per_rank * world_size - size  # positions past the end, wrapped round to the first rows
        lead: list[np.ndarray] = []  # global rows at the first order positions, for the padding
        carry: dict[str, np.ndarray] = {}
        start = 0  # order position of the window's first row
        for ranges, permutation in self._windows(generator):
            rows = np.concatenate([np.arange(a, b) for a, b in ranges])
            if permutation is not None:
                rows = rows[permutation]
            if padding and start < world_size:
                lead.append(rows[: world_size - start])
            mine = np.arange((rank - start) % world_size, len(rows), world_size) if world_size > 1 else None
            chosen = permutation if mine is None else (mine if permutation is None else permutation[mine])
            window = self._read(ranges, chosen)
            start += len(rows)
            carry = yield from self._full_batches(_joined(carry, window), batch_size)
        if padding:
            wrapped = np.concatenate(lead)[np.arange(size, size + padding) % size]
            extra = wrapped[(rank - size) % world_size :: world_size]
            if len(extra):
                carry = _joined(carry, self._read([(int(r), int(r) + 1) for r in extra], None))
        yield from self._full_batches(carry, batch_size, last=True)

    def _windows(self, generator: torch.Generator | None) -> Iterator[tuple[list[tuple[int, int]], np.ndarray | None]]:
        """(contiguous row ranges of a window, order of its rows or None for file order), window by window."""
        size, block = len(self), self.block_rows
        blocks = [(a, min(a + block, size)) for a in range(0, size, block)]
        if generator is None:
            for first in range(0, len(blocks), self.window_blocks):
                yield blocks[first : first + self.window_blocks], None
        elif len(blocks) <= self.window_blocks:
            yield [(0, size)], torch.randperm(size, generator=generator).numpy()
        else:
            shuffled = [blocks[b] for b in torch.randperm(len(blocks), generator=generator).tolist()]
            for first in range(0, len(shuffled), self.window_blocks):
                ranges = shuffled[first : first + self.window_blocks]
                rows = sum(b - a for a, b in ranges)
                yield ranges, torch.randperm(rows, generator=generator).numpy()

    def _read(self, ranges: list[tuple[int, int]], chosen: np.ndarray | None) -> dict[str, np.ndarray]:
        """Columns (and "" for the labels) of the rows in `ranges`, concatenated, then taken at `chosen`."""
        window = {}
        for name, path in [*self._paths.items(), ("", self.folder / LABELS_FILE)]:
            mapped = np.load(path, mmap_mode="r")
            values = np.concatenate([mapped[a:b] for a, b in ranges])
            del mapped  # unmapped: the pages read do not stay in this process's memory
            window[name] = values if chosen is None else values[chosen]
        return window

    def _full_batches(
        self, rows: dict[str, np.ndarray], batch_size: int, last: bool = False
    ) -> Generator[Batch, None, dict[str, np.ndarray]]:
        """The whole batches of `rows` (and the last, short one if `last`); returns the rows left over."""
        count = len(rows[""]) if rows else 0
        end = count if last else count - count % batch_size
        for start in range(0, end, batch_size):
            labels = torch.from_numpy(rows[""][start : start + batch_size])
            features = {
                name: _widened(torch.from_numpy(rows[name][start : start + batch_size])) for name in self._paths
            }
            yield features, labels
        return {name: values[end:] for name, values in rows.items()} if end < count else {}


def _joined(first: dict[str, np.ndarray], second: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The rows of `first`, then those of `second` (either may be empty: {})."""
    if not first or not second:
        return first or second
    return {name: np.concatenate([values, second[name]]) for name, values in first.items()}


# --- prefetch ------------------------------------------------------------------------------------------------------

Item = TypeVar("Item")
_END = object()


def prefetched(items: Iterator[Item], depth: int) -> Generator[Item, None, None]:
    """The items of `items`, produced up to `depth` ahead by a background thread.

    An exception of the producer is raised here, where the item would have come; when the consumer stops
    early (closes this generator, or drops it), the producer stops and its thread is joined. `depth` 0
    iterates in the calling thread.
    """
    if depth <= 0:
        yield from items
        return
    ready: queue.Queue[tuple[Any, BaseException | None]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(entry: tuple[Any, BaseException | None]) -> bool:
        while not stop.is_set():
            try:
                ready.put(entry, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put((item, None)):
                    return
            put((_END, None))
        except BaseException as exc:  # handed to the consumer, raised there
            put((_END, exc))
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()

    thread = threading.Thread(target=produce, name="deepfm-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item, error = ready.get()
            if error is not None:
                raise error
            if item is _END:
                return
            yield item
    finally:
        stop.set()
        thread.join()

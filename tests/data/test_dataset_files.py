"""Column files on disk (ColumnWriter, ColumnFiles): batches, block shuffle, DDP shards; and prefetch."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from deepfm.data.dataset import ColumnFiles, ColumnWriter, CTRDataset, prefetched, shard

NAMES = ["user", "tags", "price"]


def columns(rows: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Features that encode the row number, so that rows can be traced through batches."""
    features: dict[str, np.ndarray] = {
        "user": rows.astype(np.int32),
        "tags": np.stack([rows, rows + 100_000], axis=1).astype(np.int32),  # (B, L)
        "price": rows.astype(np.float32) / 10,
    }
    return features, (rows % 2).astype(np.float32)


def write(folder: Path, num_rows: int, block: int = 37) -> None:
    writer = ColumnWriter(folder, NAMES, num_rows)
    for start in range(0, num_rows, block):
        writer.append(*columns(np.arange(start, min(start + block, num_rows))))
    writer.close()


def files(tmp_path: Path, num_rows: int, block_rows: int = 10, window_blocks: int = 3) -> ColumnFiles:
    write(tmp_path, num_rows)
    return ColumnFiles(tmp_path, NAMES, block_rows, window_blocks)


def rows_of(batches: Iterator[tuple[dict[str, torch.Tensor], torch.Tensor]]) -> list[int]:
    """The row numbers of every batch in turn, checking that each batch's columns agree."""
    seen = []
    for features, labels in batches:
        user = features["user"]
        assert user.dtype == torch.int64 and features["tags"].dtype == torch.int64  # widened
        assert torch.equal(features["tags"][:, 1], user + 100_000)
        assert torch.allclose(features["price"], user.float() / 10)
        assert torch.equal(labels, (user % 2).float())
        seen += user.tolist()
    return seen


def test_the_files_hold_what_was_written(tmp_path: Path) -> None:
    dataset = files(tmp_path, 250)

    assert len(dataset) == 250 and dataset.query_ids is None and dataset.is_target is None
    assert dataset.features["tags"].shape == (250, 2) and dataset.features["user"].dtype == torch.int32
    assert dataset.labels.tolist() == (np.arange(250) % 2).astype(np.float32).tolist()
    features, label = dataset[7]
    assert features["user"].item() == 7 and label.item() == 1.0


def test_a_writer_given_too_few_or_too_many_rows_says_so(tmp_path: Path) -> None:
    writer = ColumnWriter(tmp_path, NAMES, 10)
    writer.append(*columns(np.arange(4)))
    with pytest.raises(ValueError, match="more than the 10 rows announced"):
        writer.append(*columns(np.arange(7)))
    with pytest.raises(ValueError, match="4 rows written of the 10 announced"):
        writer.close()


def test_unshuffled_batches_are_the_rows_in_order(tmp_path: Path) -> None:
    dataset = files(tmp_path, 250)

    batches = list(dataset.batches(64))

    assert [len(labels) for _, labels in batches] == [64, 64, 64, 58] and dataset.num_batches(64) == 4
    assert rows_of(iter(batches)) == list(range(250))


def test_block_shuffle_is_a_seeded_permutation_mixing_rows_within_windows(tmp_path: Path) -> None:
    dataset = files(tmp_path, 250, block_rows=10, window_blocks=3)

    order = rows_of(dataset.batches(16, torch.Generator().manual_seed(1)))
    again = rows_of(dataset.batches(16, torch.Generator().manual_seed(1)))
    other = rows_of(dataset.batches(16, torch.Generator().manual_seed(2)))

    assert sorted(order) == list(range(250))
    assert order == again and order != other
    for window in range(0, 250, 30):  # each window of 30 rows comes from 3 whole blocks of 10
        blocks = {row // 10 for row in order[window : window + 30]}
        assert len(blocks) == min(3, -(-(250 - window) // 10))
        assert sorted(order[window : window + 30]) == sorted(r for b in blocks for r in range(b * 10, b * 10 + 10))
    assert order[:30] != sorted(order[:30])  # rows mixed within the window


def test_a_dataset_of_one_window_is_shuffled_as_in_memory(tmp_path: Path) -> None:
    dataset = files(tmp_path, 250, block_rows=100, window_blocks=3)
    features, labels = columns(np.arange(250))
    memory = CTRDataset({name: torch.from_numpy(values) for name, values in features.items()}, torch.from_numpy(labels))

    on_disk = rows_of(dataset.batches(32, torch.Generator().manual_seed(5)))
    in_memory = rows_of(memory.batches(32, torch.Generator().manual_seed(5)))

    assert on_disk == in_memory


@pytest.mark.parametrize("world_size", [2, 3, 7])
@pytest.mark.parametrize("shuffled", [False, True])
def test_ranks_take_the_shards_of_the_order(tmp_path: Path, world_size: int, shuffled: bool) -> None:
    dataset = files(tmp_path, 250, block_rows=10, window_blocks=2)

    def generator() -> torch.Generator | None:
        return torch.Generator().manual_seed(3) if shuffled else None

    order = torch.tensor(rows_of(dataset.batches(1000, generator())))
    for rank in range(world_size):
        batches = list(dataset.batches(16, generator(), rank, world_size))
        assert rows_of(iter(batches)) == shard(order, rank, world_size).tolist()
        assert len(batches) == dataset.num_batches(16, world_size)


def test_reads_hold_one_window_not_the_file(tmp_path: Path) -> None:
    """Memory is bounded structurally: every read copies at most one window of rows."""
    dataset = files(tmp_path, 250, block_rows=10, window_blocks=3)
    sizes: list[int] = []
    read = dataset._read

    def counted(ranges: list[tuple[int, int]], chosen: np.ndarray | None) -> dict[str, np.ndarray]:
        sizes.append(sum(b - a for a, b in ranges))
        return read(ranges, chosen)

    dataset._read = counted  # type: ignore[method-assign]
    rows_of(dataset.batches(16, torch.Generator().manual_seed(0)))

    assert sum(sizes) == 250 and max(sizes) == 30


# --- prefetch ------------------------------------------------------------------------------------------------------


def test_prefetch_yields_every_item_in_order_from_another_thread() -> None:
    threads = set()

    def items() -> Iterator[int]:
        for i in range(50):
            threads.add(threading.get_ident())
            yield i

    assert list(prefetched(items(), 3)) == list(range(50))
    assert threads and threading.get_ident() not in threads
    assert list(prefetched(iter(range(5)), 0)) == list(range(5))


def test_prefetch_raises_the_producers_exception_in_the_consumer() -> None:
    def items() -> Iterator[int]:
        yield 1
        raise OSError("disk gone")

    got = []
    with pytest.raises(OSError, match="disk gone"):
        for item in prefetched(items(), 2):
            got.append(item)
    assert got == [1]


def test_prefetch_stops_its_thread_when_the_consumer_stops_early() -> None:
    produced = []
    closed = threading.Event()

    def items() -> Iterator[int]:
        try:
            for i in range(1_000_000):
                produced.append(i)
                yield i
        finally:
            closed.set()

    batches = prefetched(items(), 2)
    assert next(batches) == 0
    batches.close()

    assert closed.is_set()  # the producer's generator was closed, its thread joined
    assert len(produced) <= 5  # it ran at most the queue's depth ahead
    assert not [t for t in threading.enumerate() if t.name == "deepfm-prefetch"]

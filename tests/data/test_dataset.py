"""CTRDataset: DataLoader access, whole-tensor batches, per-epoch resampling."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import Tensor
from torch.utils.data import DataLoader

from deepfm.data.dataset import CTRDataset, ResampledDataset, to_tensors

NUM_ROWS = 10


@pytest.fixture
def dataset() -> CTRDataset:
    """Ten rows whose every feature encodes the row number, so rows can be traced through batches."""
    rows = torch.arange(NUM_ROWS)
    features = {
        "user": rows.clone(),  # (B,)
        "tags": torch.stack([rows, rows + 100, torch.zeros_like(rows)], dim=1),  # (B, L)
        "price": rows.float() / 10,  # (B,)
    }
    return CTRDataset(features, labels=(rows % 2).float())


def test_len_and_getitem(dataset: CTRDataset) -> None:
    features, label = dataset[3]

    assert len(dataset) == NUM_ROWS
    assert features["user"].item() == 3
    assert features["tags"].tolist() == [3, 103, 0]
    assert features["price"].item() == pytest.approx(0.3)
    assert label.item() == 1.0


def test_dataloader_collates_batches_of_dicts(dataset: CTRDataset) -> None:
    loader = DataLoader(dataset, batch_size=4, shuffle=False)

    batches = list(loader)

    assert len(batches) == 3
    features, labels = batches[0]
    assert features["user"].tolist() == [0, 1, 2, 3]
    assert features["tags"].shape == (4, 3)
    assert features["tags"].dtype == torch.int64
    assert features["price"].dtype == torch.float32
    assert labels.tolist() == [0.0, 1.0, 0.0, 1.0]
    assert batches[-1][0]["user"].tolist() == [8, 9]


def rows_of(batches: list[tuple[dict[str, Tensor], Tensor]]) -> list[int]:
    """Row numbers in batch order, checking each batch's fields and labels belong to the same rows."""
    seen: list[int] = []
    for features, labels in batches:
        rows = features["user"]
        assert torch.equal(features["tags"][:, 1], rows + 100)
        assert torch.equal(labels, (rows % 2).float())
        seen.extend(rows.tolist())
    return seen


@pytest.mark.parametrize("batch_size", [1, 3, 10, 64])
def test_batches_cover_every_row_once_in_order(dataset: CTRDataset, batch_size: int) -> None:
    batches = list(dataset.batches(batch_size))

    assert rows_of(batches) == list(range(NUM_ROWS))
    assert len(batches) == -(-NUM_ROWS // batch_size) == dataset.num_batches(batch_size)
    assert all(len(labels) == batch_size for _, labels in batches[:-1])


@pytest.mark.parametrize("batch_size", [1, 3, 64])
def test_shuffled_batches_cover_every_row_once(dataset: CTRDataset, batch_size: int) -> None:
    order = rows_of(list(dataset.batches(batch_size, generator=torch.Generator().manual_seed(0))))

    assert sorted(order) == list(range(NUM_ROWS))
    assert order != list(range(NUM_ROWS))


def test_shuffle_is_determined_by_the_generator(dataset: CTRDataset) -> None:
    def order(seed: int) -> list[int]:
        return rows_of(list(dataset.batches(4, generator=torch.Generator().manual_seed(seed))))

    assert order(7) == order(7)
    assert order(7) != order(8)


def test_empty_dataset_has_no_batches() -> None:
    empty = CTRDataset({"user": torch.zeros(0, dtype=torch.int64)}, torch.zeros(0))

    assert len(empty) == 0
    assert list(empty.batches(4)) == []
    assert empty.num_batches(4) == 0


def test_resampled_dataset_draws_rows_per_epoch() -> None:
    def draw(epoch: int) -> tuple[dict[str, Tensor], Tensor]:
        rows = torch.arange(epoch, epoch + 3 + epoch)
        return {"user": rows}, torch.zeros(len(rows))

    dataset = ResampledDataset(draw)
    first = dataset.features["user"].tolist()
    dataset.resample(2)

    assert first == [0, 1, 2]
    assert dataset.features["user"].tolist() == [2, 3, 4, 5, 6]
    assert len(dataset) == 5


def test_to_tensors_shares_memory_with_contiguous_arrays() -> None:
    arrays = {"user": np.arange(4, dtype=np.int64), "tags": np.arange(12, dtype=np.int64).reshape(3, 4)[:, :2]}

    tensors = to_tensors(arrays)
    arrays["user"][0] = 99

    assert tensors["user"][0].item() == 99
    assert tensors["tags"].tolist() == [[0, 1], [4, 5], [8, 9]]  # a non-contiguous view is copied correctly
    assert tensors["tags"].is_contiguous()

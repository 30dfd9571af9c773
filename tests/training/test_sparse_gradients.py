"""Large embedding tables train with sparse gradients in one process; clipping takes them as dense ones."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import Tensor, nn

from deepfm.config import TrainingConfig
from deepfm.data.dataset import CTRDataset
from deepfm.data.schema import DatasetSchema, FeatureType, FieldSchema
from deepfm.models.deepfm import DeepFM
from deepfm.models.layers.embedding import FUSED_MAX_ROWS, FeatureEmbedding
from deepfm.training.trainer import Trainer, clip_gradients

LARGE = 5 * FUSED_MAX_ROWS  # looked up by its own tables, not through the fused ones
LOOKED_UP = 300  # the ids a batch of the test holds: 1..LOOKED_UP


def schema() -> DatasetSchema:
    sparse = FeatureType.SPARSE
    return DatasetSchema(
        [
            FieldSchema("ad_id", sparse, vocabulary_size=LARGE, embedding_dim=8),
            FieldSchema("site", sparse, vocabulary_size=20, embedding_dim=4),
            FieldSchema("price", FeatureType.DENSE, embedding_dim=4),
        ]
    )


def clicks(rows: int = 4096) -> CTRDataset:
    generator = torch.Generator().manual_seed(0)
    ad_id = torch.randint(1, LOOKED_UP + 1, (rows,), generator=generator)
    site = torch.randint(0, 20, (rows,), generator=generator)
    labels = (ad_id % 3 == 0).float()  # learnt by the large table alone
    return CTRDataset({"ad_id": ad_id, "site": site, "price": torch.rand(rows, generator=generator)}, labels)


def trainer(**changes: object) -> Trainer:
    torch.manual_seed(0)
    config = TrainingConfig(epochs=2, batch_size=512, lr=0.02, device="cpu", progress=False)
    return Trainer(DeepFM(schema(), dnn_hidden_units=(16,)), TrainingConfig(**{**vars(config), **changes}))


def large_tables(fitting: Trainer) -> list[nn.Embedding]:
    """The large field's second- and first-order tables."""
    embedding = fitting.model.embedding
    assert isinstance(embedding, FeatureEmbedding)
    tables = []
    for lookups in (embedding.second_order_embeddings, embedding.first_order_embeddings):
        table = lookups["ad_id"]
        assert isinstance(table, nn.Embedding)
        tables.append(table)
    return tables


def test_a_large_table_steps_only_the_rows_it_looked_up() -> None:
    fitting = trainer()
    tables = large_tables(fitting)
    before = [table.weight.detach().clone() for table in tables]

    history = fitting.fit(clicks(), clicks(1024))

    assert [type(o) for o in fitting.optimizers] == [torch.optim.AdamW, torch.optim.SparseAdam]
    sparse_weights = fitting.optimizers[1].param_groups[0]["params"]
    assert len(sparse_weights) == 2 and all(w is t.weight for w, t in zip(sparse_weights, tables, strict=True))
    for table, old in zip(tables, before, strict=True):
        moved = (table.weight.detach() != old).any(dim=1)
        assert moved[1 : LOOKED_UP + 1].all() and not moved[LOOKED_UP + 1 :].any() and not moved[0]
    assert all(table.weight.grad is not None and table.weight.grad.is_sparse for table in tables)
    assert history.best_val_auc > 0.9  # it learnt the ids


def test_without_sparse_gradients_every_table_is_dense() -> None:
    fitting = trainer(sparse_gradients=False, epochs=1)
    table = large_tables(fitting)[0]

    fitting.fit(clicks(), clicks(1024))

    assert [type(o) for o in fitting.optimizers] == [torch.optim.AdamW]
    assert not table.sparse and table.weight.grad is not None and not table.weight.grad.is_sparse


def gradients(sparse: bool, max_norm: float) -> list[Tensor]:
    """Gradients of an embedding (some rows looked up twice) and a linear layer, clipped to `max_norm`."""
    torch.manual_seed(0)
    embedding, linear = nn.Embedding(50, 4, sparse=sparse), nn.Linear(4, 1)
    ids = torch.tensor([3, 7, 3, 9, 7, 7])
    (linear(embedding(ids)) ** 2).sum().backward()
    parameters = [embedding.weight, linear.weight, linear.bias]
    if sparse:
        clip_gradients(parameters, max_norm)
    else:
        nn.utils.clip_grad_norm_(parameters, max_norm)
    return [p.grad.to_dense() for p in parameters if p.grad is not None]


@pytest.mark.parametrize("max_norm", [1e-3, 1.0, 1e6])  # clipped hard, somewhat, not at all
def test_clipping_sparse_gradients_equals_clipping_their_dense_form(max_norm: float) -> None:
    clipped, reference = gradients(True, max_norm), gradients(False, max_norm)

    assert len(clipped) == len(reference) == 3
    for ours, theirs in zip(clipped, reference, strict=True):
        torch.testing.assert_close(ours, theirs)


def test_dense_gradients_are_clipped_exactly_as_clip_grad_norm_does() -> None:
    model = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 1))
    other = copy.deepcopy(model)
    for network in (model, other):
        network(torch.arange(12.0).reshape(2, 6)).sum().backward()

    clip_gradients(model.parameters(), 0.5)
    nn.utils.clip_grad_norm_(other.parameters(), 0.5)

    for ours, theirs in zip(model.parameters(), other.parameters(), strict=True):
        assert ours.grad is not None and theirs.grad is not None
        assert torch.equal(ours.grad, theirs.grad)

"""FeatureEmbedding: the three views, OOV/padding, pooling, dense fields, parameter counts, TorchScript."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from deepfm.data.schema import DatasetSchema
from deepfm.errors import ConfigError
from deepfm.jit import script
from deepfm.models.layers.embedding import FeatureEmbedding

BatchFactory = Callable[..., dict[str, torch.Tensor]]

# The repr up to where the "FeatureEmbedding Guide" seed notebook's printout stops.
SEED_REPR_PREFIX = """FeatureEmbedding(
  (second_order_embeddings): ModuleDict(
    (user_id): Embedding(944, 16, padding_idx=0)
    (movie_id): Embedding(1679, 16, padding_idx=0)
    (gender): Embedding(3, 4, padding_idx=0)
    (age): Embedding(8, 4, padding_idx=0)
    (occupation): Embedding(22, 8, padding_idx=0)
    (zip_prefix): Embedding(383, 8, padding_idx=0)
    (genres): EmbeddingBag(20, 8, mode='mean', padding_idx=0)
  )
  (first_order_embeddings): ModuleDict(
    (user_id): Embedding(944, 1, padding_idx=0)
    (movie_id): Embedding(1679, 1, padding_idx=0)
    (gender): Embedding(3, 1, padding_idx=0)
    (age): Embedding(8, 1, padding_idx=0)
    (occupation): Embedding(22, 1, padding_idx=0)
    (zip_prefix): Embedding(383, 1, padding_idx=0)
    (genres): EmbeddingBag(20, 1, mode='mean', padding_idx=0)
  )
  (projections): ModuleDict(
    (gender): Linear(in_features=4, out_features=16, bias=False)
    (age): Linear(in_features=4, out_features=16, bias=False)
    (occupation): Linear(in_features=8,"""


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_shapes_on_the_synthetic_schema(synthetic_schema: DatasetSchema, make_batch: BatchFactory) -> None:
    first_order, field_embeddings, flat_embeddings = FeatureEmbedding(synthetic_schema, 16)(
        make_batch(synthetic_schema, 8)
    )
    assert first_order.shape == (8, 1)
    assert field_embeddings.shape == (8, 6, 16)
    assert flat_embeddings.shape == (8, 56)


def test_movielens_repr_and_parameter_counts(movielens_schema: DatasetSchema) -> None:
    embedding = FeatureEmbedding(movielens_schema, fm_embed_dim=16)
    assert repr(embedding).startswith(SEED_REPR_PREFIX)
    assert list(embedding.projections) == ["gender", "age", "occupation", "zip_prefix", "genres"]
    assert _count(embedding) == 48_983
    assert _count(embedding.second_order_embeddings) == 45_412
    assert _count(embedding.first_order_embeddings) == 3_059
    assert _count(embedding.projections) == 512


def test_all_oov_gives_exact_zeros(mixed_schema: DatasetSchema, make_oov_batch: BatchFactory) -> None:
    for view in FeatureEmbedding(mixed_schema, 8)(make_oov_batch(mixed_schema, 3)):
        assert torch.count_nonzero(view) == 0


def test_oov_rows_start_at_zero(mixed_schema: DatasetSchema) -> None:
    embedding = FeatureEmbedding(mixed_schema, 8)
    for tables in (embedding.second_order_embeddings, embedding.first_order_embeddings):
        for name, table in tables.items():
            if mixed_schema.fields[name].is_categorical:
                assert torch.count_nonzero(table.weight[0]) == 0, name


def test_views_are_assembled_from_the_lookups(mixed_schema: DatasetSchema, make_batch: BatchFactory) -> None:
    embedding = FeatureEmbedding(mixed_schema, 8)
    batch = make_batch(mixed_schema, 5)
    first_order, field_embeddings, flat_embeddings = embedding(batch)
    second = {n: embedding.second_order_embeddings[n](batch[n]) for n in mixed_schema.field_names}
    first = [embedding.first_order_embeddings[n](batch[n]) for n in mixed_schema.field_names]
    torch.testing.assert_close(flat_embeddings, torch.cat(list(second.values()), dim=1))
    torch.testing.assert_close(first_order, torch.cat(first, dim=1).sum(dim=1, keepdim=True))
    for i, name in enumerate(mixed_schema.field_names):
        projection = embedding.projections[name] if name in embedding.projections else torch.nn.Identity()
        torch.testing.assert_close(field_embeddings[:, i], projection(second[name]))
    assert sorted(embedding.projections) == ["item", "price", "tags_max", "tags_mean"]


@pytest.mark.parametrize(("name", "pool"), [("tags_mean", "mean"), ("tags_sum", "sum"), ("tags_max", "max")])
def test_sequences_pool_only_the_non_padding_items(mixed_schema: DatasetSchema, name: str, pool: str) -> None:
    embedding = FeatureEmbedding(mixed_schema, 8)
    max_length = mixed_schema.fields[name].max_length
    items = torch.tensor([[3, 1, 2], [4, 0, 0], [0, 0, 0]])
    padded = torch.nn.functional.pad(items, (0, max_length - 3))  # (B, L), 0-padded
    table = embedding.second_order_embeddings[name].weight
    expected = []
    for row in items:
        vectors = table[row[row != 0]]
        if len(vectors) == 0:
            expected.append(torch.zeros(table.size(1)))
        else:
            expected.append({"mean": vectors.mean(0), "sum": vectors.sum(0), "max": vectors.max(0).values}[pool])
    torch.testing.assert_close(embedding.second_order_embeddings[name](padded), torch.stack(expected))


def test_dense_field_scales_a_learned_vector(mixed_schema: DatasetSchema) -> None:
    embedding = FeatureEmbedding(mixed_schema, 8)
    values = torch.tensor([0.0, 1.0, -2.5])
    weight = embedding.second_order_embeddings["price"].linear.weight[:, 0]  # (dim,)
    torch.testing.assert_close(embedding.second_order_embeddings["price"](values), values[:, None] * weight)
    assert _count(embedding.second_order_embeddings["price"]) == 3
    assert _count(embedding.first_order_embeddings["price"]) == 1


def test_oov_rows_get_no_gradient(mixed_schema: DatasetSchema, make_batch: BatchFactory) -> None:
    embedding = FeatureEmbedding(mixed_schema, 8)
    batch = make_batch(mixed_schema, 32, low=0)  # index 0 appears in every categorical field
    sum(view.sum() for view in embedding(batch)).backward()
    for tables in (embedding.second_order_embeddings, embedding.first_order_embeddings):
        for name, table in tables.items():
            if mixed_schema.fields[name].is_categorical:
                assert torch.count_nonzero(table.weight.grad[0]) == 0, name
                assert torch.count_nonzero(table.weight.grad) > 0, name


def test_invalid_fm_embed_dim_raises(mixed_schema: DatasetSchema) -> None:
    with pytest.raises(ConfigError, match="fm_embed_dim"):
        FeatureEmbedding(mixed_schema, 0)


def test_script_matches_eager(mixed_schema: DatasetSchema, make_batch: BatchFactory, batch_size: int) -> None:
    embedding = FeatureEmbedding(mixed_schema, 8).eval()
    batch = make_batch(mixed_schema, batch_size, seed=batch_size, low=0)
    for scripted, eager in zip(script(embedding)(batch), embedding(batch), strict=True):
        torch.testing.assert_close(scripted, eager)

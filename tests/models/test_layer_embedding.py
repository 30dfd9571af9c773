"""FeatureEmbedding: the three views against a naive reference, OOV/padding, pooling, dense fields,
gradients, parameter counts and state-dict keys, TorchScript (scripted and frozen)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import Tensor

from deepfm import jit
from deepfm.data.schema import OOV_INDEX, DatasetSchema, FeatureType
from deepfm.errors import ConfigError
from deepfm.jit import script
from deepfm.models.layers.embedding import DenseEmbedding, FeatureEmbedding

BatchFactory = Callable[..., dict[str, torch.Tensor]]
Views = tuple[Tensor, Tensor, Tensor]
TOLERANCE = {"rtol": 0.0, "atol": 1e-6}

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


def _trained(embedding: FeatureEmbedding, seed: int = 3) -> FeatureEmbedding:
    """Weights as training leaves them: random everywhere but the OOV/padding rows, which stay zero."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in embedding.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.3)
        for tables in (embedding.second_order_embeddings, embedding.first_order_embeddings):
            for table in tables.values():
                if not isinstance(table, DenseEmbedding):
                    table.weight[OOV_INDEX].zero_()
    return embedding


def _pooled(table: Tensor, bags: Tensor, combiner: str) -> Tensor:
    """Each row's bag of indices pooled over its non-padding entries, one row at a time."""
    pooled = []
    for bag in bags:
        vectors = table[bag[bag != OOV_INDEX]]
        if len(vectors) == 0:
            pooled.append(torch.zeros(table.shape[1]))
        else:
            pooled.append({"mean": vectors.mean(0), "sum": vectors.sum(0), "max": vectors.max(0).values}[combiner])
    return torch.stack(pooled)


def _reference(embedding: FeatureEmbedding, schema: DatasetSchema, batch: dict[str, Tensor]) -> Views:
    """The three views field by field from the weights: row lookups, masked pooling, value times row."""
    first, fields, flat = [], [], []
    for field in schema.fields.values():
        second_table = embedding.second_order_embeddings[field.name].weight
        first_table = embedding.first_order_embeddings[field.name].weight
        values = batch[field.name]
        if field.feature_type is FeatureType.DENSE:
            raw, linear = values[:, None] * second_table[0], values[:, None] * first_table[0]
        elif field.feature_type is FeatureType.SEQUENCE:
            raw, linear = _pooled(second_table, values, field.combiner), _pooled(first_table, values, field.combiner)
        else:
            known = (values != OOV_INDEX).unsqueeze(1)  # (B, 1): an OOV row reads as zeros, with no gradient
            raw, linear = second_table[values] * known, first_table[values] * known
        projection = embedding.projections[field.name].weight if field.name in embedding.projections else None
        flat.append(raw)
        first.append(linear)
        fields.append(raw if projection is None else raw @ projection.T)
    return torch.cat(first, dim=1).sum(dim=1, keepdim=True), torch.stack(fields, dim=1), torch.cat(flat, dim=1)


@pytest.fixture(params=["mixed", "reversed", "large", "movielens"])
def schema(
    request: pytest.FixtureRequest,
    mixed_schema: DatasetSchema,
    large_schema: DatasetSchema,
    movielens_schema: DatasetSchema,
) -> DatasetSchema:
    """Every feature type and combiner; the same in reverse order (the lookups' order is not the model's);
    the same with tables too large to fuse; MovieLens-100K."""
    schemas = {
        "mixed": mixed_schema,
        "reversed": DatasetSchema(list(reversed(mixed_schema.fields.values()))),
        "large": large_schema,
        "movielens": movielens_schema,
    }
    return schemas[request.param]


def test_views_equal_a_naive_reference_eager_and_frozen(
    schema: DatasetSchema, make_batch: BatchFactory, batch_size: int
) -> None:
    embedding = _trained(FeatureEmbedding(schema, fm_embed_dim=8)).eval()
    batch = make_batch(schema, batch_size, seed=batch_size, low=0)  # OOV and padding in every field
    frozen = jit.freeze(jit.script(embedding), preserved_attrs=[])
    with torch.no_grad():
        expected = _reference(embedding, schema, batch)
        for views in (embedding(batch), frozen(batch)):
            for view, reference in zip(views, expected, strict=True):
                torch.testing.assert_close(view, reference, **TOLERANCE)


def test_scripting_the_same_fields_in_another_order_keeps_each_order(
    mixed_schema: DatasetSchema, make_batch: BatchFactory
) -> None:
    """TorchScript shares a compiled type between ModuleDicts of the same names in another order."""
    for schema in (mixed_schema, DatasetSchema(list(reversed(mixed_schema.fields.values())))):
        embedding = _trained(FeatureEmbedding(schema, fm_embed_dim=8)).eval()
        batch = make_batch(schema, 5, low=0)
        with torch.no_grad():
            for view, reference in zip(jit.script(embedding)(batch), _reference(embedding, schema, batch), strict=True):
                torch.testing.assert_close(view, reference, **TOLERANCE)


def test_gradients_equal_the_naive_reference(schema: DatasetSchema, make_batch: BatchFactory) -> None:
    embedding = _trained(FeatureEmbedding(schema, fm_embed_dim=8))
    batch = make_batch(schema, 64, low=0)
    grads = []
    for compute in (embedding, lambda b: _reference(embedding, schema, b)):
        embedding.zero_grad()
        views = compute(batch)
        weights = [torch.randn(v.shape, generator=torch.Generator().manual_seed(i)) for i, v in enumerate(views)]
        sum((v * w).sum() for v, w in zip(views, weights, strict=True)).backward()
        grads.append({n: p.grad.clone() for n, p in embedding.named_parameters()})
    for name, grad in grads[0].items():
        torch.testing.assert_close(grad, grads[1][name], rtol=0.0, atol=1e-5, msg=name)


def test_only_large_tables_are_looked_up_by_themselves(large_schema: DatasetSchema) -> None:
    assert FeatureEmbedding(large_schema, 8).alone_names == ["item", "tags_sum"]


def test_state_dict_holds_each_fields_tables(movielens_schema: DatasetSchema) -> None:
    """The keys of checkpoints written before the tables were fused: such checkpoints still load."""
    names = movielens_schema.field_names
    expected = [f"second_order_embeddings.{n}.weight" for n in names]
    expected += [f"first_order_embeddings.{n}.weight" for n in names]
    expected += [f"projections.{n}.weight" for n in ("gender", "age", "occupation", "zip_prefix", "genres")]
    assert list(FeatureEmbedding(movielens_schema, 16).state_dict()) == expected


def test_dense_embedding_draws_the_random_numbers_of_the_linear_layer_it_replaced() -> None:
    """So that a seeded run initialises every later table as before."""
    draws = []
    for make in (lambda: DenseEmbedding(3), lambda: torch.nn.Linear(1, 3, bias=False)):
        torch.manual_seed(0)
        make()
        draws.append(torch.rand(4))
    assert torch.equal(draws[0], draws[1])


def test_dense_embedding_loads_the_linear_layout_of_older_checkpoints(mixed_schema: DatasetSchema) -> None:
    trained = _trained(FeatureEmbedding(mixed_schema, 8))
    old = trained.state_dict()
    for tables in ("second_order_embeddings", "first_order_embeddings"):  # nn.Linear(1, dim) held (dim, 1)
        old[f"{tables}.price.linear.weight"] = old.pop(f"{tables}.price.weight").T.clone()
        old._metadata[f"{tables}.price"]["version"] = 1  # type: ignore[attr-defined]  # state dicts carry it
    loaded = FeatureEmbedding(mixed_schema, 8)
    loaded.load_state_dict(old)
    for name, tensor in trained.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name


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
    weight = embedding.second_order_embeddings["price"].weight[0]  # (dim,)
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

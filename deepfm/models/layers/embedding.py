"""Per-field embeddings shared by every CTR model: the first-order and second-order views of a batch.

Following DeepFM (Guo et al. 2017, "DeepFM: A Factorization-Machine based Neural Network for CTR
Prediction"), the FM component and the deep component share one set of feature embeddings. Each
field has its own `embedding_dim`; the interaction layers (FM, CIN, attention) need one common width
D, so a field whose dim differs from `fm_embed_dim` is projected to it (bias-free, so zero stays zero).

Index 0 is the OOV/padding index of every categorical field: an unknown value contributes exactly
nothing to any of the three outputs, and the OOV rows receive no gradient.

Each field owns its tables (its parameters and state-dict keys), but the fields with small tables are
looked up through fused tables, as torchrec's `EmbeddingBagCollection` does: the SPARSE fields'
embeddings projected to D, each row followed by its first-order weight, stacked into one table and
looked up once, and their raw embeddings in one table per width; a SEQUENCE field's
`[embedding | first-order weight]` rows looked up once and pooled; a DENSE field's three rows in one
product with the value. A projection is linear, so projecting a table's rows equals projecting the rows
looked up. The fused tables are made from the fields' parameters at every call, so that gradients
reach them; freezing a scripted model (as an artifact is served) turns them into constants. That making
copies the tables, so a table of more than `FUSED_MAX_ROWS` rows is looked up by itself instead.
"""

import math
from itertools import accumulate
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional

from deepfm.data.schema import OOV_INDEX, DatasetSchema, FeatureType, FieldSchema
from deepfm.errors import ConfigError

FUSED_MAX_ROWS = 4096


class DenseEmbedding(nn.Module):
    """Embeds one float per row as `value * weight`, so a value of 0 embeds to zero.

    Args:
        embedding_dim: width of the embedding; `weight` (1, embedding_dim) is the embedding of 1.
    """

    # version 2: `weight` (1, dim) replaced the `linear.weight` (dim, 1) of a bias-free nn.Linear(1, dim)
    _version = 2

    def __init__(self, embedding_dim: int) -> None:
        super().__init__()
        self.embedding_dim = embedding_dim
        self.weight = nn.Parameter(torch.empty(1, embedding_dim))
        # the draws of the nn.Linear(1, dim) default init it replaced, so that seeded runs draw as before
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))

    def forward(self, values: Tensor) -> Tensor:
        """Args: values (B,) float. Returns: (B, embedding_dim)."""
        return values.unsqueeze(1) * self.weight  # (B, 1) * (1, embedding_dim)

    def extra_repr(self) -> str:
        return str(self.embedding_dim)

    def _load_from_state_dict(
        self, state_dict: dict[str, Any], prefix: str, local_metadata: dict[str, Any], *args: Any
    ) -> None:
        if local_metadata.get("version", 1) < 2 and f"{prefix}linear.weight" in state_dict:
            state_dict[f"{prefix}weight"] = state_dict.pop(f"{prefix}linear.weight").T
        super()._load_from_state_dict(state_dict, prefix, local_metadata, *args)


def _field_embedding(field: FieldSchema, dim: int) -> nn.Module:
    """The table of one field at width `dim`, Xavier-normal initialised with its OOV/padding row zero.

    Xavier scales the init to the table's shape: small for large vocabularies, larger for fields with
    a handful of values.
    """
    module: nn.Module
    if field.feature_type is FeatureType.DENSE:
        module = DenseEmbedding(dim)
    elif field.feature_type is FeatureType.SEQUENCE:
        module = nn.EmbeddingBag(field.vocabulary_size, dim, mode=field.combiner, padding_idx=OOV_INDEX)
    else:
        module = nn.Embedding(field.vocabulary_size, dim, padding_idx=OOV_INDEX)
    with torch.no_grad():
        nn.init.xavier_normal_(module.weight)
        if field.is_categorical:
            module.weight[OOV_INDEX].zero_()
    return module


def _starts(lengths: list[int]) -> list[int]:
    """Where each of consecutive blocks of these lengths starts."""
    return [0, *accumulate(lengths)][:-1]


def _order(names: list[str], model_order: list[str]) -> Tensor:
    """For each name of `model_order`, its position in `names`."""
    return torch.tensor([names.index(n) for n in model_order], dtype=torch.int64)


def _tensor(value: Any) -> Tensor:
    """A submodule's parameter, which mypy types as Tensor | Module, as the Tensor it is."""
    assert isinstance(value, Tensor)
    return value


Weights = tuple[list[str], list[Tensor]]  # the names of a ModuleDict's modules, and their weights


# some fields' first-order weights (B, n), embeddings at width D (B, n, D) and raw embeddings (B, n x dims)
Views = tuple[list[Tensor], list[Tensor], list[Tensor]]


def _no_weights() -> Weights:
    names: list[str] = []
    tensors: list[Tensor] = []
    return names, tensors


def _weight(weights: Weights, name: str) -> Tensor:
    """The weight of the module `name`."""
    names, tensors = weights
    return tensors[names.index(name)]


def _oov_as_zeros(table: Tensor) -> Tensor:
    """The table with its OOV row replaced by zeros that are no parameter, so that row gets no gradient."""
    return functional.pad(table[1:], (0, 0, 1, 0))


def _pooled(rows: Tensor, present: Tensor, mode: str) -> Tensor:
    """A bag's rows pooled over its non-padding positions, as `nn.EmbeddingBag` with `padding_idx` pools.

    Args: rows (B, L, width), present (B, L, 1) bool, mode "mean", "sum" or "max". Returns: (B, width).
    """
    if mode == "max":
        pooled = rows.masked_fill(~present, float("-inf")).amax(dim=1)
        return pooled.masked_fill(~present.any(dim=1), 0.0)  # an empty bag pools to zeros
    pooled = (rows * present).sum(dim=1)
    if mode == "mean":
        pooled = pooled / present.sum(dim=1).clamp(min=1)
    return pooled


class FeatureEmbedding(nn.Module):
    """Looks up every field of a batch and returns its first-order, field-wise and flat views.

    Args:
        schema: the fields in model order. SPARSE inputs are (B,) int64, SEQUENCE inputs (B, L) int64
            padded with 0 and pooled by the field's combiner, DENSE inputs (B,) float32.
        fm_embed_dim: the common width D of `field_embeddings`.
    """

    fused_names: list[str]
    fm_offsets: Tensor
    raw_offsets: Tensor
    raw_bounds: list[int]
    alone_names: list[str]
    block_order: Tensor
    column_order: Tensor

    def __init__(self, schema: DatasetSchema, fm_embed_dim: int) -> None:
        super().__init__()
        if fm_embed_dim < 1:
            raise ConfigError(f"fm_embed_dim must be >= 1, got {fm_embed_dim}")
        fields = list(schema.fields.values())
        self.field_names = schema.field_names
        self.num_fields = schema.num_fields
        self.fm_embed_dim = fm_embed_dim
        self.total_embedding_dim = schema.total_embedding_dim
        self.padding_index = OOV_INDEX
        self.second_order_embeddings = nn.ModuleDict({f.name: _field_embedding(f, f.embedding_dim) for f in fields})
        self.first_order_embeddings = nn.ModuleDict({f.name: _field_embedding(f, 1) for f in fields})
        self.projections = nn.ModuleDict(
            {
                f.name: nn.Linear(f.embedding_dim, fm_embed_dim, bias=False)
                for f in fields
                if f.embedding_dim != fm_embed_dim
            }
        )
        # How forward looks each field up. The plans are tuples, so that TorchScript unrolls the loops
        # over them and freezing folds the tables they make.
        fused = [f for f in fields if f.vocabulary_size <= FUSED_MAX_ROWS or not f.is_categorical]
        widths: dict[int, list[FieldSchema]] = {}
        for field in fused:
            if field.feature_type is FeatureType.SPARSE:
                widths.setdefault(field.embedding_dim, []).append(field)
        sparse = [f for group in widths.values() for f in group]  # grouped by width
        sequences = [f for f in fused if f.feature_type is FeatureType.SEQUENCE]
        dense = [f for f in fused if f.feature_type is FeatureType.DENSE]
        alone = [f for f in fields if f not in fused]
        self.fused_names = [f.name for f in sparse]
        self.fm_rows = tuple((f.name, f.name in self.projections) for f in sparse)
        fm_offsets = torch.tensor(_starts([f.vocabulary_size for f in sparse]), dtype=torch.int64)
        self.register_buffer("fm_offsets", fm_offsets, persistent=False)
        self.raw_groups = tuple(tuple(f.name for f in group) for group in widths.values())
        self.raw_bounds = list(accumulate((len(group) for group in widths.values()), initial=0))
        offsets = [start for group in widths.values() for start in _starts([f.vocabulary_size for f in group])]
        self.register_buffer("raw_offsets", torch.tensor(offsets, dtype=torch.int64), persistent=False)
        self.sequences = tuple((f.name, f.name in self.projections, f.embedding_dim, f.combiner) for f in sequences)
        self.dense = tuple((f.name, f.name in self.projections, f.embedding_dim) for f in dense)
        self.alone_names = [f.name for f in alone]
        # forward concatenates the fields in this order; these put them (and their columns) in model order
        looked_up = [f.name for f in [*sparse, *sequences, *dense, *alone]]
        self.reorders = looked_up != self.field_names
        self.register_buffer("block_order", _order(looked_up, self.field_names), persistent=False)
        starts = dict(zip(looked_up, _starts([schema.fields[n].embedding_dim for n in looked_up]), strict=True))
        columns = [c for f in fields for c in range(starts[f.name], starts[f.name] + f.embedding_dim)]
        self.register_buffer("column_order", torch.tensor(columns, dtype=torch.int64), persistent=False)

    def use_sparse_gradients(self) -> list[Tensor]:
        """Have the large tables' lookups give sparse gradients, which hold only the rows a batch looks up
        (a dense gradient is the whole table at every step); returns those tables' weights, for an
        optimizer of sparse gradients. A max-pooled bag cannot give them and keeps a dense gradient."""
        weights: list[Tensor] = []
        for tables in (self.second_order_embeddings, self.first_order_embeddings):
            for name, table in tables.items():
                pooled_by_max = isinstance(table, nn.EmbeddingBag) and table.mode == "max"
                if name in self.alone_names and isinstance(table, nn.Embedding | nn.EmbeddingBag) and not pooled_by_max:
                    table.sparse = True
                    weights.append(table.weight)
        return weights

    def _tables(self) -> tuple[Weights, Weights, Weights]:
        """The second-order and first-order tables and the projection matrices (D, dim), by field name.

        By name, not by position: TorchScript may iterate a ModuleDict in the order of another one with the
        same names. Made without mutation, so that freezing a scripted model folds what is made of them.
        """
        second = _no_weights()
        for name, table in self.second_order_embeddings.items():
            second = (second[0] + [name], second[1] + [_tensor(table.weight)])
        first = _no_weights()
        for name, table in self.first_order_embeddings.items():
            first = (first[0] + [name], first[1] + [_tensor(table.weight)])
        projections = _no_weights()
        for name, projection in self.projections.items():
            projections = (projections[0] + [name], projections[1] + [_tensor(projection.weight)])
        return second, first, projections

    def forward(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        """Embed a batch.

        Args:
            batch: field name -> encoded values, (B,) or (B, L) as the field's type says.

        Returns:
            first_order (B, 1): the first-order weights summed over fields.
            field_embeddings (B, F, D): every field's embedding at width D = fm_embed_dim.
            flat_embeddings (B, total_embedding_dim): the raw embeddings concatenated in field order.
        """
        second, first, projections = self._tables()
        sparse = self._sparse(batch, second, first, projections)
        sequences = self._sequences(batch, second, first, projections)
        dense = self._dense(batch, second, first, projections)
        alone = self._alone(batch)
        first_order = torch.cat(sparse[0] + sequences[0] + dense[0] + alone[0], dim=1)  # (B, F)
        field_embeddings = torch.cat(sparse[1] + sequences[1] + dense[1] + alone[1], dim=1)  # (B, F, D)
        flat_embeddings = torch.cat(sparse[2] + sequences[2] + dense[2] + alone[2], dim=1)  # (B, total_embedding_dim)
        if self.reorders:
            first_order = first_order.index_select(1, self.block_order)
            field_embeddings = field_embeddings.index_select(1, self.block_order)
            flat_embeddings = flat_embeddings.index_select(1, self.column_order)
        return first_order.sum(dim=1, keepdim=True), field_embeddings, flat_embeddings

    def _sparse(self, batch: dict[str, Tensor], second: Weights, first: Weights, projections: Weights) -> Views:
        """The fused SPARSE fields: one lookup at D with the first-order weights, one per width for the raw."""
        linear: list[Tensor] = []
        at_d: list[Tensor] = []
        raw: list[Tensor] = []
        if len(self.fused_names) == 0:
            return linear, at_d, raw
        indices = torch.stack([batch[n] for n in self.fused_names], dim=1)  # (B, S)
        fm_rows: list[Tensor] = []
        for name, projected in self.fm_rows:
            embedding = _weight(second, name)
            if projected:
                embedding = embedding @ _weight(projections, name).T  # (rows, D)
            fm_rows = fm_rows + [_oov_as_zeros(torch.cat([embedding, _weight(first, name)], dim=1))]  # noqa: RUF005
        looked_up = functional.embedding(indices + self.fm_offsets, torch.cat(fm_rows))  # (B, S, D + 1)
        linear.append(looked_up[:, :, -1])
        at_d.append(looked_up[:, :, :-1])
        raw_indices = indices + self.raw_offsets
        for g, group in enumerate(self.raw_groups):
            tables: list[Tensor] = []
            for name in group:
                tables = tables + [_oov_as_zeros(_weight(second, name))]  # noqa: RUF005
            group_indices = raw_indices[:, self.raw_bounds[g] : self.raw_bounds[g + 1]]
            raw.append(functional.embedding(group_indices, torch.cat(tables)).flatten(1))  # (B, fields x width)
        return linear, at_d, raw

    def _sequences(self, batch: dict[str, Tensor], second: Weights, first: Weights, projections: Weights) -> Views:
        """The fused SEQUENCE fields: `[embedding | first-order]` rows pooled, then projected (max pooling
        does not commute with a projection)."""
        linear: list[Tensor] = []
        at_d: list[Tensor] = []
        raw: list[Tensor] = []
        for name, projected, width, mode in self.sequences:
            values = batch[name]  # (B, L)
            table = torch.cat([_weight(second, name), _weight(first, name)], dim=1)
            rows = functional.embedding(values, table)  # (B, L, width + 1)
            pooled = _pooled(rows, (values != self.padding_index).unsqueeze(2), mode)
            embedding = pooled[:, :width]
            linear.append(pooled[:, width:])
            at_d.append((embedding @ _weight(projections, name).T if projected else embedding).unsqueeze(1))
            raw.append(embedding)
        return linear, at_d, raw

    def _dense(self, batch: dict[str, Tensor], second: Weights, first: Weights, projections: Weights) -> Views:
        """The DENSE fields: the value times its embedding, projected embedding and first-order weight."""
        linear: list[Tensor] = []
        at_d: list[Tensor] = []
        raw: list[Tensor] = []
        for name, projected, width in self.dense:
            row = _weight(second, name)  # (1, width)
            fm_row = row @ _weight(projections, name).T if projected else row  # (1, D)
            rows = batch[name].unsqueeze(1) * torch.cat([row, fm_row, _weight(first, name)], dim=1)
            linear.append(rows[:, -1:])
            at_d.append(rows[:, width:-1].unsqueeze(1))  # (B, 1, D)
            raw.append(rows[:, :width])
        return linear, at_d, raw

    def _alone(self, batch: dict[str, Tensor]) -> Views:
        """The fields with large tables, each looked up by its own modules."""
        embeddings: dict[str, Tensor] = {}
        for name, lookup in self.second_order_embeddings.items():
            if name in self.alone_names:
                embeddings[name] = lookup(batch[name])  # (B, field dim)
        projected = embeddings.copy()
        for name, projection in self.projections.items():
            if name in self.alone_names:
                projected[name] = projection(embeddings[name])  # (B, D)
        weights: dict[str, Tensor] = {}
        for name, lookup in self.first_order_embeddings.items():
            if name in self.alone_names:
                weights[name] = lookup(batch[name])  # (B, 1)
        # in alone_names' order, not the ModuleDicts' (see _tables)
        linear = [weights[n] for n in self.alone_names]
        at_d = [projected[n].unsqueeze(1) for n in self.alone_names]
        raw = [embeddings[n] for n in self.alone_names]
        return linear, at_d, raw

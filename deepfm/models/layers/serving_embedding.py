"""`FeatureEmbedding`'s three outputs from a few large lookups instead of three per field: the form an
exported model runs.

A trained `FeatureEmbedding` looks every field up in its own first-order and second-order tables and
projects the fields narrower or wider than D, a dozen small operations per field. Scoring a small
batch costs little more than that fixed number of operations, so `ServingEmbedding` rebuilds the
same outputs from fewer, larger ones, with tables prepared once from the trained weights:

- SPARSE fields: one table holds every field's rows (offset by field), each row its embedding already
  projected to D (a projection is linear, so projecting the table rows once equals projecting every
  looked-up row) and its first-order weight; one lookup gives all fields' `field_embeddings` rows
  and first-order weights. Their raw embeddings (`flat_embeddings`) come from one table per width.
- SEQUENCE fields: one lookup of `[embedding | first-order weight]` rows per field, pooled by the
  field's combiner over the non-padding positions (as `nn.EmbeddingBag` with `padding_idx` pools),
  then projected.
- DENSE fields: their embedding, projection and first-order weight are linear in the value: one
  multiplication gives all three.

The outputs equal `FeatureEmbedding`'s up to float rounding (tests hold them to 1e-6).
"""

from itertools import accumulate

import torch
from torch import Tensor, nn
from torch.nn import functional

from deepfm.data.schema import OOV_INDEX
from deepfm.models.layers.embedding import DenseEmbedding, FeatureEmbedding


def _rows(module: nn.Module) -> Tensor:
    """A trained table's rows, (rows, width): an embedding's weight; a DenseEmbedding's as one row."""
    if isinstance(module, nn.Embedding | nn.EmbeddingBag):
        return module.weight.detach()
    if isinstance(module, DenseEmbedding):
        return module.linear.weight.detach().T  # (1, width): the embedding of the value 1
    raise TypeError(f"not a field embedding: {module!r}")


def _starts(lengths: list[int]) -> list[int]:
    """Where each of consecutive blocks of these lengths starts."""
    return [0, *accumulate(lengths)][:-1]


def _projected(rows: Tensor, projection: Tensor | None) -> Tensor:
    """Rows at width D."""
    return rows if projection is None else rows @ projection.T


class _RawGroup(nn.Module):
    """The raw embeddings of the SPARSE fields of one width, from one table.

    Args:
        table: the fields' tables concatenated, (sum of vocabulary sizes, width).
        columns: each field's column in the SPARSE index matrix.
        offsets: each field's first row in `table`.
    """

    table: Tensor
    columns: Tensor
    offsets: Tensor

    def __init__(self, table: Tensor, columns: list[int], offsets: list[int]) -> None:
        super().__init__()
        self.register_buffer("table", table)
        self.register_buffer("columns", torch.tensor(columns, dtype=torch.int64))
        self.register_buffer("offsets", torch.tensor(offsets, dtype=torch.int64))

    def forward(self, indices: Tensor) -> Tensor:
        """Args: indices (B, S) of every SPARSE field. Returns: (B, fields of this width x width)."""
        rows = functional.embedding(indices.index_select(1, self.columns) + self.offsets, self.table)
        return rows.flatten(1)


class _PooledField(nn.Module):
    """A SEQUENCE field: one lookup of `[embedding | first-order weight]` rows, pooled, then projected.

    Args:
        table: the field's embedding and first-order tables side by side, (vocabulary size, width + 1).
        projection: the field's projection to D, or None at width D.
        mode: the combiner: "mean", "sum" or "max".
    """

    table: Tensor
    projection: Tensor

    def __init__(self, table: Tensor, projection: Tensor | None, mode: str) -> None:
        super().__init__()
        self.mode = mode
        self.width = table.shape[1] - 1
        self.padding_index = OOV_INDEX
        self.projects = projection is not None
        self.register_buffer("table", table)
        self.register_buffer("projection", torch.empty(0) if projection is None else projection.clone())

    def forward(self, indices: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Args: indices (B, L), 0 for padding. Returns: raw (B, width), projected (B, D), first-order (B, 1)."""
        rows = functional.embedding(indices, self.table)  # (B, L, width + 1)
        present = (indices != self.padding_index).unsqueeze(2)  # (B, L, 1)
        if self.mode == "max":
            pooled = rows.masked_fill(~present, float("-inf")).amax(dim=1)
            pooled = pooled.masked_fill(~present.any(dim=1), 0.0)  # an empty bag pools to zeros
        else:
            pooled = (rows * present).sum(dim=1)
            if self.mode == "mean":
                pooled = pooled / present.sum(dim=1).clamp(min=1)
        raw, first = pooled[:, : self.width], pooled[:, self.width :]
        projected = raw @ self.projection.T if self.projects else raw
        return raw, projected, first


class _DenseField(nn.Module):
    """A DENSE field: its embedding, projection and first-order weight are all linear in the value, so
    one row times the value gives the three.

    Args:
        row: the embedding of the value 1, (1, width).
        first: the first-order weight, (1, 1).
        projection: the field's projection to D, or None at width D.
    """

    row: Tensor

    def __init__(self, row: Tensor, first: Tensor, projection: Tensor | None) -> None:
        super().__init__()
        projected = _projected(row, projection)
        self.width = row.shape[1]
        self.fm_width = projected.shape[1]
        self.register_buffer("row", torch.cat([row, projected, first], dim=1)[0])

    def forward(self, values: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Args: values (B,). Returns: raw (B, width), projected (B, D), first-order (B, 1)."""
        rows = values.unsqueeze(1) * self.row
        return rows[:, : self.width], rows[:, self.width : self.width + self.fm_width], rows[:, -1:]


class ServingEmbedding(nn.Module):
    """`FeatureEmbedding`'s outputs, from tables prepared once out of a trained one (see the module docstring).

    Args:
        embedding: the trained embedding; its weights are copied, not shared.
    """

    sparse_offsets: Tensor
    sparse_table: Tensor
    field_order: Tensor
    flat_order: Tensor

    def __init__(self, embedding: FeatureEmbedding) -> None:
        super().__init__()
        names = embedding.field_names
        modules = dict(embedding.second_order_embeddings.items())
        bags = {n: m for n, m in modules.items() if isinstance(m, nn.EmbeddingBag)}
        sparse = [n for n in names if isinstance(modules[n], nn.Embedding)]
        dense = [n for n in names if isinstance(modules[n], DenseEmbedding)]
        with torch.no_grad():
            rows = {n: _rows(modules[n]) for n in names}
            firsts = {n: _rows(embedding.first_order_embeddings[n]) for n in names}
            # each projection matrix (D, width); fields of width D have none
            matrices = {n: m.weight.detach() for n, m in embedding.projections.items() if isinstance(m, nn.Linear)}
            projections = {n: matrices.get(n) for n in names}
            sizes = [rows[n].shape[0] for n in sparse]
            self.sparse_names = sparse
            self.register_buffer("sparse_offsets", torch.tensor(_starts(sizes)))
            fm_rows = [torch.cat([_projected(rows[n], projections[n]), firsts[n]], dim=1) for n in sparse]
            empty = torch.empty(0, embedding.fm_embed_dim + 1)
            self.register_buffer("sparse_table", torch.cat(fm_rows) if fm_rows else empty)
            widths = {n: rows[n].shape[1] for n in names}
            groups = [
                [i for i, n in enumerate(sparse) if widths[n] == w] for w in dict.fromkeys(widths[n] for n in sparse)
            ]
            self.raw_groups = nn.ModuleList(
                _RawGroup(
                    torch.cat([rows[sparse[i]] for i in group]),
                    group,
                    _starts([sizes[i] for i in group]),
                )
                for group in groups
            )
            self.sequences = nn.ModuleDict(
                {
                    n: _PooledField(torch.cat([rows[n], firsts[n]], dim=1), projections[n], bag.mode)
                    for n, bag in bags.items()
                }
            )
            self.dense = nn.ModuleDict({n: _DenseField(rows[n], firsts[n], projections[n]) for n in dense})
        # where each field's rows and columns land in the concatenations of forward, to put them in model order
        stacked = sparse + list(bags) + dense
        self.register_buffer("field_order", torch.tensor([stacked.index(n) for n in names]))
        flat = [sparse[i] for group in groups for i in group] + list(bags) + dense
        starts = dict(zip(flat, _starts([widths[n] for n in flat]), strict=True))
        self.register_buffer(
            "flat_order", torch.tensor([c for n in names for c in range(starts[n], starts[n] + widths[n])])
        )
        self.reorders_fields = stacked != names
        self.reorders_columns = flat != names

    def forward(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        """As `FeatureEmbedding.forward`: first_order (B, 1), field_embeddings (B, F, D), flat (B, total)."""
        fields: list[Tensor] = []
        flat: list[Tensor] = []
        firsts: list[Tensor] = []
        if len(self.sparse_names) > 0:
            indices = torch.stack([batch[n] for n in self.sparse_names], dim=1)  # (B, S)
            rows = functional.embedding(indices + self.sparse_offsets, self.sparse_table)  # (B, S, D + 1)
            fields.append(rows[:, :, :-1])
            firsts.append(rows[:, :, -1])
            for group in self.raw_groups:
                flat.append(group(indices))
        for name, pooled_field in self.sequences.items():
            raw, projected, first = pooled_field(batch[name])
            fields.append(projected.unsqueeze(1))
            flat.append(raw)
            firsts.append(first)
        for name, dense_field in self.dense.items():
            raw, projected, first = dense_field(batch[name])
            fields.append(projected.unsqueeze(1))
            flat.append(raw)
            firsts.append(first)
        field_embeddings = torch.cat(fields, dim=1)
        flat_embeddings = torch.cat(flat, dim=1)
        if self.reorders_fields:
            field_embeddings = field_embeddings.index_select(1, self.field_order)
        if self.reorders_columns:
            flat_embeddings = flat_embeddings.index_select(1, self.flat_order)
        first_order = torch.cat(firsts, dim=1).sum(dim=1, keepdim=True)
        return first_order, field_embeddings, flat_embeddings

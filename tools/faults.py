"""Models with the faults a scorer must survive, for tests: they export and load as real artifacts."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class PairFault(nn.Module):
    """A model with a fault where one user meets one movie: a fault the load-time probe cannot see, as its
    batches never put these two indices in one row.

    Args:
        model: the logit model to wrap.
        user_index: the user_id vocabulary index of the pair.
        movie_index: the movie_id vocabulary index of the pair.
    """

    def __init__(self, model: nn.Module, user_index: int, movie_index: int) -> None:
        super().__init__()
        self.model = model
        self.user_index = user_index
        self.movie_index = movie_index

    def pair(self, batch: dict[str, Tensor]) -> Tensor:
        """(B,) whether each row is the pair."""
        return (batch["user_id"] == self.user_index) & (batch["movie_id"] == self.movie_index)


class NaNForOnePair(PairFault):
    """Scores NaN for the pair."""

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        logits: Tensor = self.model(batch)
        return torch.where(self.pair(batch), torch.full_like(logits, float("nan")), logits)


class SlowForOnePair(PairFault):
    """Takes about `iterations` tensor additions (tens of seconds for millions) for a batch holding the pair:
    a model call that wedges.

    Args:
        iterations: how many additions the slow call makes; the rest as `PairFault`.
    """

    def __init__(self, model: nn.Module, user_index: int, movie_index: int, iterations: int) -> None:
        super().__init__(model, user_index, movie_index)
        self.iterations = iterations

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        logits: Tensor = self.model(batch)
        if bool(self.pair(batch).any()):
            delay = torch.zeros(1)
            for _ in range(self.iterations):
                delay = delay + 1.0
            logits = logits + delay * 0.0
        return logits


class NaNEmbeddingRow(nn.Module):
    """A model with one diverged embedding row: its logit plus a per-value bias looked up in an embedding
    table whose row `index` of `field` is NaN (and every other row 0).

    Args:
        model: the logit model to wrap.
        field: the sparse field whose row diverged.
        index: the vocabulary index of the row.
        vocabulary_size: the field's vocabulary size.
    """

    def __init__(self, model: nn.Module, field: str, index: int, vocabulary_size: int) -> None:
        super().__init__()
        self.model = model
        self.field = field
        self.rows = nn.Embedding(vocabulary_size, 1)
        with torch.no_grad():
            self.rows.weight.zero_()
            self.rows.weight[index] = float("nan")

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        logits: Tensor = self.model(batch)
        bias: Tensor = self.rows(batch[self.field]).squeeze(1)
        return logits + bias

"""Models with the faults a scorer must survive, for tests: they export and load as real artifacts."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class NaNForOnePair(nn.Module):
    """A model that scores NaN where one user meets one movie: a fault the load-time probe cannot see, as
    its batches never put these two indices in one row.

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

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        logits = self.model(batch)
        pair = (batch["user_id"] == self.user_index) & (batch["movie_id"] == self.movie_index)
        return torch.where(pair, torch.full_like(logits, float("nan")), logits)


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
        return self.model(batch) + self.rows(batch[self.field]).squeeze(1)


class SlowForOnePair(nn.Module):
    """A model whose call takes about `iterations` tensor additions (tens of seconds for millions) where one
    user meets one movie: a model call that wedges, past the load-time probe as `NaNForOnePair` is.

    Args:
        model: the logit model to wrap.
        user_index: the user_id vocabulary index of the pair.
        movie_index: the movie_id vocabulary index of the pair.
        iterations: how many additions the slow call makes.
    """

    def __init__(self, model: nn.Module, user_index: int, movie_index: int, iterations: int) -> None:
        super().__init__()
        self.model = model
        self.user_index = user_index
        self.movie_index = movie_index
        self.iterations = iterations

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        logits = self.model(batch)
        pair = (batch["user_id"] == self.user_index) & (batch["movie_id"] == self.movie_index)
        if bool(pair.any()):
            delay = torch.zeros(1)
            for _ in range(self.iterations):
                delay = delay + 1.0
            logits = logits + delay * 0.0
        return logits

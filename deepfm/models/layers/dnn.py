"""The deep component of DeepFM (Guo et al. 2017) and xDeepFM (Lian et al. 2018): a feed-forward
network over the concatenated field embeddings, each hidden layer
`Linear -> (BatchNorm1d) -> activation -> Dropout`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional

from deepfm.errors import ConfigError

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
    "prelu": nn.PReLU,
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
}


def make_activation(name: str) -> nn.Module:
    """A fresh activation module by name (one of `ACTIVATIONS`)."""
    if name not in ACTIVATIONS:
        raise ConfigError(f"unknown activation {name!r}, expected one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


class Dropout(nn.Dropout):
    """`nn.Dropout` whose mask, on the CPU, is drawn as uniform numbers compared with p: the CPU's
    `bernoulli_` takes twice as long per element as `rand_like`. Kept with probability 1 - p and scaled
    by 1 / (1 - p), as `nn.Dropout` does; elsewhere (eval, CUDA, in place, p of 0 or 1) it is `nn.Dropout`."""

    def forward(self, input: Tensor) -> Tensor:
        if not self.training or input.is_cuda or self.inplace or self.p == 0.0 or self.p == 1.0:
            return functional.dropout(input, self.p, self.training, self.inplace)
        return input * torch.rand_like(input).ge_(self.p).div_(1.0 - self.p)


class DNN(nn.Module):
    """Multi-layer perceptron.

    Args:
        input_dim: width of the input.
        hidden_units: width of each hidden layer, at least one.
        activation: name of the activation after each layer (see `ACTIVATIONS`).
        dropout: dropout probability after each activation, in [0, 1).
        use_batch_norm: whether to put a BatchNorm1d between each Linear and its activation.
    """

    def __init__(
        self,
        input_dim: int,
        hidden_units: Sequence[int],
        activation: str = "relu",
        dropout: float = 0.0,
        use_batch_norm: bool = False,
    ) -> None:
        super().__init__()
        units = list(hidden_units)
        if input_dim < 1:
            raise ConfigError(f"DNN input_dim must be >= 1, got {input_dim}")
        if not units or min(units) < 1:
            raise ConfigError(f"DNN hidden_units must be one or more positive widths, got {units}")
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"DNN dropout must be in [0, 1), got {dropout}")
        layers: list[nn.Module] = []
        for in_dim, out_dim in zip([input_dim, *units[:-1]], units, strict=True):
            layers.append(nn.Linear(in_dim, out_dim))
            if use_batch_norm:
                layers.append(nn.BatchNorm1d(out_dim))
            layers.append(make_activation(activation))
            layers.append(Dropout(dropout))
        self.mlp = nn.Sequential(*layers)
        self.output_dim = units[-1]

    def forward(self, x: Tensor) -> Tensor:
        """Args: x (B, input_dim). Returns: (B, output_dim)."""
        out: Tensor = self.mlp(x)
        return out

"""FMInteraction: shape, the pairwise definition, no parameters, TorchScript."""

from __future__ import annotations

import pytest
import torch

from deepfm.jit import script
from deepfm.models.layers.fm import FMInteraction


def _pairwise(x: torch.Tensor) -> torch.Tensor:
    """sum_{i<j} <v_i, v_j> by a double loop over field pairs: (B, F, D) -> (B, 1)."""
    out = torch.zeros(x.size(0), 1, dtype=x.dtype)
    for i in range(x.size(1)):
        for j in range(i + 1, x.size(1)):
            out += (x[:, i] * x[:, j]).sum(dim=1, keepdim=True)
    return out


def test_shape_and_no_parameters() -> None:
    fm = FMInteraction()
    assert fm(torch.randn(8, 6, 16)).shape == (8, 1)
    assert list(fm.parameters()) == []
    assert repr(fm) == "FMInteraction()"


@pytest.mark.parametrize("num_fields", [1, 2, 7])
def test_matches_pairwise_sum(num_fields: int) -> None:
    x = torch.randn(5, num_fields, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    torch.testing.assert_close(FMInteraction()(x), _pairwise(x))


def test_script_matches_eager(batch_size: int) -> None:
    fm = FMInteraction()
    x = torch.randn(batch_size, 6, 16, generator=torch.Generator().manual_seed(batch_size))
    torch.testing.assert_close(script(fm)(x), fm(x))

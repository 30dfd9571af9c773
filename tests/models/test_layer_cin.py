"""CIN: the seed notebook's sizes, a per-sample outer-product reference, errors, TorchScript."""

from __future__ import annotations

import pytest
import torch

from deepfm.errors import ConfigError
from deepfm.jit import script
from deepfm.models.layers.cin import CIN

SEED_REPR = """CIN(
  (conv_layers): ModuleList(
    (0): Conv1d(36, 128, kernel_size=(1,), stride=(1,))
    (1): Conv1d(384, 128, kernel_size=(1,), stride=(1,))
  )
)"""


def _reference(cin: CIN, x: torch.Tensor, split_half: bool) -> torch.Tensor:
    """CIN by explicit loops, one sample and one (field, map) pair at a time, with `cin`'s weights."""
    rows = []
    for sample in x:  # (F, D)
        hidden, pooled = sample, []
        for k, conv in enumerate(cin.conv_layers):
            maps = torch.stack([sample[f] * hidden[h] for f in range(sample.size(0)) for h in range(hidden.size(0))])
            out = conv.weight[:, :, 0] @ maps + conv.bias[:, None]  # (H_k, D)
            if split_half and k < len(cin.conv_layers) - 1:
                half = out.size(0) // 2
                pooled.append(out[:half].sum(dim=1))
                hidden = out[half:]
            else:
                pooled.append(out.sum(dim=1))
                hidden = out
        rows.append(torch.cat(pooled))
    return torch.stack(rows)


def test_seed_configuration() -> None:
    cin = CIN(num_fields=6, embed_dim=16, layer_sizes=[128, 128], split_half=True)
    assert repr(cin) == SEED_REPR
    assert [conv.in_channels for conv in cin.conv_layers] == [36, 384]
    assert cin.direct_sizes == [64, 128]
    assert cin.next_sizes == [64, 128]
    assert cin.output_dim == 192
    assert sum(p.numel() for p in cin.parameters()) == 54_016
    assert cin(torch.randn(8, 6, 16)).shape == (8, 192)


def test_without_split_half_every_map_goes_to_the_output() -> None:
    cin = CIN(num_fields=6, embed_dim=16, layer_sizes=[128, 128], split_half=False)
    assert [conv.in_channels for conv in cin.conv_layers] == [36, 768]
    assert cin.output_dim == 256
    assert cin(torch.randn(2, 6, 16)).shape == (2, 256)


@pytest.mark.parametrize(("layer_sizes", "split_half"), [([4, 6, 3], True), ([4, 6, 3], False), ([5], True)])
def test_matches_outer_product_reference(layer_sizes: list[int], split_half: bool) -> None:
    cin = CIN(num_fields=4, embed_dim=3, layer_sizes=layer_sizes, split_half=split_half).double()
    x = torch.randn(3, 4, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    out = cin(x)
    assert out.shape == (3, cin.output_dim)
    torch.testing.assert_close(out, _reference(cin, x, split_half))


@pytest.mark.parametrize(
    ("num_fields", "layer_sizes", "split_half"),
    [(0, [4], True), (4, [], True), (4, [4, 0], True), (4, [5, 4], True)],
)
def test_invalid_sizes_raise(num_fields: int, layer_sizes: list[int], split_half: bool) -> None:
    with pytest.raises(ConfigError):
        CIN(num_fields, 8, layer_sizes, split_half)


def test_odd_sizes_are_fine_without_split_half_or_in_the_last_layer() -> None:
    assert CIN(4, 8, [5, 3], split_half=False).output_dim == 8
    assert CIN(4, 8, [4, 3], split_half=True).output_dim == 5


def test_script_matches_eager(batch_size: int) -> None:
    cin = CIN(num_fields=6, embed_dim=16, layer_sizes=[128, 128], split_half=True)
    x = torch.randn(batch_size, 6, 16, generator=torch.Generator().manual_seed(batch_size))
    torch.testing.assert_close(script(cin)(x), cin(x))

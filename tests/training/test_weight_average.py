"""WeightAverage against torch's AveragedModel with the EMA update it reproduces: bit-identical averages."""

from __future__ import annotations

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from deepfm.training.trainer import WeightAverage


def test_matches_averaged_model_bit_for_bit() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 1))
    decay = 1 - 1 / 7
    ours = WeightAverage(model, decay)
    theirs = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    for step in range(12):
        model(torch.randn(16, 6)).square().mean().backward()
        optimizer.step()
        optimizer.zero_grad()
        ours.update()
        theirs.update_parameters(model)
        expected = theirs.module.state_dict()
        for name, value in ours.module.state_dict().items():
            assert torch.equal(value, expected[name]), (step, name)
    averaged, current = ours.module.state_dict(), model.state_dict()
    assert not torch.equal(averaged["0.weight"], current["0.weight"])  # an average, not a copy of the model

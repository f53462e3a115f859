"""Tests for stabnb.gates: gate flips and margins by hand; hooks on MLP, CNN and ResNet."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from stabnb.gates import gate_flips, preactivation_margin, relu_preactivations
from stabnb.models import MLP, ResNet20, SmallCNN

DT = torch.float64


@pytest.fixture()
def identity_gates() -> nn.Module:
    """Pre-activations equal the inputs: Linear(2, 2) = I, then ReLU."""
    model = nn.Sequential(nn.Linear(2, 2, bias=False), nn.ReLU(), nn.Linear(2, 1)).to(DT)
    with torch.no_grad():
        model[0].weight.copy_(torch.eye(2, dtype=DT))
    return model.eval()


def test_flips_and_margins_by_hand(identity_gates):
    x = torch.tensor([[1.0, -2.0], [0.5, 0.3]], dtype=DT)
    perturbed = torch.tensor([[[1.0, 2.0], [-1.0, -2.0]],
                              [[0.5, 0.5], [-0.5, 0.5]]], dtype=DT)
    torch.testing.assert_close(gate_flips(identity_gates, x, perturbed),
                               torch.tensor([0.5, 0.25], dtype=DT))
    torch.testing.assert_close(preactivation_margin(identity_gates, x),
                               torch.tensor([1.0, 0.3], dtype=DT))   # lower median of two
    with pytest.raises(ValueError, match="perturbed must be"):
        gate_flips(identity_gates, x, perturbed[:, 0])


def test_hooks_see_every_relu_call_and_models_without_relu_give_nan():
    cnn = SmallCNN(1, 3, 8, channels=(4, 6), hidden=5).to(DT).eval()
    x = torch.rand(2, 1, 8, 8, dtype=DT)
    assert relu_preactivations(cnn, x).shape == (2, 4 * 64 + 6 * 16 + 5)
    resnet = ResNet20(3, in_channels=1, width=2, blocks=1).to(DT).eval()
    units = relu_preactivations(resnet, x)
    assert units.shape == (2, 2 * 64 * 3 + 4 * 16 * 2 + 8 * 4 * 2)   # stem + 2 ReLUs a block
    copies = (x.unsqueeze(1) + 0.01 * torch.randn(2, 3, 1, 8, 8, dtype=DT)).clamp(0, 1)
    flips = gate_flips(resnet, x, copies)
    assert bool(((flips >= 0) & (flips <= 1)).all())
    assert not any(h for m in resnet.modules() for h in m._forward_pre_hooks.values())
    tanh = MLP(4, (3,), 2, activation="tanh").to(DT).eval()
    flat = torch.rand(2, 4, dtype=DT)
    assert all(math.isnan(v) for v in gate_flips(tanh, flat, flat.unsqueeze(1)).tolist())
    assert all(math.isnan(v) for v in preactivation_margin(tanh, flat).tolist())

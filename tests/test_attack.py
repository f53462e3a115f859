"""Tests for stabnb.attribution.attack: the attack beats its random start, stays in the ball
and the pixel range, keeps the prediction; the surrogate and the loss by hand."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from stabnb.attribution import attribution_attack, smooth_surrogate
from stabnb.attribution.attack import _mass_outside
from stabnb.models import MLP, initialize

DT = torch.float64


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def relu_mlp() -> nn.Module:
    return initialize(MLP(16, (32,), 3), gen(0)).to(DT).eval()


@pytest.fixture(scope="module")
def inputs() -> torch.Tensor:
    return 0.2 + 0.6 * torch.rand(10, 16, generator=gen(1), dtype=DT)


def test_attack_raises_the_change_over_its_random_start_within_ball_and_range(relu_mlp, inputs):
    epsilon = 0.05
    result = attribution_attack(relu_mlp, inputs, epsilon=epsilon, steps=20, generator=gen(2))
    assert float(result.relative_l2.mean()) > 1.5 * float(result.start_relative_l2.mean())
    assert float(result.top_k.mean()) < float(result.start_top_k.mean())
    for points in (result.inputs, result.start):
        assert float((points - inputs).abs().max()) <= epsilon + 1e-12
        assert points.min() >= 0 and points.max() <= 1
    with torch.no_grad():
        kept = relu_mlp(result.inputs).argmax(1) == result.target
    assert bool(kept[result.accepted > 0].all())
    assert torch.equal(result.target, relu_mlp(inputs).argmax(1))
    again = attribution_attack(relu_mlp, inputs, epsilon=epsilon, steps=20, generator=gen(2))
    assert torch.equal(again.inputs, result.inputs)                       # one generator, one run


def test_a_linear_model_saliency_cannot_be_moved():
    model = nn.Sequential(nn.Linear(6, 3)).to(DT).eval()
    x = torch.rand(4, 6, generator=gen(3), dtype=DT)
    result = attribution_attack(model, x, epsilon=0.1, steps=3, generator=gen(4))
    assert torch.equal(result.relative_l2, torch.zeros(4, dtype=DT))
    assert torch.equal(result.top_k, torch.ones(4, dtype=DT))


def test_loss_is_the_top_k_share_of_saliency_mass_by_hand():
    model = nn.Sequential(nn.Linear(4, 2, bias=False)).to(DT).eval()
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.0, -2.0, 3.0, 0.5], [0.0, 1.0, 1.0, 1.0]]))
    x = torch.rand(2, 4, generator=gen(5), dtype=DT).requires_grad_(True)
    top = torch.tensor([[0.0, 0.0, 1.0, 0.0], [1.0, 1.0, 0.0, 0.0]], dtype=DT)
    loss = _mass_outside(model, x, torch.tensor([0, 1]), top)
    torch.testing.assert_close(loss.detach(), torch.tensor([3.0 / 6.5, 1.0 / 3.0], dtype=DT))


def test_surrogate_swaps_relu_for_softplus_and_leaves_the_model_alone(relu_mlp, inputs):
    surrogate = smooth_surrogate(relu_mlp, beta=5.0)
    kinds = [type(m) for m in surrogate.modules()]
    assert nn.ReLU not in kinds and nn.Softplus in kinds
    assert nn.ReLU in [type(m) for m in relu_mlp.modules()]
    torch.testing.assert_close(smooth_surrogate(relu_mlp, beta=1e6)(inputs), relu_mlp(inputs))
    tanh = MLP(16, (8,), 3, activation="tanh").to(DT).eval()
    torch.testing.assert_close(smooth_surrogate(tanh)(inputs), tanh(inputs))


@pytest.mark.parametrize("kwargs, message", [
    ({"epsilon": 0.0}, "epsilon=0.0 must be a positive"),
    ({"steps": 0}, "steps=0 must be a positive integer"),
    ({"step_size": -1.0}, "step_size=-1.0 must be positive"),
    ({"top_k": 0.0}, "top_k=0.0 is the fraction"),
    ({"surrogate_beta": 0.0}, "surrogate_beta=0.0 must be"),
])
def test_bad_arguments_name_the_fix(relu_mlp, inputs, kwargs, message):
    options = {"epsilon": 0.05, "steps": 2, "generator": gen()} | kwargs
    with pytest.raises(ValueError, match=message):
        attribution_attack(relu_mlp, inputs, **options)

"""Tests for stabnb.attribution.quality: partners, input dependence, cascading randomisation and
foreground-matched deletion, each against a hand computation on a tiny float64 model."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from scipy.stats import spearmanr
from torch import nn

from stabnb.attribution import (
    deletion_faithfulness,
    input_dependence,
    model_randomisation,
    same_class_partners,
)
from stabnb.models import MLP, initialize

DT = torch.float64


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_partners_are_the_next_image_of_the_class_wrapping_round():
    assert same_class_partners(torch.tensor([0, 1, 0, 0])).tolist() == [2, -1, 3, 0]
    assert same_class_partners(torch.tensor([5, 5])).tolist() == [1, 0]


def test_input_dependence_by_hand():
    maps = torch.tensor([[1.0, 0.0], [0.0, 1.0], [3.0, 0.0], [1.0, 1.0]], dtype=DT)
    got = input_dependence(maps.view(4, 1, 2), torch.tensor([0, 1, 0, 0]))
    expected = [2.0, math.nan, math.sqrt(5) / 3, 1 / math.sqrt(2)]
    torch.testing.assert_close(got, torch.tensor(expected, dtype=DT), equal_nan=True)
    with pytest.raises(ValueError, match="one class per map"):
        input_dependence(maps, torch.tensor([0, 1]))


def test_randomisation_redraws_layers_from_the_top_and_ranks_by_hand():
    model = initialize(MLP(5, (4,), 3, activation="tanh"), gen(0)).to(DT).eval()
    before = copy.deepcopy(model.state_dict())
    x = torch.rand(3, 5, generator=gen(1), dtype=DT)
    check = model_randomisation(model, x, generator=gen(2))
    assert check.layers == ("net.3", "net.1") and check.spearman.shape == (2, 3)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    # by hand: the same redraws, then scipy's Spearman of |saliency|
    replay, g = copy.deepcopy(model), gen(2)
    target = model(x).argmax(1)

    def saliency(net: nn.Module) -> torch.Tensor:
        point = x.clone().requires_grad_(True)
        net(point).gather(1, target[:, None]).sum().backward()
        return point.grad.abs()

    reference = saliency(model)
    for stage, name in enumerate(check.layers):
        initialize(dict(replay.named_modules())[name], g)
        moved = saliency(replay)
        for i in range(3):
            assert float(check.spearman[stage, i]) == pytest.approx(
                spearmanr(reference[i], moved[i]).statistic, abs=1e-12)
    torch.testing.assert_close(check.randomised, check.spearman[-1])
    last = model_randomisation(model, x, generator=gen(2), cascade=False)
    assert last.spearman.shape == (1, 3) and torch.equal(last.randomised, check.randomised)


def test_randomisation_refuses_a_stochastic_method():
    model = MLP(5, (4,), 3).to(DT).eval()
    with pytest.raises(ValueError, match="deterministic"):
        model_randomisation(model, torch.rand(2, 5, dtype=DT), generator=gen(),
                            method="smoothgrad")


def test_deletion_curves_auc_and_matched_random_by_hand():
    model = nn.Sequential(nn.Linear(4, 2, bias=False)).to(DT).eval()
    weight = torch.tensor([[2.0, 1.0, -1.0, 0.5], [0.0, -1.0, 1.0, 0.0]], dtype=DT)
    with torch.no_grad():
        model[0].weight.copy_(weight)
    x = torch.tensor([[0.9, 0.5, 0.05, 0.0]], dtype=DT)       # foreground: features 0 and 1
    attributions = torch.tensor([[0.1, 3.0, -2.0, 0.5]], dtype=DT)

    def p0(point: torch.Tensor) -> float:
        return float((point @ weight.T).softmax(-1)[0, 0])

    def deleted(*features: int) -> torch.Tensor:
        out = x.clone()
        out[0, list(features)] = 0.0
        return out

    check = deletion_faithfulness(model, x, attributions, generator=gen(3),
                                  fractions=(0.25, 0.5))
    clean = p0(x)                                            # class 0 is predicted
    top = [clean - p0(deleted(1)), clean - p0(deleted(1, 2))]
    torch.testing.assert_close(check.top_drop, torch.tensor([top], dtype=DT))
    first = int(torch.rand(1, 4, generator=gen(3), dtype=DT)[0, :2].argmin())
    random = [clean - p0(deleted(first)), clean - p0(deleted(0, 1))]
    torch.testing.assert_close(check.random_drop, torch.tensor([random], dtype=DT))

    def area(drops: list[float]) -> float:
        return (0.25 * drops[0] / 2 + 0.25 * (drops[0] + drops[1]) / 2) / 0.5

    assert float(check.deletion_auc) == pytest.approx(area(top), abs=1e-12)
    assert float(check.random_auc) == pytest.approx(area(random), abs=1e-12)
    assert float(check.gain) == pytest.approx(area(top) - area(random), abs=1e-12)


def test_deletion_refuses_bad_shapes_and_grids():
    model = nn.Sequential(nn.Linear(4, 2)).to(DT).eval()
    x = torch.rand(2, 4, dtype=DT)
    with pytest.raises(ValueError, match="must have the inputs' shape"):
        deletion_faithfulness(model, x, x[:, :3], generator=gen())
    for grid in [(0.5, 0.2), (0.0, 0.5), (0.5, 1.5), ()]:
        with pytest.raises(ValueError, match="must increase within"):
            deletion_faithfulness(model, x, x, generator=gen(), fractions=grid)

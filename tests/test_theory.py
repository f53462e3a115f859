"""Tests for stabnb.theory: the R1–R6 checks on tiny float64 networks against dense ground truth."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from torch import nn
from torch.func import jacrev, vmap

from stabnb import theory
from stabnb.io import to_jsonable
from stabnb.models import ACTIVATIONS, MLP, ResNet20, SmallCNN
from stabnb.theory import product

DTYPE = torch.float64


def _family(activations=("relu", "tanh", "gelu"), depths=(1, 2), seed=0, **kw):
    return theory.random_networks(kw.pop("input_shape", (6,)), kw.pop("num_classes", 3),
                                  widths=(8,), depths=depths, activations=activations,
                                  generator=torch.Generator().manual_seed(seed), **kw)


def _inputs(shape, n=4, seed=1):
    return torch.rand((n, *shape), generator=torch.Generator().manual_seed(seed), dtype=DTYPE)


def _dense_jacobians(model, x):
    return vmap(jacrev(lambda v: model(v.unsqueeze(0))[0]))(x)


def _linear_net(d=6, c=3, seed=0):
    model = nn.Sequential(nn.Linear(d, c)).to(DTYPE).eval()
    with torch.no_grad():
        model[0].weight.copy_(torch.randn(c, d, generator=torch.Generator().manual_seed(seed),
                                          dtype=DTYPE))
    return model


# --- R1 ------------------------------------------------------------------------------------

@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_product_equals_autograd_mlp(activation):
    member, = _family((activation,), depths=(2,))
    x = _inputs((6,))
    explicit = theory.weight_gate_product(member.model, x).jacobian
    torch.testing.assert_close(explicit, _dense_jacobians(member.model, x), rtol=0, atol=1e-10)


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_product_equals_autograd_cnn(activation):
    family = theory.random_networks((2, 8, 8), 3, architecture="cnn", widths=(3,), depths=(2,),
                                    activations=(activation,),
                                    generator=torch.Generator().manual_seed(0))
    x = _inputs((2, 8, 8))
    representation = theory.weight_gate_product(family[0].model, x)
    torch.testing.assert_close(representation.jacobian, _dense_jacobians(family[0].model, x),
                               rtol=0, atol=1e-10)
    kinds = [f.kind for f in representation.factors]
    assert kinds.count("selection") == 2 and kinds.count("gate") == 3
    check = theory.check_product_representation(family[0].model, x)
    assert bool(check.holds.all()) and float(check.relative_error.max()) < 1e-12


def test_product_sequential_strided_conv_and_avgpool():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 3, stride=2, padding=1), nn.Softplus(),
                          nn.AvgPool2d(2), nn.Flatten(), nn.Linear(8, 3)).to(DTYPE).eval()
    x = _inputs((1, 8, 8))
    torch.testing.assert_close(theory.weight_gate_product(model, x).jacobian,
                               _dense_jacobians(model, x), rtol=0, atol=1e-10)


def test_product_of_linear_net_is_the_weight_product():
    model = nn.Sequential(nn.Linear(6, 4), nn.Linear(4, 3)).to(DTYPE).eval()
    representation = theory.weight_gate_product(model, _inputs((6,)))
    expected = model[1].weight @ model[0].weight
    torch.testing.assert_close(representation.jacobian, expected.expand(4, 3, 6).detach())
    assert [f.kind for f in representation.factors] == ["weight", "weight"]
    json.dumps(representation.to_dict())


@pytest.mark.parametrize("model, match", [
    (ResNet20(3, in_channels=1, width=2, blocks=1), "feed-forward chain"),
    (nn.Sequential(nn.Linear(6, 4), nn.BatchNorm1d(4), nn.Linear(4, 3)), "BatchNorm1d"),
    (nn.Sequential(nn.Linear(6, 4), nn.GELU(approximate="tanh"), nn.Linear(4, 3)), "GELU"),
    (nn.Sequential(nn.Conv2d(1, 1, 3, padding=1, padding_mode="circular")), "circular"),
])
def test_unsupported_layers_raise(model, match):
    shape = (1, 8, 8) if isinstance(model, ResNet20) or isinstance(model[0], nn.Conv2d) else (6,)
    with pytest.raises(ValueError, match=match):
        theory.weight_gate_product(model.to(DTYPE).eval(), _inputs(shape))


def test_lipschitz_constants_are_the_sup_of_the_derivative():
    z = torch.linspace(-25, 25, 1_000_001, dtype=DTYPE)
    for layer_type, constant in product.LIPSCHITZ.items():
        grid_max = float(product._gate(layer_type(), z).abs().max())
        assert grid_max <= constant + 1e-12
        assert grid_max >= constant - 1e-8


# --- R2 ------------------------------------------------------------------------------------

def test_forward_sensitivity_holds_and_layerwise_bound_tight_for_one_linear_layer():
    x = _inputs((6,))
    for member in _family():
        result = theory.check_forward_sensitivity(member.model, x, radius=0.5,
                                                  generator=torch.Generator().manual_seed(2))
        assert bool(result.holds.all())
        assert float(result.layerwise_slack.min()) >= 1.0 and float(result.path_slack.min()) >= 1.0
    linear = _linear_net()
    result = theory.check_forward_sensitivity(linear, x, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(result.layerwise_slack, torch.ones(4, dtype=DTYPE))
    torch.testing.assert_close(result.path_sup, result.jacobian_norm)


def test_gmsi_forward_bound_on_a_linear_layer_and_random_networks():
    """For f(x) = Wx + b, J = W everywhere: G_J = ‖W‖₂ and the slack is ‖W‖₂‖δ‖ / ‖Wδ‖ exactly."""
    x = _inputs((6,))
    linear = _linear_net()
    result = theory.check_gmsi_forward_bound(linear, x, radius=0.3, num_path_points=3,
                                             generator=torch.Generator().manual_seed(2))
    delta = theory.sensitivity.random_directions(x, 0.3, torch.Generator().manual_seed(2))
    weight = linear[0].weight.detach()
    top = float(torch.linalg.svdvals(weight)[0])
    assert result.input_component == pytest.approx(top, rel=1e-12)
    torch.testing.assert_close(result.output_change, (delta @ weight.T).norm(dim=1))
    torch.testing.assert_close(result.component_slack, top * 0.3 / (delta @ weight.T).norm(dim=1))
    assert result.gmsi_value >= result.input_component
    assert result.dominant in ("input_jacobian", "param_jacobian", "ntk", "hessian")
    for member in _family():
        check = theory.check_gmsi_forward_bound(member.model, x, radius=0.5,
                                                generator=torch.Generator().manual_seed(3))
        path = theory.check_forward_sensitivity(member.model, x, radius=0.5,
                                                generator=torch.Generator().manual_seed(3))
        torch.testing.assert_close(check.output_change, path.output_change)
        assert bool(check.holds.all())
        assert bool((check.component_bound >= path.path_bound * (1 - 1e-12)).all())
        assert bool((check.gmsi_bound >= check.component_bound).all())
    with pytest.raises(ValueError, match="radius"):
        theory.check_gmsi_forward_bound(linear, x, radius=0.0)


def test_layerwise_bound_covers_conv_net():
    family = theory.random_networks((1, 8, 8), 3, architecture="cnn", widths=(3,), depths=(1,),
                                    activations=("relu",),
                                    generator=torch.Generator().manual_seed(0))
    x = _inputs((1, 8, 8), n=8)
    jacobians = _dense_jacobians(family[0].model, x).detach().flatten(2)
    norms = torch.linalg.matrix_norm(jacobians, ord=2)
    assert float(norms.max()) <= theory.layerwise_bound(family[0].model, (1, 8, 8))


# --- R3 ------------------------------------------------------------------------------------

def test_typical_sensitivity_chain_and_monte_carlo():
    x = _inputs((6,))
    for member in _family():
        r = theory.check_typical_sensitivity(member.model, x, num_samples=400,
                                             generator=torch.Generator().manual_seed(3))
        assert bool(r.holds.all())
        assert bool((r.frobenius <= r.entropy_bound * (1 + 1e-12)).all())
        assert bool((r.entropy_bound <= r.rank_bound * (1 + 1e-12)).all())
        assert bool((r.rank_bound <= r.worst_case).all())
        assert bool(((r.monte_carlo - r.frobenius).abs() <= 5 * r.monte_carlo_se).all())


def test_typical_sensitivity_tight_for_flat_spectrum():
    """J with equal singular values: srank = exp(H) = rank, so σ²‖J‖_F² is the entropy bound."""
    model = nn.Sequential(nn.Linear(6, 3, bias=False)).to(DTYPE).eval()
    with torch.no_grad():
        q, _ = torch.linalg.qr(torch.randn(6, 3, generator=torch.Generator().manual_seed(0),
                                           dtype=DTYPE))
        model[0].weight.copy_(2.0 * q.T)
    r = theory.check_typical_sensitivity(model, _inputs((6,)), sigma=0.1, num_samples=2000,
                                         generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(r.entropy_bound, r.frobenius)
    torch.testing.assert_close(r.effective_rank, torch.full((4,), 3.0, dtype=DTYPE))
    assert bool(((r.slack - 1).abs() < 0.15).all())
    assert r.rank.tolist() == [3, 3, 3, 3]


# --- R4 ------------------------------------------------------------------------------------

def test_parameter_sensitivity_identity_and_bound():
    x = _inputs((6,))
    for member in _family():
        r = theory.check_parameter_sensitivity(member.model, x,
                                               generator=torch.Generator().manual_seed(5))
        assert bool(r.holds.all())
        assert float(r.identity_error.max()) < 1e-12
        assert float((r.top_direction_ratio - 1).abs().max()) < 1e-2


def test_parameter_sensitivity_tight_for_model_linear_in_parameters():
    model = nn.Sequential(nn.Linear(6, 3, bias=False)).to(DTYPE).eval()
    r = theory.check_parameter_sensitivity(model, _inputs((6,)), radius=0.3,
                                           generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(r.top_direction_ratio, torch.ones(4, dtype=DTYPE))
    # f = W x: ∇_W f = I ⊗ xᵀ, so ‖∇_θ f(x)‖₂ = ‖x‖.
    torch.testing.assert_close(r.param_jacobian_norm, _inputs((6,)).norm(dim=1))


# --- R5 ------------------------------------------------------------------------------------

def test_saliency_smooth_bound_and_relu_jumps():
    x = _inputs((6,), n=8)
    for member in _family(("tanh", "softplus")):
        r = theory.check_saliency(member.model, x, radius=0.1,
                                  generator=torch.Generator().manual_seed(6))
        assert r.smooth and bool(r.holds.all())
        assert float(r.beta.min()) > 0
    for member in _family(("relu",)):
        r = theory.check_saliency(member.model, x, radius=0.5,
                                  generator=torch.Generator().manual_seed(6))
        assert not r.smooth and bool(r.holds.all())
        assert bool((r.change[r.gate_flips == 0] == 0).all())
        assert bool(r.beta.isnan().all())


def test_saliency_of_linear_net_is_constant_and_target_respected():
    model = _linear_net()
    r = theory.check_saliency(model, _inputs((6,)), target=2,
                              generator=torch.Generator().manual_seed(6))
    assert r.target.tolist() == [2] * 4
    torch.testing.assert_close(r.saliency_norm, model[0].weight[2].norm().expand(4).detach())
    assert bool((r.change == 0).all()) and bool(r.holds.all())
    with pytest.raises(ValueError, match="shape"):
        theory.check_saliency(model, _inputs((6,)), target=torch.tensor([0, 1]))


# --- R6 ------------------------------------------------------------------------------------

def test_ig_completeness_smooth_and_relu_convergence():
    x = _inputs((6,))
    smooth, relu = _family(("tanh",), depths=(2,))[0], _family(("relu",), depths=(2,))[0]
    assert float(theory.check_ig_completeness(smooth.model, x, n_steps=32)
                 .relative_error.max()) < 1e-6
    coarse = theory.check_ig_completeness(relu.model, x, n_steps=4, method="riemann_trapezoid")
    fine = theory.check_ig_completeness(relu.model, x, n_steps=256, method="riemann_trapezoid")
    assert float(fine.error.mean()) < float(coarse.error.mean())


def test_integrated_gradients_bounds():
    x = _inputs((6,))
    for member in _family(("relu", "gelu")):
        r = theory.check_integrated_gradients(member.model, x, n_steps=16,
                                              generator=torch.Generator().manual_seed(7))
        assert bool(r.holds.all())
        assert r.smooth == (member.activation == "gelu")
        assert bool(r.perturbation_slack.isnan().all()) != r.smooth
    with pytest.raises(ValueError, match="baselines"):
        theory.check_integrated_gradients(member.model, x, baselines=torch.zeros(6))


# --- families ------------------------------------------------------------------------------

def test_random_networks_deterministic_and_validated():
    first, second = _family(seed=11), _family(seed=11)
    assert len(first) == 6
    for a, b in zip(first, second):
        for p, q in zip(a.model.parameters(), b.model.parameters()):
            assert torch.equal(p, q)
    assert isinstance(first[0].model, MLP) and not first[0].model.training
    assert next(first[0].model.parameters()).dtype == DTYPE
    with pytest.raises(ValueError, match="unknown"):
        _family(("swish",))
    with pytest.raises(ValueError, match="divisible"):
        theory.random_networks((1, 6, 6), 3, architecture="cnn", depths=(2,))
    cnn = theory.random_networks((1, 8, 8), 3, architecture="cnn", widths=(2,), depths=(2,),
                                 activations=("relu",))
    assert isinstance(cnn[0].model, SmallCNN) and cnn[0].input_shape == (1, 8, 8)


def test_check_family_records_and_summaries():
    family = _family()
    result = theory.check_family(family, theory.check_typical_sensitivity, num_inputs=3,
                                 generator=torch.Generator().manual_seed(8),
                                 progress_enabled=False, num_samples=16)
    assert len(result.records) == 18
    assert {"activation", "depth", "width", "slack", "holds", "sample"} <= set(result.records[0])
    assert result.per_network("holds", "all").tolist() == [1.0] * 6
    assert result.column("slack", activation="relu").shape == (6,)
    quantiles = result.quantiles("slack")
    assert quantiles[0.05] <= quantiles[0.5] <= quantiles[0.95]
    json.dumps(result.to_dict())
    with pytest.raises(ValueError, match="reduce"):
        result.per_network("slack", "mean")


def test_to_dict_is_json_ready():
    x = _inputs((6,))
    for member in (_family(("tanh",), depths=(1,))[0], _family(("relu",), depths=(1,))[0]):
        for check in (theory.check_product_representation, theory.check_forward_sensitivity,
                      theory.check_gmsi_forward_bound, theory.check_typical_sensitivity, theory.check_parameter_sensitivity,
                      theory.check_saliency, theory.check_ig_completeness,
                      theory.check_integrated_gradients):
            result = check(member.model, x)
            restored = json.loads(json.dumps(result.to_dict(), allow_nan=False))
            assert set(restored) == {f.name for f in dataclasses.fields(result)}
            for name, value in restored.items():
                assert value == to_jsonable(getattr(result, name)), (check.__name__, name)

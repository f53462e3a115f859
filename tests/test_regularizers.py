"""Regularisers against exact values and exact gradients on tiny float64 networks."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from stabnb.models import MLP, build_model
from stabnb.regularizers import (
    NoiseAugmentation,
    REGULARIZERS,
    InputCurvaturePenalty,
    JacobianFrobeniusPenalty,
    JacobianSpectralPenalty,
    WeightSpectralPenalty,
    make_regularizer,
    shared_forward_inputs,
)


@pytest.fixture(autouse=True)
def _float64():
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def tiny_mlp(activation="tanh", seed=0):
    torch.manual_seed(seed)
    return MLP(4, (6,), 3, activation=activation).double()


def batch(n=5, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 4, generator=g), torch.randint(0, 3, (n,), generator=g)


def exact_jacobians(model, x):
    """(n, C, d) input Jacobians, differentiable in θ (C VJPs with create_graph)."""
    x = x.detach().requires_grad_(True)
    out = model(x)
    rows = [torch.autograd.grad(out[:, j].sum(), x, create_graph=True)[0].flatten(1)
            for j in range(out.shape[1])]
    return torch.stack(rows, dim=1)


def exact_hessians(model, x, y):
    """(n, d, d) input Hessians of the target logit, differentiable in θ."""
    x = x.detach().requires_grad_(True)
    grads = torch.autograd.grad(model(x).gather(1, y.view(-1, 1)).sum(), x, create_graph=True)[0]
    rows = [torch.autograd.grad(grads[:, k].sum(), x, create_graph=True)[0]
            for k in range(x.shape[1])]
    return torch.stack(rows, dim=1)


def param_grads(model, value):
    params = [p for p in model.parameters()]
    grads = torch.autograd.grad(value, params, allow_unused=True, materialize_grads=True)
    return torch.cat([g.flatten() for g in grads])


# --- argument checks -----------------------------------------------------------------------

def test_make_regularizer_names_and_errors():
    assert make_regularizer("none", 0.0) is None
    assert isinstance(make_regularizer("jacobian_spectral", 0.1), JacobianSpectralPenalty)
    assert isinstance(make_regularizer("jacobian_frobenius", 0.1, num_projections=2),
                      JacobianFrobeniusPenalty)
    assert isinstance(make_regularizer("weight_spectral", 0.1), WeightSpectralPenalty)
    assert make_regularizer("input_curvature", 0.1, form="hessian").form == "hessian"
    with pytest.raises(ValueError, match=r"'bogus'.*jacobian_spectral"):
        make_regularizer("bogus", 0.1)
    with pytest.raises(ValueError, match=r"strength=-0.5"):
        make_regularizer("weight_spectral", -0.5)
    with pytest.raises(ValueError, match=r"strength=nan"):
        JacobianSpectralPenalty(float("nan"))
    with pytest.raises(ValueError, match="'none' takes strength=0"):
        make_regularizer("none", 0.1)
    with pytest.raises(ValueError, match="num_iters=0"):
        JacobianSpectralPenalty(0.1, num_iters=0)
    with pytest.raises(ValueError, match="form='cubic'"):
        InputCurvaturePenalty(0.1, form="cubic")
    assert repr(make_regularizer("input_curvature", 0.1)) == (
        "InputCurvaturePenalty(strength=0.1, form='finite_difference', sigma=0.05, "
        "target='prediction', clip=(0.0, 1.0), num_iters=1, seed=0)")  # train() hashes this text
    assert set(REGULARIZERS) == {"none", "jacobian_spectral", "jacobian_frobenius",
                                 "weight_spectral", "input_curvature", "noise_augmentation",
                                 "smooth_activation"}


# --- Jacobian spectral norm ------------------------------------------------------------------

def test_jacobian_spectral_value_and_gradient_match_exact():
    model, (x, y) = tiny_mlp(), batch()
    reg = JacobianSpectralPenalty(0.3, num_iters=200)
    value = reg(model, x, y)
    exact = 0.3 * torch.linalg.matrix_norm(exact_jacobians(model, x), ord=2).pow(2).mean()
    torch.testing.assert_close(value, exact, rtol=1e-8, atol=0)
    torch.testing.assert_close(param_grads(model, value), param_grads(model, exact),
                               rtol=1e-6, atol=1e-10)


def test_jacobian_spectral_warm_start_converges_across_steps():
    model, (x, y) = tiny_mlp(), batch()
    exact = torch.linalg.matrix_norm(exact_jacobians(model, x), ord=2).pow(2).mean().item()
    reg = JacobianSpectralPenalty(1.0, num_iters=1)
    values = [reg(model, x, y).item() for _ in range(40)]
    assert values[0] <= exact * (1 + 1e-12)
    assert abs(values[-1] - exact) < 1e-8 * exact
    assert reg.vectors.shape == x.shape
    # state round trip: a fresh penalty loaded from the state continues where this one is.
    other = JacobianSpectralPenalty(1.0)
    other.load_state_dict(reg.state_dict())
    torch.testing.assert_close(other(model, x, y), reg(model, x, y))
    reg.reset()
    assert reg.vectors is None and reg.generator is None


def test_jacobian_spectral_slots_follow_batch_size():
    model, (x, y) = tiny_mlp(), batch(n=6)
    reg = JacobianSpectralPenalty(1.0)
    reg(model, x, y)
    kept = reg.vectors[4:].clone()
    reg(model, x[:4], y[:4])                       # a smaller last batch keeps the other slots
    assert reg.vectors.shape == x.shape and torch.equal(reg.vectors[4:], kept)
    reg(model, torch.rand(8, 4), torch.zeros(8, dtype=torch.long))    # a larger one draws more
    assert reg.vectors.shape == (8, 4)


def test_penalties_work_in_train_mode_with_batchnorm_and_keep_running_stats():
    torch.manual_seed(0)
    model = build_model("resnet", (3, 8, 8), 4, width=4, blocks=1).double().train()
    x, y = torch.rand(6, 3, 8, 8), torch.randint(0, 4, (6,))
    model(x)                                       # the training forward pass sets the stats
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for reg in (JacobianSpectralPenalty(0.1, num_iters=2), JacobianFrobeniusPenalty(0.1, 2),
                WeightSpectralPenalty(0.1), InputCurvaturePenalty(0.1),
                InputCurvaturePenalty(0.1, form="hessian")):
        value = reg(model, x, y)
        assert value.dim() == 0 and torch.isfinite(value)
        if not (isinstance(reg, InputCurvaturePenalty) and reg.form == "hessian"):
            value.backward()                       # ReLU: the Hessian form is identically 0
    for key, tensor in model.state_dict().items():
        assert torch.equal(tensor, before[key]), key


# --- Jacobian Frobenius norm -----------------------------------------------------------------

def test_jacobian_frobenius_all_projections_is_exact_with_exact_gradient():
    model, (x, y) = tiny_mlp(), batch()
    value = JacobianFrobeniusPenalty(0.7, num_projections=3)(model, x, y)
    exact = 0.7 * exact_jacobians(model, x).pow(2).sum(dim=(1, 2)).mean()
    torch.testing.assert_close(value, exact, rtol=1e-12, atol=0)
    torch.testing.assert_close(param_grads(model, value), param_grads(model, exact),
                               rtol=1e-9, atol=1e-12)


def test_jacobian_frobenius_one_projection_is_unbiased_and_seeded():
    model, (x, y) = tiny_mlp(), batch()
    exact = exact_jacobians(model, x).pow(2).sum(dim=(1, 2)).mean().item()
    reg = JacobianFrobeniusPenalty(1.0, num_projections=1, seed=3)
    draws = torch.tensor([reg(model, x, y).item() for _ in range(400)])
    assert abs(draws.mean().item() - exact) < 4 * draws.std().item() / 20
    again = JacobianFrobeniusPenalty(1.0, num_projections=1, seed=3)
    assert again(model, x, y).item() == draws[0].item()
    with pytest.raises(ValueError, match="num_projections=4 exceeds.*C=3"):
        JacobianFrobeniusPenalty(1.0, num_projections=4)(model, x, y)


# --- weight spectral norm --------------------------------------------------------------------

def dense_conv(conv, shape):
    """The (out·H'·W', C·H·W) matrix of the convolution map (no bias), built from basis images."""
    size = torch.Size(shape).numel()
    basis = torch.eye(size).view(size, *shape)
    out = F.conv2d(basis, conv.weight, None, conv.stride, conv.padding, conv.dilation,
                   conv.groups)
    return out.flatten(1).T


@pytest.mark.parametrize("kwargs", [dict(stride=1, padding=1), dict(stride=2, padding=1),
                                    dict(stride=2, padding=0, groups=2, dilation=2)])
def test_conv_operator_norm_matches_dense_matrix(kwargs):
    torch.manual_seed(0)
    conv = nn.Conv2d(2, 4, 3, **kwargs).double()
    with torch.no_grad():
        conv.weight[0] += 0.3                      # a clear spectral gap: fast convergence
    shape = (2, 7, 6)
    reg = WeightSpectralPenalty(1.0, num_iters=300, input_shapes={"": shape})
    value = reg(conv, torch.rand(1, *shape))
    exact = torch.linalg.matrix_norm(dense_conv(conv, shape), ord=2).pow(2)
    torch.testing.assert_close(value, exact, rtol=1e-8, atol=0)
    torch.testing.assert_close(param_grads(conv, value)[: conv.weight.numel()],
                               param_grads(conv, exact)[: conv.weight.numel()],
                               rtol=1e-5, atol=1e-10)
    reshaped = torch.linalg.matrix_norm(conv.weight.flatten(1), ord=2).pow(2)
    assert not torch.isclose(reshaped, exact, rtol=1e-2)   # not what torch's spectral_norm uses


def test_weight_penalty_sums_layers_and_records_conv_shapes():
    torch.manual_seed(0)
    model = build_model("cnn", (1, 8, 8), 3, channels=(2, 3), hidden=5).double()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Conv2d):
                module.weight[0] += 0.3            # a clear spectral gap: fast convergence
    x = torch.rand(2, 1, 8, 8)
    reg = WeightSpectralPenalty(0.5, num_iters=300)
    value = reg(model, x)
    assert reg.input_shapes == {"net.0": (1, 8, 8), "net.3": (2, 4, 4)}
    exact = 0
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            exact = exact + torch.linalg.matrix_norm(
                dense_conv(module, reg.input_shapes[name]), ord=2).pow(2)
        elif isinstance(module, nn.Linear):
            exact = exact + torch.linalg.matrix_norm(module.weight, ord=2).pow(2)
    torch.testing.assert_close(value, 0.5 * exact, rtol=1e-7, atol=0)
    torch.testing.assert_close(param_grads(model, value), param_grads(model, 0.5 * exact),
                               rtol=1e-4, atol=1e-9)
    state = reg.state_dict()
    fresh = WeightSpectralPenalty(0.5)
    fresh.load_state_dict(state)
    torch.testing.assert_close(fresh(model, x), value, rtol=1e-10, atol=0)


def test_weight_penalty_warm_start_converges_across_steps():
    torch.manual_seed(0)
    layer = nn.Linear(12, 9).double()
    exact = torch.linalg.matrix_norm(layer.weight, ord=2).pow(2).item()
    reg = WeightSpectralPenalty(1.0, num_iters=1)
    values = [reg(layer, torch.rand(1, 12)).item() for _ in range(200)]
    assert values[0] < exact and abs(values[-1] - exact) < 1e-8 * exact


# --- input curvature ------------------------------------------------------------------------

def test_hessian_form_value_and_gradient_match_exact():
    model, (x, y) = tiny_mlp(), batch(seed=4)      # |λ₂/λ₁| ≤ 0.6 in every sample
    reg = InputCurvaturePenalty(0.2, form="hessian", num_iters=200, target="label")
    value = reg(model, x, y)
    exact = 0.2 * torch.linalg.matrix_norm(exact_hessians(model, x, y), ord=2).pow(2).mean()
    torch.testing.assert_close(value, exact, rtol=1e-7, atol=0)
    torch.testing.assert_close(param_grads(model, value), param_grads(model, exact),
                               rtol=1e-4, atol=1e-9)


def test_hessian_form_is_zero_for_relu():
    model, (x, y) = tiny_mlp("relu"), batch()
    assert InputCurvaturePenalty(1.0, form="hessian")(model, x, y).item() == 0.0
    assert InputCurvaturePenalty(1.0)(model, x, y).item() >= 0.0


def test_finite_difference_form_matches_direct_computation_and_expectation():
    model, (x, y) = tiny_mlp(), batch()
    sigma = 1e-3
    reg = InputCurvaturePenalty(0.4, sigma=sigma, seed=5, target="label", clip=None)
    value = reg(model, x, y)
    delta = sigma * torch.randn(x.shape, generator=torch.Generator().manual_seed(5))

    def target_grad(inputs):
        inputs = inputs.detach().requires_grad_(True)
        return torch.autograd.grad(model(inputs).gather(1, y.view(-1, 1)).sum(), inputs,
                                   create_graph=True)[0]

    direct = 0.4 * (target_grad(x + delta) - target_grad(x)).pow(2).sum(dim=1).mean()
    torch.testing.assert_close(value, direct, rtol=1e-10, atol=0)
    torch.testing.assert_close(param_grads(model, value), param_grads(model, direct),
                               rtol=1e-8, atol=1e-16)
    # E‖∇f_c(x+δ) − ∇f_c(x)‖² ≈ σ²‖∇²f_c‖_F² for a smooth net and small σ.
    expected = sigma**2 * exact_hessians(model, x, y).pow(2).sum(dim=(1, 2)).mean().item()
    draws = torch.tensor([reg(model, x, y).item() / 0.4 for _ in range(300)])
    assert abs(draws.mean().item() - expected) < 0.1 * expected


def test_curvature_clips_and_targets_the_prediction_by_default():
    model, (x, y) = tiny_mlp(), batch()
    x = x.sigmoid()                                     # pixels in (0, 1)
    sigma = 0.3                                         # large: many coordinates clip
    reg = InputCurvaturePenalty(0.5, sigma=sigma, seed=2)
    assert (reg.target, reg.clip) == ("prediction", (0.0, 1.0))
    value = reg(model, x, y)
    moved = (x + sigma * torch.randn(x.shape, generator=torch.Generator().manual_seed(2))).clamp(0, 1)
    predicted = model(x).argmax(1)

    def target_grad(inputs):
        inputs = inputs.detach().requires_grad_(True)
        return torch.autograd.grad(model(inputs).gather(1, predicted.view(-1, 1)).sum(), inputs,
                                   create_graph=True)[0]

    direct = 0.5 * (target_grad(moved) - target_grad(x)).pow(2).sum(dim=1).mean()
    torch.testing.assert_close(value, direct, rtol=1e-10, atol=0)
    shared = x.detach().requires_grad_(True)           # the shared pass gives the same value
    again = InputCurvaturePenalty(0.5, sigma=sigma, seed=2)(model, shared, y, logits=model(shared))
    torch.testing.assert_close(again, direct, rtol=1e-10, atol=0)
    with pytest.raises(ValueError, match="target='logit'"):
        InputCurvaturePenalty(0.1, target="logit")
    with pytest.raises(ValueError, match="clip="):
        InputCurvaturePenalty(0.1, clip=(1.0, 0.0))


def test_noise_augmentation_is_the_cross_entropy_of_a_clipped_noisy_copy():
    model, (x, y) = tiny_mlp(), batch()
    x = x.sigmoid()
    reg = NoiseAugmentation(0.7, sigma=0.2, seed=3)
    noisy = (x + 0.2 * torch.randn(x.shape, generator=torch.Generator().manual_seed(3))).clamp(0, 1)
    torch.testing.assert_close(reg(model, x, y),
                               0.7 * torch.nn.functional.cross_entropy(model(noisy), y))
    assert repr(make_regularizer("noise_augmentation", 1.0)) == (
        "NoiseAugmentation(strength=1.0, sigma=0.05, clip=(0.0, 1.0), seed=0)")
    with pytest.raises(ValueError, match="targets"):
        reg(model, x, None)
    with pytest.raises(ValueError, match="sigma=0"):
        NoiseAugmentation(1.0, sigma=0)


def test_smooth_activation_is_no_loss_term():
    assert make_regularizer("smooth_activation", 0.1, seed=4) is None
    with pytest.raises(ValueError, match="no options"):
        make_regularizer("smooth_activation", 0.1, sigma=0.1)


def test_curvature_needs_targets():
    model, (x, _) = tiny_mlp(), batch()
    with pytest.raises(ValueError, match="targets"):
        InputCurvaturePenalty(1.0)(model, x, None)


# --- shared forward pass (reg(model, x, y, logits=model(x))) --------------------------------

def _shared_and_plain(make, model, x, y, state=None):
    """(plain value, plain θ-gradient, shared value, shared θ-gradient) of two equal penalties."""
    plain_reg, shared_reg = make(), make()
    if state is not None:
        plain_reg.load_state_dict(state)
        shared_reg.load_state_dict(state)
    plain = plain_reg(model, x, y)
    plain_grad = param_grads(model, plain)
    inputs = shared_forward_inputs(shared_reg, x)
    shared = shared_reg(model, inputs, y, logits=model(inputs))
    return plain, plain_grad, shared, param_grads(model, shared), plain_reg, shared_reg


@pytest.mark.parametrize("make", [
    lambda: JacobianSpectralPenalty(0.3, num_iters=1),
    lambda: JacobianSpectralPenalty(0.3, num_iters=3),
    lambda: JacobianFrobeniusPenalty(0.7, num_projections=2, seed=1),
    lambda: InputCurvaturePenalty(0.4, sigma=1e-2, seed=5),
    lambda: InputCurvaturePenalty(0.2, form="hessian", num_iters=2),
])
def test_shared_forward_gives_the_same_value_gradient_and_state(make):
    model, (x, y) = tiny_mlp(), batch()
    assert make().shares_forward
    plain, plain_grad, shared, shared_grad, plain_reg, shared_reg = _shared_and_plain(
        make, model, x, y)
    torch.testing.assert_close(shared, plain, rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(shared_grad, plain_grad, rtol=1e-10, atol=1e-15)
    if getattr(plain_reg, "vectors", None) is not None:
        torch.testing.assert_close(shared_reg.vectors, plain_reg.vectors, rtol=1e-10, atol=1e-15)


def test_shared_forward_with_batchnorm_matches_the_plain_call():
    torch.manual_seed(0)
    model = build_model("resnet", (3, 8, 8), 4, width=4, blocks=1).double().train()
    x, y = torch.rand(6, 3, 8, 8), torch.randint(0, 4, (6,))
    for make in (lambda: JacobianSpectralPenalty(0.1, num_iters=2),
                 lambda: JacobianFrobeniusPenalty(0.1, 2), lambda: InputCurvaturePenalty(0.1)):
        model(x)                                   # the plain call's training forward pass
        before = {k: v.clone() for k, v in model.state_dict().items()}
        plain_reg, shared_reg = make(), make()
        plain = plain_reg(model, x, y)
        plain_grad = param_grads(model, plain)
        for key, tensor in model.state_dict().items():
            assert torch.equal(tensor, before[key]), key
        model.load_state_dict({k: v.clone() for k, v in before.items()})
        inputs = shared_forward_inputs(shared_reg, x)
        shared = shared_reg(model, inputs, y, logits=model(inputs))
        torch.testing.assert_close(shared, plain, rtol=1e-10, atol=1e-14)
        torch.testing.assert_close(param_grads(model, shared), plain_grad, rtol=1e-8,
                                   atol=1e-12)
        model.load_state_dict(before)


def test_shared_forward_inputs_and_bad_logits():
    model, (x, y) = tiny_mlp(), batch()
    assert shared_forward_inputs(None, x) is None
    assert shared_forward_inputs(WeightSpectralPenalty(0.1), x) is None
    assert shared_forward_inputs(lambda model, x, y: 0.0, x) is None
    inputs = shared_forward_inputs(JacobianSpectralPenalty(0.1), x)
    assert inputs.requires_grad and torch.equal(inputs, x) and not x.requires_grad
    with pytest.raises(ValueError, match="require grad"):
        JacobianSpectralPenalty(0.1)(model, x, y, logits=model(x))
    with pytest.raises(ValueError, match="do not match"):
        JacobianFrobeniusPenalty(0.1)(model, inputs, y, logits=model(inputs)[:3])

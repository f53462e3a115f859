"""The explorers' computations against closed forms, and their widgets without a browser."""

import math

import pytest
import torch
from torch.func import jacrev

from stabnb import widgets
from stabnb.models import MLP
from stabnb.theory.kernels import LinearizedProblem


def _controls(box):
    return box.children[0].children


def _readout_and_image(box):
    return box.children[1].value, bytes(box.children[2].value)


def test_concentration_view_flat_and_concentrated_spectra():
    flat = widgets.concentration_view(1.0, 0.1, shape=(10, 50), num_samples=4000)
    assert float(flat.entropy[0]) == pytest.approx(math.log(10))
    assert float(flat.effective_rank[0]) == pytest.approx(10) == float(flat.stable_rank[0])
    assert float(flat.frobenius[0]) == pytest.approx(0.01 * 10)             # σ²‖J‖_F², ‖J‖₂ = 1
    assert float(flat.worst_case[0]) == pytest.approx(0.01 * 50)            # σ²d‖J‖₂²
    assert abs(float(flat.monte_carlo[0] - flat.frobenius[0])) < 4 * float(flat.monte_carlo_se[0])
    sharp = widgets.concentration_view(0.1, 0.1, shape=(10, 50), num_samples=4000)
    assert float(sharp.effective_rank[0]) < 1.2 and float(sharp.worst_case[0]) == pytest.approx(0.5)
    power = widgets.concentration_view(0.0, 0.1, kind="power", shape=(10, 50), num_samples=10)
    assert float(power.effective_rank[0]) == pytest.approx(10)             # decay 0: flat
    with pytest.raises(ValueError, match="kind='linear' is unknown"):
        widgets.concentration_view(0.5, 0.1, kind="linear")


def test_concentration_explorer_redraws_and_switches_the_decay_range():
    box = widgets.concentration_explorer(shape=(10, 50), num_samples=16)
    kind, decay, sigma = _controls(box)
    before = _readout_and_image(box)
    assert before[1].startswith(b"\x89PNG") and "e<sup>H</sup>" in before[0]
    decay.value = 1.0
    after = _readout_and_image(box)
    assert after[0] != before[0] and after[1] != before[1] and "e<sup>H</sup> = 10.00" in after[0]
    kind.value = "power"
    assert (decay.min, decay.max) == widgets.DECAY_RANGES["power"][:2]
    decay.value = 3.0
    kind.value = "geometric"                                  # 3.0 is clamped into (0, 1]
    assert decay.value == 1.0 and "e<sup>H</sup> = 10.00" in _readout_and_image(box)[0]


def _saliency_dense(model, x, target):
    return jacrev(model)(x.unsqueeze(0))[0, target, 0].detach()


def test_noisy_attribution_against_the_dense_jacobian():
    model = MLP(5, (7,), 3, activation="tanh").double().eval()
    x = torch.randn(5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    view = widgets.noisy_attribution(model, x, 0.3, seed=4)
    direction = torch.randn(5, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    clean = _saliency_dense(model, x, view.target)
    noisy = _saliency_dense(model, x + 0.3 * direction, view.target)
    assert view.target == int(model(x.unsqueeze(0)).argmax())
    assert torch.allclose(view.clean, clean) and torch.allclose(view.noisy, noisy)
    assert view.relative_change == pytest.approx(float((noisy - clean).norm() / clean.norm()))
    assert view.to_dict() == {"target": view.target, "relative_change": view.relative_change,
                              "radius": 0.3, "method": "saliency", "seed": 4}
    still = widgets.noisy_attribution(model, x, 0.0)
    assert still.relative_change == 0.0 and torch.equal(still.clean, still.noisy)
    with pytest.raises(ValueError, match="radius=-0.1 must be a finite number ≥ 0"):
        widgets.noisy_attribution(model, x, -0.1)


def test_attribution_explorer_moves_with_the_radius():
    models = {"tanh": MLP(16, (8,), 3, activation="tanh").double().eval(),
              "relu": MLP(16, (8,), 3).double().eval()}
    inputs = torch.rand(2, 1, 4, 4, dtype=torch.float64)
    box = widgets.attribution_explorer(models, inputs)
    radius, index = _controls(box)
    before = _readout_and_image(box)
    assert "tanh: class" in before[0] and "relu: class" in before[0]
    radius.value = radius.max
    assert _readout_and_image(box)[0] != before[0]
    index.value = 1
    assert index.max == 1
    with pytest.raises(ValueError, match="models is empty"):
        widgets.attribution_explorer({}, inputs)


def _problem():
    generator = torch.Generator().manual_seed(0)
    jacobian = torch.randn(6, 10, generator=generator, dtype=torch.float64)
    return LinearizedProblem(jacobian, jacobian @ jacobian.T,
                             torch.randn(6, generator=generator, dtype=torch.float64))


def test_step_size_run_is_gd_in_function_space():
    problem = _problem()
    top = float(torch.linalg.eigvalsh(problem.kernel)[-1])
    run = widgets.step_size_run(problem, 0.9, num_steps=50)
    assert run.lr == pytest.approx(0.9 * 2 / top)
    step = torch.eye(6, dtype=torch.float64) - run.lr * problem.kernel
    expected = torch.linalg.matrix_power(step, 50) @ problem.residual0
    assert torch.allclose(run.residuals[-1], expected, atol=1e-10)
    grows = widgets.step_size_run(problem, 1.1, num_steps=50)
    assert float(grows.residual_norms[-1]) > float(grows.residual_norms[0])
    with pytest.raises(ValueError, match="factor=0 must be positive"):
        widgets.step_size_run(problem, 0, num_steps=5)


def test_step_size_explorer_says_converges_then_diverges():
    box = widgets.step_size_explorer(_problem(), num_steps=100)
    (factor,) = _controls(box)
    assert "converges" in _readout_and_image(box)[0]
    factor.value = 1.1
    assert "diverges" in _readout_and_image(box)[0]

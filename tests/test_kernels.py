"""Kernel regression, label noise (R7) and linearised dynamics (R8) against closed forms."""

import math

import pytest
import torch

from stabnb.theory.kernels import (
    gd_contraction_factor,
    gd_stability_threshold,
    gradient_flow_noise,
    kernel_ridge_predict,
    label_noise_propagation,
    linearized_gradient_descent,
    linearized_gradient_flow,
)

D = torch.float64


def _psd(n: int, rank: int, seed: int, shift: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    features = torch.randn(n + 3, rank, generator=g, dtype=D)
    gram = features @ features.T + shift * torch.eye(n + 3, dtype=D)
    return gram[:n, :n], gram[n:, :n]          # K(X, X) and K(x, X) for 3 query points


def test_ridge_prediction_matches_solve_and_diagonal_closed_form():
    kernel, cross = _psd(6, 8, seed=0)
    y = torch.randn(6, 2, generator=torch.Generator().manual_seed(1), dtype=D)
    expected = cross @ torch.linalg.solve(kernel + 0.3 * torch.eye(6, dtype=D), y)
    torch.testing.assert_close(kernel_ridge_predict(cross, kernel, y, ridge=0.3), expected)
    diag = torch.tensor([1.0, 2.0, 4.0], dtype=D)
    cross_d = torch.eye(3, dtype=D)
    y_d = torch.tensor([1.0, 1.0, 1.0], dtype=D)
    torch.testing.assert_close(kernel_ridge_predict(cross_d, torch.diag(diag), y_d, ridge=1.0),
                               1.0 / (diag + 1.0))


def test_label_noise_bound_holds_and_is_tight_on_the_smallest_eigendirection():
    for seed in range(5):
        kernel, cross = _psd(6, 8, seed=seed)
        noise = torch.randn(6, generator=torch.Generator().manual_seed(seed), dtype=D)
        for ridge in (0.0, 0.1):
            result = label_noise_propagation(cross, kernel, noise, ridge=ridge)
            assert result.holds and bool((result.slack >= 1 - 1e-12).all())
    kernel = torch.diag(torch.tensor([0.5, 2.0, 3.0], dtype=D))
    cross = torch.tensor([[1.0, 0.0, 0.0]], dtype=D)
    tight = label_noise_propagation(cross, kernel, torch.tensor([0.2, 0.0, 0.0], dtype=D),
                                    ridge=0.25)
    torch.testing.assert_close(tight.slack, torch.ones(1, dtype=D))
    assert tight.to_dict()["lambda_min"] == 0.5


def test_bad_kernels_and_singular_interpolation_raise():
    kernel, cross = _psd(6, 3, seed=0)                       # rank 3: singular
    noise = torch.ones(6, dtype=D)
    with pytest.raises(ValueError, match="ridge > 0"):
        label_noise_propagation(cross, kernel, noise)
    assert label_noise_propagation(cross, kernel, noise, ridge=0.1).holds
    with pytest.raises(ValueError, match="symmetric"):
        kernel_ridge_predict(cross, kernel + torch.triu(torch.ones(6, 6, dtype=D), 1), noise,
                             ridge=1.0)
    with pytest.raises(ValueError, match=r"shape \(6,\)"):
        kernel_ridge_predict(cross, kernel, torch.ones(5, dtype=D), ridge=1.0)
    with pytest.raises(ValueError, match="ridge=-1"):
        kernel_ridge_predict(cross, kernel, noise, ridge=-1.0)


def test_gradient_flow_noise_closed_form_and_limits():
    eigen = torch.tensor([0.1, 1.0, 5.0], dtype=D)
    noise = torch.tensor([1.0, -2.0, 0.5], dtype=D)
    times = torch.tensor([0.0, 0.5, 3.0], dtype=D)
    result = gradient_flow_noise(torch.diag(eigen), noise, times, lr=0.4)
    expected = -torch.expm1(-0.4 * times.view(-1, 1) * eigen) * noise
    torch.testing.assert_close(result.fitted_noise, expected)
    assert bool((result.absorbed[:, 0] <= result.absorbed[:, 2]).all())   # small λ absorb slowly
    kernel, cross = _psd(6, 8, seed=3, shift=0.1)
    noise = torch.randn(6, 2, generator=torch.Generator().manual_seed(3), dtype=D)
    times = torch.tensor([0.0, 0.2, 1.0, 1e4], dtype=D)
    result = gradient_flow_noise(kernel, noise, times, lr=0.5, cross_kernel=cross)
    for t, fitted in zip(times, result.fitted_noise):
        reference = (torch.eye(6, dtype=D) - torch.linalg.matrix_exp(-0.5 * t * kernel)) @ noise
        torch.testing.assert_close(fitted, reference)
    assert float(result.fitted_norms[0]) == 0.0
    assert bool((result.query_change_norms <= result.query_bounds * (1 + 1e-12)).all())
    final = torch.linalg.vector_norm(kernel_ridge_predict(cross, kernel, noise), dim=1)
    torch.testing.assert_close(result.query_change_norms[-1], final)   # t → ∞: interpolation


def test_gradient_flow_residuals_match_matrix_exponential_and_bound():
    kernel, _ = _psd(5, 8, seed=4)
    r0 = torch.randn(5, generator=torch.Generator().manual_seed(4), dtype=D)
    times = torch.linspace(0, 4, 9, dtype=D)
    result = linearized_gradient_flow(kernel, r0, times, lr=0.3)
    for t, r in zip(times, result.residuals):
        torch.testing.assert_close(r, torch.linalg.matrix_exp(-0.3 * t * kernel) @ r0)
    assert bool((result.residual_norms <= result.bounds * (1 + 1e-12)).all())
    diag = linearized_gradient_flow(torch.diag(torch.tensor([2.0, 3.0], dtype=D)),
                                    torch.tensor([1.0, 0.0], dtype=D), times, lr=1.0)
    torch.testing.assert_close(diag.slack, torch.ones(9, dtype=D))   # tight along λ_min


def test_gd_threshold_is_sharp_on_a_diagonal_kernel():
    jacobian = torch.diag(torch.tensor([1.0, 2.0], dtype=D))           # K = diag(1, 4)
    kernel = jacobian @ jacobian.T
    threshold = gd_stability_threshold(kernel)
    assert threshold == 0.5
    r0 = torch.tensor([1.0, 1.0], dtype=D)
    below = linearized_gradient_descent(jacobian, r0, lr=0.999 * threshold, num_steps=2000)
    above = linearized_gradient_descent(jacobian, r0, lr=1.001 * threshold, num_steps=2000)
    assert not below.diverged and float(below.residual_norms[-1]) < float(below.residual_norms[0])
    assert float(above.residual_norms[-1]) > 30 * float(above.residual_norms[0])   # 1.002^2000 ≈ 55
    rho = gd_contraction_factor(kernel, 1.001 * threshold)
    assert math.isclose(rho, 1.002, rel_tol=1e-12)
    assert math.isclose(above.rate(100), rho, rel_tol=1e-9)
    steps = below.steps.to(D)
    bound = gd_contraction_factor(kernel, 0.999 * threshold) ** steps * r0.norm()
    assert bool((below.residual_norms <= bound * (1 + 1e-10)).all())


def test_parameter_space_gd_equals_function_space_iteration():
    g = torch.Generator().manual_seed(5)
    jacobian = torch.randn(4, 7, generator=g, dtype=D)
    r0 = torch.randn(4, generator=g, dtype=D)
    kernel = jacobian @ jacobian.T
    lr = 0.9 * gd_stability_threshold(kernel)
    result = linearized_gradient_descent(jacobian, r0, lr=lr, num_steps=30, record_every=10)
    assert result.steps.tolist() == [0, 10, 20, 30]
    step = torch.eye(4, dtype=D) - lr * kernel
    torch.testing.assert_close(result.residuals[-1], torch.linalg.matrix_power(step, 30) @ r0)
    again = linearized_gradient_descent(jacobian, r0, lr=lr, num_steps=30, record_every=10)
    assert torch.equal(result.residuals, again.residuals)
    assert result.to_dict()["num_steps"] == 30


def test_divergence_stops_early_and_bad_arguments_raise():
    jacobian = torch.eye(2, dtype=D)
    result = linearized_gradient_descent(jacobian, torch.ones(2, dtype=D), lr=3.0,
                                         num_steps=1000, divergence_factor=1e6)
    assert result.diverged and int(result.steps[-1]) < 1000
    with pytest.raises(ValueError, match="lr="):
        linearized_gradient_descent(jacobian, torch.ones(2, dtype=D), lr=0.0, num_steps=3)
    with pytest.raises(ValueError, match=r"\(n, C, p\)"):
        linearized_gradient_descent(torch.ones(2, 1, 3, dtype=D), torch.ones(2, dtype=D),
                                    lr=0.1, num_steps=3)
    with pytest.raises(ValueError, match="times"):
        linearized_gradient_flow(torch.eye(2, dtype=D), torch.ones(2, dtype=D),
                                 torch.tensor([-1.0], dtype=D), lr=1.0)


def _tiny_network(activation: str = "tanh"):
    from stabnb.models import MLP
    torch.manual_seed(0)
    model = MLP(4, (6,), 2, activation=activation).double().eval()
    inputs = torch.rand(5, 4, generator=torch.Generator().manual_seed(1), dtype=D)
    return model, inputs


def test_ntk_problem_pieces_agree_with_the_parameter_jacobian():
    from stabnb.operators import ntk_gram
    from stabnb.theory.kernels import linearized_problem, ntk_train_query
    model, inputs = _tiny_network()
    with torch.no_grad():
        targets = model(inputs) + 1.0
    problem = linearized_problem(model, inputs, targets)
    torch.testing.assert_close(problem.kernel, problem.jacobian @ problem.jacobian.T)
    torch.testing.assert_close(problem.residual0, -torch.ones(10, dtype=D))
    kernel, cross = ntk_train_query(model, inputs[:3], inputs[3:])
    full = ntk_gram(model, inputs)
    torch.testing.assert_close(kernel, full[:3, :3])
    torch.testing.assert_close(cross, full[3:, :3])
    with pytest.raises(ValueError, match=r"targets must have shape \(5, 2\)"):
        linearized_problem(model, inputs, targets[:, :1])


def test_mse_hessian_equals_gauss_newton_at_interpolation_and_drifts_with_residuals():
    from stabnb.theory.kernels import mse_hessian_vs_ntk
    model, inputs = _tiny_network()
    with torch.no_grad():
        outputs = model(inputs)
    exact = mse_hessian_vs_ntk(model, inputs, outputs)
    assert exact.residual_rms == 0.0 and exact.relative_gap < 1e-10
    offset = torch.randn(5, 2, generator=torch.Generator().manual_seed(2), dtype=D)
    gaps = [mse_hessian_vs_ntk(model, inputs, outputs + s * offset).relative_gap
            for s in (0.01, 1.0)]
    assert gaps[0] < gaps[1]


def test_fitted_fraction_recovers_gradient_flow_absorption():
    from stabnb.theory.kernels import fitted_fraction
    kernel, _ = _psd(5, 8, seed=6)
    noise = torch.randn(5, generator=torch.Generator().manual_seed(6), dtype=D)
    times = torch.tensor([0.1, 1.0], dtype=D)
    flow = gradient_flow_noise(kernel, noise, times, lr=0.7)
    torch.testing.assert_close(fitted_fraction(kernel, flow.fitted_noise, noise), flow.absorbed)

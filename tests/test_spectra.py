"""Spectral algorithms against matrices with known spectra and dense Hessians (float64)."""

from __future__ import annotations

import math

import pytest
import torch

from stabnb.models import MLP
from stabnb.operators import DenseOperator, LossHessian, NTKGram, ParamJacobian
from stabnb.spectra import (
    control_variate_trace,
    estimate_trace,
    full_spectrum,
    hutchinson_trace,
    hutchpp_trace,
    lanczos,
    power_iteration,
    slq_density,
    top_singular_values,
)

DT = torch.float64


def known_spectrum(eigenvalues: torch.Tensor, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(len(eigenvalues), len(eigenvalues), dtype=DT,
                                       generator=g))
    return Q @ torch.diag(eigenvalues) @ Q.T


SPD = torch.logspace(2, -2, 80, dtype=DT)


@pytest.fixture(scope="module")
def hessian_case():
    torch.manual_seed(0)
    model = MLP(4, (6,), 3, activation="tanh").to(DT).eval()
    x, y = torch.rand(5, 4, dtype=DT), torch.arange(5) % 3
    op = LossHessian(model, x, y)
    return op, op.to_dense()


def test_lanczos_known_spectrum():
    A = known_spectrum(SPD)
    for operand in (A, DenseOperator(A)):
        res = lanczos(operand, 5, tol=1e-10)
        assert res.converged and res.num_matvecs < 80
        torch.testing.assert_close(res.values, SPD[:5], rtol=1e-6, atol=0)
        assert bool((res.values[:-1] >= res.values[1:]).all())
        true_residuals = torch.linalg.vector_norm(A @ res.vectors - res.vectors * res.values, dim=0)
        assert bool((true_residuals <= 1e-8 * SPD[0]).all())
        torch.testing.assert_close(res.vectors.T @ res.vectors, torch.eye(5, dtype=DT))


def test_lanczos_smallest_and_repeated():
    values = torch.tensor([5.0, 5.0, 5.0, 2.0, 1.0, 0.5], dtype=DT)
    res = lanczos(known_spectrum(values), 4, tol=1e-12)
    torch.testing.assert_close(res.values, values[:4], rtol=1e-10, atol=0)
    res = lanczos(known_spectrum(values), 2, which="smallest", tol=1e-12)
    torch.testing.assert_close(res.values, torch.tensor([0.5, 1.0], dtype=DT))
    identity = lanczos(torch.eye(10, dtype=DT), 3)
    assert identity.converged
    torch.testing.assert_close(identity.values, torch.ones(3, dtype=DT))


def linear_model_operators():
    """``nn.Linear(d, C)`` operators with exact C-fold eigenvalues.

    MSE Hessian ``I_C ⊗ X̃ᵀX̃/n`` (X̃ = [X, 1], p = C(d+1)) and block NTK ``X̃X̃ᵀ ⊗ I_C``.
    """
    g = torch.Generator().manual_seed(3)
    model = torch.nn.Linear(40, 3).to(DT).eval()
    x = torch.randn(60, 40, dtype=DT, generator=g)
    hessian = LossHessian(model, x, torch.randn(60, 3, dtype=DT, generator=g), loss="mse")
    return {"mse hessian": hessian, "block ntk": NTKGram(model, x[:45], block=True)}


def multiplicity_cases():
    triple_top = torch.cat([torch.full((3,), 10.0, dtype=DT), torch.linspace(5, 0.1, 197,
                                                                             dtype=DT)])
    triple_zero = torch.cat([torch.zeros(3, dtype=DT), torch.linspace(1, 5, 197, dtype=DT)])
    cases = [("triple top", known_spectrum(triple_top, 1), "largest"),
             ("triple zero", known_spectrum(triple_zero, 1), "smallest")]
    cases += [(name, op, "largest") for name, op in linear_model_operators().items()]
    return cases


@pytest.mark.parametrize("tol", [1e-3, 1e-10])
@pytest.mark.parametrize("name, A, which", multiplicity_cases(),
                         ids=[case[0] for case in multiplicity_cases()])
def test_lanczos_finds_every_copy_of_repeated_eigenvalues(name, A, which, tol):
    dense = A.to_dense() if isinstance(A, DenseOperator | LossHessian | NTKGram) else A
    exact = torch.linalg.eigvalsh((dense + dense.T) / 2)
    k = 5
    expected = exact[-k:].flip(0) if which == "largest" else exact[:k]
    res = lanczos(A, k, tol=tol, which=which, num_iters=A.shape[0])
    assert res.converged, name
    norm = float(exact.abs().max())
    torch.testing.assert_close(res.values, expected, rtol=0, atol=2 * tol * norm)
    true_residuals = torch.linalg.vector_norm(A @ res.vectors - res.vectors * res.values, dim=0)
    assert bool((true_residuals <= tol * norm * (1 + 1e-6)).all()), name
    assert bool((true_residuals <= res.residuals * 10 + 1e-12 * norm).all()), name


@pytest.mark.parametrize("tol", [1e-3, 1e-10])
def test_top_singular_values_finds_repeated_singular_values(tol):
    """The parameter Jacobian of ``nn.Linear(d, C)`` is ``X̃ ⊗ I_C``: C-fold singular values."""
    g = torch.Generator().manual_seed(4)
    model = torch.nn.Linear(40, 3).to(DT).eval()
    J = ParamJacobian(model, torch.randn(45, 40, dtype=DT, generator=g))
    exact = torch.linalg.svdvals(J.to_dense())
    res = top_singular_values(J, 5, tol=tol, num_iters=J.shape[1])
    assert res.converged
    torch.testing.assert_close(res.values, exact[:5], rtol=0, atol=2 * tol * float(exact[0]))


def test_lanczos_on_hessian(hessian_case):
    op, H = hessian_case
    exact = torch.linalg.eigvalsh(H).flip(0)[:3]
    res = lanczos(op, 3, tol=1e-10)
    assert res.converged
    torch.testing.assert_close(res.values, exact, rtol=1e-6, atol=0)
    assert res.to_dict()["num_matvecs"] == res.num_matvecs


def test_lanczos_reports_non_convergence_and_seeds():
    A = known_spectrum(torch.linspace(1, 2, 80, dtype=DT))
    res = lanczos(A, 3, num_iters=5, tol=1e-12)
    assert not res.converged and res.num_matvecs == 5 and len(res.residuals) == 3
    again = lanczos(A, 3, num_iters=5, tol=1e-12)
    torch.testing.assert_close(res.values, again.values, rtol=0, atol=0)
    other = lanczos(A, 3, num_iters=5, tol=1e-12, seed=1)
    assert not torch.equal(res.values, other.values)
    gen_res = lanczos(A, 3, num_iters=5, tol=1e-12, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(gen_res.values, res.values, rtol=0, atol=0)


def test_bad_arguments():
    A = known_spectrum(SPD[:10])
    with pytest.raises(ValueError, match="k=11 exceeds the dimension 10"):
        lanczos(A, 11)
    with pytest.raises(ValueError, match="square"):
        lanczos(A[:5], 1)
    with pytest.raises(ValueError, match="multiple of 3"):
        hutchpp_trace(A, 10)
    with pytest.raises(ValueError, match="which="):
        lanczos(A, 1, which="middle")
    with pytest.raises(ValueError, match="NaN"):
        lanczos(A * float("nan"), 1)
    with pytest.raises(FloatingPointError, match="NaN/Inf"):
        lanczos(DenseOperator(A * float("inf")), 1)
    with pytest.raises(FloatingPointError):
        hutchinson_trace(DenseOperator(A * float("nan")), 3)
    with pytest.raises(ValueError, match="not symmetric"):
        full_spectrum(A + torch.triu(torch.ones_like(A)))
    with pytest.raises(ValueError, match="too large"):
        full_spectrum(A, max_dim=5)


def test_power_iteration():
    A = known_spectrum(SPD)
    res = power_iteration(A, num_iters=500, tol=1e-9)
    assert res.converged and abs(res.value - 100.0) < 1e-6
    assert not power_iteration(A, num_iters=2, tol=1e-12).converged


def test_top_singular_values():
    g = torch.Generator().manual_seed(0)
    for shape in ((7, 30), (30, 7)):
        A = torch.randn(*shape, dtype=DT, generator=g)
        res = top_singular_values(A, 3, tol=1e-12)
        torch.testing.assert_close(res.values, torch.linalg.svdvals(A)[:3], rtol=1e-8, atol=0)
        torch.testing.assert_close(torch.linalg.vector_norm(A @ res.vectors, dim=0), res.values)
    with pytest.raises(ValueError, match="k=8 exceeds"):
        top_singular_values(A, 8)
    torch.manual_seed(0)
    model = MLP(4, (6,), 3).to(DT).eval()
    op = ParamJacobian(model, torch.rand(5, 4, dtype=DT))
    res = top_singular_values(op, 2, tol=1e-12)
    torch.testing.assert_close(res.values, torch.linalg.svdvals(op.to_dense())[:2])


def test_hutchinson_exact_on_diagonal_and_seeded():
    A = torch.diag(torch.arange(1.0, 11.0, dtype=DT))
    assert hutchinson_trace(A, 7).value == pytest.approx(55.0)
    B = known_spectrum(SPD)
    first, second = hutchinson_trace(B, 30), hutchinson_trace(B, 30)
    assert first.value == second.value and first.to_dict()["seed"] == 0


@pytest.mark.parametrize("estimator", [hutchinson_trace, hutchpp_trace])
def test_trace_within_stated_error(estimator):
    A = known_spectrum(SPD)
    exact = float(SPD.sum())
    for seed in range(5):
        est = estimator(A, 30, seed=seed, distribution="gaussian")
        assert abs(est.value - exact) <= 5 * est.std_error


def test_hutchpp_beats_hutchinson():
    steep = 100.0 / torch.arange(1, 81, dtype=DT) ** 2       # decaying spectrum, Hutch++'s case
    A = known_spectrum(steep)
    exact = float(steep.sum())
    plain = [abs(hutchinson_trace(A, 30, seed=s).value - exact) for s in range(10)]
    deflated = [abs(hutchpp_trace(A, 30, seed=s).value - exact) for s in range(10)]
    assert sum(deflated) < 0.5 * sum(plain)
    full = hutchpp_trace(A, 240)                 # the sketch spans the whole space: exact
    assert full.value == pytest.approx(exact, rel=1e-10)


def test_slq_density_and_moments():
    diag = torch.linspace(-1.0, 3.0, 40, dtype=DT)
    A = torch.diag(diag)
    density = slq_density(A, num_iters=20, num_samples=3)
    assert torch.trapezoid(density.density, density.grid).item() == pytest.approx(1.0, abs=1e-6)
    first = torch.trapezoid(density.grid * density.density, density.grid).item()
    second = torch.trapezoid(density.grid ** 2 * density.density, density.grid).item()
    # Rademacher probes are exact for a diagonal A; Gauss quadrature is exact up to degree 2m-1.
    assert density.trace == pytest.approx(float(diag.sum()), rel=1e-10)
    assert first == pytest.approx(float(diag.mean()), abs=1e-6)
    assert second == pytest.approx(float((diag ** 2).mean()) + density.sigma ** 2, rel=1e-6)
    torch.testing.assert_close(density.weights.sum(1), torch.ones(3, dtype=DT))
    again = slq_density(A, num_iters=20, num_samples=3)
    assert torch.equal(again.density, density.density)
    assert density.to_dict()["num_matvecs"] == 60


def test_slq_density_matches_spectrum_on_hessian(hessian_case):
    op, H = hessian_case
    density = slq_density(op, num_iters=op.shape[0], num_samples=2)
    assert torch.trapezoid(density.density, density.grid).item() == pytest.approx(1.0, abs=1e-6)
    exact = torch.linalg.eigvalsh(H)
    assert density.grid[0] <= exact[0] and density.grid[-1] >= exact[-1]


def test_full_spectrum(hessian_case):
    op, H = hessian_case
    torch.testing.assert_close(full_spectrum(op), torch.linalg.eigvalsh(H).flip(0))
    A = torch.randn(4, 6, dtype=DT)
    torch.testing.assert_close(full_spectrum(DenseOperator(A), kind="singular"),
                               torch.linalg.svdvals(A))
    assert math.isclose(float(full_spectrum(torch.eye(3, dtype=DT))[0]), 1.0)


FLAT = torch.linspace(1.0, 2.0, 80, dtype=DT)
DECAYING = 100.0 / torch.arange(1, 81, dtype=DT) ** 2


@pytest.mark.parametrize("eigenvalues", [FLAT, DECAYING], ids=["flat", "decaying"])
def test_control_variate_trace_unbiased_calibrated_and_never_worse(eigenvalues):
    A = known_spectrum(eigenvalues)
    exact = float(torch.trace(A))
    ests = [control_variate_trace(A, 30, seed=s) for s in range(300)]
    values = torch.tensor([e.value for e in ests], dtype=DT)
    # unbiased: the mean of 300 estimates lies within 4 of its standard errors of tr(A)
    assert abs(float(values.mean()) - exact) <= 4 * float(values.std()) / 300 ** 0.5
    covered = sum(abs(e.value - exact) <= 2 * e.std_error for e in ests) / len(ests)
    assert covered >= 0.85                       # nominal 0.95 for a normal estimate
    errors = (values - exact).abs().mean()
    plain = torch.tensor([abs(hutchinson_trace(A, 30, seed=s).value - exact)
                          for s in range(300)]).mean()
    assert errors <= 1.05 * plain                # flat: Hutchinson's error, not Hutch++'s
    if eigenvalues is DECAYING:
        assert errors <= plain / 3


def test_estimate_trace_default_and_checks():
    A = torch.diag(torch.tensor([100.0, 10.0, 1.0, 0.1], dtype=DT))
    default = estimate_trace(A, 8)
    assert default.method == "control_variate" and default.value == pytest.approx(111.1)
    assert estimate_trace(A, 6, method="hutch++").method == "hutch++"
    B = known_spectrum(SPD)
    assert estimate_trace(B, 30, seed=3).value == control_variate_trace(B, 30, seed=3).value
    with pytest.raises(ValueError, match="method='xtrace' is unknown"):
        estimate_trace(A, 8, method="xtrace")
    with pytest.raises(ValueError, match="num_matvecs=5 is too small"):
        control_variate_trace(A, 5)

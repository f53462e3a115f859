"""Spectral concentration families (E1) against closed forms."""

import math

import pytest
import torch

from stabnb.operators import input_jacobian_singular_values
from stabnb.theory import check_typical_sensitivity
from stabnb.theory.concentration import (
    concatenate_checks,
    concentration_summary,
    matrix_family,
    matrix_sensitivity,
    spectral_mlp,
)

D = torch.float64


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_matrix_family_shares_the_operator_norm_and_has_the_profile():
    family = matrix_family([1.0, 0.5], (6, 4), norm=2.0, generator=_gen(0))
    assert family.shape == (2, 6, 4) and family.dtype == D
    torch.testing.assert_close(torch.linalg.svdvals(family),
                               torch.tensor([[2.0, 2, 2, 2], [2.0, 1, 0.5, 0.25]], dtype=D))


def test_matrix_sensitivity_closed_forms_identity_and_rank_one():
    identity = torch.eye(5, dtype=D)
    rank_one = torch.zeros(5, 5, dtype=D)
    rank_one[0, 0] = 1.0
    check = matrix_sensitivity(torch.stack([identity, rank_one]), sigma=0.5, num_samples=4000,
                               generator=_gen(1))
    torch.testing.assert_close(check.frobenius, torch.tensor([5 * 0.25, 0.25], dtype=D))
    torch.testing.assert_close(check.entropy_bound, check.frobenius)     # flat spectra: equality
    torch.testing.assert_close(check.worst_case, torch.tensor([1.25, 1.25], dtype=D))
    assert check.rank.tolist() == [5, 1]
    torch.testing.assert_close(check.effective_rank, torch.tensor([5.0, 1.0], dtype=D))
    z = (check.monte_carlo - check.frobenius) / check.monte_carlo_se
    assert bool((z.abs() < 4).all())


def test_chain_of_bounds_and_same_seed_same_result():
    family = matrix_family([1.0, 0.9, 0.7, 0.4], (10, 8), generator=_gen(2))
    first = matrix_sensitivity(family, sigma=1.0, num_samples=50, generator=_gen(3))
    second = matrix_sensitivity(family, sigma=1.0, num_samples=50, generator=_gen(3))
    assert torch.equal(first.monte_carlo, second.monte_carlo)
    tol = 1e-12
    assert bool((first.frobenius <= first.entropy_bound + tol).all())
    assert bool((first.entropy_bound <= first.rank_bound + tol).all())
    assert bool((first.rank_bound <= first.worst_case + tol).all())
    summary = concentration_summary(first)
    assert summary.spearman_stable_rank == 1.0 and summary.spearman_entropy == 1.0
    assert math.isclose(summary.worst_case_spread, 1.0, rel_tol=1e-12)
    assert summary.typical_spread > 2 and summary.count == 4
    assert summary.to_dict()["count"] == 4


def test_spectral_mlp_fixes_the_jacobian_norm_at_the_anchor():
    anchor = torch.rand(5, generator=_gen(4), dtype=D)
    norms, eranks = [], []
    for decay in (1.0, 0.3):
        model = spectral_mlp(5, (8,), 4, decay=decay, anchor=anchor, jacobian_norm=2.0,
                             activation="tanh", generator=_gen(5))
        assert not model.training
        singular = input_jacobian_singular_values(model, anchor.unsqueeze(0))
        norms.append(float(singular[0, 0]))
        eranks.append(float(check_typical_sensitivity(model, anchor.unsqueeze(0), sigma=1e-3,
                                                      num_samples=4, generator=_gen(6))
                            .effective_rank[0]))
    assert norms == pytest.approx([2.0, 2.0], rel=1e-12)
    assert eranks[1] < eranks[0]


def test_concatenate_checks_and_bad_arguments():
    family = matrix_family([1.0, 0.5, 0.2], (4, 4), generator=_gen(7))
    pieces = [matrix_sensitivity(a, sigma=1.0, num_samples=10, generator=_gen(8)) for a in family]
    whole = concatenate_checks(pieces)
    assert whole.monte_carlo.shape == (3,) and whole.num_samples == 10
    with pytest.raises(ValueError, match="mix"):
        concatenate_checks([pieces[0], matrix_sensitivity(family[0], sigma=2.0, num_samples=10)])
    with pytest.raises(ValueError, match="num_samples=1"):
        matrix_sensitivity(family, sigma=1.0, num_samples=1)
    with pytest.raises(ValueError, match="sigma"):
        matrix_sensitivity(family, sigma=0.0, num_samples=5)
    with pytest.raises(ValueError, match="too small"):
        concentration_summary(concatenate_checks(pieces[:2]))
    with pytest.raises(ValueError, match=r"anchor must have shape \(5,\)"):
        spectral_mlp(5, (8,), 4, decay=0.5, anchor=torch.zeros(4, dtype=D))

"""Spectral concentration: typical against worst-case sensitivity at a fixed operator norm (E1).

For Gaussian input noise ξ ~ N(0, σ²I_d) and a linear map (or a network's input Jacobian) J,

    E‖Jξ‖² = σ²‖J‖_F² = σ²‖J‖₂² srank(J) ≤ σ²‖J‖₂² exp(H(J)) ≤ σ²‖J‖₂² rank(J) ≤ σ² d ‖J‖₂²,

(R3, our reconstruction: ``docs/reconstruction.md``). At a fixed operator norm ‖J‖₂ the worst-case bound σ²d‖J‖₂² does not
move, while the typical sensitivity follows the spectrum's concentration (stable rank, entropy).
This module builds families with one operator norm and different concentration: matrices
(:func:`matrix_family`, measured by :func:`matrix_sensitivity`) and random networks
(:func:`spectral_mlp`, measured by :func:`stabnb.theory.check_typical_sensitivity`); both give
a :class:`stabnb.theory.TypicalSensitivityCheck`, summarised by :func:`concentration_summary`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

import torch

from ..checks import check_finite
from ..data import matrix_with_spectrum, spectrum_profile, with_weight_spectra
from ..models import MLP, initialize
from ..operators import input_jacobian_singular_values
from ..rng import resolve_generator
from ..stats import spearman
from ..summaries import effective_rank, spectral_entropy, stable_rank
from .sensitivity import TypicalSensitivityCheck

__all__ = ["ConcentrationSummary", "matrix_family", "matrix_sensitivity", "spectral_mlp",
           "concatenate_checks", "concentration_summary"]


def _check_sampling(sigma: float, num_samples: int) -> None:
    if not sigma > 0 or not math.isfinite(sigma):
        raise ValueError(f"sigma={sigma!r} must be a positive finite noise level.")
    if num_samples < 2:
        raise ValueError(f"num_samples={num_samples} must be at least 2 (a standard error "
                         "needs two draws).")


def matrix_family(decays: Sequence[float], shape: tuple[int, int], *, norm: float = 1.0,
                  kind: str = "geometric", generator: torch.Generator | None = None, seed: int = 0,
                  dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Random matrices U diag(s) Vᵀ with ``s = spectrum_profile(min(shape), decay, norm)``.

    All share the operator norm ``norm``; ``decay`` sets the concentration (see
    :func:`stabnb.data.spectrum_profile`). Returns shape (len(decays), *shape).
    """
    generator = resolve_generator(generator, seed)
    rank = min(shape)
    return torch.stack([matrix_with_spectrum(spectrum_profile(rank, d, norm=norm, kind=kind),
                                             shape, generator=generator, dtype=dtype)
                        for d in decays])


def matrix_sensitivity(matrices: torch.Tensor, *, sigma: float, num_samples: int,
                       generator: torch.Generator | None = None, seed: int = 0) -> TypicalSensitivityCheck:
    """Monte Carlo E‖Aξ‖², ξ ~ N(0, σ²I_d), for a batch of matrices, beside the R3 chain.

    The matrix counterpart of :func:`stabnb.theory.check_typical_sensitivity`: the same result
    fields, with one entry per matrix instead of per input (here ``frobenius = σ²‖A‖_F²`` is the
    exact expectation, not a first-order one). Cost: one batched matmul with ``num_samples``
    draws per matrix and one batched SVD.

    Args:
        matrices: shape (b, m, d) (or (m, d) for one matrix).
        sigma: noise standard deviation σ > 0.
        num_samples: Monte Carlo draws per matrix (≥ 2).
        generator: source of the draws (on the matrices' device).
        seed: seeds a fresh generator when ``generator`` is None. Default: 0.

    Returns:
        :class:`stabnb.theory.TypicalSensitivityCheck` with one entry per matrix.

    Examples::

        >>> a = matrix_family([1.0, 0.3], (8, 8), generator=torch.Generator().manual_seed(0))
        >>> check = matrix_sensitivity(a, sigma=1.0, num_samples=2000,
        ...                            generator=torch.Generator().manual_seed(0))
        >>> [round(v) for v in check.frobenius.tolist()]   # ‖A‖_F²: 8 flat, ≈1.1 concentrated
        [8, 1]
    """
    generator = resolve_generator(generator, seed)
    _check_sampling(sigma, num_samples)
    batch = matrices.unsqueeze(0) if matrices.dim() == 2 else matrices
    if batch.dim() != 3:
        raise ValueError(f"matrices must have shape (b, m, d) or (m, d); "
                         f"got {tuple(matrices.shape)}.")
    check_finite(batch, "matrices")
    dim = batch.shape[-1]
    noise = sigma * torch.randn(batch.shape[0], num_samples, dim, generator=generator,
                                dtype=batch.dtype, device=batch.device)
    energy = (torch.einsum("bmd,bsd->bsm", batch, noise) ** 2).sum(dim=-1)
    singular = torch.linalg.svdvals(batch)
    top2 = singular[:, 0] ** 2
    tol = singular[:, 0] * max(singular.shape[1], dim) * torch.finfo(singular.dtype).eps
    rank = (singular > tol.unsqueeze(1)).sum(dim=1)
    erank = effective_rank(singular)
    variance = sigma ** 2
    monte_carlo = energy.mean(dim=1)
    std_error = energy.std(dim=1) / math.sqrt(num_samples)
    entropy_bound = variance * top2 * erank
    return TypicalSensitivityCheck(
        monte_carlo, std_error, variance * (singular ** 2).sum(dim=1), entropy_bound,
        variance * top2 * rank.to(top2.dtype), variance * dim * top2, stable_rank(singular),
        erank, rank, spectral_entropy(singular), entropy_bound / monte_carlo, float(sigma),
        int(num_samples), monte_carlo - 3.0 * std_error <= entropy_bound)


def spectral_mlp(in_features: int, widths: Sequence[int], num_classes: int, *, decay: float,
                 anchor: torch.Tensor, jacobian_norm: float = 1.0, activation: str = "relu",
                 kind: str = "geometric", generator: torch.Generator | None = None,
                 seed: int = 0, dtype: torch.dtype = torch.float64) -> MLP:
    """A random MLP whose layers have the spectrum profile ``decay`` and ‖J_f(anchor)‖₂ fixed.

    Every weight gets singular values ``spectrum_profile(r, decay)`` with random singular
    vectors (:func:`stabnb.data.with_weight_spectra`); then the last layer's weight is rescaled
    so that the input Jacobian at ``anchor`` has operator norm ``jacobian_norm`` (J is linear in
    the last weight). Networks built with different ``decay`` thus share ‖J_f(anchor)‖₂ and
    differ in its concentration. Returned in eval mode, in ``dtype``, on ``anchor``'s device.

    Args:
        in_features, widths, num_classes, activation: as :class:`stabnb.models.MLP`.
        decay: concentration of every layer's spectrum (``kind``: 'geometric' or 'power').
        anchor: one input of shape (in_features,) at which the norm is fixed.
        jacobian_norm: the target ‖J_f(anchor)‖₂ > 0. Default: 1.
        generator: CPU generator for biases and singular vectors. Default: a fresh one seeded
            with ``seed``.
        seed: seed of that fresh generator. Default: 0.
        dtype: parameter dtype. Default: float64.
    """
    generator = generator if generator is not None else torch.Generator().manual_seed(seed)
    if not jacobian_norm > 0:
        raise ValueError(f"jacobian_norm={jacobian_norm!r} must be positive.")
    if anchor.shape != (in_features,):
        raise ValueError(f"anchor must have shape ({in_features},); got {tuple(anchor.shape)}.")
    model = MLP(in_features, widths, num_classes, activation=activation)
    model = model.to(dtype=dtype, device=anchor.device).eval()
    initialize(model, generator, gain=1.0, bias_std=0.1)  # weights: replaced below
    with_weight_spectra(model, decay, kind=kind, generator=generator)
    current = float(input_jacobian_singular_values(model, anchor.to(dtype).unsqueeze(0))[0, 0])
    if not current > 0:
        raise ValueError(f"J_f(anchor) vanishes for decay={decay} and activation={activation!r} "
                         "(every gate is off); choose another seed or anchor.")
    with torch.no_grad():
        model.net[-1].weight.mul_(jacobian_norm / current)
    return model


def concatenate_checks(checks: Sequence[TypicalSensitivityCheck]) -> TypicalSensitivityCheck:
    """One :class:`~stabnb.theory.TypicalSensitivityCheck` holding the items of several.

    For a family measured piece by piece (one network at a time). All pieces must share σ and
    the number of draws.
    """
    if not checks:
        raise ValueError("checks is empty; pass at least one TypicalSensitivityCheck.")
    settings = {(c.sigma, c.num_samples) for c in checks}
    if len(settings) > 1:
        raise ValueError(f"checks mix (sigma, num_samples) settings {sorted(settings)}; "
                         "measure every piece with the same sigma and num_samples.")
    stacked = {f.name: torch.cat([getattr(c, f.name).reshape(-1) for c in checks])
               for f in fields(checks[0]) if isinstance(getattr(checks[0], f.name), torch.Tensor)}
    return replace(checks[0], **stacked)


@dataclass(frozen=True)
class ConcentrationSummary:
    """Does typical sensitivity follow concentration at a fixed worst case? (E1)

    ``spearman_*``: rank correlation of the Monte Carlo sensitivity with exp(H) and with the
    stable rank; ``typical_spread`` and ``worst_case_spread``: max/min across the family;
    ``z_max``: largest |z| of Monte Carlo against σ²‖J‖_F²; ``within_entropy_bound``: how many
    items satisfy Monte Carlo ≤ σ²‖J‖₂²exp(H) + 3 standard errors, out of ``count``.
    """

    spearman_entropy: float
    spearman_stable_rank: float
    typical_spread: float
    worst_case_spread: float
    z_max: float
    within_entropy_bound: int
    count: int

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def concentration_summary(result: TypicalSensitivityCheck) -> ConcentrationSummary:
    """Spearman ρ of typical sensitivity with exp(H) and srank, and the spreads, for a family.

    Args:
        result: from :func:`matrix_sensitivity` or :func:`stabnb.theory.check_typical_sensitivity`
            (at least 3 items: matrices, or inputs × networks concatenated by the caller).
    """
    if result.monte_carlo.numel() < 3:
        raise ValueError(f"a family of {result.monte_carlo.numel()} items is too small for a "
                         "rank correlation; use at least 3.")
    typical, worst = result.monte_carlo, result.worst_case
    return ConcentrationSummary(
        spearman_entropy=float(spearman(result.effective_rank, typical)),
        spearman_stable_rank=float(spearman(result.stable_rank, typical)),
        typical_spread=float(typical.max() / typical.min()),
        worst_case_spread=float(worst.max() / worst.min()),
        z_max=float(((typical - result.frobenius) / result.monte_carlo_se).abs().max()),
        within_entropy_bound=int(result.holds.sum()),
        count=int(typical.numel()))

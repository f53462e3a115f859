"""The whole spectrum: its smoothed density by stochastic Lanczos quadrature, or, for a small
operator, its exact values."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..operators import LinearOperator
from ..rng import resolve_generator
from ._common import Operator, _draw, _positive_int, _settings, _square_dim
from .krylov import _lanczos_process

__all__ = ["SpectralDensity", "slq_density", "full_spectrum"]


@dataclass(frozen=True)
class SpectralDensity:
    """Smoothed spectral density ``φ(t) = (1/S) Σ_s Σ_j τ_sj g_σ(t − θ_sj)`` from SLQ.

    Attributes:
        grid: (num_points,) evaluation points.
        density: (num_points,) φ on the grid; ``∫φ = 1`` (the grid covers ±6σ around the nodes).
        nodes, weights: (num_samples, num_iters) Gauss quadrature nodes θ and weights τ
            (each row of weights sums to 1); unused slots after an early breakdown hold
            weight 0.
        trace: ``dim · (1/S) Σ_s Σ_j τ_sj θ_sj``, the first moment (a Hutchinson estimate).
        sigma: Gaussian broadening width.
    """

    grid: Tensor
    density: Tensor
    nodes: Tensor
    weights: Tensor
    trace: float
    sigma: float
    num_matvecs: int
    settings: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"grid": self.grid.tolist(), "density": self.density.tolist(),
                "nodes": self.nodes.tolist(), "weights": self.weights.tolist(),
                "trace": self.trace, "sigma": self.sigma, "num_matvecs": self.num_matvecs,
                **self.settings}


def slq_density(A: Operator, *, num_iters: int = 50, num_samples: int = 4,
                num_points: int = 512, sigma: float | None = None,
                generator: torch.Generator | None = None, seed: int | None = 0
                ) -> SpectralDensity:
    """Spectral density by stochastic Lanczos quadrature (Ubaru, Chen & Saad 2017).

    ``p(λ) = (1/d) Σᵢ δ(λ − λᵢ)`` is approximated, for each Rademacher probe ``v/‖v‖``, by the
    Gauss quadrature of its ``num_iters``-step Lanczos tridiagonal (nodes θ_j = Ritz values,
    weights τ_j = first components² of its eigenvectors), averaged over probes and broadened by
    Gaussians of width σ: ``φ(t) = (1/S) Σ_s Σ_j τ_sj N(t; θ_sj, σ²)``, so ``∫φ = 1`` and
    ``d ∫ t φ(t) dt`` is a Hutchinson trace estimate. Cost: ``num_samples·num_iters`` products.

    Args:
        num_iters: Lanczos steps per probe (fewer after an exact breakdown). Default: 50.
        num_samples: probe vectors S. Default: 4.
        num_points: grid size, spanning the nodes ± 6σ. Default: 512.
        sigma: broadening. Default: 1 % of the node spread (of ``max(|θ|, 1)`` if all nodes
            coincide).
    """
    dim = _square_dim(A)
    num_iters = min(_positive_int(num_iters, "num_iters"), dim)
    num_samples = _positive_int(num_samples, "num_samples")
    num_points = _positive_int(num_points, "num_points")
    gen = resolve_generator(generator, seed, device=A.device)
    nodes = torch.zeros(num_samples, num_iters, dtype=torch.float64)
    weights = torch.zeros(num_samples, num_iters, dtype=torch.float64)
    num_matvecs = 0
    for s in range(num_samples):
        v = _draw((dim,), "rademacher", gen, A)
        Q, T, _ = _lanczos_process(A, v / math.sqrt(dim), num_iters, gen, restart=False)
        num_matvecs += Q.shape[0]
        theta, Y = torch.linalg.eigh(T)
        nodes[s, : theta.numel()] = theta
        weights[s, : theta.numel()] = Y[0] ** 2
    used = weights > 0
    low, high = float(nodes[used].min()), float(nodes[used].max())
    if sigma is None:
        spread = high - low
        sigma = 0.01 * (spread if spread > 0 else max(abs(high), 1.0))
    if not sigma > 0:
        raise ValueError(f"sigma={sigma} must be positive.")
    grid = torch.linspace(low - 6 * sigma, high + 6 * sigma, num_points, dtype=torch.float64)
    gauss = torch.exp(-0.5 * ((grid[:, None, None] - nodes) / sigma) ** 2)
    density = (gauss * weights).sum((1, 2)) / (num_samples * sigma * math.sqrt(2 * math.pi))
    trace = dim * float((weights * nodes).sum() / num_samples)
    return SpectralDensity(grid, density, nodes, weights, trace, float(sigma), num_matvecs,
                           {**_settings(A, None if generator is not None else seed),
                            "num_iters": num_iters, "num_samples": num_samples})


def full_spectrum(A: Operator, *, kind: str = "eigen", max_dim: int = 8192) -> Tensor:
    """The whole spectrum of a small ``A`` from its dense matrix, descending.

    ``kind="eigen"``: eigenvalues of a symmetric A (``eigvalsh``; asymmetry beyond
    ``√eps·max|A_ij|`` is refused); ``kind="singular"``: singular values of any A
    (``svdvals``). Cost: ``shape[1]`` products to densify, then O(dim³).

    Raises:
        ValueError: unknown kind, a dimension above ``max_dim``, a non-symmetric A for "eigen".
    """
    if kind not in ("eigen", "singular"):
        raise ValueError(f"kind={kind!r} is unknown; use 'eigen' or 'singular'.")
    if max(A.shape) > max_dim:
        raise ValueError(f"A of shape {tuple(A.shape)} is too large to densify (max_dim="
                         f"{max_dim}); use lanczos or top_singular_values, or raise max_dim.")
    dense = A.to_dense() if isinstance(A, LinearOperator) else A
    if not bool(torch.isfinite(dense).all()):
        raise FloatingPointError("A contains NaN/Inf; its spectrum is undefined.")
    if kind == "singular":
        return torch.linalg.svdvals(dense)
    _square_dim(dense)
    asym = float((dense - dense.T).abs().max())
    if asym > math.sqrt(torch.finfo(dense.dtype).eps) * float(dense.abs().max()):
        raise ValueError(f"A is not symmetric (max |A − Aᵀ| = {asym:.3g}); use "
                         "kind='singular' for a non-symmetric operator.")
    return torch.linalg.eigvalsh(dense).flip(0)

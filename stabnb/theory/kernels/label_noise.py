"""R7: label noise through the NTK, for kernel ridge regression and for linearised gradient
flow stopped at time t (our reconstruction, R7 of ``docs/reconstruction.md``)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from ...io import to_jsonable
from ._common import (
    _apply,
    _check_cross,
    _check_kernel,
    _check_positive,
    _check_rows,
    _check_times,
    _eigh,
    _row_norms,
)

__all__ = ["LabelNoiseResult", "GradientFlowNoiseResult", "kernel_ridge_predict",
           "label_noise_propagation", "gradient_flow_noise", "fitted_fraction"]


def kernel_ridge_predict(cross_kernel: torch.Tensor, kernel: torch.Tensor, targets: torch.Tensor,
                         *, ridge: float = 0.0) -> torch.Tensor:
    """Kernel ridge regression f̂(x) = K(x, X) (K(X, X) + λI)⁻¹ y.

    Args:
        cross_kernel: ``K(x, X)``, shape (m, n).
        kernel: ``K(X, X)``, symmetric PSD, shape (n, n).
        targets: ``y``, shape (n,) or (n, C).
        ridge: λ ≥ 0. Default: 0 (interpolation; needs a nonsingular kernel).

    Returns:
        Predictions of shape (m,) or (m, C).

    Raises:
        ValueError: bad shapes, non-finite input, negative ridge, or a singular ``K + λI``.
    """
    _check_kernel(kernel)
    _check_rows(targets, kernel.shape[0], "targets")
    _check_cross(cross_kernel, kernel.shape[0])
    eigenvalues, vectors = _eigh(kernel)
    shifted = _shifted_eigenvalues(eigenvalues, ridge)
    return cross_kernel @ _apply(vectors, 1.0 / shifted, targets)


def _shifted_eigenvalues(eigenvalues: torch.Tensor, ridge: float) -> torch.Tensor:
    if not ridge >= 0 or not math.isfinite(ridge):
        raise ValueError(f"ridge={ridge!r} must be a finite number ≥ 0.")
    shifted = eigenvalues + ridge
    floor = eigenvalues.abs().max() * eigenvalues.numel() * torch.finfo(eigenvalues.dtype).eps
    if float(shifted.min()) <= float(floor):
        raise ValueError(f"K + λI is numerically singular (λ_min(K) = "
                         f"{float(eigenvalues.min()):.3e}, ridge={ridge!r}); pass ridge > 0.")
    return shifted


@dataclass(frozen=True)
class LabelNoiseResult:
    """How label noise Δy moves kernel-ridge predictions, against the bound of R7.

    ``change_norms[j] = ‖Δf̂(x_j)‖`` and ``bounds[j] = ‖K(x_j, X)‖₂ ‖Δy‖ / (λ_min(K) + λ)``.
    """

    change_norms: torch.Tensor
    bounds: torch.Tensor
    noise_norm: float
    lambda_min: float
    ridge: float

    @property
    def slack(self) -> torch.Tensor:
        """bound ÷ actual per query point (∞ where the prediction did not move)."""
        return self.bounds / self.change_norms

    @property
    def holds(self) -> bool:
        """Whether every change is within its bound (up to float round-off)."""
        tol = 1e-9 * float(self.bounds.max()) if self.bounds.numel() else 0.0
        return bool((self.change_norms <= self.bounds + tol).all())

    def to_dict(self) -> dict[str, Any]:
        return {"change_norms": to_jsonable(self.change_norms), "bounds": to_jsonable(self.bounds),
                "slack": to_jsonable(self.slack), "holds": self.holds, "noise_norm": self.noise_norm,
                "lambda_min": self.lambda_min, "ridge": self.ridge}


def label_noise_propagation(cross_kernel: torch.Tensor, kernel: torch.Tensor, noise: torch.Tensor,
                            *, ridge: float = 0.0) -> LabelNoiseResult:
    """Change of kernel-ridge predictions under label noise, and its bound (R7, our reconstruction).

    Δf̂(x) = K(x, X)(K + λI)⁻¹ Δy, so ‖Δf̂(x)‖ ≤ ‖K(x, X)‖₂ ‖(K + λI)⁻¹‖₂ ‖Δy‖
    = ‖K(x, X)‖₂ ‖Δy‖ / (λ_min(K) + λ). For (n, C) noise ‖Δy‖ is the Frobenius norm. Predictions
    are linear in y, so the change does not depend on the clean labels.

    Args:
        cross_kernel: ``K(x, X)``, shape (m, n); each row is one query point.
        kernel: ``K(X, X)``, symmetric PSD, shape (n, n).
        noise: ``Δy``, shape (n,) or (n, C).
        ridge: λ ≥ 0. Default: 0.

    Returns:
        :class:`LabelNoiseResult` with per-query-point changes and bounds.

    Raises:
        ValueError: as :func:`kernel_ridge_predict`.

    Examples::

        >>> K = torch.diag(torch.tensor([0.5, 2.0], dtype=torch.float64))
        >>> r = label_noise_propagation(torch.tensor([[1.0, 0.0]], dtype=torch.float64), K,
        ...                             torch.tensor([0.1, 0.0], dtype=torch.float64))
        >>> round(float(r.change_norms[0]), 6), round(float(r.bounds[0]), 6)   # tight
        (0.2, 0.2)
    """
    change = kernel_ridge_predict(cross_kernel, kernel, noise, ridge=ridge)
    lambda_min = float(torch.linalg.eigvalsh((kernel + kernel.T) / 2)[0])
    noise_norm = float(torch.linalg.vector_norm(noise))
    bounds = torch.linalg.vector_norm(cross_kernel, dim=1) * noise_norm / (lambda_min + ridge)
    return LabelNoiseResult(_row_norms(change), bounds, noise_norm, lambda_min, float(ridge))


@dataclass(frozen=True)
class GradientFlowNoiseResult:
    """Label noise fitted by linearised gradient flow after time t (R7, finite time).

    On the training points the fitted noise is ``(I − e^{−ηKt})Δy``; along the eigenvector
    ``u_i`` of K it is the fraction ``absorbed[t, i] = 1 − e^{−ηλ_i t}`` of Δy's component. At a
    query point it is ``K(x, X) K⁻¹(I − e^{−ηKt})Δy``, bounded by
    ``‖K(x, X)‖₂ ‖Δy‖ (1 − e^{−ηλ_min t}) / λ_min`` (≤ ``‖K(x, X)‖₂ ‖Δy‖ η t``).
    """

    times: torch.Tensor
    fitted_noise: torch.Tensor
    eigenvalues: torch.Tensor
    absorbed: torch.Tensor
    query_change_norms: torch.Tensor | None
    query_bounds: torch.Tensor | None
    lr: float

    @property
    def fitted_norms(self) -> torch.Tensor:
        """‖(I − e^{−ηKt})Δy‖ per time, shape (T,)."""
        return torch.linalg.vector_norm(self.fitted_noise.flatten(1), dim=1)

    def to_dict(self) -> dict[str, Any]:
        return {"times": to_jsonable(self.times), "fitted_norms": to_jsonable(self.fitted_norms),
                "eigenvalues": to_jsonable(self.eigenvalues), "absorbed": to_jsonable(self.absorbed),
                "query_change_norms": to_jsonable(self.query_change_norms),
                "query_bounds": to_jsonable(self.query_bounds), "lr": self.lr}


def _decay_ratio(eigenvalues: torch.Tensor, times: torch.Tensor, lr: float) -> torch.Tensor:
    """(1 − e^{−ηλt}) / λ per (time, eigenvalue), with its limit ηt at λ = 0."""
    rate = lr * eigenvalues.clamp_min(0.0)
    grid = times.view(-1, 1) * rate.view(1, -1)                # ηλt
    safe = torch.where(rate > 0, eigenvalues.clamp_min(0.0), torch.ones_like(rate))
    return torch.where(rate > 0, -torch.expm1(-grid) / safe, lr * times.view(-1, 1).expand_as(grid))


def gradient_flow_noise(kernel: torch.Tensor, noise: torch.Tensor, times: torch.Tensor, *,
                        lr: float, cross_kernel: torch.Tensor | None = None
                        ) -> GradientFlowNoiseResult:
    """Noise fitted by linearised gradient flow: (I − e^{−ηKt})Δy on the training points (R7).

    The flow ``ṙ = −ηK r`` started from labels ``y + Δy`` instead of ``y`` differs by
    ``f_t(X) − f_t'(X) = (I − e^{−ηKt})Δy``: direction ``u_i`` of K absorbs noise at rate ηλ_i,
    so small-eigenvalue directions absorb it slowly (early stopping acts like a ridge). Our
    reconstruction; one ``eigh`` of K.

    Args:
        kernel: ``K(X, X)``, symmetric PSD, shape (n, n).
        noise: ``Δy``, shape (n,) or (n, C).
        times: times t ≥ 0, shape (T,).
        lr: the learning rate η > 0 (time and η enter only as ηt).
        cross_kernel: optional ``K(x, X)`` (m, n) for the change at query points and its bound.

    Returns:
        :class:`GradientFlowNoiseResult`.
    """
    _check_kernel(kernel)
    _check_rows(noise, kernel.shape[0], "noise")
    _check_positive("lr", lr)
    times = _check_times(times, kernel)
    eigenvalues, vectors = _eigh(kernel)
    absorbed = -torch.expm1(-lr * times.view(-1, 1) * eigenvalues.clamp_min(0.0).view(1, -1))
    fitted = _apply(vectors, absorbed, noise)
    change_norms = bounds = None
    if cross_kernel is not None:
        _check_cross(cross_kernel, kernel.shape[0])
        ratio = _decay_ratio(eigenvalues, times, lr)          # (T, n)
        coefficients = _apply(vectors, ratio, noise)          # K⁻¹(I − e^{−ηKt})Δy, (T, n[, C])
        change = torch.einsum("mj,tj...->tm...", cross_kernel, coefficients)
        change_norms = (change.abs() if noise.dim() == 1
                        else torch.linalg.vector_norm(change, dim=-1))
        bounds = (torch.linalg.vector_norm(cross_kernel, dim=1).view(1, -1)
                  * float(torch.linalg.vector_norm(noise)) * ratio[:, :1])
    return GradientFlowNoiseResult(times, fitted, eigenvalues, absorbed, change_norms, bounds,
                                   float(lr))


def fitted_fraction(kernel: torch.Tensor, fitted: torch.Tensor, noise: torch.Tensor
                    ) -> torch.Tensor:
    """Fraction of the noise fitted along each eigenvector of K: ⟨uᵢ, fitted⟩ / ⟨uᵢ, Δy⟩ (R7).

    Eigenvectors in ascending eigenvalue order (as ``torch.linalg.eigh``); for gradient flow
    the fraction is ``1 − e^{−ηλᵢt}``. Directions where Δy has no component give NaN.

    Args:
        kernel: ``K(X, X)``, symmetric PSD, shape (n, n).
        fitted: fitted noise, shape (n,) or a stack (T, n).
        noise: ``Δy``, shape (n,).
    """
    _check_kernel(kernel)
    _check_rows(noise, kernel.shape[0], "noise")
    if noise.dim() != 1 or fitted.shape[-1] != kernel.shape[0]:
        raise ValueError(f"noise must have shape ({kernel.shape[0]},) and fitted (..., "
                         f"{kernel.shape[0]}); got {tuple(noise.shape)} and {tuple(fitted.shape)}.")
    vectors = _eigh(kernel)[1]
    denominator = vectors.T @ noise
    ratio = (fitted @ vectors) / denominator
    return torch.where(denominator == 0, torch.full_like(ratio, math.nan), ratio)

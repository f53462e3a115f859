"""Kernel regression with the empirical NTK: label noise (R7) and training dynamics (R8).

Everything here is linear algebra on a symmetric PSD kernel matrix ``K`` (n×n, e.g. the
empirical NTK from :func:`stabnb.operators.ntk_gram`) and, for parameter-space dynamics, the
parameter Jacobian ``J`` (n×p, ``K = J Jᵀ``). Conventions (our reconstruction, R7–R8 of
``docs/reconstruction.md``):

- squared loss ``L(θ) = ½‖f_θ(X) − y‖²`` (a sum over samples); its gradient flow on the
  linearised model ``f_θ ≈ f_0 + J(θ − θ_0)`` is ``ṙ = −η K r`` for the residual
  ``r = f(X) − y``, so ``r_t = e^{−ηKt} r_0``, and gradient descent is ``r_{k+1} = (I − ηK) r_k``;
- the mean-squared loss ``(1/2n)‖f_θ(X) − y‖²`` has Gauss–Newton Hessian ``Jᵀ J / n``, whose
  nonzero spectrum is that of ``K / n``.

The matrix functions (``e^{−ηKt}``, ``(K + λI)^{-1}``) go through one ``eigh`` of ``K``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..checks import check_finite
from ..io import to_jsonable
from ..operators import LossHessian, ntk_gram, parameter_jacobian
from ..spectra import lanczos

__all__ = [
    "LabelNoiseResult", "GradientFlowNoiseResult", "GradientFlowResult",
    "GradientDescentResult", "HessianNTKComparison", "LinearizedProblem",
    "ntk_train_query", "linearized_problem",
    "kernel_ridge_predict", "label_noise_propagation", "gradient_flow_noise",
    "fitted_fraction", "linearized_gradient_flow", "linearized_gradient_descent",
    "gd_stability_threshold",
    "gd_contraction_factor", "mse_hessian_vs_ntk",
]


def _check_kernel(kernel: torch.Tensor) -> None:
    if kernel.dim() != 2 or kernel.shape[0] != kernel.shape[1]:
        raise ValueError(f"kernel must be a square matrix (n, n); got shape {tuple(kernel.shape)}.")
    check_finite(kernel, "kernel")
    scale = kernel.abs().max().clamp_min(torch.finfo(kernel.dtype).tiny)
    asymmetry = float((kernel - kernel.T).abs().max() / scale)
    if asymmetry > 1e3 * torch.finfo(kernel.dtype).eps:
        raise ValueError(f"kernel is not symmetric (relative asymmetry {asymmetry:.2e}); pass a "
                         "symmetric PSD Gram matrix such as ntk_gram(model, inputs).")


def _check_rows(values: torch.Tensor, n: int, name: str) -> None:
    if values.dim() not in (1, 2) or values.shape[0] != n:
        raise ValueError(f"{name} must have shape ({n},) or ({n}, C) to match the kernel; "
                         f"got {tuple(values.shape)}.")
    check_finite(values, name)


def _check_cross(cross_kernel: torch.Tensor, n: int) -> None:
    if cross_kernel.dim() != 2 or cross_kernel.shape[1] != n:
        raise ValueError(f"cross_kernel must have shape (m, {n}) = K(x, X) for m query points; "
                         f"got {tuple(cross_kernel.shape)}.")
    check_finite(cross_kernel, "cross_kernel")


def _check_positive(name: str, value: float) -> None:
    if not value > 0 or not math.isfinite(value):
        raise ValueError(f"{name}={value!r} must be a positive finite number.")


def _check_times(times: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    if times.dim() != 1 or bool((times < 0).any()):
        raise ValueError(f"times must be a 1-D tensor of times t ≥ 0; got shape "
                         f"{tuple(times.shape)}.")
    return times.to(dtype=kernel.dtype, device=kernel.device)


def _row_norms(values: torch.Tensor) -> torch.Tensor:
    return values.abs() if values.dim() == 1 else torch.linalg.vector_norm(values, dim=1)


def _eigh(kernel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenpairs of the symmetric kernel; round-off negatives of a PSD matrix are kept as is."""
    return torch.linalg.eigh((kernel + kernel.T) / 2)


def _apply(vectors: torch.Tensor, eigenvalues_fn: torch.Tensor,
           values: torch.Tensor) -> torch.Tensor:
    """U diag(g) Uᵀ v for v of shape (n,) or (n, C), or a stack (T, n[, C]) when g is (T, n)."""
    coefficients = vectors.T @ values                          # (n,) or (n, C)
    if eigenvalues_fn.dim() == 1:
        scaled = eigenvalues_fn.view(-1, *([1] * (values.dim() - 1))) * coefficients
        return vectors @ scaled
    scaled = eigenvalues_fn.view(*eigenvalues_fn.shape, *([1] * (values.dim() - 1))) * coefficients
    return torch.einsum("ij,tj...->ti...", vectors, scaled)


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


@dataclass(frozen=True)
class GradientFlowResult:
    """Residuals of linearised gradient flow r_t = e^{−ηKt} r_0 and the bound e^{−ηλ_min t}‖r_0‖."""

    times: torch.Tensor
    residuals: torch.Tensor
    bounds: torch.Tensor
    eigenvalues: torch.Tensor
    lr: float

    @property
    def residual_norms(self) -> torch.Tensor:
        """‖r_t‖ per time, shape (T,)."""
        return torch.linalg.vector_norm(self.residuals.flatten(1), dim=1)

    @property
    def slack(self) -> torch.Tensor:
        """bound ÷ ‖r_t‖ per time."""
        return self.bounds / self.residual_norms

    def to_dict(self) -> dict[str, Any]:
        return {"times": to_jsonable(self.times), "residual_norms": to_jsonable(self.residual_norms),
                "bounds": to_jsonable(self.bounds), "eigenvalues": to_jsonable(self.eigenvalues),
                "lr": self.lr}


def linearized_gradient_flow(kernel: torch.Tensor, residual0: torch.Tensor, times: torch.Tensor,
                             *, lr: float) -> GradientFlowResult:
    """Closed-form residuals r_t = e^{−ηKt} r_0 of linearised gradient flow (R8).

    ‖r_t‖ ≤ ‖e^{−ηKt}‖₂ ‖r_0‖ = e^{−ηλ_min(K) t} ‖r_0‖ since K is symmetric PSD (our
    reconstruction). One ``eigh`` of K.

    Args:
        kernel: ``K(X, X)``, symmetric PSD, shape (n, n).
        residual0: ``r_0 = f_0(X) − y``, shape (n,) or (n, C).
        times: times t ≥ 0, shape (T,).
        lr: η > 0.

    Returns:
        :class:`GradientFlowResult`.
    """
    _check_kernel(kernel)
    _check_rows(residual0, kernel.shape[0], "residual0")
    _check_positive("lr", lr)
    times = _check_times(times, kernel)
    eigenvalues, vectors = _eigh(kernel)
    decay = torch.exp(-lr * times.view(-1, 1) * eigenvalues.view(1, -1))
    residuals = _apply(vectors, decay, residual0)
    bounds = torch.exp(-lr * times * eigenvalues[0]) * torch.linalg.vector_norm(residual0)
    return GradientFlowResult(times, residuals, bounds, eigenvalues, float(lr))


def gd_stability_threshold(kernel: torch.Tensor) -> float:
    """The largest stable step size 2/λ_max(K) of gradient descent on ½‖f − y‖² (R8)."""
    _check_kernel(kernel)
    top = float(torch.linalg.eigvalsh((kernel + kernel.T) / 2)[-1])
    _check_positive("λ_max(kernel)", top)
    return 2.0 / top


def gd_contraction_factor(kernel: torch.Tensor, lr: float) -> float:
    """ρ(η) = max_i |1 − ηλ_i(K)|, the spectral norm of the GD map r ↦ (I − ηK) r (R8).

    ``‖r_k‖ ≤ ρ^k ‖r_0‖`` always; ρ < 1 iff 0 < η < 2/λ_max (for λ_min > 0), and for
    η > 2/λ_max the component along the top eigenvector grows like ``|1 − ηλ_max|^k``.

    Examples::

        >>> K = torch.diag(torch.tensor([1.0, 4.0], dtype=torch.float64))
        >>> gd_stability_threshold(K), round(gd_contraction_factor(K, 0.55), 6)
        (0.5, 1.2)
    """
    _check_kernel(kernel)
    _check_positive("lr", lr)
    eigenvalues = torch.linalg.eigvalsh((kernel + kernel.T) / 2)
    return float((1.0 - lr * eigenvalues).abs().max())


@dataclass(frozen=True)
class GradientDescentResult:
    """Residual trajectory of gradient descent on the linearised model, in parameter space.

    ``steps`` are the recorded step indices and ``residuals[i]`` the residual after
    ``steps[i]`` steps. ``diverged`` is true when the residual became non-finite or exceeded
    ``divergence_factor × ‖r_0‖``; the run stops there.
    """

    steps: torch.Tensor
    residuals: torch.Tensor
    lr: float
    num_steps: int
    diverged: bool

    @property
    def residual_norms(self) -> torch.Tensor:
        """‖r_k‖ at each recorded step."""
        return torch.linalg.vector_norm(self.residuals.flatten(1), dim=1)

    def rate(self, window: int) -> float:
        """Measured per-step rate (‖r_K‖ / ‖r_{K−w}‖)^{1/w} over the last ``window`` records.

        Uses the recorded steps, so ``window`` counts records, not steps.
        """
        if not 1 <= window < self.steps.numel():
            raise ValueError(f"window={window} must be between 1 and {self.steps.numel() - 1} "
                             "(the number of recorded steps minus one).")
        norms = self.residual_norms
        span = int(self.steps[-1] - self.steps[-1 - window])
        return float((norms[-1] / norms[-1 - window]) ** (1.0 / span))

    def to_dict(self) -> dict[str, Any]:
        return {"steps": to_jsonable(self.steps), "residual_norms": to_jsonable(self.residual_norms),
                "lr": self.lr, "num_steps": self.num_steps, "diverged": self.diverged}


def linearized_gradient_descent(jacobian: torch.Tensor, residual0: torch.Tensor, *, lr: float,
                                num_steps: int, record_every: int = 1,
                                divergence_factor: float = 1e12) -> GradientDescentResult:
    """Gradient descent on ½‖f_0 + JΔθ − y‖² in parameter space (R8 simulation).

    Each step is Δθ ← Δθ − η Jᵀ r with r = r_0 + J Δθ: two matvecs with J (n×p), K = JJᵀ is
    never formed. In function space this is r_{k+1} = (I − ηK) r_k, stable iff η < 2/λ_max(K).

    Args:
        jacobian: parameter Jacobian ``J``, shape (n, p) (flatten (n, C, p) to (nC, p)).
        residual0: ``r_0 = f_0(X) − y``, shape (n,).
        lr: η > 0.
        num_steps: number of steps K ≥ 1.
        record_every: record the residual every this many steps (step 0 and K always).
        divergence_factor: stop once ``‖r_k‖ > divergence_factor ‖r_0‖``. Default: 1e12.

    Returns:
        :class:`GradientDescentResult`.
    """
    if jacobian.dim() != 2:
        raise ValueError(f"jacobian must be a matrix (n, p); got shape {tuple(jacobian.shape)}; "
                         "flatten a (n, C, p) parameter Jacobian with .reshape(n * C, p).")
    if residual0.shape != (jacobian.shape[0],):
        raise ValueError(f"residual0 must have shape ({jacobian.shape[0]},); "
                         f"got {tuple(residual0.shape)}.")
    check_finite(jacobian, "jacobian")
    check_finite(residual0, "residual0")
    _check_positive("lr", lr)
    if num_steps < 1 or record_every < 1:
        raise ValueError(f"num_steps={num_steps} and record_every={record_every} must be ≥ 1.")
    limit = divergence_factor * float(torch.linalg.vector_norm(residual0))
    displacement = torch.zeros(jacobian.shape[1], dtype=jacobian.dtype, device=jacobian.device)
    residual = residual0
    steps, records, diverged = [0], [residual0], False
    for step in range(1, num_steps + 1):
        displacement = displacement - lr * (jacobian.T @ residual)
        residual = residual0 + jacobian @ displacement
        norm = float(torch.linalg.vector_norm(residual))
        diverged = not math.isfinite(norm) or norm > limit
        if step % record_every == 0 or step == num_steps or diverged:
            steps.append(step)
            records.append(residual)
        if diverged:
            break
    return GradientDescentResult(torch.tensor(steps, device=residual0.device),
                                 torch.stack(records), float(lr),
                                 int(num_steps), diverged)


def ntk_train_query(model: nn.Module, train_inputs: torch.Tensor, query_inputs: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """The empirical NTK on the training set and between query and training points.

    One :func:`stabnb.operators.ntk_gram` of the stacked inputs, cut into ``K(X, X)`` (n, n)
    and ``K(x, X)`` (m, n); trace-contracted over outputs (the kernel of R7).
    """
    n = train_inputs.shape[0]
    gram = ntk_gram(model, torch.cat([train_inputs, query_inputs]))
    return gram[:n, :n], gram[n:, :n]


@dataclass(frozen=True)
class LinearizedProblem:
    """Squared-loss regression for a network linearised at θ_0 (R8).

    ``jacobian`` is ∇_θ f(X) flattened to (nC, p) (rows sample-major, ``i·C + c``), ``kernel``
    the block NTK ``J Jᵀ`` (nC, nC) from :func:`stabnb.operators.ntk_gram`, ``residual0`` the
    flattened ``f_0(X) − y``.
    """

    jacobian: torch.Tensor
    kernel: torch.Tensor
    residual0: torch.Tensor

    def to_dict(self) -> dict[str, Any]:
        eigenvalues = torch.linalg.eigvalsh(self.kernel)
        return {"num_rows": self.jacobian.shape[0], "num_params": self.jacobian.shape[1],
                "lambda_min": float(eigenvalues[0]), "lambda_max": float(eigenvalues[-1]),
                "residual0_norm": float(torch.linalg.vector_norm(self.residual0))}


def linearized_problem(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor
                       ) -> LinearizedProblem:
    """Parameter Jacobian, block NTK and initial residual of ``model`` on (inputs, targets).

    Args:
        model: network in eval mode with C outputs.
        inputs: (n, ...) inputs.
        targets: (n, C) regression targets.
    """
    jacobian = parameter_jacobian(model, inputs)
    if targets.shape != jacobian.shape[:2]:
        raise ValueError(f"targets must have shape {tuple(jacobian.shape[:2])} like the model's "
                         f"outputs; got {tuple(targets.shape)}.")
    with torch.no_grad():
        residual0 = (model(inputs) - targets).flatten()
    return LinearizedProblem(jacobian.flatten(0, 1), ntk_gram(model, inputs, block=True),
                             residual0)


@dataclass(frozen=True)
class HessianNTKComparison:
    """Top curvature of the MSE loss against the NTK: λ_max(H) vs λ_max(K)/n (R8).

    ``hessian_top`` comes from Lanczos on Hessian-vector products; ``hessian_residual`` is its
    Ritz residual ‖Hv − θv‖ (an error bound on the eigenvalue) and ``converged`` its flag.
    """

    hessian_top: float
    ntk_top_over_n: float
    residual_rms: float
    num_samples: int
    hessian_residual: float
    converged: bool
    num_matvecs: int

    @property
    def relative_gap(self) -> float:
        """|λ_max(H) − λ_max(K)/n| / (λ_max(K)/n)."""
        return abs(self.hessian_top - self.ntk_top_over_n) / self.ntk_top_over_n

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "relative_gap": self.relative_gap}


def mse_hessian_vs_ntk(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, *,
                       tol: float = 1e-10, seed: int = 0) -> HessianNTKComparison:
    """λ_max of the MSE loss Hessian against λ_max(K)/n (R8, our reconstruction).

    H = ∇²_θ (1/2n) Σᵢ ‖f(xᵢ) − yᵢ‖² = JᵀJ/n + (1/n) Σᵢ,c r_{ic} ∇²_θ f_c(xᵢ); the Gauss–Newton
    part JᵀJ/n has the nonzero spectrum of K/n (K the nC×nC block NTK), and the second term
    vanishes with the residuals r, so λ_max(H) → λ_max(K)/n near interpolation. Cost: one
    block NTK (:func:`stabnb.operators.ntk_gram`) and Lanczos on
    :class:`stabnb.operators.LossHessian` (tens of Hessian-vector products).

    Args:
        model: network in eval mode (its parameters are θ).
        inputs: (n, ...) inputs.
        targets: (n, C) regression targets.
        tol: Lanczos residual tolerance relative to ‖H‖. Default: 1e-10.
        seed: Lanczos start vector seed. Default: 0.

    Returns:
        :class:`HessianNTKComparison`.
    """
    top = lanczos(LossHessian(model, inputs, targets, loss="mse"), 1, tol=tol, seed=seed)
    kernel = ntk_gram(model, inputs, block=True)
    n = inputs.shape[0]
    with torch.no_grad():
        residual = model(inputs) - targets
    return HessianNTKComparison(
        hessian_top=float(top.values[0]),
        ntk_top_over_n=float(torch.linalg.eigvalsh(kernel)[-1]) / n,
        residual_rms=float(residual.pow(2).sum(dim=1).mean().sqrt()), num_samples=n,
        hessian_residual=float(top.residuals[0]), converged=bool(top.converged),
        num_matvecs=int(top.num_matvecs))

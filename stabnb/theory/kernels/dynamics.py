"""R8: training dynamics of the linearised model, gradient flow in closed form and gradient
descent in parameter space, with its step-size threshold (our reconstruction, R8 of
``docs/reconstruction.md``)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from ...checks import check_finite
from ...io import to_jsonable
from ._common import _apply, _check_kernel, _check_positive, _check_rows, _check_times, _eigh

__all__ = ["GradientFlowResult", "GradientDescentResult", "linearized_gradient_flow",
           "gd_stability_threshold", "gd_contraction_factor", "linearized_gradient_descent"]


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

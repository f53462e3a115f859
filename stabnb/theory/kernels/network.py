"""From a network to the kernel problems of R7–R8: its empirical NTK on training and query
points, its linearisation at θ_0, and its MSE Hessian against the NTK (R8 of
``docs/reconstruction.md``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ...operators import LossHessian, ntk_gram, parameter_jacobian
from ...spectra import lanczos

__all__ = ["LinearizedProblem", "HessianNTKComparison", "ntk_train_query", "linearized_problem",
           "mse_hessian_vs_ntk"]


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

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

Modules: :mod:`~stabnb.theory.kernels.label_noise` (R7),
:mod:`~stabnb.theory.kernels.dynamics` (R8), :mod:`~stabnb.theory.kernels.network` (a network's
NTK, linearisation and Hessian); every name is re-exported here.
"""

from .dynamics import (
    GradientDescentResult,
    GradientFlowResult,
    gd_contraction_factor,
    gd_stability_threshold,
    linearized_gradient_descent,
    linearized_gradient_flow,
)
from .label_noise import (
    GradientFlowNoiseResult,
    LabelNoiseResult,
    fitted_fraction,
    gradient_flow_noise,
    kernel_ridge_predict,
    label_noise_propagation,
)
from .network import (
    HessianNTKComparison,
    LinearizedProblem,
    linearized_problem,
    mse_hessian_vs_ntk,
    ntk_train_query,
)

__all__ = [
    "LabelNoiseResult", "GradientFlowNoiseResult", "GradientFlowResult",
    "GradientDescentResult", "HessianNTKComparison", "LinearizedProblem",
    "ntk_train_query", "linearized_problem",
    "kernel_ridge_predict", "label_noise_propagation", "gradient_flow_noise",
    "fitted_fraction", "linearized_gradient_flow", "linearized_gradient_descent",
    "gd_stability_threshold",
    "gd_contraction_factor", "mse_hessian_vs_ntk",
]

"""The four stability operators of a network, matrix-free, with exact batched paths.

Operators (curvlinops-style objects: ``shape``, ``dtype``, ``device``, ``@`` on flat vectors
and column blocks, ``.T``, ``to_dense()``):

- :class:`InputJacobian` ``J_f(x) ∈ R^{C×d}`` of one input,
- :class:`ParamJacobian` ``∇_θ f(X) ∈ R^{nC×p}`` of a batch (rows sample-major: ``i·C + c``),
- :class:`NTKGram` ``K_ij = ⟨∇_θ f(x_i), ∇_θ f(x_j)⟩_F`` (n×n), or the nC×nC block ``J Jᵀ``,
- :class:`LossHessian` ``∇²_θ L`` of a batch's mean loss and :class:`LoaderLossHessian`, its
  mean over a data loader (cross-entropy or MSE).

Definitions (which NTK, which Hessian) follow ``docs/reconstruction.md``, section 2.

Exact batched functions for small outputs: :func:`input_jacobians`,
:func:`input_jacobian_singular_values`, :func:`parameter_jacobian`, :func:`ntk_gram`.

Modules: :mod:`~stabnb.operators.base` (the operator protocol), :mod:`~stabnb.operators.jacobian`
(input and parameter Jacobians), :mod:`~stabnb.operators.ntk` (the NTK),
:mod:`~stabnb.operators.hessian` (the loss Hessian); every name is re-exported here.

Operators draw no random numbers, write nothing to ``.grad`` and never flip
``train()``/``eval()``: a model with BatchNorm or Dropout in training mode, or with a
BatchNorm that keeps no running statistics, is refused. Inputs follow the one input-domain
rule of :mod:`stabnb.checks`: integer dtypes are refused (pass ``x.float() / 255``), any
float values are accepted (the operators are defined off the pixel box too), and a model
with an ``input_shape`` refuses inputs of another shape. Non-finite logits or Jacobians
raise ``ValueError`` naming the quantity. The
per-sample quantities assume that samples do not interact in the forward pass, which eval
mode guarantees for every model in :mod:`stabnb.models`.
"""

from .base import DenseOperator, LinearOperator
from .hessian import LOSSES, LoaderLossHessian, LossHessian
from .jacobian import (
    InputJacobian,
    ParamJacobian,
    input_jacobian_singular_values,
    input_jacobians,
    parameter_jacobian,
)
from .ntk import NTK_METHODS, NTKGram, ntk_gram

__all__ = [
    "LinearOperator", "DenseOperator", "InputJacobian", "ParamJacobian", "NTKGram", "LossHessian",
    "LoaderLossHessian", "input_jacobians", "input_jacobian_singular_values",
    "parameter_jacobian", "ntk_gram", "LOSSES", "NTK_METHODS",
]

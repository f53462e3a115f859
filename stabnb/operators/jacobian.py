"""Input and parameter Jacobians: exact batched paths and matrix-free operators.

- :func:`input_jacobians`, :func:`input_jacobian_singular_values`: ``J_f(x_i) ∈ R^{C×d}`` per
  sample, and its exact spectrum;
- :func:`parameter_jacobian`: ``∇_θ f(x_i) ∈ R^{C×p}`` per sample;
- :class:`InputJacobian` (one input) and :class:`ParamJacobian` (``∇_θ f(X) ∈ R^{nC×p}`` of a
  batch, rows ``i·C + c``): ``@`` a JVP, ``.T @`` a VJP.

Definitions follow ``docs/reconstruction.md``, section 2.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.func import jacrev, jvp, vjp, vmap

from ..checks import check_finite
from ..models import functional
from ._common import (
    _NONFINITE_MODEL,
    _check_logits,
    _chunks,
    _input_function,
    _ParamLayout,
    _prepare,
)
from .base import LinearOperator

__all__ = ["InputJacobian", "ParamJacobian", "input_jacobians", "input_jacobian_singular_values",
           "parameter_jacobian"]


def input_jacobians(model: nn.Module, inputs: Tensor, *, chunk_size: int | None = None) -> Tensor:
    """Per-sample input Jacobians ``J_f(x_i) = ∂f(x_i)/∂x_i``, shape ``(n, C, *input_shape)``.

    Cost: C vector-Jacobian products (one ``vmap``-ed backward) per chunk of samples, memory
    ``chunk_size·C·d``. Samples must not interact (eval mode).

    Args:
        model: network mapping ``(n, *input_shape)`` to logits ``(n, C)``; eval mode.
        inputs: batch ``(n, *input_shape)``, moved to the model's dtype/device.
        chunk_size: samples per backward pass. Default: all at once.

    Raises:
        ValueError: model in train mode, non-finite weights or inputs, non-(n, C) outputs.
    """
    inputs = _prepare(model, inputs)
    f = _input_function(model)
    pieces = []
    for part in _chunks(inputs.shape[0], chunk_size):
        x = inputs[part]
        out, pullback = vjp(f, x)
        num_classes = _check_logits(out, x.shape[0])
        check_finite(out, "model outputs (logits) for the input Jacobian", _NONFINITE_MODEL)
        basis = torch.eye(num_classes, dtype=out.dtype, device=out.device)
        cotangents = basis[:, None, :].expand(num_classes, x.shape[0], num_classes)
        (jac,) = vmap(pullback)(cotangents)                    # (C, b, *input_shape)
        check_finite(jac, "input Jacobian", _NONFINITE_MODEL)
        pieces.append(jac.movedim(0, 1))
    return torch.cat(pieces)


def input_jacobian_singular_values(model: nn.Module, inputs: Tensor, *,
                                   chunk_size: int | None = None) -> Tensor:
    """Singular values of every ``J_f(x_i)``, descending, shape ``(n, min(C, d))``.

    ``J_f(x) ∈ R^{C×d}`` has rank ≤ C, so its spectrum is exact and cheap: C VJPs per chunk
    (:func:`input_jacobians`) and a batched ``svdvals`` (O(C²d) per sample), memory
    ``chunk_size·C·d``.

    Examples::

        >>> from stabnb.models import MLP
        >>> model = MLP(4, (6,), 3).double().eval()
        >>> s = input_jacobian_singular_values(model, torch.rand(5, 4, dtype=torch.float64))
        >>> s.shape
        torch.Size([5, 3])
    """
    inputs = _prepare(model, inputs)
    pieces = [torch.linalg.svdvals(input_jacobians(model, inputs[part]).flatten(2))
              for part in _chunks(inputs.shape[0], chunk_size)]
    return torch.cat(pieces)


def _per_sample_function(f: Callable[[dict[str, Tensor], Tensor], Tensor]):
    """``θ ↦ (f(θ, x), f(θ, x))`` for one sample: the output and, as ``jacrev`` aux, the logits."""
    def f_single(params: dict[str, Tensor], x: Tensor) -> tuple[Tensor, Tensor]:
        out = f(params, x.unsqueeze(0)).squeeze(0)
        return out, out.detach()
    return f_single


def parameter_jacobian(model: nn.Module, inputs: Tensor, *,
                       chunk_size: int | None = None) -> Tensor:
    """Per-sample parameter Jacobians ``∇_θ f(x_i)``, shape ``(n, C, p)``.

    ``vmap(jacrev)`` over samples (C reverse passes per sample, vectorised); memory
    ``chunk_size·C·p``. Columns follow ``model.named_parameters()`` (trainable only).

    Raises:
        ValueError: model in train mode or without trainable parameters; non-finite values.
    """
    inputs = _prepare(model, inputs)
    params, f = functional(model)
    layout = _ParamLayout(params)
    _check_logits(f(params, inputs[:1]), 1)
    jac_fn = vmap(jacrev(_per_sample_function(f), has_aux=True), in_dims=(None, 0))
    pieces = []
    for part in _chunks(inputs.shape[0], chunk_size):
        jac, logits = jac_fn(params, inputs[part])
        check_finite(logits, "model outputs (logits) for the parameter Jacobian",
                     _NONFINITE_MODEL)
        jac = layout.flatten(jac, lead=2)
        check_finite(jac, "parameter Jacobian", _NONFINITE_MODEL)
        pieces.append(jac)
    return torch.cat(pieces)


class InputJacobian(LinearOperator):
    """``J_f(x) = ∂f(x)/∂x ∈ R^{C×d}`` of one input: ``@`` is a JVP, ``.T @`` a VJP.

    Args:
        model: network in eval mode mapping ``(1, *input_shape)`` to ``(1, C)``.
        x: one input ``input_shape`` (no batch dimension); vectors are flat, length d.
    """

    def __init__(self, model: nn.Module, x: Tensor):
        x = _prepare(model, x, "x", batched=False)
        self._f = _input_function(model)
        self._x = x
        out, self._pullback = vjp(self._single, x)
        if out.dim() != 1:
            raise ValueError(f"model must map one input to a logit vector (C,); got shape "
                             f"{tuple(out.shape)} for x of shape {tuple(x.shape)}.")
        super().__init__((out.shape[0], x.numel()), x.dtype, x.device)

    def _single(self, x: Tensor) -> Tensor:
        return self._f(x.unsqueeze(0)).squeeze(0)

    def _matmat(self, X: Tensor) -> Tensor:
        def push(t: Tensor) -> Tensor:
            return jvp(self._single, (self._x,), (t.reshape(self._x.shape),))[1]
        return vmap(push, in_dims=1, out_dims=1)(X)

    def _rmatmat(self, Y: Tensor) -> Tensor:
        def pull(u: Tensor) -> Tensor:
            return self._pullback(u)[0].reshape(-1)
        return vmap(pull, in_dims=1, out_dims=1)(Y)


class _BatchFunction:
    """``θ ↦ f(θ, X).reshape(-1)`` for a fixed batch, with its pullback at the current θ."""

    def __init__(self, model: nn.Module, inputs: Tensor):
        self.inputs = _prepare(model, inputs)
        self.params, self.f = functional(model)
        self.layout = _ParamLayout(self.params)
        out, self.pullback = vjp(self.flat_output, self.params)
        self.num_classes = _check_logits(out.view(self.inputs.shape[0], -1), self.inputs.shape[0])
        self.num_outputs = out.numel()

    def flat_output(self, params: dict[str, Tensor]) -> Tensor:
        return self.f(params, self.inputs).reshape(-1)

    def jvp_flat(self, t: Tensor) -> Tensor:
        return jvp(self.flat_output, (self.params,), (self.layout.unflatten(t),))[1]

    def vjp_flat(self, u: Tensor) -> Tensor:
        return self.layout.flatten(self.pullback(u)[0])


class ParamJacobian(LinearOperator):
    """``∇_θ f(X) ∈ R^{nC×p}`` of a batch (rows ``i·C + c``): ``@`` a JVP, ``.T @`` a VJP.

    Each product costs one forward-mode (or one reverse) pass over the batch.
    """

    def __init__(self, model: nn.Module, inputs: Tensor):
        self._fn = _BatchFunction(model, inputs)
        super().__init__((self._fn.num_outputs, self._fn.layout.numel), self._fn.inputs.dtype,
                         self._fn.inputs.device)

    def _matmat(self, X: Tensor) -> Tensor:
        return vmap(self._fn.jvp_flat, in_dims=1, out_dims=1)(X)

    def _rmatmat(self, Y: Tensor) -> Tensor:
        return vmap(self._fn.vjp_flat, in_dims=1, out_dims=1)(Y)

"""The loss Hessian ``∇²_θ L`` of a batch (:class:`LossHessian`) or a data loader
(:class:`LoaderLossHessian`), by Hessian-vector products; cross-entropy or MSE.

Which Hessian (mean loss, MSE scaled so that its Gauss–Newton part is ``JᵀJ/n``) follows
``docs/reconstruction.md``, section 2.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..checks import check_finite, require_eval_mode
from ..models import functional
from ._common import _check_logits, _model_dtype_device, _ParamLayout, _prepare
from .base import LinearOperator

__all__ = ["LossHessian", "LoaderLossHessian", "LOSSES"]

LOSSES = ("cross_entropy", "mse")


def _loss_value(loss: str, logits: Tensor, targets: Tensor) -> Tensor:
    """Mean loss: cross-entropy, or MSE ``(1/2n) Σ_i ‖f(x_i) − y_i‖²`` (so GGN = JᵀJ/n)."""
    if loss == "cross_entropy":
        return F.cross_entropy(logits, targets)
    return 0.5 * (logits - targets).pow(2).sum(-1).mean()


def _prepare_targets(loss: str, targets: Tensor, n: int, num_classes: int,
                     dtype: torch.dtype, device: torch.device) -> Tensor:
    if loss not in LOSSES:
        raise ValueError(f"loss={loss!r} is unknown; choose one of {LOSSES}.")
    if not isinstance(targets, Tensor):
        raise TypeError(f"targets must be a torch.Tensor, got {type(targets).__name__}.")
    targets = targets.to(device)
    labels = not targets.is_floating_point()
    if labels:
        targets = targets.long()           # int32/uint8 labels work like int64 ones
        if targets.shape != (n,):
            raise ValueError(f"integer targets must be labels of shape ({n},); got "
                             f"{tuple(targets.shape)}.")
        if bool((targets < 0).any()) or bool((targets >= num_classes).any()):
            raise ValueError(f"labels must lie in [0, {num_classes}); got range "
                             f"[{int(targets.min())}, {int(targets.max())}].")
        return targets if loss == "cross_entropy" else F.one_hot(targets, num_classes).to(dtype)
    if loss == "cross_entropy":
        raise ValueError("cross_entropy needs integer class labels of shape (n,); got floating "
                         "targets. Pass labels, or use loss='mse' for regression targets.")
    if targets.shape != (n, num_classes):
        raise ValueError(f"MSE targets must have shape ({n}, {num_classes}) like the logits; "
                         f"got {tuple(targets.shape)}.")
    targets = targets.to(dtype)
    check_finite(targets, "targets")
    return targets


class _BatchGradient:
    """First-order graph of one batch's mean loss, kept to differentiate again (HVPs)."""

    def __init__(self, model: nn.Module, inputs: Tensor, targets: Tensor, loss: str):
        inputs = _prepare(model, inputs)
        params, f = functional(model)
        self.params = {k: v.detach().requires_grad_(True) for k, v in params.items()}
        self.layout = _ParamLayout(self.params)
        n = inputs.shape[0]
        with torch.enable_grad():
            logits = f(self.params, inputs)
            num_classes = _check_logits(logits, n)
            targets = _prepare_targets(loss, targets, n, num_classes, logits.dtype,
                                       logits.device)
            value = _loss_value(loss, logits, targets)
            grads = torch.autograd.grad(value, list(self.params.values()), create_graph=True,
                                        materialize_grads=True)
        self.n = n
        self.loss = value.detach()
        self.grad = self.layout.flatten(grads).detach()
        self._live = [i for i, g in enumerate(grads) if g.requires_grad]
        self._grads = [grads[i] for i in self._live]

    def hvp(self, v: Tensor) -> Tensor:
        """``H v``: one backward through the stored gradient graph (``retain_graph``)."""
        if not self._grads:          # loss linear in θ: zero Hessian
            return torch.zeros_like(v)
        parts = self.layout.unflatten(v)
        cotangents = [parts[self.layout.names[i]] for i in self._live]
        hv = torch.autograd.grad(self._grads, list(self.params.values()), grad_outputs=cotangents,
                                 retain_graph=True, materialize_grads=True)
        return self.layout.flatten(hv)


class LossHessian(LinearOperator):
    """Hessian ``H = ∇²_θ L(θ)`` of one batch's mean loss, by Hessian-vector products.

    Cross-entropy ``L = (1/n) Σ_i CE(f(x_i), y_i)``, or MSE ``L = (1/2n) Σ_i ‖f(x_i) − y_i‖²``
    (integer labels are one-hot encoded), whose Gauss–Newton part is ``JᵀJ/n``. The gradient is
    built once with ``create_graph=True``; each product is then one backward pass through that
    graph (about the cost of a forward+backward), cheaper than torch.func forward-over-reverse.
    Nothing is written to ``.grad``.

    Args:
        model: network in eval mode.
        inputs: batch ``(n, *input_shape)``.
        targets: labels ``(n,)`` (int64), or float ``(n, C)`` regression targets for MSE.
        loss: ``"cross_entropy"`` or ``"mse"``. Default: ``"cross_entropy"``.
    """

    SELF_ADJOINT = True

    def __init__(self, model: nn.Module, inputs: Tensor, targets: Tensor,
                 loss: str = "cross_entropy"):
        self._batch = _BatchGradient(model, inputs, targets, loss)
        self.loss = loss
        vector = self._batch.grad
        super().__init__((vector.numel(), vector.numel()), vector.dtype, vector.device)

    def _matmat(self, X: Tensor) -> Tensor:
        return torch.stack([self._batch.hvp(X[:, k]) for k in range(X.shape[1])], dim=1)


class LoaderLossHessian(LinearOperator):
    """Hessian of the mean loss over a data loader, ``H = Σ_b (n_b/N) H_b``.

    Each product runs over every batch (forward, gradient with ``create_graph``, one HVP
    backward per column), so no graph outlives a batch: memory is one batch's.

    Args:
        model: network in eval mode.
        loader: re-iterable source of ``(inputs, targets)`` batches (a ``DataLoader`` or a
            list); one-shot iterators are refused.
        loss: ``"cross_entropy"`` or ``"mse"``. Default: ``"cross_entropy"``.
    """

    SELF_ADJOINT = True

    def __init__(self, model: nn.Module, loader: Iterable, loss: str = "cross_entropy"):
        if iter(loader) is loader:
            raise ValueError("loader is a one-shot iterator; pass a list of (inputs, targets) "
                             "batches or a DataLoader, which can be iterated per product.")
        if loss not in LOSSES:
            raise ValueError(f"loss={loss!r} is unknown; choose one of {LOSSES}.")
        require_eval_mode(model)
        params, _ = functional(model)
        self._model, self._loader, self.loss = model, loader, loss
        numel = _ParamLayout(params).numel
        dtype, device = _model_dtype_device(model, next(iter(params.values())))
        super().__init__((numel, numel), dtype, device)

    def _matmat(self, X: Tensor) -> Tensor:
        total, count = torch.zeros_like(X), 0
        for batch in self._loader:
            inputs, targets = batch[0], batch[1]
            grad = _BatchGradient(self._model, inputs, targets, self.loss)
            hv = torch.stack([grad.hvp(X[:, k]) for k in range(X.shape[1])], dim=1)
            total += grad.n * hv
            count += grad.n
        if count == 0:
            raise ValueError("loader yielded no batches; the mean Hessian is undefined.")
        return total / count

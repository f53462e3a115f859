"""Model plumbing shared by the operators: input checks, the functional view, chunks.

Inputs follow the one input-domain rule of :mod:`stabnb.checks` (see :mod:`stabnb.operators`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import Tensor, nn
from torch.func import functional_call

from ..checks import (
    check_finite,
    check_input_shape,
    check_model_finite,
    check_pixel_inputs,
    require_eval_mode,
)

_NONFINITE_MODEL = ("the inputs and weights are finite, so the model itself is not finite there "
                    "(e.g. a log or sqrt of a negative value, an overflow): fix the model, or "
                    "use float64")


def _model_dtype_device(model: nn.Module, inputs: Tensor) -> tuple[torch.dtype, torch.device]:
    for tensor in list(model.parameters()) + list(model.buffers()):
        if tensor.is_floating_point():
            return tensor.dtype, tensor.device
    return (inputs.dtype if inputs.is_floating_point() else torch.get_default_dtype()), inputs.device


def _prepare(model: nn.Module, inputs: Tensor, name: str = "inputs", *,
             batched: bool = True) -> Tensor:
    """Refuse train mode, batch-statistics BatchNorm, non-finite weights, non-pixel inputs
    (integer dtypes, NaN/Inf; :func:`~stabnb.checks.check_pixel_inputs` with no range) and a
    wrong input shape; move inputs to the model's dtype/device."""
    require_eval_mode(model)
    check_model_finite(model)
    check_pixel_inputs(inputs, name, pixel_range=None)
    if batched and (inputs.dim() < 2 or inputs.shape[0] == 0):
        raise ValueError(f"{name} must be a non-empty batch (n, *input_shape); got shape "
                         f"{tuple(inputs.shape)}. Add a batch dimension with x.unsqueeze(0).")
    check_input_shape(model, inputs, name, batched=batched)
    dtype, device = _model_dtype_device(model, inputs)
    inputs = inputs.to(device=device, dtype=dtype)
    check_finite(inputs, name)          # finite before, but a cast to a narrower dtype overflows
    return inputs


def _input_function(model: nn.Module) -> Callable[[Tensor], Tensor]:
    """``x ↦ model(x)`` with the parameters held constant (no autograd graph to θ)."""
    params = {name: p.detach() for name, p in model.named_parameters()}

    def f(x: Tensor) -> Tensor:
        return functional_call(model, params, (x,))

    return f


def _check_logits(out: Tensor, n: int) -> int:
    if out.dim() != 2 or out.shape[0] != n:
        raise ValueError(f"model must map (n, *input_shape) to logits (n, C); for n={n} it "
                         f"returned shape {tuple(out.shape)}.")
    return int(out.shape[1])


def _chunks(n: int, chunk_size: int | None) -> list[slice]:
    if chunk_size is None:
        return [slice(0, n)]
    if int(chunk_size) < 1:
        raise ValueError(f"chunk_size={chunk_size} must be a positive integer or None.")
    return [slice(i, min(i + int(chunk_size), n)) for i in range(0, n, int(chunk_size))]


class _ParamLayout:
    """The params-dict ↔ flat-vector mapping (names in ``named_parameters`` order)."""

    def __init__(self, params: dict[str, Tensor]):
        self.names = list(params)
        self.shapes = [params[k].shape for k in self.names]
        self.sizes = [params[k].numel() for k in self.names]
        self.numel = sum(self.sizes)

    def unflatten(self, vector: Tensor) -> dict[str, Tensor]:
        parts = torch.split(vector, self.sizes)
        return {k: part.reshape(shape) for k, part, shape in zip(self.names, parts, self.shapes)}

    def flatten(self, tensors: dict[str, Tensor] | Iterable[Tensor], lead: int = 0) -> Tensor:
        """Concatenate per-parameter tensors with ``lead`` leading batch dims into (*lead, p)."""
        values = tensors.values() if isinstance(tensors, dict) else tensors
        return torch.cat([t.reshape(*t.shape[:lead], -1) for t in values], dim=lead)

"""ReLU gates: which units switch between x and x + δ, and how far the pre-activations are
from switching (the mechanism behind a ReLU network's saliency jumps, R5 in
``docs/reconstruction.md``; its use in the study, "Stable but still meaningful").

The pre-activations are read by forward pre-hooks on every ``nn.ReLU`` module, so any
architecture (MLP, CNN, ResNet with its residual sums) is covered; a ReLU applied twice in one
forward pass contributes both calls. A model without ReLU has no gates: NaN.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["relu_preactivations", "gate_flips", "preactivation_margin"]


def relu_preactivations(model: nn.Module, inputs: Tensor) -> Tensor:
    """``(n, m)`` the inputs of every ReLU call during ``model(inputs)``, flattened per sample
    and joined in call order (``m = 0`` when the model has no ReLU)."""
    seen: list[Tensor] = []

    def record(_module: nn.Module, args: tuple[Tensor, ...]) -> None:
        seen.append(args[0].detach().flatten(1).clone())

    hooks = [layer.register_forward_pre_hook(record) for layer in model.modules()
             if isinstance(layer, nn.ReLU)]
    try:
        with torch.no_grad():
            model(inputs)
    finally:
        for hook in hooks:
            hook.remove()
    return torch.cat(seen, 1) if seen else inputs.new_zeros(inputs.shape[0], 0)


def gate_flips(model: nn.Module, inputs: Tensor, perturbed: Tensor) -> Tensor:
    """``(n,)`` the fraction of ReLU units whose state ``z > 0`` differs between ``x_i`` and
    ``x̃_{ik}``, averaged over the K copies ``perturbed`` ``(n, K, *input_shape)``; NaN without
    ReLU. One forward pass per draw."""
    if perturbed.shape[0] != inputs.shape[0] or perturbed.shape[2:] != inputs.shape[1:]:
        raise ValueError(f"perturbed must be (n, K, *input_shape) = ({inputs.shape[0]}, K, "
                         f"{', '.join(map(str, inputs.shape[1:]))}); got "
                         f"{tuple(perturbed.shape)}.")
    clean = relu_preactivations(model, inputs) > 0
    if clean.shape[1] == 0:
        return inputs.new_full((inputs.shape[0],), math.nan)
    flips = [(relu_preactivations(model, perturbed[:, k]) > 0) != clean
             for k in range(perturbed.shape[1])]
    return torch.stack([f.to(inputs.dtype).mean(1) for f in flips], 1).mean(1)


def preactivation_margin(model: nn.Module, inputs: Tensor) -> Tensor:
    """``(n,)`` the median of ``|z|`` over the ReLU units at ``x_i`` (lower median for an even
    count, as ``torch.median``); NaN without ReLU."""
    values = relu_preactivations(model, inputs)
    if values.shape[1] == 0:
        return inputs.new_full((inputs.shape[0],), math.nan)
    return values.abs().median(1).values

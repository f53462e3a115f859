"""Per-layer weight spectral norms (Yoshida & Miyato 2017), regulariser (c) of
``docs/reconstruction.md``, "Regularisers"."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ._base import _batchnorm_stats_kept, _check_count, _Penalty


class WeightSpectralPenalty(_Penalty):
    """λ Σ_i ‖W_i‖₂² over the ``nn.Linear`` and ``nn.Conv2d`` layers (Yoshida & Miyato 2017).

    Per layer, warm-started power iteration ``u = Av/‖Av‖``, ``v = Aᵀu/‖Aᵀu‖`` without graph,
    then ``σ = uᵀ A v`` with the weight in the graph (so ``∂σ²/∂W = 2σ uvᵀ``, the gradient of
    ``σ₁²`` at convergence). For a Linear layer A is the weight matrix. For a Conv2d layer A is
    the **convolution operator** at the layer's input shape (C_in, H, W): ``Av`` is
    ``conv2d(v, W)`` (no bias) and ``Aᵀu`` is ``conv_transpose2d(u, W)`` with the matching
    stride, padding, dilation, groups and output padding. Input shapes are recorded by forward
    hooks on the first call (one extra forward pass) unless given as ``input_shapes``.

    torch's ``torch.nn.utils.parametrizations.spectral_norm`` (and the older
    ``torch.nn.utils.spectral_norm``) normalises by the norm of the **reshaped kernel**, the
    (out, in·k_h·k_w) matrix ``weight.flatten(1)`` (``_SpectralNorm._reshape_weight_to_matrix``),
    not by the operator norm. By Parseval, for stride 1 and circular padding the reshaped-kernel
    norm is a lower bound on the operator norm, up to √(k_h k_w) times smaller; zero padding
    changes this only at the borders.

    Other layers (BatchNorm scales, biases) are not penalised. Cost per call: ``num_iters``
    products with each A and Aᵀ on one vector, negligible next to a training step.
    arXiv:1705.10941.

    Args:
        strength: λ ≥ 0.
        num_iters: power iterations per layer and call. Default: 1.
        seed: seed of the generator drawing start vectors. Default: 0.
        input_shapes: ``{module name: (C_in, H, W)}`` for Conv2d layers; others are recorded.
    """

    _SETTINGS = ("strength", "num_iters", "seed")

    def __init__(self, strength: float, num_iters: int = 1, *, seed: int = 0,
                 input_shapes: Mapping[str, Sequence[int]] | None = None):
        super().__init__(strength, seed)
        self.num_iters = _check_count("num_iters", num_iters)
        self.input_shapes: dict[str, tuple[int, ...]] = {
            name: tuple(int(s) for s in shape) for name, shape in (input_shapes or {}).items()}
        self.vectors: dict[str, torch.Tensor] = {}

    def reset(self) -> None:
        super().reset()
        self.vectors = {}

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "vectors": dict(self.vectors),
                "input_shapes": dict(self.input_shapes)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self.vectors = dict(state.get("vectors", {}))
        self.input_shapes = {name: tuple(shape)
                             for name, shape in state.get("input_shapes", {}).items()}

    def _record_input_shapes(self, model: nn.Module, inputs: torch.Tensor,
                             convs: Sequence[tuple[str, nn.Conv2d]]) -> None:
        def hook(name: str):
            def record(module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
                self.input_shapes[name] = tuple(args[0].shape[1:])
            return record

        handles = [module.register_forward_pre_hook(hook(name)) for name, module in convs]
        try:
            with torch.no_grad(), _batchnorm_stats_kept(model):
                model(inputs)
        finally:
            for handle in handles:
                handle.remove()

    def __call__(self, model: nn.Module, inputs: torch.Tensor,
                 targets: torch.Tensor | None = None) -> torch.Tensor:
        layers = [(name, module) for name, module in model.named_modules()
                  if isinstance(module, (nn.Linear, nn.Conv2d))]
        if not layers:
            raise ValueError("model has no nn.Linear or nn.Conv2d layer; WeightSpectralPenalty "
                             "has nothing to penalise (use another regulariser).")
        convs = [(name, module) for name, module in layers if isinstance(module, nn.Conv2d)]
        for name, conv in convs:
            if conv.padding_mode != "zeros" or isinstance(conv.padding, str):
                raise ValueError(f"layer {name!r} has padding={conv.padding!r}, padding_mode="
                                 f"{conv.padding_mode!r}; WeightSpectralPenalty supports integer "
                                 "zero padding only (padding=int or tuple, padding_mode='zeros').")
        if any(name not in self.input_shapes for name, _ in convs):
            self._record_input_shapes(model, inputs.detach(), convs)
        generator = self._generator_on(layers[0][1].weight.device)
        total = layers[0][1].weight.new_zeros(())
        for name, module in layers:
            forward, adjoint, shape = self._operator(name, module)
            weight = module.weight
            v = self.vectors.get(name)
            if v is None or v.shape != shape:
                v = torch.randn(shape, generator=generator, device=weight.device,
                                dtype=weight.dtype)
            v = v.to(device=weight.device, dtype=weight.dtype)
            v = v / v.norm()
            with torch.no_grad():
                for _ in range(self.num_iters):
                    u = forward(v, weight)
                    u = u / u.norm()
                    v = adjoint(u, weight)
                    v = v / v.norm()
                u = forward(v, weight)
                u = u / u.norm()
            self.vectors[name] = v
            total = total + (u * forward(v, weight)).sum().pow(2)
        return self.strength * total

    def _operator(self, name: str, module: nn.Module):
        """``(A, Aᵀ, shape of v)`` for one layer, as functions of (vector, weight)."""
        if isinstance(module, nn.Linear):
            return ((lambda v, w: w @ v), (lambda u, w: w.T @ u), (module.in_features,))
        shape = (1, *self.input_shapes[name])
        stride, padding, dilation = module.stride, module.padding, module.dilation
        kernel, groups = module.kernel_size, module.groups
        out_side = [(shape[2 + i] + 2 * padding[i] - dilation[i] * (kernel[i] - 1) - 1)
                    // stride[i] + 1 for i in range(2)]
        output_padding = tuple(
            shape[2 + i] - ((out_side[i] - 1) * stride[i] - 2 * padding[i]
                            + dilation[i] * (kernel[i] - 1) + 1) for i in range(2))
        return (
            lambda v, w: F.conv2d(v, w, None, stride, padding, dilation, groups),
            lambda u, w: F.conv_transpose2d(u, w, None, stride, padding, output_padding, groups,
                                            dilation),
            shape,
        )

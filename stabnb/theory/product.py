"""R1–R2: the network as a product of weights and activation gates, and the layer-wise bound.

R1: ``J_f(x) = W_L D_{L−1}(x) W_{L−1} ⋯ D_1(x) W_1`` (a convolution is a linear map, max-pooling a
data-dependent 0/1 selection); R2 (layer-wise part): ``‖J_f(x)‖₂ ≤ L_σ^{L−1} Π‖W_i‖₂``.
Our reconstruction, not the paper's statement (``docs/reconstruction.md``, "Reconstructed results").
"""


import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..checks import check_finite, require_eval_mode
from ..models import ACTIVATIONS, MLP, Normalize, SmallCNN
from ..operators import input_jacobians
from .families import PerSampleResult

__all__ = [
    "Factor", "ProductRepresentation", "weight_gate_product", "layerwise_bound",
    "ProductCheck", "check_product_representation",
]


# sits at z = √2, SiLU's at the root z ≈ 2.3994 of 2 + z(1 − 2s(z)) = 0).
LIPSCHITZ = {
    nn.ReLU: 1.0,
    nn.Tanh: 1.0,
    nn.Sigmoid: 0.25,
    nn.Softplus: 1.0,
    nn.GELU: 0.5 * (1.0 + math.erf(1.0)) + math.exp(-1.0) / math.sqrt(math.pi),
    nn.SiLU: 1.099839320128867,
}
SMOOTH_ACTIVATIONS = (nn.Tanh, nn.Sigmoid, nn.Softplus, nn.GELU, nn.SiLU)
_AFFINE = (nn.Linear, nn.Conv2d, nn.AvgPool2d, Normalize)
_SHAPE_ONLY = (nn.Flatten, nn.Identity)
# Relative float-rounding tolerance for "the same value" (two evaluations of one function
# through differently batched kernels); far above float64 rounding, far below any real jump.
ROUNDING_RTOL = 1e-9


def _gate(layer: nn.Module, z: torch.Tensor) -> torch.Tensor:
    """σ'(z) elementwise, in closed form (what autograd gives, ReLU'(0) = 0 included)."""
    if isinstance(layer, nn.ReLU):
        return (z > 0).to(z.dtype)
    if isinstance(layer, nn.Tanh):
        return 1.0 - torch.tanh(z) ** 2
    if isinstance(layer, nn.Sigmoid):
        s = torch.sigmoid(z)
        return s * (1.0 - s)
    if isinstance(layer, nn.Softplus):
        scaled = layer.beta * z
        return torch.where(scaled > layer.threshold, torch.ones_like(z), torch.sigmoid(scaled))
    if isinstance(layer, nn.GELU):
        if layer.approximate != "none":
            raise ValueError(f"GELU(approximate={layer.approximate!r}) has no closed-form gate "
                             "here; use nn.GELU() (the exact erf form).")
        density = torch.exp(-0.5 * z ** 2) / math.sqrt(2.0 * math.pi)
        return 0.5 * (1.0 + torch.erf(z / math.sqrt(2.0))) + z * density
    s = torch.sigmoid(z)  # SiLU
    return s * (1.0 + z * (1.0 - s))


def layer_chain(model: nn.Module) -> list[nn.Module]:
    """The layers of a feed-forward model, in order; ValueError for anything else."""
    if isinstance(model, (MLP, SmallCNN)):
        stack = [model.normalize, model.net]
    elif isinstance(model, nn.Sequential):
        stack = [model]
    else:
        raise ValueError(f"the weight-and-gate product needs a feed-forward chain (MLP, SmallCNN "
                         f"or nn.Sequential); got {type(model).__name__}. Residual models such as "
                         "ResNet20 are not a single product of layers.")
    layers: list[nn.Module] = []
    while stack:
        layer = stack.pop(0)
        if isinstance(layer, nn.Sequential):
            stack = list(layer) + stack
            continue
        supported = _AFFINE + _SHAPE_ONLY + tuple(LIPSCHITZ) + (nn.MaxPool2d,)
        if not isinstance(layer, supported):
            raise ValueError(f"layer {type(layer).__name__} is not supported by the weight-and-"
                             "gate product; supported: Linear, Conv2d (zero padding), AvgPool2d, "
                             "MaxPool2d, Flatten, Normalize and the activations "
                             f"{sorted(ACTIVATIONS)}.")
        if isinstance(layer, nn.Conv2d) and layer.padding_mode != "zeros":
            raise ValueError(f"Conv2d(padding_mode={layer.padding_mode!r}) is not supported; "
                             "use padding_mode='zeros'.")
        layers.append(layer)
    return layers


def _affine_matrix(layer: nn.Module, shape: Sequence[int], like: torch.Tensor) -> torch.Tensor:
    """The matrix A of an affine layer y = A x + b on inputs of ``shape`` (no batch dim)."""
    if isinstance(layer, nn.Linear):
        return layer.weight.detach().to(like.dtype)
    size = math.prod(shape)
    basis = torch.eye(size, dtype=like.dtype, device=like.device).view(size, *shape)
    if isinstance(layer, nn.Conv2d):
        columns = F.conv2d(basis, layer.weight.detach().to(like.dtype), None, layer.stride,
                           layer.padding, layer.dilation, layer.groups)
    else:  # Normalize, AvgPool2d: apply to the basis and remove the offset b = f(0).
        columns = layer(basis) - layer(torch.zeros_like(basis[:1]))
    return columns.reshape(size, -1).T


def _selection(layer: nn.MaxPool2d, z: torch.Tensor) -> torch.Tensor:
    """Per-sample 0/1 matrix S(x) with maxpool(z) = S(x) z (flattened), shape (n, m_out, m_in)."""
    _, index = F.max_pool2d(z, layer.kernel_size, layer.stride, layer.padding, layer.dilation,
                            layer.ceil_mode, return_indices=True)
    n, channels, height, width = z.shape
    rows = index[0].numel()
    offset = torch.arange(channels, device=z.device).view(1, channels, 1, 1) * height * width
    columns = (index + offset).reshape(n, rows)
    selection = torch.zeros(n, rows, z[0].numel(), dtype=z.dtype, device=z.device)
    selection.scatter_(2, columns.unsqueeze(-1), 1.0)
    return selection


def _selection_norm(layer: nn.MaxPool2d) -> float:
    """sup_x ‖S(x)‖₂ ≤ √(max windows covering one input) = √(Π⌈k_i/s_i⌉)."""
    pair = (lambda v: (v, v) if isinstance(v, int) else tuple(v))
    kernel, stride, dilation = pair(layer.kernel_size), pair(layer.stride), pair(layer.dilation)
    overlap = math.prod(math.ceil(((k - 1) * d + 1) / s) for k, s, d in zip(kernel, stride,
                                                                          dilation))
    return math.sqrt(overlap)


@dataclass(frozen=True)
class Factor:
    """One factor of the product: a fixed ``weight`` matrix, a diagonal ``gate`` or a ``selection``.

    ``matrix`` is (m_out, m_in) for a weight, (n, m) (the diagonal) for a gate and
    (n, m_out, m_in) for a max-pool selection.
    """

    name: str
    kind: str
    matrix: torch.Tensor

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "shape": list(self.matrix.shape)}


@dataclass(frozen=True)
class ProductRepresentation:
    """R1: ``J_f(x) = F_K(x) ⋯ F_1(x)``: explicit factors and their product (n, C, *in_shape)."""

    factors: tuple[Factor, ...]
    jacobian: torch.Tensor

    def to_dict(self) -> dict[str, Any]:
        return {"factors": [f.to_dict() for f in self.factors],
                "jacobian_shape": list(self.jacobian.shape)}


def weight_gate_product(model: nn.Module, inputs: torch.Tensor) -> ProductRepresentation:
    """Build ``J_f(x) = W_L D_{L−1}(x) W_{L−1} ⋯ D_1(x) W_1`` explicitly, without autograd (R1).

    Weights are the layers' matrices (a convolution as its dense Toeplitz matrix, the input
    normalisation as a diagonal); gates are ``D_i(x) = diag(σ'(z_i(x)))`` in closed form at
    the pre-activations; max-pooling is the 0/1 matrix selecting each window's maximum.
    Our reconstruction (R1); exact wherever no pre-activation sits on a ReLU kink.

    Cost: one forward pass plus dense products of size (n, m_i, d); meant for small nets.

    Args:
        model: an :class:`~stabnb.models.MLP`, :class:`~stabnb.models.SmallCNN` or
            ``nn.Sequential`` of supported layers, in eval mode.
        inputs: a batch (n, *input_shape).

    Returns:
        :class:`ProductRepresentation` with the factors in application order.

    Raises:
        ValueError: an unsupported model or layer, or non-finite inputs.

    Examples::

        >>> model = MLP(4, (6,), 3).double().eval()
        >>> x = torch.rand(5, 4, dtype=torch.float64)
        >>> product = weight_gate_product(model, x)
        >>> [f.kind for f in product.factors]
        ['weight', 'weight', 'gate', 'weight']
        >>> torch.allclose(product.jacobian, input_jacobians(model, x))
        True
    """
    require_eval_mode(model)
    check_finite(inputs, "inputs")
    parameter = next(model.parameters())
    inputs = inputs.detach().to(dtype=parameter.dtype, device=parameter.device)
    n = inputs.shape[0]
    factors: list[Factor] = []
    current = inputs
    product: torch.Tensor | None = None
    with torch.no_grad():
        for position, layer in enumerate(layer_chain(model)):
            name = f"{position}:{type(layer).__name__}"
            if isinstance(layer, _AFFINE):
                factor = Factor(name, "weight", _affine_matrix(layer, current.shape[1:], current))
                product = factor.matrix if product is None else factor.matrix @ product
            elif isinstance(layer, nn.MaxPool2d):
                factor = Factor(name, "selection", _selection(layer, current))
                product = factor.matrix @ product if product is not None else factor.matrix
            elif isinstance(layer, _SHAPE_ONLY):
                current = layer(current)
                continue
            else:
                factor = Factor(name, "gate", _gate(layer, current).reshape(n, -1))
                start = torch.eye(factor.matrix.shape[1], dtype=current.dtype,
                                  device=current.device)
                product = factor.matrix.unsqueeze(-1) * (start if product is None else product)
            factors.append(factor)
            current = layer(current)
    jacobian = product.expand(n, *product.shape[-2:])
    return ProductRepresentation(tuple(factors), jacobian.reshape(n, -1, *inputs.shape[1:]))


def layerwise_bound(model: nn.Module, input_shape: Sequence[int]) -> float:
    """R2: ``Π_i ‖W_i‖₂ · Π_gates L_σ`` (= ``L_σ^{L−1} Π‖W_i‖₂`` for an MLP), ≥ sup_x ‖J_f(x)‖₂.

    ``‖W_i‖₂`` is the spectral norm of each linear map (of the convolution operator, not of the
    reshaped kernel), ``L_σ = sup|σ'|`` for each activation and ``√(max window overlap)`` for
    max-pooling. Our reconstruction (R2).

    Args:
        model: a feed-forward model as for :func:`weight_gate_product`.
        input_shape: the shape of one input, e.g. ``(1, 8, 8)`` or ``(32,)``.
    """
    parameter = next(model.parameters())
    current = torch.zeros(1, *input_shape, dtype=parameter.dtype, device=parameter.device)
    bound = 1.0
    with torch.no_grad():
        for layer in layer_chain(model):
            if isinstance(layer, _AFFINE):
                matrix = _affine_matrix(layer, current.shape[1:], current)
                bound *= float(torch.linalg.matrix_norm(matrix, ord=2))
            elif isinstance(layer, nn.MaxPool2d):
                bound *= _selection_norm(layer)
            elif not isinstance(layer, _SHAPE_ONLY):
                bound *= LIPSCHITZ[type(layer)]
            current = layer(current)
    return bound



@dataclass(frozen=True)
class ProductCheck(PerSampleResult):
    """R1 on a batch: explicit product against the autograd Jacobian, per sample.

    ``holds`` means relative Frobenius error ≤ ``tolerance`` (1000 machine epsilons).
    """

    relative_error: torch.Tensor
    max_abs_error: torch.Tensor
    jacobian_norm: torch.Tensor
    num_weights: int
    num_gates: int
    num_selections: int
    tolerance: float
    holds: torch.Tensor


def check_product_representation(model: nn.Module, inputs: torch.Tensor) -> ProductCheck:
    """R1: compare :func:`weight_gate_product` with the exact autograd Jacobian.

    Reports ``‖J_explicit − J_autograd‖_F / ‖J_autograd‖_F`` (the absolute error where
    ``J_autograd = 0``) and the largest entrywise difference per sample; the product holds when
    the relative error is at float rounding (≤ 1000 ε of the dtype: 2.2e-13 in float64).
    """
    representation = weight_gate_product(model, inputs)
    reference = input_jacobians(model, inputs).detach()
    difference = (representation.jacobian - reference).flatten(1)
    norm = reference.flatten(1).norm(dim=1)
    # A locally constant network (every ReLU gate shut) has J = 0; compare absolutely there.
    relative = difference.norm(dim=1) / torch.where(norm > 0, norm, 1.0)
    tolerance = 1e3 * torch.finfo(inputs.dtype).eps
    kinds = [f.kind for f in representation.factors]
    return ProductCheck(relative, difference.abs().amax(dim=1), norm, kinds.count("weight"),
                        kinds.count("gate"), kinds.count("selection"), tolerance,
                        relative <= tolerance)

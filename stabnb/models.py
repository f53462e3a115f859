"""Models: MLP, SmallCNN, a CIFAR ResNet-20, a fast airbench-style ResNet, and the functional
view used by the estimators.

Every model takes **pixel** inputs in [0, 1] and normalises them with its own first layer
(:class:`Normalize`), so input Jacobians, attributions and perturbation radii are all in
pixel units, whatever normalisation the data set records. Each records the per-sample
``input_shape`` it takes (``None`` for a free size), which
:func:`stabnb.checks.check_input_shape` enforces.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import nn
from torch.func import functional_call

__all__ = [
    "ACTIVATIONS", "ARCHITECTURES", "MLP", "SmallCNN", "ResNet20", "FastResNet", "Normalize",
    "build_model",
    "initialize", "functional", "num_parameters", "smooth_activations",
]

ARCHITECTURES = ("mlp", "cnn", "resnet", "resnet_fast")
"""The names :func:`build_model` knows."""

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "gelu": nn.GELU,
    "softplus": nn.Softplus,
    "sigmoid": nn.Sigmoid,
    "silu": nn.SiLU,
}


def _activation(name: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise ValueError(f"activation={name!r} is unknown; choose one of {sorted(ACTIVATIONS)}.")
    return ACTIVATIONS[name]()


class Normalize(nn.Module):
    """x ↦ (x − mean) / std per channel; identity when no statistics are given."""

    def __init__(self, mean: Sequence[float] | None = None, std: Sequence[float] | None = None):
        super().__init__()
        mean_t = torch.tensor(mean if mean is not None else [0.0])
        std_t = torch.tensor(std if std is not None else [1.0])
        self.register_buffer("mean", mean_t.view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", std_t.view(1, -1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4:
            return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)
        return (x - self.mean.flatten()[0].to(x.dtype)) / self.std.flatten()[0].to(x.dtype)


class MLP(nn.Module):
    """Fully connected net: flatten → [Linear → σ] × len(widths) → Linear.

    Args:
        in_features: input dimension d (images are flattened).
        widths: hidden widths, e.g. ``(256, 256)``.
        num_classes: output dimension C.
        activation: one of :data:`ACTIVATIONS`. Default: ``"relu"``.
        mean, std: pixel normalisation applied first. Default: none.
    """

    def __init__(self, in_features: int, widths: Sequence[int], num_classes: int,
                 activation: str = "relu", mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None):
        super().__init__()
        self.input_shape: tuple[int | None, ...] = (int(in_features),)   # flattened: any layout
        self.normalize = Normalize(mean, std)
        layers: list[nn.Module] = [nn.Flatten()]
        previous = in_features
        for width in widths:
            layers += [nn.Linear(previous, width), _activation(activation)]
            previous = width
        layers.append(nn.Linear(previous, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.normalize(x))


class SmallCNN(nn.Module):
    """Two conv blocks and a linear head: [Conv3×3 → σ → MaxPool2] × 2 → Linear → σ → Linear.

    Args:
        in_channels: 1 for MNIST, 3 for CIFAR.
        num_classes: output dimension C.
        image_size: side of the square input (28 or 32).
        channels: conv widths. Default: ``(16, 32)``.
        hidden: width of the linear layer. Default: 128.
        activation: one of :data:`ACTIVATIONS`. Default: ``"relu"``.
        mean, std: pixel normalisation applied first.
    """

    def __init__(self, in_channels: int, num_classes: int, image_size: int,
                 channels: Sequence[int] = (16, 32), hidden: int = 128,
                 activation: str = "relu", mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None):
        super().__init__()
        self.input_shape: tuple[int | None, ...] = (int(in_channels), int(image_size),
                                                    int(image_size))
        self.normalize = Normalize(mean, std)
        layers: list[nn.Module] = []
        previous, side = in_channels, image_size
        for width in channels:
            layers += [nn.Conv2d(previous, width, 3, padding=1), _activation(activation),
                       nn.MaxPool2d(2)]
            previous, side = width, side // 2
        layers += [nn.Flatten(), nn.Linear(previous * side * side, hidden),
                   _activation(activation), nn.Linear(hidden, num_classes)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.normalize(x))


class _BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int, activation: str):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.act1, self.act2 = _activation(activation), _activation(activation)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride, bias=False),
                                          nn.BatchNorm2d(planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act1(self.bn1(self.conv1(x)))
        return self.act2(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNet20(nn.Module):
    """He et al. (2016) CIFAR ResNet: 3 stages of ``blocks`` basic blocks (ResNet-20 at 3).

    Args:
        num_classes: output dimension C.
        in_channels: input channels. Default: 3.
        width: channels of the first stage (then ×2, ×4). Default: 16.
        blocks: basic blocks per stage (3 → ResNet-20, 5 → ResNet-32). Default: 3.
        activation: one of :data:`ACTIVATIONS`. Default: ``"relu"``.
        mean, std: pixel normalisation applied first.
    """

    def __init__(self, num_classes: int, in_channels: int = 3, width: int = 16, blocks: int = 3,
                 activation: str = "relu", mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None):
        super().__init__()
        self.input_shape: tuple[int | None, ...] = (int(in_channels), None, None)  # any H, W
        self.normalize = Normalize(mean, std)
        self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 3, 1, 1, bias=False),
                                  nn.BatchNorm2d(width), _activation(activation))
        stages: list[nn.Module] = []
        planes = width
        for stage in range(3):
            out_planes = width * 2 ** stage
            for block in range(blocks):
                stride = 2 if stage > 0 and block == 0 else 1
                stages.append(_BasicBlock(planes, out_planes, stride, activation))
                planes = out_planes
        self.stages = nn.Sequential(*stages)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                  nn.Linear(planes, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stages(self.stem(self.normalize(x))))


def _fixed_scale_norm(channels: int) -> nn.BatchNorm2d:
    """Batch norm with its scale fixed at 1 (airbench's); only the shift is learnt."""
    norm = nn.BatchNorm2d(channels)
    norm.weight.requires_grad_(False)
    return norm


class _ConvGroup(nn.Module):
    """h = σ(BN(maxpool₂(conv(x)))), then h + σ(BN(conv(h))): airbench's conv group with the
    residual sum of the ResNet-9 it descends from."""

    def __init__(self, in_planes: int, planes: int, activation: str):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, padding=1, bias=False)
        self.pool = nn.MaxPool2d(2)
        self.norm1 = _fixed_scale_norm(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.norm2 = _fixed_scale_norm(planes)
        self.act1, self.act2 = _activation(activation), _activation(activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act1(self.norm1(self.pool(self.conv1(x))))
        return h + self.act2(self.norm2(self.conv2(h)))


class FastResNet(nn.Module):
    """A fast-training CIFAR net after Keller Jordan's airbench94 (github.com/KellerJordan/
    cifar10-airbench; its ``airbench_ablations/main0_baseline.py``, 94 % in 35 epochs without
    its later tricks) and D. Page's ResNet-9 it descends from.

    stem: conv 2×2 (no padding) → BN → σ; three groups (:class:`_ConvGroup`), each halving
    the side; global max-pool → Linear (no bias) → ×``scale``. Taken from airbench: the 2×2
    stem of width 24 (airbench's whitening layer, here learnt from the common initialisation
    rather than set from the data's patch covariance), the group widths 64, 256, 256, batch
    norm with fixed unit scale, the final max-pool and the logit scale 1/9. Changed: the
    activation is ``activation`` (ReLU by default, as the study's ReLU probes need, where
    airbench uses GELU) and each group adds a residual sum over its second conv. Its training
    recipe (flip + translate, label smoothing 0.2, Nesterov SGD, triangular schedule,
    batch 1024) is the ``cifar10`` paper profile's (:mod:`stabnb.presets`).

    Args:
        num_classes: output dimension C.
        in_channels: input channels. Default: 3.
        widths: channels of the three groups. Default: ``(64, 256, 256)``.
        stem: channels of the 2×2 stem. Default: 24.
        scale: multiplies the logits. Default: 1/9.
        activation: one of :data:`ACTIVATIONS`. Default: ``"relu"``.
        mean, std: pixel normalisation applied first.
    """

    def __init__(self, num_classes: int, in_channels: int = 3,
                 widths: Sequence[int] = (64, 256, 256), stem: int = 24, scale: float = 1 / 9,
                 activation: str = "relu", mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None):
        super().__init__()
        if len(widths) != 3:
            raise ValueError(f"widths={tuple(widths)} must name the three groups' channels, "
                             "e.g. (64, 256, 256).")
        self.input_shape: tuple[int | None, ...] = (int(in_channels), None, None)  # any H, W ≥ 9
        self.normalize = Normalize(mean, std)
        self.stem = nn.Sequential(nn.Conv2d(in_channels, stem, 2), _fixed_scale_norm(stem),
                                  _activation(activation))
        planes = [stem, *widths]
        self.groups = nn.Sequential(*(_ConvGroup(planes[i], planes[i + 1], activation)
                                      for i in range(3)))
        self.head = nn.Sequential(nn.AdaptiveMaxPool2d(1), nn.Flatten(),
                                  nn.Linear(planes[-1], num_classes, bias=False))
        self.scale = float(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.groups(self.stem(self.normalize(x)))) * self.scale


def build_model(name: str, input_shape: Sequence[int], num_classes: int, *,
                activation: str = "relu", mean: Sequence[float] | None = None,
                std: Sequence[float] | None = None, **kwargs) -> nn.Module:
    """Build ``"mlp"``, ``"cnn"``, ``"resnet"`` or ``"resnet_fast"`` for inputs of shape
    ``(C, H, W)`` or ``(d,)``.

    Extra keyword arguments go to the model's constructor (``widths`` for the MLP,
    ``channels``/``hidden`` for the CNN, ``width``/``blocks`` for the ResNet, ``widths``/
    ``stem``/``scale`` for :class:`FastResNet`).
    """
    shape = tuple(int(s) for s in input_shape)
    if name == "mlp":
        kwargs.setdefault("widths", (256, 256))
        return MLP(int(torch.tensor(shape).prod()), num_classes=num_classes,
                   activation=activation, mean=mean, std=std, **kwargs)
    if name in ("cnn", "resnet", "resnet_fast") and len(shape) != 3:
        raise ValueError(f"model {name!r} needs image inputs (C, H, W); got input_shape={shape}.")
    if name == "cnn":
        return SmallCNN(shape[0], num_classes, shape[1], activation=activation, mean=mean,
                        std=std, **kwargs)
    if name == "resnet":
        return ResNet20(num_classes, in_channels=shape[0], activation=activation, mean=mean,
                        std=std, **kwargs)
    if name == "resnet_fast":
        return FastResNet(num_classes, in_channels=shape[0], activation=activation, mean=mean,
                          std=std, **kwargs)
    raise ValueError(f"model={name!r} is unknown; choose one of {ARCHITECTURES}.")


def initialize(model: nn.Module, generator: torch.Generator, *, gain: float | None = None,
               bias_std: float | None = None) -> nn.Module:
    """Redraw the weight and bias of every ``Linear`` and ``Conv2d`` layer from ``generator``.

    With the defaults this is PyTorch's own initialisation, ``U(−1/√fan_in, 1/√fan_in)`` for
    weights and biases (what ``reset_parameters`` draws from the global stream); ``gain`` makes
    the weights ``N(0, gain²/fan_in)`` and ``bias_std`` the biases ``N(0, bias_std²)``. Layers
    are visited in ``model.modules()`` order, weight then bias, drawn in the layer's dtype on the
    generator's device, so one generator state gives one network. Batch-norm layers keep their
    deterministic initialisation. Returns ``model``, changed in place.

    Examples::

        >>> a = initialize(MLP(4, (6,), 3), torch.Generator().manual_seed(0))
        >>> b = initialize(MLP(4, (6,), 3), torch.Generator().manual_seed(0))
        >>> all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
        True
    """
    def draw(shape: torch.Size, dtype: torch.dtype, std: float | None, fan_in: int) -> torch.Tensor:
        options = {"generator": generator, "device": generator.device, "dtype": dtype}
        if std is None:
            return (torch.rand(shape, **options) * 2 - 1) / math.sqrt(fan_in)
        return torch.randn(shape, **options) * std

    with torch.no_grad():
        for layer in model.modules():
            if isinstance(layer, (nn.Linear, nn.Conv2d)):
                weight = layer.weight
                fan_in = weight[0].numel()
                if gain is None:
                    weight.copy_(draw(weight.shape, weight.dtype, None, fan_in))
                else:
                    weight.copy_(draw(weight.shape, weight.dtype, 1.0, fan_in) * gain
                                 / math.sqrt(fan_in))
                if layer.bias is not None:
                    layer.bias.copy_(draw(layer.bias.shape, layer.bias.dtype, bias_std, fan_in))
    return model


def smooth_activations(model: nn.Module, temperature: float) -> nn.Module:
    """Replace every ``nn.ReLU`` of ``model`` in place by ``Softplus(β)``, β = 1/temperature.

    ``softplus_β(z) = log(1 + e^{βz})/β`` tends to ReLU as the temperature 1/β → 0 and has
    curvature ``β/4`` at 0: the smooth-activation control of the regularisation studies
    (``docs/reconstruction.md``, "Controls"). The weights are untouched, so a network initialised
    as its ReLU twin starts from the same parameters. Returns ``model``.

    Raises:
        ValueError: temperature not finite and > 0, or a model without any ``nn.ReLU``.
    """
    if not (math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature={temperature!r} must be a finite 1/β > 0, e.g. 0.1.")
    names = [name for name, module in model.named_modules() if isinstance(module, nn.ReLU)]
    if not names:
        raise ValueError(f"{type(model).__name__} has no nn.ReLU to smooth; the smooth-activation "
                         "control applies to ReLU networks (build them with activation='relu').")
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, nn.Softplus(beta=1.0 / temperature))
    return model


def functional(model: nn.Module) -> tuple[dict[str, torch.Tensor], Callable[..., torch.Tensor]]:
    """Return ``(params, f)`` with ``f(params, x) == model(x)`` and ``params`` detached.

    ``params`` holds the trainable parameters only (buffers stay in the model), so
    ``torch.func`` transforms of ``f`` differentiate with respect to θ exactly.
    """
    params = {name: p.detach() for name, p in model.named_parameters() if p.requires_grad}
    if not params:
        raise ValueError("model has no trainable parameters (all requires_grad=False); "
                         "nothing to differentiate.")

    def f(params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        return functional_call(model, params, (x,))

    return params, f


def num_parameters(model: nn.Module) -> int:
    """Number of trainable scalars p."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)

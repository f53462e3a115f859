"""Perturbation families of the stability probe, named by spec strings ``"family:size"``.

Our reconstruction (``docs/reconstruction.md``, "Held-out perturbation families"). Every family
draws K copies of each input from an explicit generator and clips them to the pixel range:

- ``gaussian:σ``: ``x + σξ``, ξ ~ N(0, I) (the input-curvature penalty trains on σ = 0.05);
- ``uniform:r`` (alias ``linf``): ``x + δ``, δ uniform on ``[−r, r]^d``;
- ``translate:s``: an integer shift ``(dy, dx)`` drawn uniformly from ``{−s..s}² \\ {(0, 0)}``,
  the border filled by replicating the edge pixel (images ``(C, H, W)`` only);
- ``blur:s``: a separable Gaussian blur of random width ``σ_b ~ U(0, s]`` per draw (a fixed
  width would make the K draws identical), kernel half-width ``⌈3s⌉``, edges replicated
  (images only).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["PERTURBATIONS", "IMAGE_FAMILIES", "parse_perturbation", "check_perturbation",
           "perturb"]

PERTURBATIONS = ("gaussian", "linf", "uniform", "translate", "blur")
"""Family names; ``linf`` and ``uniform`` are the same family."""

IMAGE_FAMILIES = ("translate", "blur")
"""Families that need image-shaped inputs ``(C, H, W)``."""


def check_perturbation(family: str, size: float) -> tuple[str, float]:
    """``(family, size)`` checked: a known family, a positive finite size, whole pixels for
    ``translate``.

    Raises:
        ValueError: an unknown family or a bad size, naming the fix.
    """
    if family not in PERTURBATIONS:
        raise ValueError(f"perturbation={family!r} is unknown; choose one of {PERTURBATIONS}.")
    if isinstance(size, bool) or not (math.isfinite(size) and size > 0):
        raise ValueError(f"radius={size} must be a positive finite number of pixel units "
                         "(e.g. 0.05 on [0, 1] pixels; a whole number of pixels for translate).")
    if family == "translate" and int(size) != size:
        raise ValueError(f"translate shifts by whole pixels; radius={size} must be an integer "
                         "such as 1.")
    return family, float(size)


def parse_perturbation(spec: str) -> tuple[str, float]:
    """``"gaussian:0.02"`` → ``("gaussian", 0.02)``, checked by :func:`check_perturbation`.

    Raises:
        ValueError: not ``"family:size"``, an unknown family, or a bad size.
    """
    if not isinstance(spec, str) or spec.count(":") != 1:
        raise ValueError(f"perturbation spec {spec!r} must read 'family:size', e.g. "
                         f"'gaussian:0.02' or 'translate:1'; families: {PERTURBATIONS}.")
    family, size = spec.split(":")
    try:
        value = float(size)
    except ValueError:
        raise ValueError(f"perturbation spec {spec!r}: the size {size!r} is not a number; write "
                         "e.g. 'blur:0.5'.") from None
    return check_perturbation(family, value)


def perturb(inputs: Tensor, family: str, size: float, num_draws: int, *,
            generator: torch.Generator,
            pixel_range: tuple[float, float] = (0.0, 1.0)) -> Tensor:
    """``(n, K, *input_shape)`` perturbed copies of ``inputs`` ``(n, *input_shape)``, clipped.

    Gaussian and uniform draw the ``(n, K, *input_shape)`` noise in one call (the draws of the
    probe's original ``gaussian``/``linf`` modes); translate draws ``(n, K)`` shift indices,
    blur ``(n, K)`` widths.

    Raises:
        ValueError: a bad family or size; ``translate``/``blur`` on inputs that are not images
            ``(n, C, H, W)``.
    """
    family, size = check_perturbation(family, size)
    n = inputs.shape[0]
    shape = (n, num_draws, *inputs.shape[1:])
    options = {"generator": generator, "device": inputs.device, "dtype": inputs.dtype}
    if family in IMAGE_FAMILIES and inputs.dim() != 4:
        raise ValueError(f"the {family!r} family needs image inputs (n, C, H, W); got shape "
                         f"{tuple(inputs.shape)}. Use gaussian or uniform for flat inputs "
                         "(ProbeConfig.families_for drops image families).")
    if family == "gaussian":
        moved = inputs.unsqueeze(1) + torch.randn(shape, **options) * size
    elif family in ("linf", "uniform"):
        moved = inputs.unsqueeze(1) + (torch.rand(shape, **options) * 2 - 1) * size
    elif family == "translate":
        moved = _translate(inputs, int(size), num_draws, generator)
    else:
        widths = size * (1 - torch.rand((n, num_draws), **options))     # U(0, s]
        moved = _blur(inputs, widths, math.ceil(3 * size))
    return moved.clamp_(*pixel_range)


def _translate(inputs: Tensor, shift: int, num_draws: int, generator: torch.Generator) -> Tensor:
    """Each copy shifted by ``(dy, dx) ≠ 0`` in ``{−s..s}²``; pixel (i, j) of the copy is pixel
    ``(clamp(i − dy), clamp(j − dx))`` of the input (edge replication)."""
    n, channels, height, width = inputs.shape
    side = 2 * shift + 1
    # index into the side² − 1 non-zero shifts: skip the centre (0, 0)
    index = torch.randint(0, side * side - 1, (n, num_draws), generator=generator,
                          device=generator.device).to(inputs.device)
    index = index + (index >= side * side // 2).long()
    dy, dx = index // side - shift, index % side - shift
    rows = (torch.arange(height, device=inputs.device) - dy[..., None]).clamp(0, height - 1)
    cols = (torch.arange(width, device=inputs.device) - dx[..., None]).clamp(0, width - 1)
    full = (n, num_draws, channels, height, width)
    moved = inputs.unsqueeze(1).expand(full).gather(3, rows[:, :, None, :, None].expand(full))
    return moved.gather(4, cols[:, :, None, None, :].expand(full))


def _blur(inputs: Tensor, widths: Tensor, half: int) -> Tensor:
    """Separable Gaussian blur, one width per copy ``(n, K)``, replicated edges (grouped conv)."""
    n, channels, height, width = inputs.shape
    num_draws = widths.shape[1]
    taps = torch.arange(-half, half + 1, device=inputs.device, dtype=inputs.dtype)
    sigma = widths.clamp_min(1e-6).reshape(-1, 1)
    kernel = torch.exp(-taps**2 / (2 * sigma**2))
    kernel = (kernel / kernel.sum(-1, keepdim=True)).repeat_interleave(channels, dim=0)
    groups = kernel.shape[0]                                          # n·K·C
    images = inputs.unsqueeze(1).expand(n, num_draws, channels, height, width)
    images = images.reshape(1, groups, height, width)
    images = F.conv2d(F.pad(images, (half, half, 0, 0), mode="replicate"),
                      kernel.view(groups, 1, 1, -1), groups=groups)
    images = F.conv2d(F.pad(images, (0, 0, half, half), mode="replicate"),
                      kernel.view(groups, 1, -1, 1), groups=groups)
    return images.reshape(n, num_draws, channels, height, width)

"""Argument checks shared by every module: finite tensors, pixel inputs, eval mode, devices.

Each check raises ``ValueError`` naming the value it received and what to do instead;
none uses ``assert`` (``python -O`` strips those).

Input-domain rule (:func:`check_pixel_inputs`, applied by every operator, exact batched
helper, :func:`stabnb.gmsi.gmsi` and the attribution probe): stabnb models take float pixels
in [0, 1] and normalise internally, so integer (or bool) inputs are always refused, with the
fix. Values outside the pixel range are refused wherever a range is declared: by ``gmsi`` and
the probe (``pixel_range``, default ``(0, 1)``), which take a sample set of images. The
operators and exact helpers declare none (``pixel_range=None``): they are functions of the
model on all of ``R^d`` and :mod:`stabnb.bounds` evaluates them at ``x + δ`` off the box.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["check_finite", "check_model_finite", "check_pixel_inputs", "check_input_shape",
           "require_eval_mode", "resolve_device"]

# Layers whose forward pass differs between train() and eval().
_MODE_DEPENDENT = (nn.modules.batchnorm._BatchNorm, nn.modules.dropout._DropoutNd, nn.Dropout)


def check_finite(tensor: torch.Tensor, name: str,
                 fix: str = "clean or drop those entries before calling") -> None:
    """Raise ``ValueError`` if ``tensor`` holds NaN or Inf, naming ``name``, the count and ``fix``."""
    bad = ~torch.isfinite(tensor)
    if bool(bad.any()):
        raise ValueError(
            f"{name} contains {int(bad.sum())} non-finite value(s) (NaN/Inf) out of "
            f"{tensor.numel()}; {fix}."
        )


def check_pixel_inputs(x: torch.Tensor, name: str = "inputs",
                       pixel_range: tuple[float, float] | None = (0.0, 1.0)) -> None:
    """Refuse inputs that are not float pixels: integer dtypes always, values out of range.

    Args:
        x: the inputs.
        name: how the message calls them.
        pixel_range: ``(low, high)`` every value must lie in, or None to check only the dtype
            and finiteness. Default: ``(0, 1)``, the stabnb models' pixels.

    Raises:
        TypeError: ``x`` is not a tensor. ValueError: integer/bool dtype, NaN/Inf, or a value
        outside ``pixel_range``.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}.")
    if not (x.is_floating_point() or x.is_complex()):
        fix = ("x.float() / 255" if x.dtype == torch.uint8
               else "x.float() (divided by 255 if they are 0..255 pixels)")
        raise ValueError(f"{name} have dtype {x.dtype}; models take float pixels in [0, 1]: "
                         f"pass {fix}.")
    check_finite(x, name)
    if pixel_range is None or x.numel() == 0:
        return
    low, high = pixel_range
    seen_low, seen_high = float(x.min()), float(x.max())
    if seen_low < low or seen_high > high:
        hint = (" (they look like 0..255 pixels: divide by 255)"
                if high == 1.0 and 10 < seen_high <= 255 else "")
        raise ValueError(
            f"{name} span [{seen_low:.4g}, {seen_high:.4g}], outside pixel_range="
            f"{tuple(pixel_range)}{hint}; pass raw pixels (stabnb models normalise internally) "
            "or declare the range with pixel_range=(low, high).")


def check_input_shape(model: nn.Module, x: torch.Tensor, name: str = "inputs", *,
                      batched: bool = True) -> None:
    """Refuse inputs whose per-sample shape differs from ``model.input_shape``, if it has one.

    A ``None`` entry matches any size (the ResNet pools globally); a 1-D ``(d,)`` shape accepts
    any per-sample shape with ``d`` entries (the MLP flattens its input).
    """
    expected = getattr(model, "input_shape", None)
    if expected is None:
        return
    got = tuple(x.shape[1:] if batched else x.shape)
    if len(expected) == 1 and expected[0] is not None:
        fits = math.prod(got) == expected[0]
    else:
        fits = len(got) == len(expected) and all(e is None or e == g
                                                 for e, g in zip(expected, got))
    if not fits:
        single = batched and len(expected) == x.dim() and all(
            e is None or e == g for e, g in zip(expected, x.shape))
        shown = "(" + ", ".join("*" if e is None else str(e) for e in expected) + \
            ("," if len(expected) == 1 else "") + ")"
        lead = "(n, *" + shown + ")" if batched else shown
        raise ValueError(
            f"{name} have shape {tuple(x.shape)} but {type(model).__name__} takes inputs "
            f"{lead} (input_shape={shown}); reshape them"
            + (": this looks like one sample, add a batch dimension with x.unsqueeze(0)."
               if single else "."))


def check_model_finite(model: nn.Module) -> None:
    """Raise ``ValueError`` if any parameter or buffer of ``model`` is NaN/Inf."""
    for kind, items in (("parameter", model.named_parameters()), ("buffer", model.named_buffers())):
        for name, tensor in items:
            if tensor.is_floating_point():
                check_finite(tensor.detach(), f"model {kind} '{name}'")


def require_eval_mode(model: nn.Module) -> None:
    """Refuse a model whose BatchNorm/Dropout layers are in training mode.

    Spectral operators and attribution probes describe one fixed function; in training
    mode BatchNorm mixes the samples of a batch and Dropout is random. BatchNorm without
    running statistics (``track_running_stats=False``) mixes them in eval mode too, so it is
    refused in any mode.
    """
    culprits = [name or type(m).__name__ for name, m in model.named_modules()
                if m.training and isinstance(m, _MODE_DEPENDENT)]
    if culprits:
        shown = ", ".join(culprits[:3]) + (", ..." if len(culprits) > 3 else "")
        raise ValueError(
            f"model is in train mode and has mode-dependent layers ({shown}); "
            "call model.eval() first."
        )
    batch_stats = [f"'{name}' ({type(m).__name__})" for name, m in model.named_modules()
                   if isinstance(m, nn.modules.batchnorm._BatchNorm)
                   and (not m.track_running_stats or m.running_mean is None)]
    if batch_stats:
        raise ValueError(
            f"layer {batch_stats[0]}" + (f" and {len(batch_stats) - 1} more" if
                                         len(batch_stats) > 1 else "")
            + " has track_running_stats=False, so even in eval mode it normalises with the "
            "batch's own statistics and the samples interact; build it with "
            "track_running_stats=True (and train or load its running statistics), or use a "
            "per-sample norm such as nn.GroupNorm.")


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """Turn ``'auto'``, ``'cpu'``, ``'cuda'``, ``'cuda:N'`` or ``None`` into a usable device.

    ``'auto'`` (and ``None``) means CUDA when available, else the CPU.
    """
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(
            f"device={device!r} is not a device name; use 'auto', 'cpu', 'cuda' or 'cuda:N'."
        ) from err
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"device={device!r} was asked for but CUDA is not available on this machine; "
                "use device='cpu' or 'auto'."
            )
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise ValueError(
                f"device={device!r} does not exist: this machine has "
                f"{torch.cuda.device_count()} CUDA device(s)."
            )
    elif resolved.type not in ("cpu", "mps"):
        raise ValueError(f"device={device!r} is not supported; use 'auto', 'cpu' or 'cuda'.")
    return resolved

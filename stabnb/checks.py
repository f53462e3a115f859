"""Argument checks shared by every module: finite tensors, eval mode, devices.

Each check raises ``ValueError`` naming the value it received and what to do instead;
none uses ``assert`` (``python -O`` strips those).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["check_finite", "check_model_finite", "require_eval_mode", "resolve_device"]

# Layers whose forward pass differs between train() and eval().
_MODE_DEPENDENT = (nn.modules.batchnorm._BatchNorm, nn.modules.dropout._DropoutNd, nn.Dropout)


def check_finite(tensor: torch.Tensor, name: str) -> None:
    """Raise ``ValueError`` if ``tensor`` holds NaN or Inf, naming ``name`` and the count."""
    bad = ~torch.isfinite(tensor)
    if bool(bad.any()):
        raise ValueError(
            f"{name} contains {int(bad.sum())} non-finite value(s) (NaN/Inf) out of "
            f"{tensor.numel()}; clean or drop those entries before calling."
        )


def check_model_finite(model: nn.Module) -> None:
    """Raise ``ValueError`` if any parameter or buffer of ``model`` is NaN/Inf."""
    for kind, items in (("parameter", model.named_parameters()), ("buffer", model.named_buffers())):
        for name, tensor in items:
            if tensor.is_floating_point():
                check_finite(tensor.detach(), f"model {kind} '{name}'")


def require_eval_mode(model: nn.Module) -> None:
    """Refuse a model whose BatchNorm/Dropout layers are in training mode.

    Spectral operators and attribution probes describe one fixed function; in training
    mode BatchNorm mixes the samples of a batch and Dropout is random.
    """
    culprits = [name or type(m).__name__ for name, m in model.named_modules()
                if m.training and isinstance(m, _MODE_DEPENDENT)]
    if culprits:
        shown = ", ".join(culprits[:3]) + (", ..." if len(culprits) > 3 else "")
        raise ValueError(
            f"model is in train mode and has mode-dependent layers ({shown}); "
            "call model.eval() first."
        )


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

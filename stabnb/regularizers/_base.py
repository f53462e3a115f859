"""What every penalty shares: argument checks, the seeded generator and carried state, the
shared forward pass and BatchNorm's running statistics kept out of the penalty's own passes."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import nn


def _check_strength(strength: float) -> float:
    strength = float(strength)
    if not strength >= 0.0 or strength == float("inf"):
        raise ValueError(f"strength={strength!r} must be a finite λ ≥ 0; use 0 to switch the "
                         "penalty off, or a positive value such as 1e-3.")
    return strength


def _check_count(name: str, value: int) -> int:
    if isinstance(value, bool) or int(value) != value or value < 1:
        raise ValueError(f"{name}={value!r} must be a positive integer, e.g. {name}=1.")
    return int(value)


def check_sigma(sigma: float) -> float:
    """σ of a Gaussian perturbation, checked: finite and > 0 (pixel units)."""
    if not float(sigma) > 0 or float(sigma) == float("inf"):
        raise ValueError(f"sigma={sigma!r} must be a finite σ > 0 (pixel units), e.g. 0.05.")
    return float(sigma)


def check_clip(clip: Sequence[float] | None) -> tuple[float, float] | None:
    """A ``(low, high)`` pixel range with low < high, or None (no clipping)."""
    if clip is None:
        return None
    low, high = (float(v) for v in clip)
    if not low < high:
        raise ValueError(f"clip={clip!r} must be (low, high) with low < high, e.g. (0.0, 1.0), "
                         "or None for no clipping.")
    return (low, high)


def noisy_copy(x: torch.Tensor, sigma: float, generator: torch.Generator,
               clip: tuple[float, float] | None) -> torch.Tensor:
    """``clip(x + σξ)``, ξ ~ N(0, I) from ``generator`` (no clipping when ``clip`` is None)."""
    noisy = x + sigma * torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return noisy if clip is None else noisy.clamp(*clip)


def _unit(v: torch.Tensor) -> torch.Tensor:
    """Normalise each sample (leading dim) to unit norm; an all-zero sample stays zero."""
    norms = v.flatten(1).norm(dim=1).view(-1, *([1] * (v.dim() - 1)))
    return torch.where(norms > 0, v / torch.where(norms > 0, norms, 1.0), v)


def shared_forward_inputs(regularizer: Any, inputs: torch.Tensor) -> torch.Tensor | None:
    """``inputs`` detached with ``requires_grad`` if ``regularizer`` shares the forward pass.

    Returns ``None`` for a regulariser without ``shares_forward = True`` (any plain callable):
    the caller then runs ``reg(model, x, y)``. Otherwise the caller runs its forward pass on the
    returned tensor ``x`` and calls ``reg(model, x, y, logits=logits)``.
    """
    if regularizer is None or not getattr(regularizer, "shares_forward", False):
        return None
    return inputs.detach().requires_grad_(True)


def _shared_logits(inputs: torch.Tensor, logits: torch.Tensor) -> None:
    if not inputs.requires_grad or not logits.requires_grad:
        raise ValueError("logits= must be the model's output on inputs that require grad: run "
                         "x = inputs.detach().requires_grad_(True); logits = model(x); "
                         "reg(model, x, y, logits=logits) (see shared_forward_inputs).")
    if logits.dim() != 2 or len(logits) != len(inputs):
        raise ValueError(f"logits of shape {tuple(logits.shape)} do not match inputs of shape "
                         f"{tuple(inputs.shape)}; expected ({len(inputs)}, C).")


def _input_graph(model: nn.Module, inputs: torch.Tensor,
                 logits: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x, model(x))`` with x requiring grad: the training pass's when ``logits`` is given,
    else a forward pass of its own (BatchNorm running statistics left untouched)."""
    if logits is not None:
        _shared_logits(inputs, logits)
        return inputs, logits
    x = inputs.detach().requires_grad_(True)
    with _batchnorm_stats_kept(model):
        return x, model(x)


def _has_train_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(module, nn.modules.batchnorm._BatchNorm) and module.training
               for module in model.modules())


@contextlib.contextmanager
def _batchnorm_stats_kept(model: nn.Module) -> Iterator[None]:
    """Run the penalty's own forward passes on throwaway copies of BatchNorm's running stats.

    In train mode every forward pass updates ``running_mean``/``running_var``/
    ``num_batches_tracked`` in place; the penalty's extra passes must not count as extra
    batches. The buffers are swapped for clones and the originals put back afterwards (not
    copied back in place, which would invalidate the tensors the double-backward graph saved).
    """
    saved = [(module, dict(module.named_buffers(recurse=False))) for module in model.modules()
             if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.training]
    for module, buffers in saved:
        for name, buffer in buffers.items():
            setattr(module, name, buffer.clone())
    try:
        yield
    finally:
        for module, buffers in saved:
            for name, buffer in buffers.items():
                setattr(module, name, buffer)


class _Penalty:
    """Strength λ, a seeded generator made on first use on the inputs' device, and its state.

    ``repr`` lists the settings (``_SETTINGS``) and nothing else: :func:`stabnb.train.train`
    hashes it into the checkpoint key, so equal settings must give equal text.
    """

    _SETTINGS: tuple[str, ...]
    shares_forward = False

    def __init__(self, strength: float, seed: int):
        self.strength = _check_strength(strength)
        self.seed = int(seed)
        self.generator: torch.Generator | None = None
        self._pending_generator: dict[str, Any] | None = None

    def __repr__(self) -> str:
        settings = ", ".join(f"{name}={getattr(self, name)!r}" for name in self._SETTINGS)
        return f"{type(self).__name__}({settings})"

    def _generator_on(self, device: torch.device) -> torch.Generator:
        if self.generator is None or self.generator.device != device:
            self.generator = torch.Generator(device=device).manual_seed(self.seed)
            pending = self._pending_generator
            if pending is not None and pending["device"] == str(device):
                self.generator.set_state(pending["state"])
                self._pending_generator = None
        return self.generator

    def reset(self) -> None:
        """Forget carried state: the next call starts from fresh draws of the seeded generator."""
        self.generator = None
        self._pending_generator = None

    def state_dict(self) -> dict[str, Any]:
        """Carried state for checkpoints (tensors by reference, as ``nn.Module.state_dict``)."""
        if self.generator is None:
            return {"generator": self._pending_generator}
        return {"generator": {"device": str(self.generator.device),
                              "state": self.generator.get_state()}}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` output; the generator resumes on first use on its device."""
        self.generator = None
        self._pending_generator = state.get("generator")


class _SlotVectorPenalty(_Penalty):
    """A penalty carrying one unit vector per batch slot, ``vectors`` of shape (slots, ...)."""

    def __init__(self, strength: float, seed: int):
        super().__init__(strength, seed)
        self.vectors: torch.Tensor | None = None

    def _start_vectors(self, x: torch.Tensor) -> torch.Tensor:
        """Carried vectors for the first ``len(x)`` slots; fresh Gaussian draws where none fit."""
        carried = self.vectors
        if carried is None or carried.shape[1:] != x.shape[1:]:
            carried = x.new_zeros((0, *x.shape[1:]))
        carried = carried[: len(x)].to(device=x.device, dtype=x.dtype)
        start = torch.cat([carried, x.new_zeros((len(x) - len(carried), *x.shape[1:]))])
        missing = start.flatten(1).norm(dim=1) == 0
        if bool(missing.any()):
            start[missing] = _unit(torch.randn((int(missing.sum()), *x.shape[1:]),
                                               generator=self._generator_on(x.device),
                                               device=x.device, dtype=x.dtype))
        return start

    def _carry(self, new: torch.Tensor) -> None:
        new = _unit(new.detach())
        old = self.vectors
        if old is not None and old.shape[1:] == new.shape[1:] and len(old) > len(new):
            new = torch.cat([new, old[len(new):].to(device=new.device, dtype=new.dtype)])
        self.vectors = new

    def reset(self) -> None:
        super().reset()
        self.vectors = None

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "vectors": self.vectors}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self.vectors = state.get("vectors")

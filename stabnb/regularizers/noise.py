"""Gaussian noise augmentation as a regulariser: a control, not a spectral penalty
(``docs/reconstruction.md``, "Controls")."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ._base import _batchnorm_stats_kept, _Penalty, check_clip, check_sigma, noisy_copy


class NoiseAugmentation(_Penalty):
    """λ · CE(f(clip(x + δ)), y) with δ ~ N(0, σ²I): training on noisy copies beside the clean
    batch (λ = 1 weighs them equally).

    The control for the input-curvature penalty: the same perturbation family at the same σ
    (the probe's training family), without any spectral or curvature term. If a penalty's
    stability gain is no larger than this control's, it says nothing about spectra. BatchNorm's
    running statistics are left as the clean pass set them. Cost: one forward and backward pass
    on n noisy inputs.

    Args:
        strength: λ ≥ 0.
        sigma: σ of δ in pixel units. Default: 0.05.
        clip: ``(low, high)`` the noisy copy is clipped to, or None. Default: ``(0.0, 1.0)``.
        seed: seed of the generator drawing δ. Default: 0.

    Examples::

        >>> from stabnb.models import MLP
        >>> model = MLP(4, (8,), 3)
        >>> reg = NoiseAugmentation(1.0, sigma=0.05)
        >>> x, y = torch.rand(5, 4), torch.tensor([0, 1, 2, 0, 1])
        >>> bool(reg(model, x, y) > 0)
        True
    """

    _SETTINGS = ("strength", "sigma", "clip", "seed")

    def __init__(self, strength: float, *, sigma: float = 0.05,
                 clip: tuple[float, float] | None = (0.0, 1.0), seed: int = 0):
        super().__init__(strength, seed)
        self.sigma = check_sigma(sigma)
        self.clip = check_clip(clip)

    def __call__(self, model: nn.Module, inputs: torch.Tensor,
                 targets: torch.Tensor | None = None) -> torch.Tensor:
        """The penalty ``λ · CE(f(clip(x + δ)), y)``."""
        if targets is None or targets.shape != inputs.shape[:1]:
            raise ValueError(f"NoiseAugmentation needs integer class labels of shape "
                             f"({len(inputs)},) as targets; got "
                             f"{None if targets is None else tuple(targets.shape)}.")
        x = inputs.detach()
        noisy = noisy_copy(x, self.sigma, self._generator_on(x.device), self.clip)
        with _batchnorm_stats_kept(model):
            logits = model(noisy)
        return self.strength * F.cross_entropy(logits, targets)

"""Is a stable map still a meaningful one? Input dependence, a model-randomisation sanity
check and a deletion faithfulness score matched to the image's foreground.

Our reconstruction (``docs/reconstruction.md``, "Stable but still meaningful"):

- :func:`input_dependence`: how far the map of image i is from the map of another image of
  the same predicted class, ``‖a(x_j) − a(x_i)‖/‖a(x_i)‖``, the yardstick for a perturbation
  change (a map that never changes under noise because it never changes at all is no use);
- :func:`model_randomisation`: Adebayo et al. (2018, https://arxiv.org/abs/1810.03292):
  re-initialise the layers from the output down, one more per stage, and rank-correlate
  ``|a|`` with the trained model's (a map that survives randomisation fails the check);
- :func:`deletion_faithfulness`: the drop of the target class's probability when the
  top-attributed features are set to a baseline, against deleting as many features at random
  among the image's foreground (so "the top features lie on the strokes" earns nothing).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..models import initialize
from ..stats import spearman
from .methods import attribution_method
from .metrics import relative_l2

__all__ = ["same_class_partners", "input_dependence", "RandomisationCheck",
           "model_randomisation", "DELETION_FRACTIONS", "DeletionCheck",
           "deletion_faithfulness"]

DELETION_FRACTIONS = (0.02, 0.05, 0.1, 0.2, 0.3)
"""Default grid of deleted fractions q (MNIST digits cover about 19 % of the pixels)."""


def same_class_partners(classes: Tensor) -> Tensor:
    """``(n,)`` index of each image's partner: the next image (in order, wrapping round) with
    the same class; ``-1`` for an image alone in its class."""
    classes = torch.as_tensor(classes).flatten()
    partner = torch.full_like(classes, -1, dtype=torch.long)
    for value in classes.unique():
        members = (classes == value).nonzero().flatten()
        if members.numel() > 1:
            partner[members] = members.roll(-1)
    return partner


def input_dependence(attributions: Tensor, classes: Tensor) -> Tensor:
    """``(n,)`` ``‖a_j − a_i‖₂/‖a_i‖₂`` with j = :func:`same_class_partners` of i; NaN where i is
    alone in its class or ``a_i = 0``. ``attributions`` ``(n, *shape)``, ``classes`` ``(n,)``."""
    if attributions.shape[0] != torch.as_tensor(classes).numel():
        raise ValueError(f"attributions has {attributions.shape[0]} rows but classes "
                         f"{torch.as_tensor(classes).numel()}; pass one class per map.")
    maps = attributions.flatten(1)
    partner = same_class_partners(classes).to(maps.device)
    distance = relative_l2(maps, maps[partner.clamp_min(0)].unsqueeze(1))[:, 0]
    return distance.masked_fill(partner < 0, math.nan)


@dataclass(frozen=True, eq=False)
class RandomisationCheck:
    """Cascading model randomisation.

    Attributes:
        layers: names of the layers re-initialised, output first; stage s has re-initialised
            ``layers[:s + 1]``.
        spearman: ``(stages, n)`` Spearman ρ between ``|a|`` of the trained and the stage's
            model, same target class (one row, the last stage, without ``cascade``).
    """

    layers: tuple[str, ...]
    spearman: Tensor

    @property
    def randomised(self) -> Tensor:
        """``(n,)`` ρ after every layer is re-initialised (near 0 passes, near 1 fails)."""
        return self.spearman[-1]


def model_randomisation(model: nn.Module, inputs: Tensor, target: Tensor | None = None, *,
                        generator: torch.Generator, method: str = "saliency",
                        cascade: bool = True) -> RandomisationCheck:
    """Re-initialise every ``Linear``/``Conv2d`` layer, from the output down, cumulatively.

    Each stage redraws one more layer with :func:`stabnb.models.initialize` from ``generator``
    (PyTorch's default ``U(±1/√fan_in)``; batch-norm statistics and affine terms are kept), then
    attributes the same inputs for the same classes. The trained model is not changed.

    Args:
        model: eval mode. inputs: ``(n, *input_shape)``.
        target: classes attributed. Default: the trained model's predictions.
        generator: draws the new weights (any device; values are copied to the layer's).
        method: a deterministic method name of :data:`stabnb.attribution.METHODS`.
        cascade: attribute after every stage; False attributes only after the last (the same
            redraws, so ``randomised`` is unchanged, at one attribution pass instead of one
            per layer; ``spearman`` then has one row). Default: True.

    Raises:
        ValueError: a stochastic method (SmoothGrad), or a model without such layers.
    """
    if attribution_method(method, model).stochastic:
        raise ValueError(f"method={method!r} draws noise of its own; use a deterministic "
                         "method such as 'saliency' for the randomisation check.")
    x = inputs.detach()
    if target is None:
        with torch.no_grad():
            target = model(x).argmax(1)
    reference = attribution_method(method, model)(x, target).flatten(1).abs()
    randomised = copy.deepcopy(model).eval()
    layers = [(name, layer) for name, layer in randomised.named_modules()
              if isinstance(layer, (nn.Linear, nn.Conv2d))][::-1]
    if not layers:
        raise ValueError("model has no Linear or Conv2d layer to re-initialise.")
    stages = []
    for index, (_, layer) in enumerate(layers):
        initialize(layer, generator)
        if cascade or index == len(layers) - 1:
            stage = attribution_method(method, randomised)(x, target).flatten(1).abs()
            stages.append(spearman(reference, stage))
    return RandomisationCheck(tuple(name for name, _ in layers), torch.stack(stages))


@dataclass(frozen=True, eq=False)
class DeletionCheck:
    """Deletion curves of the top-attributed and of matched random features.

    Attributes:
        fractions: the grid q₁ < … < q_m of deleted fractions.
        top_drop, random_drop: ``(n, m)`` ``p_c(x) − p_c(x with the features deleted)``.
        deletion_auc, random_auc: ``(n,)`` the mean drop over ``[0, q_m]`` (trapezoid through
            ``(0, 0)`` and the grid, divided by ``q_m``).
        gain: ``(n,)`` ``deletion_auc − random_auc`` (larger: more faithful).
    """

    fractions: tuple[float, ...]
    top_drop: Tensor
    random_drop: Tensor
    deletion_auc: Tensor
    random_auc: Tensor
    gain: Tensor


def _curve_area(fractions: Tensor, drops: Tensor) -> Tensor:
    grid = torch.cat([fractions.new_zeros(1), fractions])
    curve = torch.cat([drops.new_zeros(drops.shape[0], 1), drops], dim=1)
    return torch.trapezoid(curve, grid, dim=1) / fractions[-1]


def deletion_faithfulness(model: nn.Module, inputs: Tensor, attributions: Tensor,
                          target: Tensor | None = None, *, generator: torch.Generator,
                          fractions: tuple[float, ...] = DELETION_FRACTIONS,
                          baseline: float = 0.0,
                          foreground_threshold: float = 0.1) -> DeletionCheck:
    """Deletion AUC of the attribution's order against a foreground-matched random order.

    Features are the input's entries (a colour pixel has three). For q in ``fractions`` the
    ``max(1, round(q·d))`` features of largest ``|a|`` (ties by index) are set to ``baseline``
    and the drop of the softmax probability of class c is recorded. The matched random order
    puts the image's foreground ``{i : |x_i − baseline| > foreground_threshold}`` first, in
    random order, then the background in random order, so up to the foreground's size the same
    number of foreground features is deleted at random (beyond it, background fills the rest).

    Args:
        model: eval mode. inputs: ``(n, *input_shape)``; attributions: the same shape.
        target: classes. Default: the model's predictions.
        generator: draws the random order (on the inputs' device).
        fractions: increasing, in (0, 1]. Default: :data:`DELETION_FRACTIONS`.
        baseline: the deleted features' value. Default: 0 (black).
        foreground_threshold: Default: 0.1.

    Raises:
        ValueError: shapes that differ, or a bad grid.
    """
    if attributions.shape != inputs.shape:
        raise ValueError(f"attributions {tuple(attributions.shape)} must have the inputs' shape "
                         f"{tuple(inputs.shape)}.")
    grid = torch.tensor(fractions, dtype=inputs.dtype, device=inputs.device)
    if grid.dim() != 1 or not len(grid) or not bool(((grid > 0) & (grid <= 1)).all()) \
            or not bool((grid.diff() > 0).all()):
        raise ValueError(f"fractions={fractions} must increase within (0, 1], e.g. "
                         f"{DELETION_FRACTIONS}.")
    x = inputs.detach().flatten(1)
    n, d = x.shape
    with torch.no_grad():
        probabilities = model(inputs).softmax(1)
    if target is None:
        target = probabilities.argmax(1)
    clean = probabilities.gather(1, target[:, None])[:, 0]
    background = ((x - baseline).abs() <= foreground_threshold).to(x.dtype)
    noise = torch.rand((n, d), generator=generator, device=generator.device, dtype=x.dtype)
    orders = {
        "top": attributions.detach().flatten(1).abs().argsort(dim=1, descending=True, stable=True),
        "random": (noise.to(x.device) + background).argsort(dim=1, stable=True),
    }
    counts = [max(1, round(float(q) * d)) for q in fractions]
    drops = {}
    for name, order in orders.items():
        rows = []
        for count in counts:
            deleted = x.scatter(1, order[:, :count], baseline).view_as(inputs)
            with torch.no_grad():
                rows.append(clean - model(deleted).softmax(1).gather(1, target[:, None])[:, 0])
        drops[name] = torch.stack(rows, 1)
    top_auc, random_auc = _curve_area(grid, drops["top"]), _curve_area(grid, drops["random"])
    return DeletionCheck(tuple(float(q) for q in fractions), drops["top"], drops["random"],
                         top_auc, random_auc, top_auc - random_auc)

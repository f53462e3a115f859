"""Attribution stability: how far a gradient explanation moves when its input is perturbed.

Protocol (``docs/reconstruction.md``, "Attribution stability"; the paper's exact settings are unknown, so the
defaults here are our reconstruction): perturb each input K times (Gaussian σ or a uniform
L∞ ball, in [0, 1] pixel units, clipped to the pixel range), attribute the clean and the
perturbed inputs with a Captum method for the same target class, and report per sample and
per draw

- relative L2 change ``‖a(x+δ) − a(x)‖₂ / ‖a(x)‖₂`` (its max over draws is Captum's
  ``sensitivity_max``, :meth:`AttributionStability.sensitivity_max` runs Captum on the same draws),
- cosine similarity ``⟨a(x+δ), a(x)⟩ / (‖a(x+δ)‖ ‖a(x)‖)``,
- Spearman rank correlation of the two attribution vectors (average ranks for ties),
- top-k intersection ``|T_k(|a(x)|) ∩ T_k(|a(x+δ)|)| / k``, k a fraction of the features.

Methods are Captum objects (wrapped, not re-derived): :data:`METHODS` maps names to
factories, and any ``captum.attr.Attribution`` object can be passed instead.
"""

from __future__ import annotations

import inspect
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from captum.attr import (
    Attribution,
    InputXGradient,
    IntegratedGradients,
    NoiseTunnel,
    Saliency,
)
from captum.metrics import sensitivity_max as captum_sensitivity_max
from torch import Tensor, nn

from .checks import (
    check_finite,
    check_input_shape,
    check_pixel_inputs,
    require_eval_mode,
)
from .io import to_jsonable
from .rng import resolve_generator
from .stats import average_ranks, rank_correlation, sort, sorted_average_ranks, spearman

__all__ = [
    "METHODS", "PERTURBATIONS", "METRICS", "AttributionMethod", "attribution_method",
    "AttributionStability", "AttributionStabilityResult", "average_ranks", "relative_l2",
    "cosine_similarity", "spearman_correlation", "top_k_intersection",
]

PERTURBATIONS = ("gaussian", "linf")
METRICS = ("relative_l2", "cosine", "spearman", "top_k")


# --------------------------------------------------------------------------- methods

@dataclass(frozen=True)
class AttributionMethod:
    """A Captum attribution with its per-call keyword arguments fixed.

    Attributes:
        name: registry name, or the class name of a Captum object passed in.
        attribution: the Captum object whose ``attribute`` is called.
        kwargs: keyword arguments of ``attribute`` other than ``inputs`` and ``target``.
        evaluations: model evaluations per input row (``n_steps`` for integrated gradients,
            ``nt_samples`` for SmoothGrad, else 1); the probe's memory cap counts these.
        stochastic: whether ``attribute`` draws from torch's global random stream
            (``NoiseTunnel``); the probe then seeds it from its own generator.
    """

    name: str
    attribution: Attribution
    kwargs: dict[str, Any] = field(default_factory=dict)
    evaluations: int = 1
    stochastic: bool = False

    def __call__(self, inputs: Tensor, target: Tensor, **overrides: Any) -> Tensor:
        """Attributions of ``inputs`` for classes ``target`` (one per row), detached."""
        kwargs = {**self.kwargs, **overrides}
        inputs = inputs.detach().requires_grad_(True)
        return self.attribution.attribute(inputs, target=target, **kwargs).detach()


def _saliency(model: nn.Module, *, abs: bool = False) -> AttributionMethod:  # noqa: A002
    return AttributionMethod("saliency", Saliency(model), {"abs": abs})


def _input_x_gradient(model: nn.Module) -> AttributionMethod:
    return AttributionMethod("input_x_gradient", InputXGradient(model))


def _integrated_gradients(model: nn.Module, *, baselines: float | Tensor | None = None,
                          n_steps: int = 50, method: str = "gausslegendre",
                          internal_batch_size: int | None = None) -> AttributionMethod:
    kwargs = {"baselines": baselines, "n_steps": n_steps, "method": method,
              "internal_batch_size": internal_batch_size}
    return AttributionMethod("integrated_gradients", IntegratedGradients(model), kwargs,
                             evaluations=n_steps)


def _smoothgrad(model: nn.Module, *, nt_samples: int = 10, stdevs: float = 0.15,
                nt_samples_batch_size: int | None = None,
                abs: bool = False) -> AttributionMethod:  # noqa: A002
    kwargs = {"nt_type": "smoothgrad", "nt_samples": nt_samples, "stdevs": stdevs,
              "nt_samples_batch_size": nt_samples_batch_size, "abs": abs}
    return AttributionMethod("smoothgrad", NoiseTunnel(Saliency(model)), kwargs,
                             evaluations=nt_samples, stochastic=True)


METHODS: dict[str, Callable[..., AttributionMethod]] = {
    "saliency": _saliency,
    "input_x_gradient": _input_x_gradient,
    "integrated_gradients": _integrated_gradients,
    "smoothgrad": _smoothgrad,
}
"""Method factories ``(model, **method_kwargs) -> AttributionMethod``.

- ``saliency``: Captum ``Saliency``, the gradient ``∇_x f_c(x)``. ``abs=False`` by default
  (Captum's own default is ``abs=True``): the raw gradient is the object whose stability R5
  bounds; pass ``abs=True`` for the |gradient| maps of Simonyan et al.
- ``input_x_gradient``: ``x ⊙ ∇_x f_c(x)``.
- ``integrated_gradients``: ``(x − x̄) ⊙ ∫₀¹ ∇f_c(x̄ + α(x − x̄)) dα``; ``baselines`` (Default:
  zeros, a black image; a float, a tensor of one input's shape, or one per sample),
  ``n_steps`` (Default: 50), ``method`` (Default: ``"gausslegendre"``), ``internal_batch_size``.
- ``smoothgrad``: ``NoiseTunnel(Saliency)``, the mean gradient over ``nt_samples`` (Default: 10)
  copies with Gaussian noise of std ``stdevs`` pixels (Default: 0.15, Smilkov et al.'s 10–20 %
  of the range); ``abs`` as for saliency. Its own noise is part of what the probe measures.
"""


def attribution_method(method: str | Attribution | AttributionMethod, model: nn.Module,
                       **method_kwargs: Any) -> AttributionMethod:
    """Resolve a method name from :data:`METHODS` or wrap a Captum ``Attribution`` object.

    Args:
        method: a name in :data:`METHODS`, a Captum attribution object (its ``attribute`` is
            called with ``method_kwargs``), or an :class:`AttributionMethod`.
        model: the network the named methods attribute (ignored for objects, which hold theirs).
        **method_kwargs: the factory's options for a name; ``attribute`` keyword arguments for
            a Captum object.

    Raises:
        ValueError: unknown name, or options the named method does not take.
    """
    if isinstance(method, AttributionMethod):
        if method_kwargs:
            raise ValueError(f"method_kwargs={sorted(method_kwargs)} cannot be combined with an "
                             "AttributionMethod; set its kwargs instead.")
        return method
    if isinstance(method, Attribution):
        if isinstance(method, NoiseTunnel):
            inner = method_kwargs.get("n_steps", 50) if isinstance(
                method.attribution_method, IntegratedGradients) else 1
            evaluations = method_kwargs.get("nt_samples", 5) * inner
        elif isinstance(method, IntegratedGradients):
            evaluations = method_kwargs.get("n_steps", 50)
        else:
            evaluations = 1
        return AttributionMethod(type(method).__name__, method, dict(method_kwargs),
                                 evaluations=int(evaluations),
                                 stochastic=isinstance(method, NoiseTunnel))
    if method not in METHODS:
        raise ValueError(f"method={method!r} is unknown; choose one of {sorted(METHODS)} or pass "
                         "a captum.attr Attribution object.")
    factory = METHODS[method]
    accepted = [p for p in inspect.signature(factory).parameters if p != "model"]
    unknown = sorted(set(method_kwargs) - set(accepted))
    if unknown:
        raise ValueError(f"method_kwargs {unknown} are not options of {method!r}; it takes "
                         f"{accepted or 'none'}.")
    return factory(model, **method_kwargs)


# --------------------------------------------------------------------------- metrics

def relative_l2(reference: Tensor, perturbed: Tensor) -> Tensor:
    """Relative L2 change ``‖p − r‖₂ / ‖r‖₂`` along the last dim.

    Args:
        reference: ``(..., d)`` attributions at the clean inputs.
        perturbed: ``(..., K, d)`` attributions at K perturbed copies of each input.

    Returns:
        ``(..., K)``; NaN where ``‖r‖ = 0`` (undefined; :class:`AttributionStability` warns).
    """
    reference = reference.unsqueeze(-2)
    norm = reference.norm(dim=-1)
    change = (perturbed - reference).norm(dim=-1) / torch.where(norm > 0, norm, 1)
    return change.masked_fill(norm == 0, math.nan)


def cosine_similarity(reference: Tensor, perturbed: Tensor) -> Tensor:
    """Cosine ``⟨p, r⟩ / (‖p‖ ‖r‖)`` along the last dim, ``(..., d), (..., K, d) -> (..., K)``.

    A zero vector has no direction; its cosine with anything is defined as 0.
    """
    reference = reference.unsqueeze(-2)
    dot = (perturbed * reference).sum(-1)
    norms = perturbed.norm(dim=-1) * reference.norm(dim=-1)
    return torch.where(norms > 0, dot / torch.where(norms > 0, norms, 1), 0).clamp(-1, 1)


def spearman_correlation(reference: Tensor, perturbed: Tensor) -> Tensor:
    """Spearman ρ (:func:`stabnb.stats.spearman`, ties -> average ranks),
    ``(..., d), (..., K, d) -> (..., K)``; the reference is ranked once.

    When a vector is constant its ranks have no variance; ρ is then defined as 1 if both
    vectors are constant (same ranking) and 0 otherwise.
    """
    return spearman(reference.unsqueeze(-2), perturbed).to(perturbed.dtype)


def _sorted_top_k(ordered: Tensor, order: Tensor, k: int) -> Tensor:
    """Indices of the k largest magnitudes from an ascending sort (``values.sort(-1)``).

    They lie among the k smallest and the k largest values, so only those 2k candidates
    are compared: no second sort of ``|values|``.
    """
    if 2 * k < ordered.shape[-1]:
        ordered = torch.cat([ordered[..., :k], ordered[..., -k:]], dim=-1)
        order = torch.cat([order[..., :k], order[..., -k:]], dim=-1)
    return order.gather(-1, ordered.abs().topk(k, dim=-1).indices)


def _top_k_overlap(reference_top: Tensor, perturbed_top: Tensor, num_features: int) -> Tensor:
    """``|T_r ∩ T_p| / k`` from top-k index sets ``(..., k)`` and ``(..., K, k)``."""
    marked = reference_top.new_zeros((*reference_top.shape[:-1], num_features), dtype=torch.bool)
    marked.scatter_(-1, reference_top, True)
    hits = marked.unsqueeze(-2).expand(*perturbed_top.shape[:-1], num_features).gather(
        -1, perturbed_top)
    return hits.sum(-1) / perturbed_top.shape[-1]


def top_k_intersection(reference: Tensor, perturbed: Tensor, k: int) -> Tensor:
    """Top-k overlap ``|T_k(|r|) ∩ T_k(|p|)| / k``, ``(..., d), (..., K, d) -> (..., K)``.

    ``T_k`` holds the indices of the k largest magnitudes, read off an ascending sort of the
    values (:func:`_sorted_top_k`, the sort :meth:`AttributionStability.measure` shares with
    the ranks); ties at the k-th magnitude are broken by the sort order (deterministic on
    one device, otherwise unspecified).
    """
    d = reference.shape[-1]
    if not 1 <= k <= d:
        raise ValueError(f"k={k} must lie in [1, {d}] (the number of features).")
    overlap = _top_k_overlap(_sorted_top_k(*sort(reference), k),
                             _sorted_top_k(*sort(perturbed), k), d)
    return overlap.to(perturbed.dtype)


# --------------------------------------------------------------------------- result

@dataclass(frozen=True, eq=False)
class AttributionStabilityResult:
    """Per-sample and per-draw attribution stability from :meth:`AttributionStability.measure`.

    Per-sample tensors ``(n,)`` are means over the K draws of the per-draw ``(n, K)`` ones.
    Samples whose clean attribution is all zero (``valid`` False) have NaN in every metric:
    relative change is undefined there, and :meth:`summary` excludes them explicitly.

    Attributes:
        relative_l2, cosine, spearman, top_k: ``(n,)`` means over draws.
        relative_l2_draws, cosine_draws, spearman_draws, top_k_draws: ``(n, K)``.
        attribution_norm: ``(n,)`` ‖a(x)‖₂ at the clean inputs.
        perturbed_norm: ``(n, K)`` ‖a(x+δ)‖₂.
        target: ``(n,)`` classes attributed (the same for a sample's clean and perturbed copies).
        valid: ``(n,)`` bool, ``attribution_norm > 0``.
        settings: method, perturbation, radius, K, pixel range, k, memory cap, calls, seed, device.
    """

    relative_l2: Tensor
    cosine: Tensor
    spearman: Tensor
    top_k: Tensor
    relative_l2_draws: Tensor
    cosine_draws: Tensor
    spearman_draws: Tensor
    top_k_draws: Tensor
    attribution_norm: Tensor
    perturbed_norm: Tensor
    target: Tensor
    valid: Tensor
    settings: dict[str, Any]

    @property
    def sensitivity_max(self) -> Tensor:
        """``(n,)`` max relative L2 change over the draws: Captum's ``sensitivity_max``."""
        return self.relative_l2_draws.amax(dim=1)

    @property
    def num_valid(self) -> int:
        return int(self.valid.sum())

    def summary(self, confidence: float = 0.95, num_bootstrap: int = 1000,
                seed: int = 0) -> dict[str, tuple[float, float, float]]:
        """Mean over valid samples of each metric with a percentile-bootstrap interval.

        Args:
            confidence: interval coverage. Default: 0.95.
            num_bootstrap: resamples of the valid samples. Default: 1000.
            seed: seed of the CPU generator drawing the resamples. Default: 0.

        Returns:
            ``{metric: (mean, lo, hi)}`` for ``relative_l2``, ``cosine``, ``spearman``,
            ``top_k`` and ``sensitivity_max``.

        Raises:
            ValueError: bad ``confidence``/``num_bootstrap``, or no valid sample.
        """
        if not 0 < confidence < 1:
            raise ValueError(f"confidence={confidence} must lie in (0, 1), e.g. 0.95.")
        if num_bootstrap < 1:
            raise ValueError(f"num_bootstrap={num_bootstrap} must be at least 1, e.g. 1000.")
        keep = self.valid.cpu()
        m = int(keep.sum())
        if m == 0:
            raise ValueError("no sample has a non-zero clean attribution, so no metric is "
                             "defined; see the warning from measure().")
        generator = torch.Generator().manual_seed(seed)
        resample = torch.randint(0, m, (num_bootstrap, m), generator=generator)
        levels = torch.tensor([(1 - confidence) / 2, (1 + confidence) / 2], dtype=torch.float64)
        out = {}
        for name in (*METRICS, "sensitivity_max"):
            values = getattr(self, name).detach().cpu().to(torch.float64)[keep]
            lo, hi = torch.quantile(values[resample].mean(dim=1), levels).tolist()
            out[name] = (float(values.mean()), lo, hi)
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: per-sample and per-draw lists (NaN as None), summary and settings."""
        out: dict[str, Any] = {name: to_jsonable(getattr(self, name)) for name in (
            *METRICS, "sensitivity_max", "attribution_norm", "target", "valid")}
        out["draws"] = {name: to_jsonable(getattr(self, f"{name}_draws")) for name in METRICS}
        out["perturbed_norm"] = to_jsonable(self.perturbed_norm)
        out["num_valid"] = self.num_valid
        out["summary"] = ({k: dict(zip(("mean", "lo", "hi"), v)) for k, v in self.summary().items()}
                          if self.num_valid else None)
        out["settings"] = dict(self.settings)
        return out


# --------------------------------------------------------------------------- probe

class AttributionStability:
    """Attribution-stability probe: K seeded perturbations per input, four metrics per draw.

    For each input x and draw δ_k (k = 1..K), with ``x̃_k = clip(x + δ_k, pixel_range)`` and
    a = the attribution for the clean input's target class::

        relative_l2 = ‖a(x̃_k) − a(x)‖/‖a(x)‖,  cosine,  Spearman ρ,  top-k intersection.

    The clean and all n·K perturbed inputs go through the attribution method together, in as
    few calls as ``max_batch`` allows (no loop over samples or draws); all noise is drawn
    up front, so the numbers do not depend on ``max_batch``. Source: ``docs/reconstruction.md``, "Attribution
    stability" (reconstructed protocol); the max over draws of ``relative_l2`` is Captum's
    ``sensitivity_max`` (Yeh et al. 2019, https://arxiv.org/abs/1901.09392).

    Args:
        model: network mapping pixel inputs ``(n, *input_shape)`` to logits ``(n, C)``;
            eval mode.
        method: a name in :data:`METHODS` (``'saliency'``, ``'input_x_gradient'``,
            ``'integrated_gradients'``, ``'smoothgrad'``) or a Captum ``Attribution`` object.
            Default: ``'saliency'`` (raw gradient, ``abs=False``).
        perturbation: ``'gaussian'`` (δ ~ N(0, σ²I), σ = ``radius``) or ``'linf'``
            (δ uniform in the L∞ ball of ``radius``). Default: ``'gaussian'``.
        radius: σ or L∞ radius in pixel units of ``pixel_range``. Default: 0.05.
        num_samples: draws K per input. Default: 10.
        pixel_range: valid ``(low, high)`` pixel values; inputs outside are refused and
            perturbed inputs clipped to it. Default: ``(0.0, 1.0)``.
        top_k: k of the top-k intersection as a fraction of the attribution's features
            (at least one feature). Default: 0.1.
        max_batch: memory cap, in model evaluations per attribution call (an input row costs
            ``n_steps`` for integrated gradients, ``nt_samples`` for SmoothGrad, else 1).
            Default: 1024 (fastest on a 2-core CPU for the CIFAR-shaped CNN).
        method_kwargs: options for a named method (see :data:`METHODS`), or ``attribute``
            keyword arguments for a Captum object. A per-sample ``baselines`` tensor (shape of
            ``inputs``) is repeated for each sample's perturbed copies.

    Raises:
        ValueError: an unknown method or perturbation, ``radius <= 0``, ``num_samples < 1``,
            ``top_k`` outside (0, 1], an empty ``pixel_range``, ``max_batch < 1``.

    Examples::

        >>> from stabnb.models import MLP
        >>> model = MLP(4, (8,), 3).double().eval()
        >>> probe = AttributionStability(model, "saliency", radius=0.05, num_samples=4)
        >>> result = probe.measure(torch.rand(5, 4, dtype=torch.float64),
        ...                        generator=torch.Generator().manual_seed(0))
        >>> result.relative_l2_draws.shape
        torch.Size([5, 4])
    """

    def __init__(self, model: nn.Module, method: str | Attribution = "saliency", *,
                 perturbation: str = "gaussian", radius: float = 0.05, num_samples: int = 10,
                 pixel_range: tuple[float, float] = (0.0, 1.0), top_k: float = 0.1,
                 max_batch: int = 1024, method_kwargs: dict[str, Any] | None = None):
        if perturbation not in PERTURBATIONS:
            raise ValueError(f"perturbation={perturbation!r} is unknown; choose one of "
                             f"{PERTURBATIONS}.")
        if not (math.isfinite(radius) and radius > 0):
            raise ValueError(f"radius={radius} must be a positive finite number of pixel units "
                             "(e.g. 0.05 on [0, 1] pixels).")
        if int(num_samples) != num_samples or num_samples < 1:
            raise ValueError(f"num_samples={num_samples} must be a positive integer (draws K "
                             "per input), e.g. 10.")
        if not 0 < top_k <= 1:
            raise ValueError(f"top_k={top_k} is the fraction of features kept; use a value in "
                             "(0, 1], e.g. 0.1.")
        low, high = (float(v) for v in pixel_range)
        if not low < high:
            raise ValueError(f"pixel_range={pixel_range} must be (low, high) with low < high, "
                             "e.g. (0.0, 1.0).")
        if int(max_batch) != max_batch or max_batch < 1:
            raise ValueError(f"max_batch={max_batch} must be a positive integer (model "
                             "evaluations per attribution call), e.g. 1024.")
        self.model = model
        self.method = attribution_method(method, model, **(method_kwargs or {}))
        self.perturbation = perturbation
        self.radius = float(radius)
        self.num_samples = int(num_samples)
        self.pixel_range = (low, high)
        self.top_k = float(top_k)
        self.max_batch = int(max_batch)

    # ---- the verb

    def measure(self, inputs: Tensor, target: int | Tensor | None = None, *,
                generator: torch.Generator | None = None,
                seed: int = 0) -> AttributionStabilityResult:
        """Attribute the clean and K perturbed copies of each input; compare per draw.

        Cost: ``n·(K+1)·evaluations`` model evaluations (forward and backward) in
        ``⌈n·(K+1)·evaluations / max_batch⌉`` attribution calls; metrics are batched tensor
        ops (one batched sort of all attributions gives the Spearman ranks and both top-k sets).

        Args:
            inputs: ``(n, *input_shape)`` pixel values inside ``pixel_range``; moved to the
                model's device.
            target: class per sample: an int, an ``(n,)`` tensor of labels, or None for the
                class the model predicts at the clean input. Default: None.
            generator: ``torch.Generator`` on the model's device for the perturbations (and
                the SmoothGrad seeds). Default: a fresh one seeded with ``seed``.
            seed: seeds that fresh generator (the package's randomness rule,
                :mod:`stabnb.rng`). Default: 0.

        Returns:
            :class:`AttributionStabilityResult`.

        Raises:
            ValueError: model in train mode or returning NaN/Inf, inputs outside
                ``pixel_range`` or non-finite, target out of range, a generator on another
                device. Warns (``RuntimeWarning``) when clean attributions are all zero.
        """
        x, target, generator = self._prepare(inputs, target, generator, seed)
        seed = generator.initial_seed()
        n, num_draws = x.shape[0], self.num_samples
        perturbed = self.perturb(x, generator=generator)
        rows = torch.cat([x.unsqueeze(1), perturbed], dim=1).flatten(0, 1)
        sample_of_row = torch.arange(n, device=x.device).repeat_interleave(num_draws + 1)
        attributions, num_calls = self._attribute(rows, sample_of_row, x.shape, target, generator)
        attributions = attributions.reshape(n, num_draws + 1, -1)
        norms = attributions.norm(dim=-1)                          # NaN/Inf anywhere shows here
        if not bool(torch.isfinite(norms).all()):
            bad = (~torch.isfinite(attributions)).any(-1)
            if bool(bad.any()):
                raise ValueError(
                    f"attributions are NaN/Inf for {int(bad.any(1).sum())} of {n} samples "
                    f"({int(bad[:, 0].sum())} at the clean input); the model's outputs or "
                    "gradients are not finite there. Check the weights and inputs.")
            raise ValueError("attribution norms overflow; use float64 (model.double()).")
        reference, moved = attributions[:, 0], attributions[:, 1:]
        num_features = reference.shape[-1]
        k = max(1, round(self.top_k * num_features))

        norm = norms[:, 0]
        valid = norm > 0
        if not bool(valid.all()):
            zero = (~valid).nonzero().flatten().tolist()
            warnings.warn(
                f"{len(zero)} of {n} samples have an all-zero attribution at the clean input "
                f"(indices {zero[:10]}{' ...' if len(zero) > 10 else ''}); relative change is "
                "undefined there, so their metrics are NaN and summary() excludes them. "
                "Try another target, method or baseline.", RuntimeWarning, stacklevel=2)
        undefined = ~valid.unsqueeze(1)
        ordered, order = sort(attributions)           # one sort: ranks and both top-k sets
        ranks = sorted_average_ranks(ordered, order)
        top = _sorted_top_k(ordered, order, k)
        draws = {
            "relative_l2": relative_l2(reference, moved),
            "cosine": cosine_similarity(reference, moved),
            "spearman": rank_correlation(ranks[:, :1], ranks[:, 1:]).to(moved.dtype),
            "top_k": _top_k_overlap(top[:, 0], top[:, 1:], num_features).to(moved.dtype),
        }
        draws = {name: value.masked_fill(undefined, math.nan) for name, value in draws.items()}
        settings = {
            "method": self.method.name,
            "method_kwargs": {key: _describe(v) for key, v in self.method.kwargs.items()},
            "perturbation": self.perturbation, "radius": self.radius,
            "num_samples": num_draws, "pixel_range": list(self.pixel_range),
            "top_k": self.top_k, "k": k, "num_features": num_features,
            "max_batch": self.max_batch, "num_calls": num_calls, "generator_seed": seed,
            "device": str(x.device), "dtype": str(x.dtype).removeprefix("torch."),
        }
        return AttributionStabilityResult(
            **{name: value.mean(dim=1) for name, value in draws.items()},
            **{f"{name}_draws": value for name, value in draws.items()},
            attribution_norm=norm, perturbed_norm=norms[:, 1:], target=target,
            valid=valid, settings=settings)

    # ---- helpers around the verb

    def perturb(self, inputs: Tensor, *, generator: torch.Generator) -> Tensor:
        """``(n, K, *input_shape)`` copies ``clip(x + δ_k, pixel_range)``, all drawn at once.

        Gaussian: ``δ = σ·ξ``, ξ ~ N(0, I); linf: δ uniform on ``[−r, r]^d``. Clipping
        truncates the noise at the range's edges (many MNIST pixels are 0).
        """
        shape = (inputs.shape[0], self.num_samples, *inputs.shape[1:])
        options = {"generator": generator, "device": inputs.device, "dtype": inputs.dtype}
        if self.perturbation == "gaussian":
            noise = torch.randn(shape, **options) * self.radius
        else:
            noise = (torch.rand(shape, **options) * 2 - 1) * self.radius
        return (inputs.unsqueeze(1) + noise).clamp_(*self.pixel_range)

    def sensitivity_max(self, inputs: Tensor, target: int | Tensor | None = None, *,
                        generator: torch.Generator | None = None, seed: int = 0,
                        max_examples_per_batch: int | None = None) -> Tensor:
        """Captum's ``sensitivity_max`` fed the probe's perturbations, ``(n,)``.

        ``max_k ‖a(x̃_k) − a(x)‖_F / ‖a(x)‖_F`` as computed by
        ``captum.metrics.sensitivity_max`` with a ``perturb_func`` replaying :meth:`perturb`;
        given a generator in the same state it equals ``measure(...).sensitivity_max`` for
        deterministic methods (Captum divides by 1 where ``a(x) = 0``; ``measure`` gives NaN).

        Args:
            inputs, target, generator, seed: as for :meth:`measure`.
            max_examples_per_batch: Captum's own chunking. Default: None (one call).
        """
        x, target, generator = self._prepare(inputs, target, generator, seed)
        n, num_draws = x.shape[0], self.num_samples
        perturbed = self.perturb(x, generator=generator)
        used = 0

        def replay(expanded: Tensor) -> Tensor:
            nonlocal used
            count = expanded.shape[0] // n
            chunk = perturbed[:, used:used + count].flatten(0, 1)
            used += count
            return chunk

        kwargs = self._per_row_kwargs(torch.arange(n, device=x.device), x.shape)

        def explain(batch: Tensor | tuple[Tensor], target: Tensor,
                    **extra: Any) -> Tensor | tuple[Tensor]:
            # Captum passes the clean inputs as a 1-tuple and expects a tuple back, as its
            # own methods give; the perturbed inputs come as a tensor.
            if isinstance(batch, tuple):
                return (self.method(batch[0], target, **extra),)
            return self.method(batch, target, **extra)

        with torch.random.fork_rng(devices=_cuda_devices(x.device)):
            if self.method.stochastic:
                torch.manual_seed(_draw_seed(generator))
            return captum_sensitivity_max(
                explain, x, perturb_func=replay, n_perturb_samples=num_draws, target=target,
                max_examples_per_batch=max_examples_per_batch, **kwargs)

    def _prepare(self, inputs: Tensor, target: int | Tensor | None,
                 generator: torch.Generator | None,
                 seed: int) -> tuple[Tensor, Tensor, torch.Generator]:
        """Check model and inputs; resolve target and generator on the model's device."""
        require_eval_mode(self.model)
        check_pixel_inputs(inputs, "inputs", self.pixel_range)
        if inputs.dim() < 2:
            raise ValueError(f"inputs must be a batch (n, *input_shape); got shape "
                             f"{tuple(inputs.shape)}. Add a batch dimension with x.unsqueeze(0).")
        check_input_shape(self.model, inputs)
        parameter = next(self.model.parameters(), None)
        device = parameter.device if parameter is not None else inputs.device
        if parameter is not None and parameter.is_floating_point() and \
                inputs.dtype != parameter.dtype:
            raise ValueError(
                f"inputs are {inputs.dtype} but the model is {parameter.dtype}; cast the inputs "
                f"with inputs.to({parameter.dtype}) (or the model with "
                f"model.to({inputs.dtype})).")
        x = inputs.detach().to(device)
        with torch.no_grad():
            logits = torch.cat([self.model(x[i:i + self.max_batch])
                                for i in range(0, x.shape[0], self.max_batch)])
        if logits.dim() != 2 or logits.shape[0] != x.shape[0]:
            raise ValueError(f"model must map (n, *input_shape) to logits (n, C); it returned "
                             f"shape {tuple(logits.shape)} for n={x.shape[0]}.")
        check_finite(logits, "model outputs at the clean inputs")
        num_classes = logits.shape[1]
        if target is None:
            target = logits.argmax(dim=1)
        else:
            target = torch.as_tensor(target, device=device).long().flatten()
            if target.numel() == 1:
                target = target.expand(x.shape[0])
            if target.numel() != x.shape[0]:
                raise ValueError(f"target has {target.numel()} entries for {x.shape[0]} "
                                 "inputs; pass one class per input, an int, or None.")
            if bool(((target < 0) | (target >= num_classes)).any()):
                raise ValueError(
                    f"target values span [{int(target.min())}, {int(target.max())}] but the "
                    f"model has {num_classes} classes; use labels in [0, {num_classes - 1}].")
        if generator is None:
            generator = resolve_generator(None, seed, device=device)
        elif torch.device(generator.device).type != device.type:
            raise ValueError(f"generator is on {generator.device} but the model is on {device}; "
                             f"create it with torch.Generator(device='{device}').")
        return x, target.contiguous(), generator

    def _per_row_kwargs(self, sample_of_row: Tensor, shape: torch.Size) -> dict[str, Any]:
        """Method kwargs for these rows: a per-sample ``baselines`` tensor (the inputs' shape)
        is indexed per row; other tensors (one input's shape, or ``(1, ...)``) broadcast."""
        baselines = self.method.kwargs.get("baselines")
        if not isinstance(baselines, Tensor):
            return {}
        baselines = baselines.to(sample_of_row.device)
        if baselines.shape == shape:
            return {"baselines": baselines[sample_of_row]}
        return {"baselines": baselines}

    def _attribute(self, rows: Tensor, sample_of_row: Tensor, shape: torch.Size, target: Tensor,
                   generator: torch.Generator) -> tuple[Tensor, int]:
        """Attributions of every row, in chunks of at most ``max_batch`` model evaluations."""
        chunk = max(1, self.max_batch // self.method.evaluations)
        starts = range(0, rows.shape[0], chunk)
        seeds = [_draw_seed(generator) for _ in starts] if self.method.stochastic else []
        pieces = []
        with torch.random.fork_rng(devices=_cuda_devices(rows.device)):
            for i, start in enumerate(starts):
                part = slice(start, start + chunk)
                if seeds:
                    torch.manual_seed(seeds[i])
                pieces.append(self.method(rows[part], target[sample_of_row[part]],
                                          **self._per_row_kwargs(sample_of_row[part], shape)))
        return torch.cat(pieces), len(starts)


def _draw_seed(generator: torch.Generator) -> int:
    return int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device))


def _cuda_devices(device: torch.device) -> list[int]:
    """Devices whose RNG ``fork_rng`` saves: the model's GPU, none on the CPU."""
    return [device.index or 0] if device.type == "cuda" else []


def _describe(value: Any) -> Any:
    """A JSON-ready stand-in for a method option (tensors by shape)."""
    if isinstance(value, Tensor):
        return f"tensor{tuple(value.shape)}" if value.numel() > 1 else float(value)
    return value

"""The attribution-stability probe (``docs/reconstruction.md``, "Attribution stability")."""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch
from captum.attr import Attribution
from captum.metrics import sensitivity_max as captum_sensitivity_max
from torch import Tensor, nn

from ..checks import (
    check_finite,
    check_input_shape,
    check_pixel_inputs,
    require_eval_mode,
)
from ..rng import resolve_generator
from ..stats import rank_correlation, sort, sorted_average_ranks
from .methods import attribution_method
from .metrics import _sorted_top_k, _top_k_overlap, cosine_similarity, relative_l2
from .perturbations import check_perturbation, perturb
from .result import AttributionStabilityResult

__all__ = ["AttributionStability"]


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
        perturbation: a family of :mod:`stabnb.attribution.perturbations`: ``'gaussian'``
            (δ ~ N(0, σ²I), σ = ``radius``), ``'linf'``/``'uniform'`` (δ uniform in the L∞
            ball of ``radius``), ``'translate'`` (shift by up to ``radius`` whole pixels) or
            ``'blur'`` (Gaussian blur of width U(0, ``radius``]); the last two need images.
            Default: ``'gaussian'``.
        radius: the family's size in pixel units of ``pixel_range``. Default: 0.05.
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
        ValueError: an unknown method or perturbation, ``radius <= 0`` (or not whole for
            translate), ``num_samples < 1``,
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
        perturbation, radius = check_perturbation(perturbation, radius)
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
        """``(n, K, *input_shape)`` copies of ``inputs`` under the probe's family
        (:func:`stabnb.attribution.perturbations.perturb`), clipped to ``pixel_range``.

        Clipping truncates the noise at the range's edges (many MNIST pixels are 0).
        """
        return perturb(inputs, self.perturbation, self.radius, self.num_samples,
                       generator=generator, pixel_range=self.pixel_range)

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

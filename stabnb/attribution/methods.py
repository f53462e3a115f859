"""Attribution methods: Captum objects with their per-call options fixed (``docs/reconstruction.md``,
"Attribution stability")."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from captum._utils.common import _run_forward
from captum.attr import (
    Attribution,
    InputXGradient,
    IntegratedGradients,
    NoiseTunnel,
    Saliency,
)
from torch import Tensor, nn

__all__ = ["METHODS", "AttributionMethod", "attribution_method"]


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


def _summed_gradients(forward_fn: Callable[..., Tensor], inputs: tuple[Tensor, ...],
                      target_ind: Any = None,
                      additional_forward_args: Any = None) -> tuple[Tensor, ...]:
    """Captum's ``compute_gradients`` as one backward pass of ``Σ_i f_{c_i}(x_i)``.

    Captum differentiates the tuple ``torch.unbind(outputs)`` of N scalars, which makes autograd
    build N ``ones_like`` seeds in Python (half the time of a saliency call for a small MLP);
    the gradient of their sum is the same vector-Jacobian product with the seed ``1`` expanded
    to N, so the attributions are bitwise equal (``tests/test_attribution.py``). Installed as
    ``gradient_func`` on the Captum objects the named methods build (never on a user's object).
    """
    with torch.autograd.set_grad_enabled(True):
        outputs = _run_forward(forward_fn, inputs, target_ind, additional_forward_args)
        if outputs[0].numel() != 1:
            raise ValueError(f"the target selects outputs of shape {tuple(outputs.shape[1:])} "
                             "per row; pass one class per row so each row gives a scalar.")
        return torch.autograd.grad(outputs.sum(), inputs)


def _summed(attribution: Attribution) -> Attribution:
    """``attribution`` with :func:`_summed_gradients` as its gradient function."""
    attribution.gradient_func = _summed_gradients
    return attribution


def _saliency(model: nn.Module, *, abs: bool = False) -> AttributionMethod:  # noqa: A002
    return AttributionMethod("saliency", _summed(Saliency(model)), {"abs": abs})


def _input_x_gradient(model: nn.Module) -> AttributionMethod:
    return AttributionMethod("input_x_gradient", _summed(InputXGradient(model)))


def _integrated_gradients(model: nn.Module, *, baselines: float | Tensor | None = None,
                          n_steps: int = 50, method: str = "gausslegendre",
                          internal_batch_size: int | None = None) -> AttributionMethod:
    kwargs = {"baselines": baselines, "n_steps": n_steps, "method": method,
              "internal_batch_size": internal_batch_size}
    return AttributionMethod("integrated_gradients", _summed(IntegratedGradients(model)), kwargs,
                             evaluations=n_steps)


def _smoothgrad(model: nn.Module, *, nt_samples: int = 10, stdevs: float = 0.15,
                nt_samples_batch_size: int | None = None,
                abs: bool = False) -> AttributionMethod:  # noqa: A002
    kwargs = {"nt_type": "smoothgrad", "nt_samples": nt_samples, "stdevs": stdevs,
              "nt_samples_batch_size": nt_samples_batch_size, "abs": abs}
    return AttributionMethod("smoothgrad", NoiseTunnel(_summed(Saliency(model))), kwargs,
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


def attribution_method(method: str | Attribution | AttributionMethod, model: nn.Module, /,
                       **method_kwargs: Any) -> AttributionMethod:
    """Resolve a method name from :data:`METHODS` or wrap a Captum ``Attribution`` object.

    Args:
        method: a name in :data:`METHODS`, a Captum attribution object (its ``attribute`` is
            called with ``method_kwargs``), or an :class:`AttributionMethod`.
        model: the network the named methods attribute (ignored for objects, which hold theirs).
        **method_kwargs: the factory's options for a name; ``attribute`` keyword arguments for
            a Captum object (``method`` and ``model`` are positional-only, so integrated
            gradients' own ``method="riemann_trapezoid"`` passes through).

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


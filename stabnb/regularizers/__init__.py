"""Spectral regularisers: each is a callable ``reg(model, inputs, targets) -> λ · penalty``.

Four penalties and two controls, compared on the same footing by :mod:`stabnb.study` (which
penalties the paper used is unknown; see ``docs/reconstruction.md``, "Regularisers" and
"Controls"):

- :class:`JacobianSpectralPenalty` (default): ``λ · mean_x ‖J_f(x)‖₂²``, warm-started power
  iteration through JVPs and VJPs.
- :class:`JacobianFrobeniusPenalty` (Hoffman, Roberts & Yaida 2019): random-projection estimate
  of ``λ · mean_x ‖J_f(x)‖_F²``.
- :class:`WeightSpectralPenalty` (Yoshida & Miyato 2017): ``λ Σ_i ‖W_i‖₂²``, per-layer power
  iteration; for a convolution the norm of the convolution operator.
- :class:`InputCurvaturePenalty`: the input Hessian of the target logit (R5's β), either its
  spectral norm or the finite-difference change of the input gradient.
- Controls, which are not spectral: :class:`NoiseAugmentation` (``λ · CE(f(clip(x+δ)), y)``,
  Gaussian noise augmentation at the probe's σ) and ``smooth_activation`` (no penalty: every
  ReLU becomes ``Softplus(β)`` with β = 1/λ, :func:`stabnb.models.smooth_activations`).

Every penalty plugs into :func:`stabnb.train.train`'s ``regularizer`` hook: it returns a scalar
already multiplied by its strength λ and differentiable in θ, works with the model in train mode
(BatchNorm's running statistics are left as the training forward pass set them), and exposes its
carried state (power-iteration vectors, random-generator state) as attributes, through
``reset()`` and through ``state_dict()`` / ``load_state_dict()`` for checkpoints.

Shared forward pass: a penalty with ``shares_forward = True`` (the three input-Jacobian and
curvature penalties) also accepts ``reg(model, x, y, logits=model(x))`` where ``x`` requires
grad and ``logits`` is the training step's own forward pass on it; it then builds its products
on that graph instead of running its own forward pass (same value and gradient up to float
rounding). The caller should then backpropagate with ``inputs=`` the parameters, so that no
gradient of the loss is computed for ``x``. :func:`stabnb.train.train` does this; see
:func:`shared_forward_inputs`.
"""

from __future__ import annotations

from typing import Any

from ._base import _check_strength, _Penalty, shared_forward_inputs
from .curvature import CURVATURE_FORMS, CURVATURE_TARGETS, InputCurvaturePenalty
from .jacobian import JacobianFrobeniusPenalty, JacobianSpectralPenalty
from .noise import NoiseAugmentation
from .weight import WeightSpectralPenalty

__all__ = ["BASELINE", "SPECTRAL_PENALTIES", "CONTROLS", "ARCHITECTURAL", "REGULARIZERS",
           "CURVATURE_FORMS", "CURVATURE_TARGETS", "JacobianSpectralPenalty",
           "JacobianFrobeniusPenalty", "WeightSpectralPenalty", "InputCurvaturePenalty",
           "NoiseAugmentation", "make_regularizer", "shared_forward_inputs"]

BASELINE = "none"
"""The name of the unregularised baseline in every study grid."""
SPECTRAL_PENALTIES = ("jacobian_spectral", "jacobian_frobenius", "weight_spectral")
"""The spectral regularisers (a)–(c) of ``docs/reconstruction.md``: the paper's claim is about these;
``input_curvature`` (d) is our extension, not a spectral penalty."""
CONTROLS = ("noise_augmentation", "smooth_activation")
"""Controls that smooth the network by other means (``docs/reconstruction.md``, "Controls"): a
penalty that helps only as much as they do is not evidence for a spectral mechanism."""
ARCHITECTURAL = ("smooth_activation",)
"""Grid entries that change the network, not the loss: λ is the softplus temperature 1/β."""
REGULARIZERS = (BASELINE, "jacobian_spectral", "jacobian_frobenius", "weight_spectral",
                "input_curvature", *CONTROLS)

_PENALTIES = {
    "jacobian_spectral": JacobianSpectralPenalty,
    "jacobian_frobenius": JacobianFrobeniusPenalty,
    "weight_spectral": WeightSpectralPenalty,
    "input_curvature": InputCurvaturePenalty,
    "noise_augmentation": NoiseAugmentation,
}


def make_regularizer(name: str, strength: float, **kwargs: Any) -> _Penalty | None:
    """Build a regulariser by name: one of :data:`REGULARIZERS`.

    Args:
        name: ``'none'``, ``'jacobian_spectral'``, ``'jacobian_frobenius'``,
            ``'weight_spectral'``, ``'input_curvature'``, ``'noise_augmentation'`` or
            ``'smooth_activation'``.
        strength: λ ≥ 0 (must be 0 for ``'none'``; the temperature 1/β > 0 for
            ``'smooth_activation'``).
        **kwargs: the penalty's own options (``num_iters``, ``num_projections``, ``form``,
            ``sigma``, ``target``, ``clip``, ``seed``, ...).

    Returns:
        The penalty, or ``None`` for ``'none'`` and ``'smooth_activation'`` (no loss term:
        what :func:`stabnb.train.train` takes for "no regulariser"; the study swaps the
        activations itself, :func:`stabnb.models.smooth_activations`).

    Raises:
        ValueError: unknown name, λ < 0, or options given to a name without any.
    """
    if name not in REGULARIZERS:
        raise ValueError(f"regularizer={name!r} is unknown; choose one of {REGULARIZERS}.")
    strength = _check_strength(strength)
    if name in (BASELINE, *ARCHITECTURAL):
        options = {k: v for k, v in kwargs.items() if not (name in ARCHITECTURAL and k == "seed")}
        if options or (name == BASELINE and strength != 0.0):
            raise ValueError(f"regularizer {name!r} takes "
                             + ("strength=0 and " if name == BASELINE else "")
                             + f"no options; got strength={strength!r}, options={sorted(options)}.")
        return None
    return _PENALTIES[name](strength, **kwargs)

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

Beyond random noise: held-out perturbation families (:mod:`.perturbations`, spec strings
``"translate:1"``), an attack on the attribution (:mod:`.attack`), and checks that a stable map
still means something (:mod:`.quality`).

Methods are Captum objects (wrapped, not re-derived): :data:`METHODS` maps names to
factories, and any ``captum.attr.Attribution`` object can be passed instead.
"""

from __future__ import annotations

from ..stats import average_ranks
from .attack import AttackResult, attribution_attack, smooth_surrogate
from .methods import METHODS, AttributionMethod, attribution_method
from .metrics import (
    METRICS,
    cosine_similarity,
    relative_l2,
    spearman_correlation,
    top_k_intersection,
)
from .perturbations import IMAGE_FAMILIES, PERTURBATIONS, parse_perturbation
from .quality import (
    DELETION_FRACTIONS,
    DeletionCheck,
    RandomisationCheck,
    deletion_faithfulness,
    input_dependence,
    model_randomisation,
    same_class_partners,
)
from .result import AttributionStabilityResult
from .stability import AttributionStability

__all__ = [
    "METHODS", "PERTURBATIONS", "METRICS", "AttributionMethod", "attribution_method",
    "AttributionStability", "AttributionStabilityResult", "average_ranks", "relative_l2",
    "cosine_similarity", "spearman_correlation", "top_k_intersection", "IMAGE_FAMILIES",
    "parse_perturbation", "AttackResult", "attribution_attack", "smooth_surrogate",
    "DELETION_FRACTIONS", "DeletionCheck", "RandomisationCheck", "deletion_faithfulness",
    "input_dependence", "model_randomisation", "same_class_partners",
]

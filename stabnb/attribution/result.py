"""The result of :meth:`stabnb.attribution.AttributionStability.measure`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..io import to_jsonable
from .metrics import METRICS

__all__ = ["AttributionStabilityResult"]


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


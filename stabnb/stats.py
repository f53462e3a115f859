"""Intervals over replications: a mean with its Student-t interval over seeds.

A study's seeds are its replications; :func:`seed_interval` summarises one number per seed as
``mean ± t_{n−1,(1+c)/2} · sd/√n`` (the quantile from :func:`scipy.stats.t.ppf`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

from scipy import stats as _scipy_stats

__all__ = ["Interval", "seed_interval"]


@dataclass(frozen=True)
class Interval:
    """Mean over seeds with a two-sided Student-t interval (NaN bounds when ``n < 2``)."""

    mean: float
    lo: float
    hi: float
    n: int
    confidence: float = 0.95

    def excludes(self, value: float = 0.0) -> bool:
        """Whether the interval lies strictly on one side of ``value`` (False when undefined)."""
        return bool(self.lo > value or self.hi < value)

    def format(self, digits: int = 3, *, scale: float = 1.0, signed: bool = False) -> str:
        """``"m [lo, hi]"`` with ``digits`` decimals after multiplying by ``scale``."""
        sign = "+" if signed else ""
        mean = f"{self.mean * scale:{sign}.{digits}f}"
        if math.isnan(self.lo):
            return mean
        return f"{mean} [{self.lo * scale:{sign}.{digits}f}, {self.hi * scale:{sign}.{digits}f}]"

    def to_dict(self) -> dict[str, Any]:
        return {k: (None if isinstance(v, float) and math.isnan(v) else v)
                for k, v in asdict(self).items()}


def seed_interval(values: Iterable[float], *, confidence: float = 0.95) -> Interval:
    """Mean of ``values`` (one per seed) and its t-interval ``mean ± t_{n−1,(1+c)/2} · sd/√n``.

    Non-finite values are dropped (a cell whose metric is undefined). With one value the
    bounds are NaN: one seed says nothing about the spread over seeds.

    Raises:
        ValueError: ``confidence`` outside (0, 1), or no finite value.
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence={confidence} must lie in (0, 1), e.g. 0.95.")
    kept = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    n = len(kept)
    if n == 0:
        raise ValueError("no finite value to summarise; check that the metric was recorded.")
    mean = sum(kept) / n
    if n == 1:
        return Interval(mean, math.nan, math.nan, 1, confidence)
    sd = math.sqrt(sum((v - mean) ** 2 for v in kept) / (n - 1))
    half = float(_scipy_stats.t.ppf((1 + confidence) / 2, n - 1)) * sd / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, n, confidence)

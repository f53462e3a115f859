"""Intervals over what a replication varies.

- :func:`seed_interval`: one number per seed, ``mean ± t_{n−1,(1+c)/2} · sd/√n`` (the quantile
  from :func:`scipy.stats.t.ppf`);
- :func:`paired_bootstrap`: a statistic of per-image values from several seeds, resampled at two
  levels (seeds, then images within each drawn seed), keeping every pairing (baseline and
  regularised network of one seed on the same images) — the interval a replication that redraws
  seeds *and* probe images would see;
- :func:`fisher_z_interval`: a Spearman ρ's interval from Fisher's z with the Fieller, Hartley and
  Pearson (1957) variance ``1.06/(n − 3)``;
- :func:`quantile_slope`: the slope of a linear upper-quantile regression (an envelope's trend),
  by linear programming (:func:`scipy.optimize.linprog`).

Every draw takes a seed (the randomness rule, :mod:`stabnb.rng`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import optimize as _scipy_optimize
from scipy import stats as _scipy_stats

__all__ = ["Interval", "seed_interval", "paired_bootstrap", "fisher_z_interval",
           "quantile_slope"]


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


def paired_bootstrap(groups: Sequence[Sequence[np.ndarray]],
                     statistic: Callable[..., float], *, num_resamples: int = 2000,
                     confidence: float = 0.95, seed: int = 0) -> Interval:
    """Two-level percentile bootstrap of ``statistic`` over seeds and images, pairing kept.

    ``groups[s]`` holds, for seed ``s``, arrays of per-image values with equal length (the same
    images): e.g. ``(baseline, regularised)``. One resample draws seeds with replacement, then,
    within each drawn seed, image indices with replacement, applied to all of that seed's arrays
    at once; ``statistic`` receives the pooled arrays (``statistic(base, reg)``). The estimate is
    the statistic on the data as observed; the interval the percentile interval of the resamples.

    Raises:
        ValueError: no seed, arrays of different lengths within a seed, ``num_resamples < 100``,
            ``confidence`` outside (0, 1).
    """
    if not groups:
        raise ValueError("no seed to bootstrap; pass one tuple of per-image arrays per seed.")
    if num_resamples < 100:
        raise ValueError(f"num_resamples={num_resamples} is too few for a percentile interval; "
                         "use 1000 or more.")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence={confidence} must lie in (0, 1), e.g. 0.95.")
    arrays = [[np.asarray(a, dtype=np.float64) for a in group] for group in groups]
    for index, group in enumerate(arrays):
        if len({len(a) for a in group}) != 1:
            raise ValueError(f"seed {index}: arrays of lengths {[len(a) for a in group]}; each "
                             "seed's arrays must hold the same images.")
    width = len(arrays[0])

    def pooled(choice: Sequence[tuple[int, np.ndarray]]) -> list[np.ndarray]:
        return [np.concatenate([arrays[s][k][rows] for s, rows in choice]) for k in range(width)]

    estimate = float(statistic(*pooled([(s, np.arange(len(g[0]))) for s, g in enumerate(arrays)])))
    rng = np.random.default_rng(seed)
    draws = np.empty(num_resamples)
    for b in range(num_resamples):
        seeds = rng.integers(0, len(arrays), len(arrays))
        draws[b] = statistic(*pooled([(s, rng.integers(0, len(arrays[s][0]), len(arrays[s][0])))
                                      for s in seeds]))
    tail = 100 * (1 - confidence) / 2
    lo, hi = np.nanpercentile(draws, [tail, 100 - tail])
    return Interval(estimate, float(lo), float(hi), sum(len(g[0]) for g in arrays), confidence)


def fisher_z_interval(rho: float, n: int, *, confidence: float = 0.95) -> Interval:
    """Interval of a Spearman ρ over ``n`` pairs: ``tanh(atanh ρ ± z_{(1+c)/2} √(1.06/(n−3)))``.

    Raises:
        ValueError: ``n < 4`` or ρ outside [−1, 1].
    """
    if n < 4:
        raise ValueError(f"n={n} pairs: Fisher's z interval needs at least 4.")
    if not -1 <= rho <= 1:
        raise ValueError(f"rho={rho} is not a correlation.")
    z = math.atanh(max(min(rho, 1 - 1e-12), -1 + 1e-12))
    half = float(_scipy_stats.norm.ppf((1 + confidence) / 2)) * math.sqrt(1.06 / (n - 3))
    return Interval(rho, math.tanh(z - half), math.tanh(z + half), n, confidence)


def quantile_slope(x: np.ndarray, y: np.ndarray, *, quantile: float = 0.9) -> float:
    """Slope b of the linear ``quantile`` regression ``y ≈ a + b x`` (Koenker–Bassett): the
    minimiser of ``Σ ρ_q(y_i − a − b x_i)`` with the check loss ``ρ_q(u) = u(q − 1[u < 0])``,
    solved exactly as a linear programme. For q near 1 it is the trend of the upper envelope.

    Examples::

        >>> x = np.arange(10.0)
        >>> round(quantile_slope(x, 2 * x + 1), 6)
        2.0

    Raises:
        ValueError: ``quantile`` outside (0, 1) or fewer than 3 points.
    """
    if not 0 < quantile < 1:
        raise ValueError(f"quantile={quantile} must lie in (0, 1), e.g. 0.9.")
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    n = len(x)
    if n < 3:
        raise ValueError(f"{n} points: a regression slope needs at least 3.")
    # variables: a, b (free), u⁺, u⁻ ≥ 0 with y − a − b x = u⁺ − u⁻
    cost = np.concatenate([[0.0, 0.0], np.full(n, quantile), np.full(n, 1 - quantile)])
    equality = np.hstack([np.ones((n, 1)), x[:, None], np.eye(n), -np.eye(n)])
    bounds = [(None, None), (None, None)] + [(0, None)] * (2 * n)
    solution = _scipy_optimize.linprog(cost, A_eq=equality, b_eq=y, bounds=bounds, method="highs")
    if not solution.success:
        raise RuntimeError(f"quantile regression did not solve: {solution.message}")
    return float(solution.x[1])

"""Statistics shared by the package: ranks, and intervals over what a replication varies.

Ranks and rank correlation (the package's one implementation; ties get average ranks, as
``scipy.stats.rankdata(method="average")`` and ``scipy.stats.spearmanr``):

- :func:`average_ranks` ranks 1..d along a dimension, batched over the others;
- :func:`sort` ``torch.sort`` (stable), about twice as fast for float32 on the CPU;
- :func:`sorted_average_ranks` the same ranks from a sort already done (callers that also
  need the order, e.g. for a top-k, sort once);
- :func:`rank_correlation` Pearson's correlation of two rank tensors, and
  :func:`spearman` Spearman's ρ of two value tensors (it ranks, then correlates).

Intervals:

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
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from scipy import optimize as _scipy_optimize
from scipy import stats as _scipy_stats
from torch import Tensor

__all__ = ["sort", "average_ranks", "sorted_average_ranks", "rank_correlation", "spearman",
           "Interval", "seed_interval", "paired_bootstrap", "fisher_z_interval", "quantile_slope"]


def _rank_dtype(values: Tensor, d: int) -> torch.dtype:
    """float64 for float64 input or d ≥ 2²³, else float32 (half-integers below 2²³ are exact)."""
    return torch.float64 if values.dtype == torch.float64 or d >= 2**23 else torch.float32


def sort(values: Tensor, dim: int = -1) -> tuple[Tensor, Tensor]:
    """``torch.sort(values, dim, stable=True)``: ascending, ties in index order; faster for
    float32 on the CPU.

    There each value's bits become an order-preserving int32 (negative floats have their
    31 low bits flipped; ``-0.0`` is first mapped to ``+0.0``), placed above its index in one
    int64 key, and NumPy's SIMD sort orders the keys, a cache-sized piece of rows at a time:
    their low halves are the permutation, which gathers the sorted values. Blocks of rows are
    sorted on ``torch.get_num_threads()`` threads (NumPy releases the GIL; one thread is
    already about twice as fast as ``torch.sort`` on 2 cores); ``-0.0`` comes back as
    ``+0.0``. Values must be free of NaN (they would sort by bit pattern). Other dtypes and
    devices, empty rows and rows of 2³¹ or more use ``torch.sort``.

    Returns:
        ``(ordered, order)`` as ``torch.sort`` returns them.
    """
    d = values.shape[dim] if values.dim() else 1
    if values.device.type != "cpu" or values.dtype != torch.float32 or not 0 < d < 2**31:
        return torch.sort(values, dim=dim, stable=True)
    moved = values.detach().movedim(dim, -1)
    shape = moved.shape
    flat = (moved + 0.0).contiguous()
    rows = flat.numpy().reshape(-1, d).view(np.int32)
    keys = np.empty(rows.shape, dtype=np.int64)
    index = np.arange(d, dtype=np.int64)
    step = max(1, 2**16 // d)                # rows per cache-sized piece

    def sort_block(block: slice) -> None:
        for start in range(block.start, block.stop, step):
            piece = slice(start, min(start + step, block.stop))
            bits, key = rows[piece], keys[piece]
            flipped = bits >> 31
            flipped &= 0x7FFFFFFF
            flipped ^= bits
            np.left_shift(flipped, 32, out=key, dtype=np.int64)
            key |= index
            key.sort(axis=-1)
            key &= 0xFFFFFFFF

    blocks = _row_blocks(rows.shape[0], d)
    if len(blocks) == 1:
        sort_block(blocks[0])
    else:
        with ThreadPoolExecutor(len(blocks)) as pool:
            list(pool.map(sort_block, blocks))
    order = torch.from_numpy(keys).reshape(shape)
    return flat.gather(-1, order).movedim(-1, dim), order.movedim(-1, dim)


def _row_blocks(num_rows: int, d: int) -> list[slice]:
    """Contiguous row blocks, one per torch thread, of at least 2¹⁶ values each."""
    count = max(1, min(torch.get_num_threads(), num_rows, num_rows * d // 2**16))
    bounds = [num_rows * i // count for i in range(count + 1)]
    return [slice(lo, hi) for lo, hi in zip(bounds[:-1], bounds[1:])]


def sorted_average_ranks(ordered: Tensor, order: Tensor, dim: int = -1) -> Tensor:
    """Average ranks from a sort: ``ordered, order = sort(values, dim)`` (or ``torch.sort``).

    Without ties the ranks in sorted order are ``1..d``, scattered back to the positions of
    the original values. A tie group fills consecutive sorted positions ``[first, last]``, so
    each member's rank is ``(first + last)/2 + 1``: only the rows with ties, and in them only
    the tied entries (one ``nonzero``), are visited again; no second sort.

    Args:
        ordered: sorted values (ascending along ``dim``).
        order: the permutation of the sort (``values.gather(dim, order) == ordered``).
        dim: the ranked dimension. Default: -1.

    Returns:
        Ranks in ``1..d``, the shape of ``ordered``, float32 (float64 for float64 input or
        d ≥ 2²³).
    """
    ordered, order = ordered.movedim(dim, -1), order.movedim(dim, -1)
    d = ordered.shape[-1]
    dtype = _rank_dtype(ordered, d)
    positions = torch.arange(1, d + 1, dtype=dtype, device=ordered.device)
    ranks = torch.empty(ordered.shape, dtype=dtype, device=ordered.device).scatter_(
        -1, order, positions.expand(ordered.shape))
    changes = ordered[..., 1:] != ordered[..., :-1]        # a new value starts at i + 1
    if not bool(changes.all()):                            # fix the rows with ties only
        changes = changes.reshape(-1, d - 1)
        rows = (~changes).any(-1).nonzero().squeeze(1)
        changes = changes[rows]
        edge = torch.ones_like(changes[:, :1])
        starts = torch.cat([edge, changes], dim=-1)
        ends = torch.cat([changes, edge], dim=-1)
        row, position = (~(starts & ends)).nonzero().unbind(1)   # members of tie groups
        group = starts[row, position].cumsum(0) - 1
        mean = (position[starts[row, position]] + position[ends[row, position]]).to(dtype) / 2
        flat_ranks, flat_order = ranks.view(-1, d), order.reshape(-1, d)
        flat_ranks[rows[row], flat_order[rows[row], position]] = mean[group] + 1
    return ranks.movedim(-1, dim)


def average_ranks(values: Tensor, dim: int = -1) -> Tensor:
    """Ranks 1..d along ``dim``, ties sharing the mean of their positions.

    The "average" rule of ``scipy.stats.rankdata``: ``[3., 1., 3.] -> [2.5, 1., 2.5]``; one
    sort and O(d) index arithmetic per row (:func:`sorted_average_ranks`), batched over the
    other dims.

    Examples::

        >>> average_ranks(torch.tensor([3.0, 1.0, 3.0]))
        tensor([2.5000, 1.0000, 2.5000])
    """
    ordered, order = sort(values, dim)
    return sorted_average_ranks(ordered, order, dim)


def rank_correlation(ranks_a: Tensor, ranks_b: Tensor, dim: int = -1) -> Tensor:
    """Pearson's correlation of two rank tensors along ``dim`` (shapes broadcast).

    Any rank vector of length d has mean ``(d + 1)/2``, so only the centring is needed:
    ``ρ = Σ (a − m)(b − m) / √(Σ (a − m)² Σ (b − m)²)``. A constant vector (all tied) has no
    variance; ρ is then 1 if both are constant (the same ranking) and 0 otherwise (scipy
    returns NaN there).

    Returns:
        ρ in [−1, 1], the broadcast shape without ``dim``, in the ranks' dtype.
    """
    centre = (ranks_a.shape[dim] + 1) / 2
    a, b = (ranks_a - centre).movedim(dim, -1), (ranks_b - centre).movedim(dim, -1)
    var_a, var_b = torch.broadcast_tensors(_dot(a, a), _dot(b, b))
    denom = (var_a * var_b).sqrt()
    rho = _dot(a, b) / torch.where(denom > 0, denom, 1)
    both_constant = (var_a == 0) & (var_b == 0)
    return torch.where(denom > 0, rho, both_constant.to(rho.dtype)).clamp(-1, 1)


def _dot(a: Tensor, b: Tensor) -> Tensor:
    """``(a * b).sum(-1)`` with broadcasting, as one batched matmul (no product tensor)."""
    a, b = torch.broadcast_tensors(a, b)
    return (a.unsqueeze(-2) @ b.unsqueeze(-1)).squeeze(-1).squeeze(-1)


def spearman(a: Tensor, b: Tensor, dim: int = -1) -> Tensor:
    """Spearman's ρ of ``a`` and ``b`` along ``dim``: :func:`rank_correlation` of their
    :func:`average_ranks` (ties -> average ranks, as ``scipy.stats.spearmanr``). Shapes
    broadcast after ranking, so ``spearman(r.unsqueeze(-2), p)`` ranks r once for K rows p.

    Examples::

        >>> spearman(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([10.0, 30.0, 20.0]))
        tensor(0.5000)
    """
    if a.shape[dim] != b.shape[dim]:
        raise ValueError(f"a and b must have the same length along dim={dim}; got "
                         f"{a.shape[dim]} and {b.shape[dim]}.")
    return rank_correlation(average_ranks(a, dim), average_ranks(b, dim), dim)


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

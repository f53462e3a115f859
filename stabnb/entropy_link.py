"""The entropy link: per-sample Jacobian spectra against attribution instability.

The paper reports that per-sample Jacobian spectral entropy bounds unstable attribution
regimes "without enforcing rigid sample ordering": an envelope (max instability per entropy
bin), not a tight rank correlation (``docs/reconstruction.md``, "Experiments to reproduce"). This module joins
an :class:`~stabnb.attribution.AttributionStabilityResult` with each sample's input-Jacobian
spectrum (:func:`stabnb.operators.input_jacobian_singular_values`, summaries from
:mod:`stabnb.summaries`) into an :class:`EntropyLinkTable`, and provides the three analyses:
:func:`envelope`, :func:`rank_correlation` and the pairs :func:`finite_pairs` (the figure is
:func:`stabnb.plotting.plot_entropy_link`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor, nn

from .attribution import METRICS, AttributionStabilityResult, average_ranks
from .io import to_jsonable
from .operators import input_jacobian_singular_values
from .summaries import effective_rank, spectral_entropy, stable_rank

__all__ = [
    "EntropyLinkTable", "per_sample_table", "Envelope", "envelope", "RankCorrelation",
    "rank_correlation", "finite_pairs",
]


@dataclass(frozen=True, eq=False)
class EntropyLinkTable:
    """One row per sample: stability metrics and Jacobian spectral summaries, joined by position.

    Attributes:
        columns: name → ``(n,)`` float64 CPU tensor. Stability: ``relative_l2``, ``cosine``,
            ``spearman``, ``top_k`` (means over draws), ``sensitivity_max``,
            ``attribution_norm``, ``valid`` (1.0/0.0), ``target``. Spectral (of J_f(x) ∈ R^{C×d}):
            ``operator_norm`` s₁, ``frobenius_norm``, ``spectral_entropy``, ``effective_rank``
            exp(H), ``stable_rank``. Invalid samples (all-zero attribution) hold NaN metrics.
        settings: entropy kind, normalisation, and the probe's settings.
    """

    columns: dict[str, Tensor]
    settings: dict[str, Any]

    def __len__(self) -> int:
        return len(next(iter(self.columns.values())))

    def __getitem__(self, name: str) -> Tensor:
        if name not in self.columns:
            raise KeyError(f"column {name!r} is not in the table; columns: {list(self.columns)}.")
        return self.columns[name]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready ``{"columns": {name: list}, "settings": ...}``; NaN becomes None."""
        return {"columns": to_jsonable(self.columns), "settings": to_jsonable(self.settings)}


def per_sample_table(model: nn.Module, inputs: Tensor, target: int | Tensor | None,
                     probe_result: AttributionStabilityResult, *, entropy_kind: str = "squared",
                     normalized: bool = False, chunk_size: int | None = None) -> EntropyLinkTable:
    """Join ``probe_result`` with the spectrum of each ``J_f(x_i)`` on the same inputs.

    Spectral columns come from the exact singular values of the C×d input Jacobian (C VJPs per
    chunk and a batched ``svdvals``); entropy ``H = −Σ p_i log p_i``, ``p_i = s_i²/‖J‖_F²`` by
    default (our reconstruction, :mod:`stabnb.summaries`).

    Args:
        model: the network the probe measured; eval mode.
        inputs: the ``(n, *input_shape)`` inputs given to ``probe.measure``, in the same order.
        target: the classes given to ``probe.measure``, or None to take
            ``probe_result.target``; checked against it, since rows are joined by position.
        probe_result: from :meth:`~stabnb.attribution.AttributionStability.measure`.
        entropy_kind: ``kind`` of :func:`~stabnb.summaries.spectral_entropy`.
            Default: ``"squared"``.
        normalized: divide the entropy by ``log min(C, d)``. Default: False.
        chunk_size: samples per Jacobian pass. Default: all at once.

    Raises:
        ValueError: ``inputs`` or ``target`` do not match ``probe_result``; the Jacobian
            errors of :func:`~stabnb.operators.input_jacobian_singular_values`.
    """
    n = len(probe_result.target)
    if inputs.shape[0] != n:
        raise ValueError(f"inputs has {inputs.shape[0]} samples but probe_result has {n}; pass "
                         "the inputs that were measured, in the same order.")
    if target is not None:
        given = torch.as_tensor(target).long().flatten().to(probe_result.target.device)
        if not torch.equal(given.expand(n), probe_result.target):
            raise ValueError("target differs from probe_result.target; pass the target given to "
                             "measure() (or None to use the result's).")
    singular_values = input_jacobian_singular_values(model, inputs, chunk_size=chunk_size)
    singular_values = singular_values.detach().to("cpu", torch.float64)
    result = probe_result

    def column(t: Tensor) -> Tensor:
        return t.detach().to("cpu", torch.float64)

    columns = {name: column(getattr(result, name)) for name in (*METRICS, "sensitivity_max",
                                                                 "attribution_norm")}
    columns["valid"] = column(result.valid)
    columns["target"] = column(result.target)
    columns["operator_norm"] = singular_values[:, 0]
    columns["frobenius_norm"] = singular_values.norm(dim=-1)
    columns["spectral_entropy"] = spectral_entropy(singular_values, kind=entropy_kind,
                                                   normalized=normalized)
    columns["effective_rank"] = effective_rank(singular_values, kind=entropy_kind)
    columns["stable_rank"] = stable_rank(singular_values)
    settings = {"entropy_kind": entropy_kind, "normalized": normalized,
                "num_singular_values": singular_values.shape[1], "probe": dict(result.settings)}
    return EntropyLinkTable(columns, settings)


def finite_pairs(table: EntropyLinkTable, x: str, y: str) -> tuple[Tensor, Tensor, int]:
    """Rows where both columns are finite (invalid samples have NaN metrics), and the drop count."""
    xs, ys = table[x], table[y]
    keep = torch.isfinite(xs) & torch.isfinite(ys)
    return xs[keep], ys[keep], int((~keep).sum())


@dataclass(frozen=True, eq=False)
class Envelope:
    """Max of ``y`` per quantile bin of ``x``: the instability envelope over entropy.

    Attributes:
        edges: ``(b + 1,)`` bin edges (data quantiles, ties merged); bin i is
            ``[edges[i], edges[i+1])``, the last one closed.
        maximum: ``(b,)`` largest ``y`` in each bin.
        count: ``(b,)`` samples per bin.
        x, y: column names. num_dropped: rows with a non-finite x or y, left out.
    """

    edges: Tensor
    maximum: Tensor
    count: Tensor
    x: str
    y: str
    num_dropped: int

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable({"edges": self.edges, "maximum": self.maximum, "count": self.count,
                            "x": self.x, "y": self.y, "num_dropped": self.num_dropped})


def envelope(table: EntropyLinkTable, x: str = "spectral_entropy", y: str = "relative_l2", *,
             num_bins: int = 10) -> Envelope:
    """Envelope ``max{y_i : x_i ∈ bin b}`` over ``num_bins`` equal-count bins of ``x``.

    Edges are the ``j/num_bins`` quantiles of ``x`` taken at data points (``"lower"``), so no
    bin is empty; tied edges merge, giving fewer bins when ``x`` has ties.

    Args:
        table: from :func:`per_sample_table`.
        x: binned column. Default: ``"spectral_entropy"``.
        y: instability column. Default: ``"relative_l2"``.
        num_bins: bins before merging ties. Default: 10.

    Raises:
        ValueError: ``num_bins < 1`` or no finite pair.
    """
    if num_bins < 1:
        raise ValueError(f"num_bins={num_bins} must be at least 1, e.g. 10.")
    xs, ys, dropped = finite_pairs(table, x, y)
    if xs.numel() == 0:
        raise ValueError(f"no row has finite {x!r} and {y!r}; nothing to bin.")
    levels = torch.linspace(0, 1, num_bins + 1, dtype=xs.dtype)
    edges = torch.unique(torch.quantile(xs, levels, interpolation="lower"))
    if edges.numel() == 1:                                         # x constant: one bin
        edges = edges.repeat(2)
    bins = torch.bucketize(xs, edges[1:-1], right=True)
    num = edges.numel() - 1
    maximum = torch.full((num,), -math.inf, dtype=ys.dtype).scatter_reduce(
        0, bins, ys, reduce="amax")
    count = torch.bincount(bins, minlength=num)
    return Envelope(edges, maximum, count, x, y, dropped)


@dataclass(frozen=True)
class RankCorrelation:
    """Spearman ρ between two columns with a two-sided permutation p-value.

    Attributes:
        rho: Spearman ρ (average ranks for ties). p_value: ``(1 + #{|ρ_π| ≥ |ρ|}) / (1 + P)``
        over P random permutations of ``y``. n: finite pairs used; num_dropped: rows left out.
    """

    rho: float
    p_value: float
    n: int
    num_dropped: int
    x: str
    y: str
    num_permutations: int
    seed: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def rank_correlation(table: EntropyLinkTable, x: str = "spectral_entropy",
                     y: str = "relative_l2", *, num_permutations: int = 1000,
                     seed: int = 0) -> RankCorrelation:
    """Spearman ρ of ``x`` and ``y`` over the finite rows, permutations batched in one matmul.

    Args:
        table: from :func:`per_sample_table`.
        x, y: column names. Default: ``"spectral_entropy"``, ``"relative_l2"``.
        num_permutations: P for the p-value. Default: 1000.
        seed: seed of the CPU generator drawing the permutations. Default: 0.

    Raises:
        ValueError: fewer than 3 finite pairs, or ``num_permutations < 1``.
    """
    if num_permutations < 1:
        raise ValueError(f"num_permutations={num_permutations} must be at least 1, e.g. 1000.")
    xs, ys, dropped = finite_pairs(table, x, y)
    n = xs.numel()
    if n < 3:
        raise ValueError(f"{n} finite ({x}, {y}) pairs; a rank correlation needs at least 3.")
    rx, ry = average_ranks(xs), average_ranks(ys)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    scale = rx.norm() * ry.norm()
    if scale == 0:
        raise ValueError(f"{x!r} or {y!r} is constant over the finite rows; ρ is undefined.")
    generator = torch.Generator().manual_seed(seed)
    shuffled = ry[torch.rand(num_permutations, n, generator=generator).argsort(dim=1)]
    # The observed order goes through the same matmul as the permutations: ties compare exactly.
    correlations = torch.cat([ry.unsqueeze(0), shuffled]) @ rx / scale
    rho = float(correlations[0])
    p_value = (1 + int((correlations[1:].abs() >= abs(rho)).sum())) / (1 + num_permutations)
    return RankCorrelation(rho, p_value, n, dropped, x, y, num_permutations, seed)

"""Report: tables, effects and claim verdicts from study records.

Input is tidy: one record per trained cell (``model``, ``regularizer``, ``strength``,
``seed``) with one numeric column per measured quantity (clean accuracy, GMSI and its
components, Jacobian entropy and stable rank, attribution stability per method and metric),
as :func:`stabnb.study.run_study` writes them. Everything here is a reduction over seeds:

- :func:`summary_table`: per model × regulariser × λ, the mean of each metric over seeds
  with a Student-t confidence interval, ``mean ± t_{n−1} · sd/√n``;
- :func:`relative_change_table`: the change against the unregularised baseline of the same
  model and seed, ``(v − v₀)/|v₀|``, with the same interval over seeds (paired by seed, so
  the spread of initialisations largely cancels);
- :func:`regularizer_effects` and :func:`attribution_claim`, :func:`summaries_claim`: the
  headline comparison at each regulariser's *modest* λ under an explicit, fixed
  :class:`DecisionRule`;
- :func:`entropy_bound_claim`: the envelope-versus-ordering check of the entropy link.

The decision rules are ours (PAPER.md gives no thresholds): a notebook states them in its
markdown before any number is computed, and they are never tuned to the outcome.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import pandas as pd
import torch

from .attribution import average_ranks
from .data import DataSourceError, load_dataset
from .entropy_link import EntropyLinkTable, envelope, rank_correlation

__all__ = [
    "DataAvailability", "data_availability", "KEYS", "BASELINE", "Interval", "t_quantile", "seed_interval", "records_frame",
    "summary_table", "relative_change_table", "format_table", "instability",
    "modest_strengths", "DecisionRule", "RegularizerEffect", "regularizer_effects",
    "effects_table", "ClaimCheck", "attribution_claim", "summaries_claim", "EntropyBound",
    "entropy_bound", "entropy_bound_claim",
]

KEYS = ("model", "regularizer", "strength")
BASELINE = "none"
# Similarity metrics (1 = identical attributions); their instability is 1 − value.
SIMILARITIES = ("cosine", "spearman", "top_k")


# --------------------------------------------------------------------------- data

@dataclass(frozen=True)
class DataAvailability:
    """Whether a data set can be had here, where from, and if not, why (for the report).

    Attributes:
        name: the data set (``"cifar100"``, ...).
        available: every split asked for was found.
        sources: split → where it was read from.
        reason: the loader's message when a split is missing (every option it tried), else "".
    """

    name: str
    available: bool
    sources: dict[str, str]
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def data_availability(name: str, splits: Sequence[str] = ("train", "test"),
                      **load_kwargs: Any) -> DataAvailability:
    """Try :func:`stabnb.data.load_dataset` for each split; report instead of raising.

    A notebook guards its protocol cells with ``availability.available`` and prints
    ``availability.reason`` when the data is missing (or fails its checksum), so a machine
    without the data set skips that experiment cleanly and says why. A bad name or split
    still raises ``ValueError``.

    Args:
        name: data set name for :func:`~stabnb.data.load_dataset`.
        splits: the splits needed. Default: ``("train", "test")``.
        **load_kwargs: passed on (``root``, ``offline_root``, ``download``, ...).
    """
    sources: dict[str, str] = {}
    for split in splits:
        try:
            sources[split] = load_dataset(name, split, **load_kwargs).source
        except DataSourceError as err:                  # missing, or failing its checksum
            return DataAvailability(name, False, sources, str(err))
    return DataAvailability(name, True, sources, "")


# --------------------------------------------------------------------------- intervals

def _t_two_sided(t: float, df: int) -> float:
    """P(|T| ≤ t) for Student's t with integer ``df`` (Abramowitz & Stegun 26.7.3-4)."""
    theta = math.atan(t / math.sqrt(df))
    c2 = math.cos(theta) ** 2
    if df % 2 == 1:
        total, term = 0.0, math.cos(theta)
        if df > 1:
            total = term
            for k in range(3, df - 1, 2):               # cos θ (1 + 2/3 cos²θ + 2·4/(3·5) cos⁴θ …)
                term *= c2 * (k - 1) / k
                total += term
        return 2.0 / math.pi * (theta + math.sin(theta) * total)
    total, term = 1.0, 1.0
    for k in range(2, df - 1, 2):                       # 1 + 1/2 cos²θ + 1·3/(2·4) cos⁴θ …
        term *= c2 * (k - 1) / k
        total += term
    return math.sin(theta) * total


def t_quantile(probability: float, df: int) -> float:
    """Quantile ``t`` with ``P(T ≤ t) = probability`` of Student's t with integer ``df`` ≥ 1.

    Exact up to bisection tolerance: the two-sided CDF of A&S 26.7.3-4 (finite series for
    integer ``df``), inverted by bisection.

    Examples::

        >>> round(t_quantile(0.975, 1), 3), round(t_quantile(0.975, 4), 3)
        (12.706, 2.776)

    Raises:
        ValueError: ``probability`` outside (0, 1) or ``df`` not a positive integer.
    """
    if not 0 < probability < 1:
        raise ValueError(f"probability={probability} must lie in (0, 1), e.g. 0.975.")
    if isinstance(df, bool) or int(df) != df or df < 1:
        raise ValueError(f"df={df!r} must be a positive integer (number of seeds − 1).")
    if probability == 0.5:
        return 0.0
    coverage = abs(2 * probability - 1)
    low, high = 0.0, 1.0
    while _t_two_sided(high, int(df)) < coverage:
        high *= 2
    for _ in range(200):
        mid = 0.5 * (low + high)
        low, high = (mid, high) if _t_two_sided(mid, int(df)) < coverage else (low, mid)
        if high - low <= 1e-12 * max(1.0, high):
            break
    t = 0.5 * (low + high)
    return t if probability > 0.5 else -t


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
    half = t_quantile((1 + confidence) / 2, n - 1) * sd / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, n, confidence)


# --------------------------------------------------------------------------- tables

def records_frame(records: pd.DataFrame | Iterable[Mapping[str, Any]],
                  metrics: Sequence[str] = ()) -> pd.DataFrame:
    """Records as a DataFrame, checked to hold the cell keys, ``seed`` and ``metrics``.

    Raises:
        ValueError: no record, or a missing column (the message lists what is there).
    """
    frame = records.copy() if isinstance(records, pd.DataFrame) else pd.DataFrame(list(records))
    if frame.empty:
        raise ValueError("no study records; run the study first (or check its output folder).")
    missing = [c for c in (*KEYS, "seed", *metrics) if c not in frame.columns]
    if missing:
        raise ValueError(f"records lack column(s) {missing}; they have {sorted(frame.columns)}.")
    return frame


def instability(frame: pd.DataFrame, metric: str) -> pd.Series:
    """The column ``metric`` as an instability (lower = more stable).

    Change metrics (``relative_l2``, ``sensitivity_max``, absolute changes) are returned as
    they are; similarity metrics (a name ending in ``cosine``, ``spearman`` or ``top_k``)
    become ``1 − value``, so a relative change is comparable across metrics: a Spearman ρ
    going from 0.95 to 0.99 is an 80 % cut in ``1 − ρ``.
    """
    values = frame[metric].astype(float)
    return 1.0 - values if metric.split(".")[-1] in SIMILARITIES else values


def _groups(frame: pd.DataFrame, by: Sequence[str]):
    return frame.groupby(list(by), sort=True, dropna=False)


def summary_table(records: pd.DataFrame | Iterable[Mapping[str, Any]], metrics: Sequence[str], *,
                  by: Sequence[str] = KEYS, confidence: float = 0.95) -> pd.DataFrame:
    """Mean and t-interval over seeds of each metric, per group of ``by``.

    Returns:
        Long table: the ``by`` columns, ``metric``, ``mean``, ``lo``, ``hi``, ``n`` (seeds).
    """
    frame = records_frame(records, metrics)
    rows = [_interval_row(by, key, metric, group[metric], confidence)
            for key, group in _groups(frame, by) for metric in metrics]
    return pd.DataFrame([r for r in rows if r], columns=[*by, "metric", "mean", "lo", "hi", "n"])


def _interval_row(by: Sequence[str], key: Any, metric: str, values: pd.Series,
                  confidence: float) -> dict[str, Any] | None:
    """One long-table row: the group key, ``metric`` and the t-interval of its finite values."""
    finite = values.replace([math.inf, -math.inf], math.nan).dropna()
    if finite.empty:
        return None
    interval = seed_interval(finite.tolist(), confidence=confidence)
    return {**dict(zip(by, key)), "metric": metric, "mean": interval.mean, "lo": interval.lo,
            "hi": interval.hi, "n": interval.n}


def _paired_changes(frame: pd.DataFrame, metric: str, *, as_instability: bool) -> pd.DataFrame:
    """Per regularised record: ``(v − v₀)/|v₀|`` against the baseline of its model and seed."""
    values = instability(frame, metric) if as_instability else frame[metric].astype(float)
    frame = frame.assign(_value=values)
    base = frame[frame["regularizer"] == BASELINE][["model", "seed", "_value"]]
    if base.duplicated(["model", "seed"]).any():
        raise ValueError("more than one baseline record per model and seed; the records mix "
                         "studies (use one study's records).")
    joined = frame[frame["regularizer"] != BASELINE].merge(
        base.rename(columns={"_value": "_base"}), on=["model", "seed"], how="inner")
    joined["_change"] = (joined["_value"] - joined["_base"]) / joined["_base"].abs()
    return joined


def relative_change_table(records: pd.DataFrame | Iterable[Mapping[str, Any]],
                          metrics: Sequence[str], *, by: Sequence[str] = KEYS,
                          as_instability: bool = False,
                          confidence: float = 0.95) -> pd.DataFrame:
    """Relative change ``(v − v₀)/|v₀|`` against the baseline (``regularizer == 'none'``).

    Paired by model and seed: each regularised cell is compared with the baseline trained
    from the same seed; the mean and t-interval are over those seeds. Cells without a
    baseline of the same seed are left out.

    Args:
        records: study records.
        metrics: columns to compare.
        by: grouping. Default: :data:`KEYS`.
        as_instability: compare :func:`instability` (``1 − value`` for similarities) rather
            than the raw values. Default: False.
        confidence: interval coverage. Default: 0.95.

    Returns:
        Long table: ``by``, ``metric``, ``mean``, ``lo``, ``hi``, ``n``.
    """
    frame = records_frame(records, metrics)
    rows = [_interval_row(by, key, metric, group["_change"], confidence)
            for metric in metrics
            for key, group in _groups(_paired_changes(frame, metric,
                                                      as_instability=as_instability), by)]
    return pd.DataFrame([r for r in rows if r], columns=[*by, "metric", "mean", "lo", "hi", "n"])


def format_table(table: pd.DataFrame, *, digits: int = 3, percent: bool = False) -> pd.DataFrame:
    """A long table from :func:`summary_table`/:func:`relative_change_table` as a readable grid.

    Rows are the grouping columns, columns the metrics, cells ``"mean [lo, hi]"``
    (in % with ``percent=True``, signed).
    """
    index = [c for c in table.columns if c not in ("metric", "mean", "lo", "hi", "n")]
    scale = 100.0 if percent else 1.0
    cells = table.assign(cell=[
        Interval(m, lo, hi, int(n)).format(1 if percent else digits, scale=scale, signed=percent)
        for m, lo, hi, n in zip(table["mean"], table["lo"], table["hi"], table["n"])])
    grid = cells.pivot(index=index, columns="metric", values="cell")
    return grid[[m for m in dict.fromkeys(table["metric"]) if m in grid.columns]]


# --------------------------------------------------------------------------- effects

def modest_strengths(records: pd.DataFrame | Iterable[Mapping[str, Any]], *,
                     accuracy: str = "accuracy",
                     max_accuracy_drop: float = 0.01) -> dict[tuple[str, str], float | None]:
    """Each regulariser's *modest* λ: the largest one in the grid whose mean accuracy over
    seeds is at most ``max_accuracy_drop`` (a fraction: 0.01 = one point) below the
    baseline's mean accuracy for the same model; ``None`` when every λ costs more.

    The choice looks at accuracy only, never at the stability outcome.
    """
    frame = records_frame(records, (accuracy,))
    means = frame.groupby(list(KEYS))[accuracy].mean()
    out: dict[tuple[str, str], float | None] = {}
    for model in sorted(frame["model"].unique()):
        if (model, BASELINE, 0.0) not in means.index:
            raise ValueError(f"no baseline (regularizer='none', strength=0) for model {model!r}; "
                             "the study grid must include the baseline.")
        floor = means[(model, BASELINE, 0.0)] - max_accuracy_drop
        for name in sorted(set(frame.loc[frame["model"] == model, "regularizer"]) - {BASELINE}):
            sub = means[model][name]
            ok = [float(s) for s, acc in sub.items() if acc >= floor - 1e-12]
            out[(model, name)] = max(ok) if ok else None
    return out


@dataclass(frozen=True)
class DecisionRule:
    """When does a regulariser *substantially* improve attribution stability? (our rule)

    At its modest λ (accuracy cost ≤ ``max_accuracy_drop`` in mean over seeds), the paired
    relative reduction in the instability metric must be ≥ ``min_improvement`` in mean over
    seeds with the ``confidence`` interval excluding 0: then REPRODUCED. If the interval's
    upper end lies below ``min_improvement`` the improvement is not substantial: NOT
    REPRODUCED. Anything else (a wide interval, one seed): INCONCLUSIVE.

    Global summaries *change little* when every summary's mean relative change lies within
    ±``max_summary_change``.
    """

    min_improvement: float = 0.20
    max_accuracy_drop: float = 0.01
    max_summary_change: float = 0.20
    confidence: float = 0.95

    def describe(self) -> str:
        return (f"substantial = reduction ≥ {self.min_improvement:.0%} in mean over seeds with "
                f"its {self.confidence:.0%} CI excluding 0, at ≤ {100 * self.max_accuracy_drop:g} "
                f"point accuracy cost; 'little' = |relative change| ≤ "
                f"{self.max_summary_change:.0%}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class RegularizerEffect:
    """One model × regulariser at its modest λ, against the baseline, paired by seed.

    Attributes:
        improvement: relative reduction of the instability metric, ``−(v − v₀)/v₀``
            (positive = more stable).
        accuracy_change: accuracy minus the baseline's, in points (fraction × 100).
        summary_changes: relative change of each global summary.
        passed: the :class:`DecisionRule` verdict (None = inconclusive).
    """

    model: str
    regularizer: str
    strength: float | None
    metric: str
    improvement: Interval | None
    accuracy_change: Interval | None
    summary_changes: dict[str, Interval] = field(default_factory=dict)
    passed: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        def plain(v: Any) -> Any:
            return v.to_dict() if isinstance(v, Interval) else v
        return {"model": self.model, "regularizer": self.regularizer, "strength": self.strength,
                "metric": self.metric, "improvement": plain(self.improvement),
                "accuracy_change": plain(self.accuracy_change),
                "summary_changes": {k: plain(v) for k, v in self.summary_changes.items()},
                "passed": self.passed}


def _judge(improvement: Interval, rule: DecisionRule) -> bool | None:
    if improvement.mean >= rule.min_improvement and improvement.lo > 0:
        return True
    if improvement.hi < rule.min_improvement:
        return False
    return None


def regularizer_effects(records: pd.DataFrame | Iterable[Mapping[str, Any]], *,
                        metric: str, summaries: Sequence[str] = (), accuracy: str = "accuracy",
                        rule: DecisionRule = DecisionRule()) -> list[RegularizerEffect]:
    """Each model × regulariser at its modest λ: improvement in ``metric``, accuracy cost,
    and the relative change of each of ``summaries`` (GMSI, mean entropy, ...).

    A regulariser with no modest λ in the grid gets ``strength=None`` and ``passed=False``
    (it cannot improve stability *modestly*).

    Args:
        records: study records (several seeds per cell for an interval).
        metric: the attribution-stability column judged (as :func:`instability`).
        summaries: global-summary columns whose change is reported.
        accuracy: the clean-accuracy column (a fraction). Default: ``"accuracy"``.
        rule: the :class:`DecisionRule`.
    """
    frame = records_frame(records, (metric, accuracy, *summaries))
    strengths = modest_strengths(frame, accuracy=accuracy, max_accuracy_drop=rule.max_accuracy_drop)
    effects = []
    for (model, name), strength in strengths.items():
        if strength is None:
            effects.append(RegularizerEffect(model, name, None, metric, None, None, {}, False))
            continue
        cell = frame[(frame["model"] == model)
                     & ((frame["regularizer"] == BASELINE)
                        | ((frame["regularizer"] == name) & (frame["strength"] == strength)))]

        def change(column: str, *, as_instability: bool = False, scale: float = 1.0,
                   absolute: bool = False, cell: pd.DataFrame = cell) -> Interval:
            joined = _paired_changes(cell, column, as_instability=as_instability)
            values = (joined["_value"] - joined["_base"]) if absolute else joined["_change"]
            return seed_interval((scale * values).tolist(), confidence=rule.confidence)

        reduction = change(metric, as_instability=True, scale=-1.0)
        accuracy_change = change(accuracy, absolute=True, scale=100.0)
        summary_changes = {s: change(s) for s in summaries}
        effects.append(RegularizerEffect(model, name, strength, metric, reduction,
                                         accuracy_change, summary_changes,
                                         _judge(reduction, rule)))
    return effects


def effects_table(effects: Sequence[RegularizerEffect]) -> pd.DataFrame:
    """The effects as a readable table: λ, accuracy change (points), improvement and summary
    changes (%, with intervals), and the verdict."""
    rows = []
    for e in effects:
        row = {"model": e.model, "regularizer": e.regularizer, "modest λ": e.strength,
               "Δ accuracy (pt)": e.accuracy_change.format(2, signed=True)
               if e.accuracy_change else "no modest λ",
               f"improvement in {e.metric} (%)": e.improvement.format(1, scale=100.0, signed=True)
               if e.improvement else "",
               **{f"Δ {s} (%)": v.format(1, scale=100.0, signed=True)
                  for s, v in e.summary_changes.items()},
               "verdict": _verdict(e.passed)}
        rows.append(row)
    return pd.DataFrame(rows)


def _verdict(passed: bool | None) -> str:
    return "inconclusive" if passed is None else "substantial" if passed else "not substantial"


# --------------------------------------------------------------------------- claims

@dataclass(frozen=True)
class ClaimCheck:
    """What :meth:`stabnb.notebook.Notebook.claim` takes: ``nb.claim(**check.to_dict())``."""

    name: str
    statement: str
    passed: bool | None
    summary: str
    numbers: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _percent(interval: Interval | None) -> str:
    return "n/a" if interval is None else interval.format(0, scale=100.0, signed=True) + "%"


def attribution_claim(effects: Sequence[RegularizerEffect], *, model: str,
                      name: str = "attribution_improves") -> ClaimCheck:
    """"Modest regularisation substantially improves attribution stability", for ``model``.

    Which regulariser the paper used is unknown, so each is judged by the rule: REPRODUCED
    if at least one passes, NOT REPRODUCED if every one fails, else INCONCLUSIVE. The
    summary lists every regulariser's improvement with its interval.
    """
    mine = [e for e in effects if e.model == model]
    if not mine:
        raise ValueError(f"no effect for model {model!r}; models: {sorted({e.model for e in effects})}.")
    verdicts = [e.passed for e in mine]
    passed = True if True in verdicts else False if all(v is False for v in verdicts) else None
    parts = [f"{e.regularizer} {_percent(e.improvement)}" for e in mine]
    metric = mine[0].metric
    return ClaimCheck(
        name=f"{name}[{model}]",
        statement=f"Modest regularisation substantially improves attribution stability ({metric}).",
        passed=passed,
        summary=f"reduction in {metric} at modest λ: " + "; ".join(parts),
        numbers={"effects": [e.to_dict() for e in mine]})


def summaries_claim(effects: Sequence[RegularizerEffect], *, model: str,
                    rule: DecisionRule = DecisionRule(),
                    name: str = "summaries_change_little") -> ClaimCheck:
    """"… even when global spectral summaries change little", for ``model``.

    Judged on the regularisers that passed :func:`attribution_claim`'s rule: REPRODUCED if at
    least one of them moved every summary by at most ``rule.max_summary_change`` (mean over
    seeds), NOT REPRODUCED if each moved some summary more, INCONCLUSIVE if none passed.
    """
    mine = [e for e in effects if e.model == model]
    improving = [e for e in mine if e.passed]
    limit = rule.max_summary_change

    def little(e: RegularizerEffect) -> bool:
        return all(abs(v.mean) <= limit for v in e.summary_changes.values())

    shown = improving or [e for e in mine if e.improvement is not None]
    parts = [f"{e.regularizer}: " + ", ".join(f"{s} {_percent(v)}"
                                              for s, v in e.summary_changes.items())
             for e in shown]
    passed = None if not improving else any(little(e) for e in improving)
    prefix = ("" if improving else "no regulariser improved attribution; " if shown
              else "no regulariser has a modest λ")
    return ClaimCheck(
        name=f"{name}[{model}]",
        statement="Attribution stability improves while global spectral summaries change little.",
        passed=passed, summary=prefix + "; ".join(parts),
        numbers={"rule": rule.to_dict(), "effects": [e.to_dict() for e in shown]})


@dataclass(frozen=True)
class EntropyBound:
    """Envelope against ordering for one per-sample table.

    Attributes:
        rho: Spearman ρ between entropy and instability over samples (the ordering).
        envelope_rho: Spearman ρ between bin order and the per-bin maximum (the envelope's
            trend).
        envelope_ratio: per-bin maximum in the highest-entropy bin over the lowest one.
        num_bins: bins after tie merging; n: samples used.
    """

    rho: float
    envelope_rho: float
    envelope_ratio: float
    num_bins: int
    n: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def entropy_bound(table: EntropyLinkTable, *, x: str = "spectral_entropy",
                  y: str = "relative_l2", num_bins: int = 8) -> EntropyBound:
    """Per-sample ρ(x, y) and the trend of the envelope ``max{y : x ∈ bin}`` over ``num_bins``
    equal-count bins of ``x`` (:func:`stabnb.entropy_link.envelope`)."""
    bound = envelope(table, x, y, num_bins=num_bins)
    rho = rank_correlation(table, x, y, num_permutations=1).rho
    maxima = bound.maximum.to(torch.float64)
    if maxima.numel() < 3:
        raise ValueError(f"only {maxima.numel()} entropy bins after merging ties; a trend needs "
                         "at least 3 (more samples, or fewer ties in the entropy).")
    order = torch.arange(maxima.numel(), dtype=torch.float64)
    ro, rm = average_ranks(order), average_ranks(maxima)
    ro, rm = ro - ro.mean(), rm - rm.mean()
    envelope_rho = float(ro @ rm / (ro.norm() * rm.norm())) if rm.norm() > 0 else 0.0
    n = int(bound.count.sum())
    return EntropyBound(rho, envelope_rho, float(maxima[-1] / maxima[0]), maxima.numel(), n)


def entropy_bound_claim(bounds: Sequence[EntropyBound], *, label: str,
                        min_envelope_rho: float = 0.6, max_rho: float = 0.5,
                        confidence: float = 0.95,
                        name: str = "entropy_envelope") -> ClaimCheck:
    """"Entropy bounds instability without rigid sample ordering", over seeds (our rule).

    With one :class:`EntropyBound` per seed, and means and t-intervals over seeds of the
    envelope trend ``|ρ_env|``, the per-sample ``|ρ|`` and their gap ``|ρ_env| − |ρ|``:

    - REPRODUCED: mean ``|ρ_env|`` ≥ ``min_envelope_rho`` (the envelope follows entropy),
      mean ``|ρ|`` < ``max_rho`` (no rigid ordering) and the gap's interval above 0;
    - NOT REPRODUCED: the interval of ``|ρ_env|`` below ``min_envelope_rho``, or that of
      ``|ρ|`` at or above ``max_rho``, or the gap's interval below 0;
    - INCONCLUSIVE: otherwise (always with one seed: no interval).

    The direction of the trend is reported, not judged: the paper's is not known to us.
    """
    if not bounds:
        raise ValueError("no EntropyBound given; compute one per seed with entropy_bound().")
    env = seed_interval([abs(b.envelope_rho) for b in bounds], confidence=confidence)
    rho = seed_interval([abs(b.rho) for b in bounds], confidence=confidence)
    gap = seed_interval([abs(b.envelope_rho) - abs(b.rho) for b in bounds], confidence=confidence)
    signed = seed_interval([b.envelope_rho for b in bounds], confidence=confidence)
    ratio = seed_interval([b.envelope_ratio for b in bounds], confidence=confidence)
    passed: bool | None = None
    if env.mean >= min_envelope_rho and rho.mean < max_rho and gap.lo > 0:
        passed = True
    elif env.hi < min_envelope_rho or rho.lo >= max_rho or gap.hi < 0:
        passed = False
    direction = "rising" if signed.mean > 0 else "falling"
    return ClaimCheck(
        name=f"{name}[{label}]",
        statement="Jacobian spectral entropy bounds attribution instability (an envelope) "
                  "without a rigid sample ordering (a weak rank correlation).",
        passed=passed,
        summary=(f"envelope trend |ρ_env| {env.format(2)} ({direction}, top/bottom bin max "
                 f"{ratio.format(2)}), per-sample |ρ| {rho.format(2)}, seeds={env.n}"),
        numbers={"bounds": [b.to_dict() for b in bounds], "min_envelope_rho": min_envelope_rho,
                 "max_rho": max_rho, "envelope_abs_rho": env.to_dict(),
                 "per_sample_abs_rho": rho.to_dict(), "gap": gap.to_dict(),
                 "envelope_ratio": ratio.to_dict()})

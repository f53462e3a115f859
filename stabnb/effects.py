"""Effects of regularisation from study records: tables over seeds, paired changes against the
baseline, each regulariser's *modest* λ and its effect under a fixed :class:`DecisionRule`.

Input is tidy: one record per trained cell (``model``, ``regularizer``, ``strength``,
``seed``) with one numeric column per measured quantity (clean accuracy, GMSI and its
components, Jacobian entropy and stable rank, attribution stability per method and metric),
as :func:`stabnb.study.run_study` writes them. Everything here is a reduction over seeds:

- :func:`summary_table`: per model × regulariser × λ, the mean of each metric over seeds
  with a Student-t confidence interval (:func:`stabnb.stats.seed_interval`);
- :func:`relative_change_table`: the change against the unregularised baseline of the same
  model and seed, ``(v − v₀)/|v₀|``, with the same interval over seeds (paired by seed, so
  the spread of initialisations largely cancels);
- :func:`regularizer_effects`: the headline comparison at each regulariser's *modest* λ.

The decision rules are ours (``docs/reconstruction.md`` gives no thresholds): a notebook states
them in its markdown before any number is computed, and they are never tuned to the outcome.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from .regularizers import BASELINE
from .stats import Interval, paired_bootstrap, seed_interval

__all__ = [
    "KEYS", "records_frame", "summary_table", "relative_change_table", "format_table",
    "instability", "modest_strengths", "DecisionRule", "RegularizerEffect",
    "regularizer_effects", "effects_table",
]

KEYS = ("model", "regularizer", "strength")
# Similarity metrics (1 = identical attributions); their instability is 1 − value.
SIMILARITIES = ("cosine", "spearman", "top_k")


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
                     accuracy: str = "accuracy", max_accuracy_drop: float = 0.01,
                     metric: str | None = None) -> dict[tuple[str, str], float | None]:
    """Each regulariser's *modest* λ: the point of its accuracy–stability frontier within the
    budget. Affordable λ are those whose mean accuracy over seeds is at most
    ``max_accuracy_drop`` (a fraction: 0.01 = one point) below the baseline's mean for the same
    model; among them the most stable on ``metric`` (lowest mean :func:`instability`; ties go to
    the larger λ), or the largest λ when ``metric`` is None. ``None`` when every λ costs more.

    Reading the point off the frontier uses the stability outcome, so a regulariser with more λ
    in its grid gets more chances: the grids have the same number of points per regulariser, and
    the claims judge held-out perturbation families, which the choice does not see alone
    (``docs/reconstruction.md``, "Regularisers").
    """
    frame = records_frame(records, (accuracy,) + ((metric,) if metric else ()))
    frame = frame.assign(_instability=instability(frame, metric) if metric else 0.0)
    means = frame.groupby(list(KEYS))[[accuracy, "_instability"]].mean()
    out: dict[tuple[str, str], float | None] = {}
    for model in sorted(frame["model"].unique()):
        if (model, BASELINE, 0.0) not in means.index:
            raise ValueError(f"no baseline (regularizer='none', strength=0) for model {model!r}; "
                             "the study grid must include the baseline.")
        floor = means.loc[(model, BASELINE, 0.0), accuracy] - max_accuracy_drop
        for name in sorted(set(frame.loc[frame["model"] == model, "regularizer"]) - {BASELINE}):
            sub = means.loc[(model, name)]
            ok = sub[sub[accuracy] >= floor - 1e-12]
            out[(model, name)] = (None if ok.empty else
                                  float(max(ok.index, key=lambda s: (-ok.loc[s, "_instability"], s))))
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
        return (f"substantial = reduction ≥ {self.min_improvement:.0%} with its "
                f"{self.confidence:.0%} interval excluding 0, at ≤ {100 * self.max_accuracy_drop:g} "
                f"point accuracy cost; 'little' = |relative change| ≤ "
                f"{self.max_summary_change:.0%}")

    def bonferroni(self, num_tests: int) -> DecisionRule:
        """The same rule at confidence ``1 − (1 − c)/num_tests``: for "any of ``num_tests``"."""
        if num_tests < 1:
            raise ValueError(f"num_tests={num_tests} must be at least 1.")
        return replace(self, confidence=1 - (1 - self.confidence) / num_tests)

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
                        rule: DecisionRule = DecisionRule(), samples: pd.DataFrame | None = None,
                        strengths: Mapping[tuple[str, str], float | None] | None = None,
                        num_resamples: int = 2000, seed: int = 0) -> list[RegularizerEffect]:
    """Each model × regulariser at its modest λ (its most stable affordable point on ``metric``,
    :func:`modest_strengths`): improvement in ``metric``, accuracy cost, and the relative change
    of each of ``summaries`` (GMSI, mean entropy, ...).

    A regulariser with no modest λ in the grid gets ``strength=None`` and ``passed=False``
    (it cannot improve stability *modestly*).

    The improvement's interval: with per-image ``samples``, a two-level bootstrap over seeds and
    probe images, paired by seed and image (:func:`stabnb.stats.paired_bootstrap` of
    ``1 − mean(v)/mean(v₀)``) — what a replication redrawing both would see; without, a t-interval
    over the per-seed relative changes (seeds only).

    Args:
        records: study records (several seeds per cell for an interval).
        metric: the attribution-stability column judged (as :func:`instability`).
        summaries: global-summary columns whose change is reported.
        accuracy: the clean-accuracy column (a fraction). Default: ``"accuracy"``.
        rule: the :class:`DecisionRule`.
        samples: per-image values: the :data:`KEYS`, ``seed``, ``image`` and ``metric`` columns
            (:func:`stabnb.study.load_study` gives them). Default: None (seed intervals).
        strengths: (model, regulariser) → the λ to judge, e.g. those chosen on the primary
            metric when judging a secondary one. Default: :func:`modest_strengths` on ``metric``.
        num_resamples, seed: of the bootstrap. Default: 2000, 0.
    """
    frame = records_frame(records, (metric, accuracy, *summaries))
    if strengths is None:
        strengths = modest_strengths(frame, accuracy=accuracy,
                                     max_accuracy_drop=rule.max_accuracy_drop, metric=metric)
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

        reduction = (change(metric, as_instability=True, scale=-1.0) if samples is None else
                     _bootstrap_reduction(samples, model, name, strength, metric, rule,
                                          num_resamples, seed))
        accuracy_change = change(accuracy, absolute=True, scale=100.0)
        summary_changes = {s: change(s) for s in summaries}
        effects.append(RegularizerEffect(model, name, strength, metric, reduction,
                                         accuracy_change, summary_changes,
                                         _judge(reduction, rule)))
    return effects


def _bootstrap_reduction(samples: pd.DataFrame, model: str, name: str, strength: float,
                         metric: str, rule: DecisionRule, num_resamples: int,
                         seed: int) -> Interval:
    """``1 − mean(v)/mean(v₀)`` of the per-image instability, bootstrapped over seeds × images."""
    missing = [c for c in (*KEYS, "seed", "image", metric) if c not in samples.columns]
    if missing:
        raise ValueError(f"samples lack column(s) {missing}; they have {sorted(samples.columns)}.")
    mine = samples[samples["model"] == model].assign(_value=lambda f: instability(f, metric))
    base = mine[mine["regularizer"] == BASELINE]
    reg = mine[(mine["regularizer"] == name) & (mine["strength"] == strength)]
    joined = base.merge(reg, on=["seed", "image"], suffixes=("_base", "_reg"))
    joined = joined[np.isfinite(joined["_value_base"]) & np.isfinite(joined["_value_reg"])]
    groups = [(g["_value_base"].to_numpy(), g["_value_reg"].to_numpy())
              for _, g in joined.groupby("seed", sort=True)]
    if not groups:
        raise ValueError(f"no per-image {metric!r} pairs for {model}/{name} λ={strength:g} and its "
                         "baseline; were the samples written by the same study?")
    return paired_bootstrap(groups, lambda b, r: 1.0 - r.mean() / b.mean(),
                            num_resamples=num_resamples, confidence=rule.confidence, seed=seed)


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

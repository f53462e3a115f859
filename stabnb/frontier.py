"""The accuracy–stability frontier of each regulariser, and penalties judged against controls.

A regularisation study trains every regulariser over a λ grid. :func:`pareto_table` lays each
cell out as (clean accuracy, instability) with intervals over seeds, marks the one-point budget,
the Pareto-optimal cells and each regulariser's chosen point (its most stable affordable λ,
:func:`stabnb.effects.modest_strengths`). :func:`control_comparisons` asks whether a penalty's
gain at its chosen point beats a control's (noise augmentation, smooth activations) at its own:
the difference of the two paired reductions, bootstrapped over seeds × probe images.
Source: ``docs/reconstruction.md``, "Controls" and "Frontier" (our protocol).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from .effects import KEYS, DecisionRule, RegularizerEffect, instability, records_frame
from .regularizers import BASELINE, CONTROLS
from .stats import Interval, paired_bootstrap, seed_interval

__all__ = ["pareto_table", "ControlComparison", "control_comparisons", "comparisons_table"]


def _pareto_optimal(accuracy: np.ndarray, unstable: np.ndarray) -> np.ndarray:
    """Cells no other cell beats on both axes (higher accuracy and lower instability)."""
    better = ((accuracy[None, :] >= accuracy[:, None]) & (unstable[None, :] <= unstable[:, None])
              & ((accuracy[None, :] > accuracy[:, None]) | (unstable[None, :] < unstable[:, None])))
    return ~better.any(axis=1)


def pareto_table(records: pd.DataFrame | Iterable[Mapping[str, Any]], *, metric: str,
                 effects: Sequence[RegularizerEffect], rule: DecisionRule = DecisionRule(),
                 accuracy: str = "accuracy") -> pd.DataFrame:
    """One row per model × regulariser × λ (the baseline included): accuracy and instability
    with t-intervals over seeds, the accuracy change against the baseline in points, whether
    the cell is within the budget, Pareto-optimal among the model's cells, and chosen.

    Columns: the :data:`~stabnb.effects.KEYS`, ``accuracy``, ``accuracy_lo``, ``accuracy_hi``
    (fractions), ``Δ accuracy (pt)``, ``instability``, ``instability_lo``, ``instability_hi``
    (of ``metric`` as :func:`~stabnb.effects.instability`), ``seeds``, ``within budget``,
    ``pareto``, ``chosen``.
    """
    frame = records_frame(records, (metric, accuracy))
    frame = frame.assign(_instability=instability(frame, metric))
    chosen = {(e.model, e.regularizer, e.strength) for e in effects if e.strength is not None}
    rows = []
    for key, group in frame.groupby(list(KEYS), sort=True):
        acc = seed_interval(group[accuracy].tolist(), confidence=rule.confidence)
        unstable = seed_interval(group["_instability"].tolist(), confidence=rule.confidence)
        rows.append({**dict(zip(KEYS, key)), "accuracy": acc.mean, "accuracy_lo": acc.lo,
                     "accuracy_hi": acc.hi, "instability": unstable.mean,
                     "instability_lo": unstable.lo, "instability_hi": unstable.hi,
                     "seeds": acc.n, "chosen": key in chosen})
    table = pd.DataFrame(rows)
    parts = []
    for model, part in table.groupby("model", sort=True):
        base = part[part["regularizer"] == BASELINE]["accuracy"]
        if base.empty:
            raise ValueError(f"no baseline cell for model {model!r}; the grid must include it.")
        part = part.assign(**{"Δ accuracy (pt)": 100 * (part["accuracy"] - float(base.iloc[0]))})
        part["within budget"] = part["Δ accuracy (pt)"] >= -100 * rule.max_accuracy_drop - 1e-9
        part["pareto"] = _pareto_optimal(part["accuracy"].to_numpy(),
                                         part["instability"].to_numpy())
        parts.append(part)
    columns = [*KEYS, "accuracy", "accuracy_lo", "accuracy_hi", "Δ accuracy (pt)", "instability",
               "instability_lo", "instability_hi", "seeds", "within budget", "pareto", "chosen"]
    return pd.concat(parts, ignore_index=True)[columns]


@dataclass(frozen=True)
class ControlComparison:
    """A penalty at its chosen λ against a control at its chosen λ, same model.

    ``difference`` is ``reduction(penalty) − reduction(control)`` of the instability metric
    (fractions of the baseline's mean; positive = the penalty is more stable than the control),
    bootstrapped over seeds × probe images with the pairing kept.
    """

    model: str
    penalty: str
    penalty_strength: float
    control: str
    control_strength: float
    metric: str
    difference: Interval

    @property
    def passed(self) -> bool | None:
        """True: the penalty beats the control (interval above 0); False: the control is at
        least as good (interval at or below 0); None: the interval straddles 0."""
        if self.difference.lo > 0:
            return True
        if self.difference.hi <= 0:
            return False
        return None

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "penalty": self.penalty,
                "penalty_strength": self.penalty_strength, "control": self.control,
                "control_strength": self.control_strength, "metric": self.metric,
                "difference": self.difference.to_dict(), "passed": self.passed}


def _per_image(samples: pd.DataFrame, model: str, regularizer: str, strength: float,
               metric: str) -> pd.DataFrame:
    mine = samples[(samples["model"] == model) & (samples["regularizer"] == regularizer)
                   & np.isclose(samples["strength"], strength)]
    return mine.assign(_value=instability(mine, metric))[["seed", "image", "_value"]]


def control_comparisons(effects: Sequence[RegularizerEffect], samples: pd.DataFrame, *,
                        controls: Sequence[str] = CONTROLS, rule: DecisionRule = DecisionRule(),
                        num_resamples: int = 2000, seed: int = 0) -> list[ControlComparison]:
    """Every penalty of ``effects`` (not a control) against every control, per model, each at
    its chosen λ; pairs where either has no affordable λ are left out.

    Args:
        effects: :func:`stabnb.effects.regularizer_effects` output (one metric).
        samples: per-image values (:meth:`stabnb.study.StudyResult.samples`) with the effects'
            metric.
        controls: which regularisers are controls. Default: :data:`stabnb.regularizers.CONTROLS`.
        rule, num_resamples, seed: the confidence and the bootstrap.
    """
    out = []
    for model in sorted({e.model for e in effects}):
        mine = [e for e in effects if e.model == model and e.strength is not None]
        if not mine:
            continue
        metric = mine[0].metric
        base = _per_image(samples, model, BASELINE, 0.0, metric)
        per_cell = {e.regularizer: _per_image(samples, model, e.regularizer, e.strength, metric)
                    for e in mine}
        for penalty in (e for e in mine if e.regularizer not in controls):
            for control in (e for e in mine if e.regularizer in controls):
                joined = base.merge(per_cell[penalty.regularizer], on=["seed", "image"],
                                    suffixes=("", "_p")).merge(
                    per_cell[control.regularizer], on=["seed", "image"], suffixes=("", "_c"))
                values = joined[["_value", "_value_p", "_value_c"]].to_numpy()
                joined = joined[np.isfinite(values).all(axis=1)]
                groups = [(g["_value"].to_numpy(), g["_value_p"].to_numpy(),
                           g["_value_c"].to_numpy()) for _, g in joined.groupby("seed")]
                if not groups:
                    raise ValueError(f"no per-image {metric!r} triples for {model}: baseline, "
                                     f"{penalty.regularizer} and {control.regularizer}.")
                difference = paired_bootstrap(groups, lambda b, p, c: (c.mean() - p.mean()) / b.mean(),
                                              num_resamples=num_resamples,
                                              confidence=rule.confidence, seed=seed)
                out.append(ControlComparison(model, penalty.regularizer, penalty.strength,
                                             control.regularizer, control.strength, metric,
                                             difference))
    return out


def comparisons_table(comparisons: Sequence[ControlComparison]) -> pd.DataFrame:
    """The comparisons as a readable table (difference of reductions in %, with intervals)."""
    return pd.DataFrame([{
        "model": c.model, "penalty (λ)": f"{c.penalty} ({c.penalty_strength:g})",
        "control (λ)": f"{c.control} ({c.control_strength:g})",
        f"reduction difference in {c.metric} (%)": c.difference.format(1, scale=100.0,
                                                                       signed=True),
        "verdict": {True: "penalty better", False: "control as good or better",
                    None: "undecided"}[c.passed]} for c in comparisons])

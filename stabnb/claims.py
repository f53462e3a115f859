"""Claims: one checked statement, its verdict and the numbers behind it, and the claims the
experiments make from regulariser effects and the entropy link.

A :class:`Claim` is of one of two kinds: an *identity* is true by construction (autograd equals
the explicit product, a completeness identity) and tests the code; a *claim* could fail on real
networks and is what a reader counts. Every notebook ends with its claims
(:meth:`stabnb.notebook.Notebook.claim`); the reproduce command collects them into the report.
The rules are ours (``docs/reconstruction.md``), stated before the numbers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import stats as _scipy_stats

from .effects import DecisionRule, RegularizerEffect, relative_change_table
from .entropy_link import EntropyLinkTable, finite_pairs
from .frontier import ControlComparison
from .io import to_jsonable
from .regularizers import SPECTRAL_PENALTIES
from .stats import Interval, fisher_z_interval, paired_bootstrap, quantile_slope

__all__ = ["KINDS", "VERDICTS", "Claim", "attribution_claims", "summaries_claim",
           "control_claims", "mechanism_claim",
           "ENVELOPE_DIRECTIONS", "entropy_envelope_claims"]

KINDS = ("claim", "identity")
VERDICTS = {"claim": ("reproduced", "not reproduced", "inconclusive"),
            "identity": ("verified", "violated", "undecided")}


@dataclass(frozen=True)
class Claim:
    """One checked statement: the sentence, whether the numbers bear it out, and the numbers.

    Attributes:
        name: stable identifier, ``"E3_attribution_improves[mlp]"``.
        statement: the sentence checked, in one line.
        passed: True, False, or None when the numbers cannot decide.
        summary: the rounded numbers behind the verdict, one line (what nbval compares).
        numbers: every number, JSON-ready, for the report.
        kind: ``"claim"`` (could fail on real networks) or ``"identity"`` (true by construction;
            it checks the code).
        reconstructed: the statement is our reconstruction, not a quotation of the paper.
    """

    name: str
    statement: str
    passed: bool | None
    summary: str
    numbers: dict[str, Any] = field(default_factory=dict)
    kind: str = "claim"
    reconstructed: bool = True

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind={self.kind!r} is unknown; choose one of {KINDS}.")
        if self.passed not in (True, False, None):
            raise ValueError(f"passed={self.passed!r} must be True, False or None (undecided).")
        object.__setattr__(self, "passed", None if self.passed is None else bool(self.passed))

    @property
    def verdict(self) -> str:
        """``reproduced``/``not reproduced``/``inconclusive`` (``verified``/``violated``/
        ``undecided`` for an identity)."""
        words = VERDICTS[self.kind]
        return words[2] if self.passed is None else words[0] if self.passed else words[1]

    def line(self) -> str:
        """The verdict line a notebook prints: ``name: summary -> VERDICT``."""
        return f"{self.name}: {self.summary} -> {self.verdict.upper()}"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "statement": self.statement, "kind": self.kind,
                "verdict": self.verdict, "passed": self.passed, "summary": self.summary,
                "numbers": to_jsonable(self.numbers), "reconstructed": self.reconstructed}


def _percent(interval: Interval | None) -> str:
    return "n/a" if interval is None else interval.format(0, scale=100.0, signed=True) + "%"


def attribution_claims(effects: Sequence[RegularizerEffect],
                       corrected: Sequence[RegularizerEffect], *, model: str,
                       name: str = "attribution_improves",
                       spectral: Sequence[str] = SPECTRAL_PENALTIES) -> list[Claim]:
    """"Modest spectral regularisation substantially improves attribution stability", for
    ``model``: one claim per regulariser, and one for "any spectral penalty".

    Each regulariser is judged by the rule on its own (``effects``): claims
    ``{name}[{model}/{regulariser}]``; a penalty outside ``spectral`` (the input-curvature penalty,
    our extension) is labelled as such in its statement. The paper's claim, ``{name}[{model}/any
    spectral]``, is REPRODUCED if at least one spectral penalty passes at the Bonferroni-corrected
    confidence (``corrected``: the same effects computed with ``rule.bonferroni(len(spectral))``),
    NOT REPRODUCED if every one fails there, else INCONCLUSIVE.
    """
    mine = [e for e in effects if e.model == model]
    if not mine:
        raise ValueError(f"no effect for model {model!r}; models: {sorted({e.model for e in effects})}.")
    metric = mine[0].metric
    claims = []
    for e in mine:
        kind = "spectral penalty" if e.regularizer in spectral else "our extension, not spectral"
        claims.append(Claim(
            name=f"{name}[{model}/{e.regularizer}]",
            statement=f"Modest {e.regularizer} regularisation ({kind}) substantially improves "
                      f"attribution stability ({metric}).",
            passed=e.passed,
            summary=(f"{e.regularizer} at λ={e.strength:g}: reduction {_percent(e.improvement)}, "
                     f"accuracy {e.accuracy_change.format(2, signed=True)} pt"
                     if e.strength is not None else f"{e.regularizer}: no modest λ in the grid"),
            numbers={"effect": e.to_dict()}))
    strict = [e for e in corrected if e.model == model and e.regularizer in spectral]
    verdicts = [e.passed for e in strict]
    passed = (None if not strict else True if True in verdicts
              else False if all(v is False for v in verdicts) else None)
    confidence = strict[0].improvement.confidence if strict and strict[0].improvement else None
    claims.append(Claim(
        name=f"{name}[{model}/any spectral]",
        statement="Modest spectral regularisation substantially improves attribution stability "
                  f"({metric}; any of {len(spectral)} spectral penalties, Bonferroni-corrected).",
        passed=passed,
        summary=((f"at {confidence:.1%} confidence: " if confidence else "")
                 + "; ".join(f"{e.regularizer} {_percent(e.improvement)}" for e in strict)
                 if strict else "no spectral penalty in this grid"),
        numbers={"corrected_confidence": confidence, "spectral": list(spectral),
                 "effects": [e.to_dict() for e in strict]}))
    return claims


def summaries_claim(effects: Sequence[RegularizerEffect], *, model: str,
                    rule: DecisionRule = DecisionRule(),
                    name: str = "summaries_change_little") -> Claim:
    """"… even when global spectral summaries change little", for ``model``.

    Judged on the regularisers that passed :func:`attribution_claims`'s rule: REPRODUCED if at
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
    return Claim(
        name=f"{name}[{model}]",
        statement="Attribution stability improves while global spectral summaries change little.",
        passed=passed, summary=prefix + "; ".join(parts),
        numbers={"rule": rule.to_dict(), "effects": [e.to_dict() for e in shown]})


def control_claims(comparisons: Sequence[ControlComparison], *, model: str,
                   name: str = "beats_controls") -> list[Claim]:
    """"The penalty's stability gain is its own, not smoothing by any means", for ``model``: one
    claim per penalty, against every control at the controls' chosen λ.

    REPRODUCED when the penalty beats every control (each difference of reductions has its
    interval above 0), NOT REPRODUCED when some control is at least as good (an interval at or
    below 0), else INCONCLUSIVE. No claim when the study has no control.
    """
    mine = [c for c in comparisons if c.model == model]
    claims = []
    for penalty in dict.fromkeys(c.penalty for c in mine):
        against = [c for c in mine if c.penalty == penalty]
        verdicts = [c.passed for c in against]
        passed = (False if False in verdicts else True if all(v is True for v in verdicts)
                  else None)
        claims.append(Claim(
            name=f"{name}[{model}/{penalty}]",
            statement=f"{penalty} at its chosen λ is more stable on held-out perturbations than "
                      "every control (noise augmentation, smooth activations) at theirs.",
            passed=passed,
            summary=f"{penalty} (λ={against[0].penalty_strength:g}) minus "
                    + "; ".join(f"{c.control} (λ={c.control_strength:g}) {_percent(c.difference)}"
                                for c in against),
            numbers={"comparisons": [c.to_dict() for c in against]}))
    return claims


def mechanism_claim(records: Any, *, model: str, metric: str, rule: DecisionRule = DecisionRule(),
                    flips: str = "mechanism.gate_flips",
                    name: str = "fewer_gate_flips") -> list[Claim]:
    """"A regulariser that steadies the saliency map does so through fewer ReLU gate flips"
    (our hypothesis, beyond the paper), for ``model``.

    Across every regularised cell (all regularisers, λ and seeds), the Spearman correlation of
    the paired relative change in gate flips with the paired relative change in ``metric``
    (instability); predicted positive. REPRODUCED when its Fisher-z interval lies above 0, NOT
    REPRODUCED when its upper end is at or below 0, else INCONCLUSIVE. No claim when the records lack ``flips`` (a network without ReLU).
    """
    frame = records[records["model"] == model]
    if flips not in frame.columns or not np.isfinite(frame[flips].astype(float)).any():
        return []
    both = relative_change_table(frame, [flips, metric], by=("model", "regularizer", "strength",
                                                             "seed"))
    wide = both.pivot_table(index=["regularizer", "strength", "seed"], columns="metric",
                            values="mean").dropna()
    n = len(wide)
    if n < 4:
        return []
    rho = float(_scipy_stats.spearmanr(wide[flips], wide[metric]).statistic)
    interval = fisher_z_interval(rho, n, confidence=rule.confidence)
    passed = True if interval.lo > 0 else False if interval.hi <= 0 else None
    return [Claim(
        name=f"{name}[{model}]",
        statement="Regularisers that lower held-out saliency change lower ReLU gate flips with it "
                  "(Spearman ρ > 0 across regularised cells; our hypothesis).",
        passed=passed, summary=f"Spearman ρ {interval.format(2)} over {n} cells",
        numbers={"rho": interval, "cells": n, "flips": flips, "metric": metric})]


ENVELOPE_DIRECTIONS = ("rising", "falling")


def entropy_envelope_claims(tables: Mapping[int, EntropyLinkTable], *, label: str,
                            predicted: str = "rising", x: str = "spectral_entropy",
                            y: str = "relative_l2", quantile: float = 0.9,
                            max_rho: float = 0.5, num_resamples: int = 400,
                            confidence: float = 0.95, seed: int = 0,
                            name: str = "E5") -> list[Claim]:
    """"Jacobian spectral entropy bounds unstable attribution regimes without enforcing rigid sample
    ordering", as two claims with their rules stated before the numbers (our reconstruction).

    - ``{name}_envelope[{label}]``: the upper envelope of instability ``y`` against entropy ``x``
      moves in the ``predicted`` direction. Estimator: the slope of the linear ``quantile``
      regression (:func:`stabnb.stats.quantile_slope`) over every seed's samples, with a two-level
      bootstrap over seeds and samples. REPRODUCED when the interval lies on the predicted side
      of 0, NOT REPRODUCED when it lies on the other side, else INCONCLUSIVE. The default
      prediction, rising, follows R3 (the typical-sensitivity bound ``σ²‖J‖₂² e^H`` grows with H)
      and the paper's "spectral concentration ↔ stability".
    - ``{name}_ordering[{label}]``: the per-sample rank correlation stays weak. Spearman ρ over all
      samples, with the same bootstrap interval: REPRODUCED when the interval of |ρ| lies below
      ``max_rho``, NOT REPRODUCED when its lower end is at or above it, else INCONCLUSIVE.

    Args:
        tables: seed → per-sample table (:func:`stabnb.entropy_link.per_sample_table`).
        label: what the tables are of, e.g. ``"mnist/mlp"``.
    """
    if predicted not in ENVELOPE_DIRECTIONS:
        raise ValueError(f"predicted={predicted!r} is unknown; choose one of {ENVELOPE_DIRECTIONS}.")
    if not tables:
        raise ValueError("no per-sample table given; pass one per seed.")
    groups = []
    for key, table in sorted(tables.items()):
        xs, ys, _ = finite_pairs(table, x, y)
        groups.append((xs.numpy(), ys.numpy()))

    def spearman_rho(a: np.ndarray, b: np.ndarray) -> float:
        return float(_scipy_stats.spearmanr(a, b).statistic)

    slope = paired_bootstrap(groups, lambda a, b: quantile_slope(a, b, quantile=quantile),
                             num_resamples=num_resamples, confidence=confidence, seed=seed)
    rho = paired_bootstrap(groups, spearman_rho, num_resamples=num_resamples,
                           confidence=confidence, seed=seed + 1)
    sign = 1.0 if predicted == "rising" else -1.0
    lo, hi = sorted((sign * slope.lo, sign * slope.hi))
    envelope_passed = True if lo > 0 else False if hi < 0 else None
    abs_lo = 0.0 if rho.lo <= 0 <= rho.hi else min(abs(rho.lo), abs(rho.hi))
    abs_hi = max(abs(rho.lo), abs(rho.hi))
    ordering_passed = True if abs_hi < max_rho else False if abs_lo >= max_rho else None
    seeds = len(groups)
    return [
        Claim(name=f"{name}_envelope[{label}]",
              statement=f"The upper envelope ({quantile:.0%} quantile) of attribution instability "
                        f"is {predicted} in Jacobian spectral entropy.",
              passed=envelope_passed,
              summary=(f"q{round(100 * quantile)} slope {slope.format(3)} per nat (predicted "
                       f"{predicted}), n={slope.n}, seeds={seeds}"),
              numbers={"slope": slope, "quantile": quantile, "predicted": predicted,
                       "num_resamples": num_resamples, "seeds": seeds}),
        Claim(name=f"{name}_ordering[{label}]",
              statement="Per-sample entropy does not rigidly order attribution instability "
                        f"(|Spearman ρ| < {max_rho}).",
              passed=ordering_passed,
              summary=f"Spearman ρ {rho.format(2)}, n={rho.n}, seeds={seeds}",
              numbers={"rho": rho, "max_rho": max_rho, "num_resamples": num_resamples}),
    ]

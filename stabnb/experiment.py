"""One experiment body for the regularisation notebooks (E2 teacher task, E3 MNIST, E4 CIFAR-10,
E6 CIFAR-100): run the study, read each regulariser's point off its frontier, judge it on
held-out perturbations and against the controls, and build every table and claim.

    result = regularisation_experiment(config, out_dir=study_dir("E3_mnist", profile, config),
                                       name="E3")
    result.effects, result.claims      # the headline and its verdicts
    result.pareto, result.comparisons  # the frontier, penalties against controls
    result.tables_dir                  # every full table, as CSV

The protocol (docs/reconstruction.md, "Regularisers", "Held-out perturbations", "Controls",
"Frontier"): per model and seed, the baseline and one network per regulariser, control and λ
from the same seed's weights, minibatch order, probe images and noise; effects are relative
changes paired by seed (and probe image, for the bootstrap).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from .claims import Claim, attribution_claims, control_claims, mechanism_claim, summaries_claim
from .effects import (
    DecisionRule,
    RegularizerEffect,
    format_table,
    regularizer_effects,
    relative_change_table,
    summary_table,
)
from .frontier import ControlComparison, comparisons_table, control_comparisons, pareto_table
from .io import write_json, write_text
from .regularizers import BASELINE, CONTROLS, SPECTRAL_PENALTIES
from .stats import Interval
from .study import StudyConfig, StudyResult, run_study

__all__ = ["PRIMARY", "TRAINING_FAMILY", "HEADLINE_METRICS", "SWEEP_METRICS", "SECONDARY_METRICS",
           "QUALITY_METRICS", "ExperimentResult", "regularisation_experiment"]

PRIMARY = "heldout.relative_l2"
"""The judged metric: the saliency change under the held-out perturbation families (none of which
any regulariser trains on), averaged per probe image over the families."""
TRAINING_FAMILY = "saliency.relative_l2"
"""The same change under the training family (Gaussian, σ = 0.05): shown beside, labelled."""
HEADLINE_METRICS = ("accuracy", "gmsi", "jacobian.operator_norm", "jacobian.spectral_entropy",
                    "jacobian.stable_rank")
"""Shown per cell with the primary metric (mean and interval over seeds)."""
SWEEP_METRICS = ("accuracy", "gmsi", "jacobian.spectral_entropy", "jacobian.stable_rank",
                 PRIMARY, TRAINING_FAMILY)
"""Shown over the λ grid."""
SECONDARY_METRICS = ("heldout.top_k", "attack.relative_l2", "attack.top_k", TRAINING_FAMILY,
                     "integrated_gradients.relative_l2", "smoothgrad.relative_l2",
                     "saliency.spearman", "saliency.abs_l2")
"""Judged by the same rule at the primary's chosen λ: shown, not claimed."""
QUALITY_METRICS = ("dependence.between_inputs", "dependence.ratio", "sanity.randomised_spearman",
                   "faithfulness.deletion_auc", "faithfulness.random_auc", "faithfulness.gain",
                   "mechanism.gate_flips", "mechanism.margin")
"""Is a stable map still meaningful (input dependence, model randomisation, deletion against a
matched random deletion), and the mechanism (ReLU gate flips, pre-activation margins)."""
METHOD_METRICS = ("relative_l2", "spearman", "top_k", "cosine", "sensitivity_max", "abs_l2",
                  "attribution_norm")


@dataclass(frozen=True)
class ExperimentResult:
    """A regularisation experiment: the study, the effects at the chosen λ, the tables, the claims.

    Attributes:
        study: the :class:`~stabnb.study.StudyResult` (records and folder).
        effects: each model × regulariser (controls included) at its chosen λ — the most stable
            affordable point of its frontier on the primary metric.
        summary: mean and interval over seeds of the headline metrics and the primary, per cell.
        sweep: the same for :data:`SWEEP_METRICS` (the λ-grid figures).
        pareto: :func:`stabnb.frontier.pareto_table` on the primary metric.
        families: model × regulariser × chosen λ → the relative change in each perturbation
            family (held-out ones, the attack, and the training family, labelled).
        comparisons: each penalty against each control (:func:`stabnb.frontier.control_comparisons`).
        quality: the baseline and each chosen cell → mean and seed interval of each of
            :data:`QUALITY_METRICS` (input dependence, sanity, faithfulness, mechanism).
        changes: method → relative change of its instability metrics against the baseline.
        secondary: model × regulariser × chosen λ → improvement of each secondary metric.
        claims: per model, one attribution claim per regulariser, the "any spectral penalty"
            claim (Bonferroni-corrected), the summaries claim, one claim per penalty against the
            controls, and the mechanism claim.
        tables_dir: where every full table is saved as CSV (with ``effects.json``).
    """

    study: StudyResult
    effects: tuple[RegularizerEffect, ...]
    summary: pd.DataFrame
    sweep: pd.DataFrame
    pareto: pd.DataFrame
    families: pd.DataFrame
    comparisons: tuple[ControlComparison, ...]
    quality: pd.DataFrame
    changes: dict[str, pd.DataFrame]
    secondary: pd.DataFrame
    claims: tuple[Claim, ...]
    tables_dir: Path
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def records(self) -> pd.DataFrame:
        """The study's records, one row per cell."""
        return self.study.records

    def to_dict(self) -> dict[str, Any]:
        return {"settings": self.settings, "effects": [e.to_dict() for e in self.effects],
                "comparisons": [c.to_dict() for c in self.comparisons],
                "claims": [c.to_dict() for c in self.claims], "tables_dir": str(self.tables_dir),
                "cells": len(self.records)}


def _secondary(records: pd.DataFrame, metrics: Sequence[str], rule: DecisionRule,
               strengths: dict[tuple[str, str], float | None]) -> pd.DataFrame:
    """Each secondary metric's improvement at the λ chosen on the primary."""
    rows: dict[tuple, dict[str, str]] = {}
    for metric in metrics:
        if metric not in records.columns:
            continue
        for e in regularizer_effects(records, metric=metric, rule=rule, strengths=strengths):
            rows.setdefault((e.model, e.regularizer, e.strength), {})[metric] = (
                "no modest λ" if e.improvement is None
                else e.improvement.format(1, scale=100.0, signed=True))
    frame = pd.DataFrame.from_dict(rows, orient="index")
    if not frame.empty:
        frame = frame.rename_axis(["model", "regularizer", "chosen λ"])
    return frame


def _chosen_cells(records: pd.DataFrame, effects: Sequence[RegularizerEffect]) -> pd.DataFrame:
    """The records of the baselines and of each regulariser's chosen λ."""
    chosen = {(e.model, e.regularizer, e.strength) for e in effects if e.strength is not None}
    return records[[r.regularizer == BASELINE or (r.model, r.regularizer, r.strength) in chosen
                    for r in records.itertuples()]]


def _at_chosen(records: pd.DataFrame, metrics: Sequence[str], effects: Sequence[RegularizerEffect],
               rule: DecisionRule, *, as_instability: bool) -> pd.DataFrame:
    """Relative change (mean and seed interval, %) of ``metrics`` at each chosen λ."""
    present = [m for m in metrics if m in records.columns]
    if not present:
        return pd.DataFrame()
    rows: dict[tuple, dict[str, str]] = {(e.model, e.regularizer, e.strength): {} for e in effects}
    table = relative_change_table(_chosen_cells(records, effects), present,
                                  as_instability=as_instability, confidence=rule.confidence)
    sign = -1.0 if as_instability else 1.0          # a reduction in instability reads positive
    for row in table.itertuples():
        lo, hi = sorted((sign * row.lo, sign * row.hi))
        cell = Interval(sign * row.mean, lo, hi, int(row.n))
        rows[(row.model, row.regularizer, row.strength)][row.metric] = cell.format(
            1, scale=100.0, signed=True)
    frame = pd.DataFrame.from_dict(rows, orient="index")
    return frame.rename_axis(["model", "regularizer", "chosen λ"]) if not frame.empty else frame


def _chosen_summary(records: pd.DataFrame, metrics: Sequence[str],
                    effects: Sequence[RegularizerEffect]) -> pd.DataFrame:
    """Mean and seed interval of ``metrics`` for the baseline and each chosen cell (formatted)."""
    present = [m for m in metrics if m in records.columns]
    if not present:
        return pd.DataFrame()
    return format_table(summary_table(_chosen_cells(records, effects), present))


def _family_metrics(records: pd.DataFrame, primary: str, training: str) -> list[str]:
    families = sorted(c for c in records.columns
                      if c.startswith("family.") and c.endswith(".relative_l2"))
    return [primary, *families, "attack.relative_l2", training]


def _family_label(metric: str, primary: str, training: str) -> str:
    if metric == primary:
        return "held-out (mean of families)"
    if metric == training:
        return "training family (Gaussian σ=0.05, labelled)"
    return metric.removesuffix(".relative_l2").removeprefix("family.")


def regularisation_experiment(config: StudyConfig, *, rule: DecisionRule = DecisionRule(),
                              primary: str = PRIMARY, training_family: str = TRAINING_FAMILY,
                              summaries: Sequence[str] = ("gmsi", "jacobian.spectral_entropy",
                                                          "jacobian.stable_rank"),
                              out_dir: str | os.PathLike, name: str, device: str = "auto",
                              jobs: int | None = None, num_resamples: int = 2000) -> ExperimentResult:
    """Run (or resume) the study of ``config`` in ``out_dir`` and evaluate the protocol.

    Args:
        config: the study; its regularisers and controls are judged against the baseline.
        rule: the :class:`~stabnb.effects.DecisionRule` (budget, improvement, summaries).
        primary: the attribution-instability column the claims judge: the held-out families'.
        training_family: the same under the training family, shown beside the primary.
        summaries: the global summaries that should "change little".
        out_dir: the study folder (:func:`stabnb.study.study_dir`); full tables go to its
            ``tables/``.
        name: the claims' prefix (``"E3"`` → ``E3_attribution_improves[mlp]``).
        device, jobs: as :func:`stabnb.study.run_study`.
        num_resamples: of the two-level bootstrap (seeds × probe images) behind the primary
            metric's intervals. Default: 2000.

    Returns:
        The :class:`ExperimentResult`.
    """
    study = run_study(config, out_dir, device=device, jobs=jobs)
    records = study.records
    samples = study.samples()
    per_image = samples if primary in samples.columns else None

    def judged(judging: DecisionRule) -> tuple[RegularizerEffect, ...]:
        return tuple(regularizer_effects(records, metric=primary, summaries=summaries,
                                         rule=judging, samples=per_image,
                                         num_resamples=num_resamples))

    effects = judged(rule)
    spectral = [r for r in config.regularizers if r in SPECTRAL_PENALTIES]
    corrected = judged(rule.bonferroni(len(spectral))) if len(spectral) > 1 else effects
    strengths = {(e.model, e.regularizer): e.strength for e in effects}
    summary = summary_table(records, [*HEADLINE_METRICS, primary])
    sweep = summary_table(records, [m for m in SWEEP_METRICS if m in records.columns])
    pareto = pareto_table(records, metric=primary, effects=effects, rule=rule)
    families = _at_chosen(records, _family_metrics(records, primary, training_family), effects,
                          rule, as_instability=True)
    families = families.rename(columns=lambda m: _family_label(m, primary, training_family))
    comparisons = (tuple(control_comparisons(effects, per_image, rule=rule,
                                             num_resamples=num_resamples))
                   if per_image is not None else ())
    quality = _chosen_summary(records, QUALITY_METRICS, effects)
    changes = {method: relative_change_table(records, [f"{method}.{m}" for m in METHOD_METRICS
                                                       if f"{method}.{m}" in records.columns],
                                             as_instability=True)
               for method in config.probe.methods}
    secondary = _secondary(records, SECONDARY_METRICS, rule, strengths)
    claims = tuple(claim for model in config.models for claim in (
        *attribution_claims(effects, corrected, model=model, name=f"{name}_attribution_improves",
                            spectral=spectral),
        summaries_claim(effects, model=model, rule=rule, name=f"{name}_summaries_change_little"),
        *control_claims(comparisons, model=model, name=f"{name}_beats_controls"),
        *mechanism_claim(records, model=model, metric=primary, rule=rule,
                         name=f"{name}_fewer_gate_flips")))
    tables = Path(out_dir) / "tables"
    for label, table in {"summary": format_table(summary), "sweep": format_table(sweep),
                         **{f"changes_{m}": format_table(t, percent=True)
                            for m, t in changes.items()}}.items():
        write_text(tables / f"{label}.csv", table.to_csv())
    for label, table in {"pareto": pareto, "families": families, "quality": quality,
                         "secondary": secondary,
                         "comparisons": comparisons_table(comparisons)}.items():
        write_text(tables / f"{label}.csv", table.to_csv())
    settings = {"primary": primary, "training_family": training_family,
                "summaries": list(summaries), "rule": rule.describe(),
                "intervals": ("bootstrap over seeds × probe images" if per_image is not None
                              else "t over seeds"), "num_resamples": num_resamples,
                "controls": [r for r in config.regularizers if r in CONTROLS],
                "name": name, "config": config.fingerprint()}
    result = ExperimentResult(study, effects, summary, sweep, pareto, families, comparisons,
                              quality, changes, secondary, claims, tables, settings)
    write_json(tables / "effects.json", result.to_dict())
    return result

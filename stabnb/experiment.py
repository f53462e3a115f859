"""One experiment body for the regularisation notebooks (E3 MNIST, E4 CIFAR-10, E6 CIFAR-100):
run the study, judge each regulariser at its modest λ, and build every table and claim.

    result = regularisation_experiment(config, rule=DecisionRule(), primary="saliency.relative_l2",
                                       summaries=("gmsi", "jacobian.spectral_entropy"),
                                       out_dir=study_dir("E3_mnist", profile, config), name="E3")
    result.effects, result.claims      # the headline and its verdicts
    result.tables_dir                  # every full table, as CSV

The protocol (docs/reconstruction.md, "Regularisers", "Attribution stability"): per model and
seed, the baseline and one network per regulariser and λ from the same seed's weights,
minibatch order, probe images and noise; effects are relative changes paired by seed.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from .claims import Claim, attribution_claims, summaries_claim
from .effects import (
    DecisionRule,
    RegularizerEffect,
    format_table,
    regularizer_effects,
    relative_change_table,
    summary_table,
)
from .io import write_json, write_text
from .regularizers import SPECTRAL_PENALTIES
from .study import StudyConfig, StudyResult, run_study

__all__ = ["HEADLINE_METRICS", "SWEEP_METRICS", "SECONDARY_METRICS", "ExperimentResult",
           "regularisation_experiment"]

HEADLINE_METRICS = ("accuracy", "gmsi", "jacobian.operator_norm", "jacobian.spectral_entropy",
                    "jacobian.stable_rank")
"""Shown per cell with the primary metric (mean and interval over seeds)."""
SWEEP_METRICS = ("accuracy", "gmsi", "jacobian.spectral_entropy", "jacobian.stable_rank",
                 "saliency.relative_l2", "saliency.abs_l2")
"""Shown over the λ grid."""
SECONDARY_METRICS = ("integrated_gradients.relative_l2", "smoothgrad.relative_l2",
                     "saliency.spearman", "saliency.top_k", "saliency.abs_l2",
                     "integrated_gradients.abs_l2")
"""Judged by the same rule as the primary metric: shown, not claimed."""
METHOD_METRICS = ("relative_l2", "spearman", "top_k", "cosine", "sensitivity_max", "abs_l2",
                  "attribution_norm")


@dataclass(frozen=True)
class ExperimentResult:
    """A regularisation experiment: the study, the effects at the modest λ, the tables, the claims.

    Attributes:
        study: the :class:`~stabnb.study.StudyResult` (records and folder).
        effects: each model × regulariser at its modest λ on the primary metric.
        summary: mean and interval over seeds of the headline metrics and the primary, per cell.
        sweep: the same for :data:`SWEEP_METRICS` (the λ-grid figures).
        changes: method → relative change of its instability metrics against the baseline.
        secondary: model × regulariser × modest λ → improvement of each secondary metric.
        claims: per model, one attribution claim per regulariser, the "any spectral penalty"
            claim (Bonferroni-corrected), then the summaries claim.
        tables_dir: where every full table is saved as CSV (with ``effects.json``).
    """

    study: StudyResult
    effects: tuple[RegularizerEffect, ...]
    summary: pd.DataFrame
    sweep: pd.DataFrame
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
                "claims": [c.to_dict() for c in self.claims], "tables_dir": str(self.tables_dir),
                "cells": len(self.records)}


def _secondary(records: pd.DataFrame, metrics: Sequence[str], rule: DecisionRule) -> pd.DataFrame:
    rows: dict[tuple, dict[str, str]] = {}
    for metric in metrics:
        if metric not in records.columns:
            continue
        for e in regularizer_effects(records, metric=metric, rule=rule):
            rows.setdefault((e.model, e.regularizer, e.strength), {})[metric] = (
                "no modest λ" if e.improvement is None
                else e.improvement.format(1, scale=100.0, signed=True))
    frame = pd.DataFrame.from_dict(rows, orient="index")
    if not frame.empty:
        frame = frame.rename_axis(["model", "regularizer", "modest λ"])
    return frame


def regularisation_experiment(config: StudyConfig, *, rule: DecisionRule = DecisionRule(),
                              primary: str = "saliency.relative_l2",
                              summaries: Sequence[str] = ("gmsi", "jacobian.spectral_entropy",
                                                          "jacobian.stable_rank"),
                              out_dir: str | os.PathLike, name: str, device: str = "auto",
                              jobs: int = 1, num_resamples: int = 2000) -> ExperimentResult:
    """Run (or resume) the study of ``config`` in ``out_dir`` and evaluate the protocol.

    Args:
        config: the study; its regularisers are judged against the baseline.
        rule: the :class:`~stabnb.effects.DecisionRule` (modest λ, improvement, summaries).
        primary: the attribution-instability column the claims judge.
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
    summary = summary_table(records, [*HEADLINE_METRICS, primary])
    sweep = summary_table(records, SWEEP_METRICS)
    changes = {method: relative_change_table(records, [f"{method}.{m}" for m in METHOD_METRICS],
                                             as_instability=True)
               for method in config.probe.methods}
    secondary = _secondary(records, SECONDARY_METRICS, rule)
    claims = tuple(claim for model in config.models for claim in (
        *attribution_claims(effects, corrected, model=model, name=f"{name}_attribution_improves",
                            spectral=spectral),
        summaries_claim(effects, model=model, rule=rule, name=f"{name}_summaries_change_little")))
    tables = Path(out_dir) / "tables"
    for label, table in {"summary": format_table(summary), "sweep": format_table(sweep),
                         **{f"changes_{m}": format_table(t, percent=True)
                            for m, t in changes.items()}}.items():
        write_text(tables / f"{label}.csv", table.to_csv())
    write_text(tables / "secondary.csv", secondary.to_csv())
    settings = {"primary": primary, "summaries": list(summaries), "rule": rule.describe(),
                "intervals": ("bootstrap over seeds × probe images" if per_image is not None
                              else "t over seeds"), "num_resamples": num_resamples,
                "name": name, "config": config.fingerprint()}
    result = ExperimentResult(study, effects, summary, sweep, changes, secondary, claims, tables,
                              settings)
    write_json(tables / "effects.json", result.to_dict())
    return result

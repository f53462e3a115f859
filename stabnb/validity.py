"""Do spectral quantities predict robustness? The population of trained networks, their
robustness table, held-out rank correlations and the claims of experiment E7
(``docs/reconstruction.md``, "Robustness (E7)").

The population is the study cells of the regularisation experiments (every regulariser, λ and
seed; finished cells are reused, :func:`stabnb.study.run_study`) plus *snapshots*: the baseline
of one model trained for fewer epochs (:func:`snapshot_config`, its own study folder, so the
experiments' configs and fingerprints are untouched). Each network's spectral quantities come
from its study record (computed by :func:`stabnb.study.evaluate_model`); its robustness from
:func:`stabnb.robustness.evaluate_robustness`, cached beside the study.

Predictive validity is read on a held-out half: the networks are split deterministically
(:func:`split_halves`, by a hash of their names), anything chosen (the robustness target) is
chosen on the fitting half, and the verdict is the held-out Spearman ρ with a bootstrap interval
over networks (:func:`spearman_interval`).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
import torch

from .claims import Claim
from .gmsi import COMPONENTS
from .io import read_json, source_digest, write_json
from .progress import progress
from .regularizers import BASELINE
from .robustness import RobustnessConfig, evaluate_robustness, pgd_attack
from .stats import Interval, seed_interval, spearman
from .study import (
    Cell,
    ModelSpec,
    ProbeConfig,
    StudyConfig,
    StudyData,
    StudyResult,
    load_study_data,
    run_study,
    study_dir,
)
from .train import TrainConfig

__all__ = ["SPECTRAL_QUANTITIES", "PREDICTED_SIGN", "snapshot_config", "population_studies",
           "robustness_preset",
           "run_population",
           "robustness_table", "split_halves", "attribution_column", "predictors",
           "spearman_interval", "rank_correlations", "choose_target", "validity_claims", "positive_control",
           "robustness_measures", "families", "ValidityResult", "predictive_validity",
           "load_network", "ball_identity"]

SPECTRAL_QUANTITIES = ("gmsi", *(f"gmsi.{c}" for c in COMPONENTS), "jacobian.operator_norm",
                       "jacobian.spectral_entropy", "jacobian.stable_rank")
"""Record columns read as predictors (with :func:`attribution_column` and
``forward_sensitivity``)."""

PREDICTED_SIGN = -1
"""Every predictor is a gain or a spread of one (larger: more sensitive), so each is predicted to
correlate *negatively* with every robustness measure (stated before the numbers)."""


def snapshot_config(config: StudyConfig, epochs: int, *, model: str | None = None) -> StudyConfig:
    """``config``'s baseline of ``model`` (default: its first) trained for ``epochs`` epochs:
    the same data, probes and schedule shape, no regulariser."""
    model = model or next(iter(config.models))
    if model not in config.models:
        raise ValueError(f"model {model!r} is not in the study; choose one of {list(config.models)}.")
    return replace(config, models={model: config.models[model]}, regularizers={},
                   regularizer_kwargs={}, train=replace(config.train, epochs=epochs))


def population_studies(profile: str, *, seed: int = 0
                       ) -> tuple[dict[str, StudyConfig], dict[str, tuple[int, ...]]]:
    """E7's studies at ``profile`` (name → config) and their snapshot epochs (name → epochs).

    ``smoke``: a population of its own (MNIST, a one-hidden-layer MLP, three seeds, the
    Jacobian-Frobenius and weight-spectral penalties, two epochs, snapshots after one), so the
    test suite needs no other notebook's study. ``quick`` and ``paper``: the studies of E3
    (MNIST) and E4 (CIFAR-10) at that profile (:func:`stabnb.presets.regularisation_config`),
    with snapshots of the first model after the last two shorter numbers of epochs: of E3's
    MLP at ``quick`` (cheap), of both studies at ``paper``.
    """
    if profile == "smoke":
        config = StudyConfig(
            dataset="mnist", models={"mlp": ModelSpec("mlp", {"widths": [64]})},
            regularizers={"jacobian_frobenius": (3e-3,), "weight_spectral": (3e-2,)},
            seeds=(seed, seed + 1, seed + 2), train=TrainConfig(epochs=2, lr=0.1, batch_size=64),
            probe=ProbeConfig(methods=("saliency",), eval_size=128, probe_size=8, gmsi_size=4,
                              num_draws=2),
            train_size=512)
        return {"E7_smoke_mnist": config}, {"E7_smoke_mnist": (1,)}
    # E3/E4's exact configs at the profile
    from .presets import regularisation_config
    studies = {"E3_mnist": regularisation_config("mnist", profile, seed=seed),
               "E4_cifar10": regularisation_config("cifar10", profile, seed=seed)}
    snapshot = studies if profile == "paper" else {"E3_mnist": studies["E3_mnist"]}
    return studies, {name: tuple(range(max(1, c.train.epochs - 2), c.train.epochs))
                     for name, c in snapshot.items()}


def robustness_preset(dataset: str, profile: str, *, num_images: int, steps: int,
                      autoattack: bool = False, seed: int = 0) -> RobustnessConfig:
    """E7's :class:`~stabnb.robustness.RobustnessConfig` for ``dataset`` at ``profile``.

    ``quick`` keeps the robustness pass near two minutes on two CPU cores: one L∞ radius (the
    smaller), both L2 radii, σ 0.1 and 0.3, one severity per corruption, two sensitivity
    draws. ``smoke`` and ``paper`` take every grid of :meth:`RobustnessConfig.for_dataset`.
    """
    if profile not in ("smoke", "quick", "paper"):
        raise ValueError(f"profile={profile!r} is unknown; choose smoke, quick or paper.")
    config = RobustnessConfig.for_dataset(dataset, num_images=num_images, steps=steps,
                                          autoattack=autoattack, seed=seed)
    if profile != "quick":
        return config
    return replace(config, epsilons={"Linf": config.epsilons["Linf"][:1],
                                     "L2": config.epsilons["L2"]},
                   sigmas=(0.1, 0.3), sensitivity_draws=2,
                   corruptions={"blur": (1.0,), "contrast": (0.5,), "translate": (2,)})


def run_population(studies: Mapping[str, StudyConfig], profile: str, *,
                   snapshots: Mapping[str, Sequence[int]] | None = None,
                   device: str = "auto") -> dict[str, StudyResult]:
    """Run (or reuse) each named study in its :func:`stabnb.study.study_dir`, and its snapshots
    ``snapshots[name]`` (epochs) as ``"<name>/epochs<e>"`` in ``E7_<name>_epochs<e>``;
    label → study result.

    Another process running the same study concurrently is safe: each cell is trained under
    its lock, and a second writer waits, then reads the finished cell.
    """
    results = {}
    for name, config in studies.items():
        results[name] = run_study(config, study_dir(name, profile, config), device=device)
        for epochs in (snapshots or {}).get(name, ()):
            if not 1 <= epochs < config.train.epochs:
                raise ValueError(f"snapshot epochs={epochs} of {name} must be in 1.."
                                 f"{config.train.epochs - 1} (fewer than the study's).")
            snap = snapshot_config(config, epochs)
            results[f"{name}/epochs{epochs}"] = run_study(
                snap, study_dir(f"E7_{name}_epochs{epochs}", profile, snap), device=device)
    return results


def split_halves(names: Sequence[str], *, seed: int = 0) -> list[str]:
    """``"fit"`` or ``"heldout"`` per name: ordered by ``sha256(seed:name)``, alternately, so
    the halves differ by at most one and a name's half depends on the set, the seed and nothing
    else (not on the order given)."""
    keys = [hashlib.sha256(f"{seed}:{n}".encode()).hexdigest() for n in names]
    order = sorted(range(len(names)), key=keys.__getitem__)
    halves = [""] * len(names)
    for rank, index in enumerate(order):
        halves[index] = "fit" if rank % 2 == 0 else "heldout"
    return halves


def robustness_table(results: Mapping[str, StudyResult],
                     configs: Mapping[str, RobustnessConfig], *, device: str = "cpu",
                     split_seed: int = 0, progress_bar: bool | None = None) -> pd.DataFrame:
    """One row per finished network: its keys (``study``, ``dataset``, ``epochs``, ``model``,
    ``regularizer``, ``strength``, ``seed``, ``network``), its study record's columns, its
    robustness row (``configs[dataset]``, on the seed's accuracy set) and its ``half``.

    Robustness rows are cached as ``<study>/robustness/<config>-<code>/<cell>.json``.
    """
    code = source_digest([evaluate_robustness.__module__])[:10]
    rows: dict[int, dict] = {}
    loaded: dict[tuple[str, int], StudyData] = {}
    jobs = [(index, int(record["seed"]), label, result, record)
            for index, (label, result) in enumerate(results.items())
            for record in result.records.to_dict("records")]
    order = sorted(range(len(jobs)), key=lambda j: jobs[j][:2])   # one data load per seed
    for position in progress(order, desc="robustness", enabled=progress_bar):
        _, _, label, result, record = jobs[position]
        dataset = result.config.dataset
        if dataset not in configs:
            raise ValueError(f"no RobustnessConfig for dataset {dataset!r}; pass configs="
                             f"{{{dataset!r}: RobustnessConfig.for_dataset({dataset!r})}}.")
        config = configs[dataset]
        cell = Cell(record["model"], record["regularizer"], float(record["strength"]),
                    int(record["seed"]))
        path = (result.out_dir / "robustness" / f"{config.fingerprint()}-{code}"
                / f"{cell.name}.json")
        if path.exists():
            measured = dict(read_json(path)["row"])       # pairs: the columns keep their order
        else:
            key = (label, cell.seed)
            if key not in loaded:                         # one load per study and seed
                loaded = {key: load_study_data(result.config, cell.seed)}
            model, data = load_network(results, record | {"study": label}, data=loaded[key],
                                       device=device)
            measured = evaluate_robustness(model, data.test_x, data.test_y, config,
                                           num_classes=data.num_classes)
            write_json(path, {"row": list(measured.items())})
        rows[position] = record | measured | {"study": label, "dataset": dataset,
                                              "epochs": result.config.train.epochs,
                                              "network": f"{label}/{cell.name}"}
    frame = pd.DataFrame([rows[position] for position in range(len(jobs))])
    if not frame.empty:
        frame["half"] = split_halves(list(frame["network"]), seed=split_seed)
    return frame


def attribution_column(frame: pd.DataFrame) -> str:
    """The attribution-instability column: ``heldout.relative_l2`` where the records have it,
    else ``saliency.relative_l2``."""
    return "heldout.relative_l2" if "heldout.relative_l2" in frame else "saliency.relative_l2"


def predictors(frame: pd.DataFrame) -> list[str]:
    """The predictor columns present: :data:`SPECTRAL_QUANTITIES`, attribution instability and
    the measured forward sensitivity."""
    wanted = (*SPECTRAL_QUANTITIES, attribution_column(frame), "forward_sensitivity")
    return [c for c in wanted if c in frame]


def spearman_interval(a: np.ndarray, b: np.ndarray, *, num_resamples: int = 1000,
                      confidence: float = 0.95, seed: int = 0) -> Interval:
    """Spearman ρ of ``(a, b)`` with a percentile bootstrap interval over the pairs (networks).

    The one-level case of :func:`stabnb.stats.paired_bootstrap`, with every resample ranked at
    once (:func:`stabnb.stats.spearman` batched over resamples): E7 needs hundreds of these.
    A resample whose column is constant has no ρ and is left out of the percentiles.
    """
    if num_resamples < 100:
        raise ValueError(f"num_resamples={num_resamples} is too few for a percentile interval; "
                         "use 1000 or more.")
    a, b = (torch.tensor(np.asarray(v, dtype=np.float64)) for v in (a, b))
    rows = torch.from_numpy(np.random.default_rng(seed).integers(0, len(a), (num_resamples, len(a))))
    draws = spearman(a[rows], b[rows]).numpy()
    constant = torch.stack([(v[rows].amax(1) == v[rows].amin(1)) for v in (a, b)]).any(0)
    draws[constant.numpy()] = np.nan
    tail = 100 * (1 - confidence) / 2
    lo, hi = np.nanpercentile(draws, [tail, 100 - tail])
    return Interval(float(spearman(a, b)), float(lo), float(hi), len(a), confidence)


def rank_correlations(frame: pd.DataFrame, predictor_columns: Sequence[str],
                      targets: Sequence[str], *, by: Sequence[str] = ("half",),
                      num_resamples: int = 1000, confidence: float = 0.95,
                      seed: int = 0) -> pd.DataFrame:
    """Spearman ρ of every predictor with every target within each ``by`` group, with a
    percentile bootstrap interval over networks; columns ``*by, predictor, target, rho, lo, hi,
    n`` (NaN where fewer than 4 finite pairs or a constant column)."""
    rows = []
    for key, group in frame.groupby(list(by), sort=True):
        key = key if isinstance(key, tuple) else (key,)
        for p in predictor_columns:
            for t in targets:
                pair = group[[p, t]].astype(float)
                pair = pair[np.isfinite(pair).all(axis=1)]
                a, b = pair[p].to_numpy(), pair[t].to_numpy()
                if len(a) < 4 or np.ptp(a) == 0 or np.ptp(b) == 0:
                    interval = Interval(math.nan, math.nan, math.nan, len(a), confidence)
                else:
                    interval = spearman_interval(a, b, num_resamples=num_resamples,
                                                 confidence=confidence, seed=seed)
                rows.append(dict(zip(by, key)) | {"predictor": p, "target": t,
                                                  "rho": interval.mean, "lo": interval.lo,
                                                  "hi": interval.hi, "n": len(a)})
    return pd.DataFrame(rows)


def choose_target(fit: pd.DataFrame, candidates: Sequence[str]) -> str:
    """The candidate robustness column with the largest spread (standard deviation) over the
    fitting half: away from the floor (every network broken) and the ceiling (none)."""
    spreads = {c: float(fit[c].std()) for c in candidates if c in fit}
    if not spreads:
        raise ValueError(f"none of the targets {list(candidates)} is in the table.")
    return max(spreads, key=lambda c: (spreads[c] if math.isfinite(spreads[c]) else -1.0))


def _side(lo: float, hi: float, sign: int) -> bool | None:
    """True when [lo, hi] lies strictly on ``sign``'s side of 0, False on the other, else None."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return None
    lo, hi = sorted((sign * lo, sign * hi))
    return True if lo > 0 else False if hi < 0 else None


def validity_claims(correlations: pd.DataFrame, *, target: str, label: str,
                    quantities: Sequence[str] = ("gmsi", *(f"gmsi.{c}" for c in COMPONENTS)),
                    name: str = "E7_predicts") -> list[Claim]:
    """One claim per quantity: on the held-out half, Spearman ρ(quantity, ``target``) < 0.

    REPRODUCED when the interval lies below 0, NOT REPRODUCED when it lies above 0, else
    INCONCLUSIVE (also where ρ is undefined: a constant column, fewer than 4 networks).
    """
    held = correlations[(correlations["half"] == "heldout") & (correlations["target"] == target)]
    claims = []
    for quantity in quantities:
        row = held[held["predictor"] == quantity]
        rho, lo, hi, n = ((math.nan,) * 3 + (0,) if row.empty else
                          tuple(row.iloc[0][["rho", "lo", "hi", "n"]]))
        interval = Interval(float(rho), float(lo), float(hi), int(n))
        claims.append(Claim(
            name=f"{name}[{label}/{quantity}]",
            statement=f"Networks with a larger {quantity} have lower robust accuracy ({target}): "
                      "Spearman ρ < 0 on the held-out half.",
            passed=_side(interval.lo, interval.hi, PREDICTED_SIGN),
            summary=(f"held-out ρ {interval.format(2)}, n={int(n)}" if math.isfinite(rho)
                     else f"held-out ρ undefined, n={int(n)}"),
            numbers={"rho": interval, "target": target, "predicted_sign": PREDICTED_SIGN}))
    return claims


def positive_control(frame: pd.DataFrame, *, target: str, label: str,
                     regularizer: str = "jacobian_frobenius", name: str = "E7_control") -> Claim:
    """Hoffman, Roberts and Yaida (2019): the Jacobian (Frobenius) penalty raises ``target``
    (L2-PGD robust accuracy) and lowers ``jacobian.operator_norm`` against the baseline of the
    same model and seed (full-length studies only; the largest λ of the grid).

    REPRODUCED when the seed interval of the accuracy change lies above 0 and that of the ‖J‖₂
    change below 0; NOT REPRODUCED when either lies on the wrong side; else INCONCLUSIVE.
    """
    main = frame[~frame["study"].str.contains("/epochs")]
    penalised = main[main["regularizer"] == regularizer]
    if penalised.empty:
        return Claim(f"{name}[{label}]", f"The {regularizer} penalty raises robust accuracy.",
                     None, f"no {regularizer} network in the population")
    strongest = penalised[penalised["strength"] == penalised["strength"].max()]
    keys = ["study", "model", "seed"]
    paired = strongest.merge(main[main["regularizer"] == BASELINE], on=keys,
                             suffixes=("", ".base"))
    accuracy = seed_interval(paired[target] - paired[f"{target}.base"])
    norm = seed_interval(paired["jacobian.operator_norm"] - paired["jacobian.operator_norm.base"])
    up, down = _side(accuracy.lo, accuracy.hi, 1), _side(norm.lo, norm.hi, -1)
    passed = False if False in (up, down) else True if up and down else None
    lam = float(strongest["strength"].iloc[0])
    return Claim(
        name=f"{name}[{label}]",
        statement=f"The {regularizer} penalty raises robust accuracy ({target}) and lowers "
                  "‖J‖₂ against the baseline of the same seed.",
        passed=passed,
        summary=(f"λ={lam:g}: Δ{target} {accuracy.format(3, signed=True)}, Δ‖J‖₂ "
                 f"{norm.format(3, signed=True)}, pairs={len(paired)}"),
        numbers={"strength": lam, "accuracy_change": accuracy, "norm_change": norm})


def robustness_measures(frame: pd.DataFrame) -> list[str]:
    """The robustness columns present: ``clean_accuracy`` and every ``<kind>@<level>``."""
    return ["clean_accuracy", *(c for c in frame if "@" in c)]


def families(frame: pd.DataFrame) -> pd.DataFrame:
    """The networks by family, for within-family correlations: each regulariser with the
    baselines of its studies (``family`` = the regulariser), and ``"training length"``: every
    baseline, full-length and snapshot."""
    main = frame[~frame["study"].str.contains("/epochs")]
    parts = [main[main["regularizer"].isin((BASELINE, r))].assign(family=r)
             for r in sorted(set(main["regularizer"]) - {BASELINE})]
    parts.append(frame[frame["regularizer"] == BASELINE].assign(family="training length"))
    return pd.concat(parts, ignore_index=True)


@dataclass(frozen=True)
class ValidityResult:
    """E7's analysis of a :func:`robustness_table`.

    Attributes:
        table: the robustness table.
        targets: data set → the L2-PGD column chosen on its fitting half (:func:`choose_target`).
        correlations: every predictor × robustness measure per data set and half.
        within: every predictor × the chosen target per data set and family (all networks).
        claims: per data set, one claim per GMSI component (and the GMSI) and the positive
            control.
    """

    table: pd.DataFrame
    targets: dict[str, str]
    correlations: pd.DataFrame
    within: pd.DataFrame
    claims: list[Claim]


def predictive_validity(table: pd.DataFrame, *, num_resamples: int = 1000,
                        seed: int = 0) -> ValidityResult:
    """Choose each data set's target on its fitting half, compute the rank correlations (by
    half, and within families), and make the claims (:func:`validity_claims`,
    :func:`positive_control`)."""
    targets, correlations, within, claims = {}, [], [], []
    for dataset, rows in table.groupby("dataset", sort=True):
        rows = rows.dropna(axis=1, how="all")
        target = choose_target(rows[rows["half"] == "fit"],
                               [c for c in rows if c.startswith("pgd_l2@")])
        targets[dataset] = target
        found = rank_correlations(rows, predictors(rows), robustness_measures(rows),
                                  num_resamples=num_resamples, seed=seed)
        correlations.append(found.assign(dataset=dataset))
        within.append(rank_correlations(families(rows), predictors(rows), [target],
                                        by=("family",), num_resamples=num_resamples,
                                        seed=seed).assign(dataset=dataset))
        claims += validity_claims(found, target=target, label=dataset)
        claims.append(positive_control(rows, target=target, label=dataset))
    return ValidityResult(table, targets, pd.concat(correlations, ignore_index=True),
                          pd.concat(within, ignore_index=True), claims)


def load_network(results: Mapping[str, StudyResult], row: Mapping[str, object], *,
                 data: StudyData | None = None,
                 device: str = "cpu") -> tuple[torch.nn.Module, StudyData]:
    """The network of one :func:`robustness_table` row and its seed's data (loaded unless
    given)."""
    result = results[str(row["study"])]
    cell = Cell(str(row["model"]), str(row["regularizer"]), float(row["strength"]),
                int(row["seed"]))
    data = data or load_study_data(result.config, cell.seed)
    return result.load_model(cell, data, device=device), data


def ball_identity(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor,
                  config: RobustnessConfig, *, name: str = "E7_pgd_in_ball") -> Claim:
    """Identity: on the first ``config.num_images`` images, every PGD image of every radius of
    ``config.epsilons`` lies in its ε-ball around ``x`` (L∞ or L2, relative tolerance 1e-5)
    and in [0, 1]."""
    x, y = x[:config.num_images], y[:config.num_images]
    worst = {}
    for norm, grid in config.epsilons.items():
        for eps in grid:
            adversarial = pgd_attack(model, x, y, norm=norm, eps=eps, steps=config.steps,
                                     random_start=config.random_start,
                                     generator=torch.Generator().manual_seed(config.seed))
            delta = (adversarial - x).flatten(1)
            size = delta.abs().amax(1) if norm == "Linf" else delta.norm(dim=1)
            worst[f"{norm}@{eps:g}"] = (float(size.max()) / eps,
                                        float(adversarial.min()), float(adversarial.max()))
    passed = all(r <= 1 + 1e-5 and lo >= 0 and hi <= 1 for r, lo, hi in worst.values())
    return Claim(name=name, statement="PGD's images stay in the ε-ball and in [0, 1].",
                 passed=passed, kind="identity",
                 summary=f"max ‖δ‖/ε {max(r for r, _, _ in worst.values()):.4f} over "
                         f"{len(worst)} radii, pixels in [0, 1]: {passed}",
                 numbers={"worst": worst})

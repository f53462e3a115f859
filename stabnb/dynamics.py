"""Training dynamics of a real network: full-batch gradient descent at learning rates set by the
initial sharpness, with the sharpness and the NTK drift tracked along the run (E8).

Our reconstruction (``docs/reconstruction.md``, "Training dynamics and label noise on real
networks (E8)"); R8 (:mod:`stabnb.theory.kernels`) is the linearised version.

- :func:`train_gd`: ``θ ← θ − η ∇L(θ)`` on the mean loss of :class:`stabnb.operators.LossHessian`
  (MSE ``L = (1/2n) Σ_i ‖f(x_i) − e_{y_i}‖²`` by default, or cross-entropy), every ``track_every``
  steps recording the sharpness ``λ_max(H_t)`` (:func:`sharpness`: Lanczos, warm-started from
  the previous top vector, with its Ritz residual), the NTK drift
  ``‖K_t − K_0‖_F / ‖K_0‖_F`` on a fixed probe set, and optionally the training outputs. A run
  *diverges* when its loss is non-finite or exceeds ``divergence_factor`` (10) × its initial loss.
- :func:`lr_sweep`: the same initial network trained at ``η = m · 2/λ_max(H_0)`` for each
  multiple m (:func:`learning_rates`); ``m > 1`` breaks the classical bound ``η < 2/λ_max``.
- The E8 claims, rules stated in their docstrings: :func:`edge_of_stability_claim` (the
  sharpness plateau ``≈ 2/η``, Cohen et al. 2021), :func:`stable_lr_claim` (divergence predicted
  by ``λ_max(H_0)``) and :func:`drift_claim` (NTK drift grows with η).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from .claims import Claim
from .io import to_jsonable
from .operators import LOSSES, LossHessian, ntk_gram
from .operators.hessian import _loss_value, _prepare_targets
from .progress import progress
from .rng import resolve_generator
from .spectra import LanczosResult, lanczos
from .stats import Interval, seed_interval, spearman

__all__ = ["GDRun", "LRSweep", "learning_rates", "sharpness", "ntk_drift", "train_gd",
           "lr_sweep", "sharpness_plateau", "sweep_table", "interval_in_band",
           "edge_of_stability_claim", "stable_lr_claim", "drift_claim"]


def learning_rates(multiples: Sequence[float], sharpness0: float) -> list[float]:
    """``η_m = m · 2/λ_max(H_0)`` for each multiple ``m`` (``m = 1``: the classical bound).

    Raises:
        ValueError: a multiple that is not a positive finite number, or ``sharpness0 ≤ 0``.
    """
    if not sharpness0 > 0 or not math.isfinite(sharpness0):
        raise ValueError(f"sharpness0={sharpness0!r} must be a positive finite λ_max(H_0); at a "
                         "non-positive top Hessian eigenvalue 2/λ_max sets no step size.")
    bad = [m for m in multiples if not (isinstance(m, (int, float)) and m > 0 and math.isfinite(m))]
    if bad or not multiples:
        raise ValueError(f"learning-rate multiples must be positive finite numbers (m in "
                         f"η = m·2/λ_max); got {list(multiples)}, bad: {bad}.")
    return [float(m) * 2.0 / sharpness0 for m in multiples]


def sharpness(model: nn.Module, inputs: Tensor, labels: Tensor, *, loss: str = "mse",
              v0: Tensor | None = None, tol: float = 1e-3,
              generator: torch.Generator | None = None, seed: int | None = 0) -> LanczosResult:
    """``λ_max`` of the training-loss Hessian by Lanczos on :class:`~stabnb.operators.LossHessian`
    (``v0`` warm-starts it, e.g. from the previous step's top vector); the result carries the
    Ritz residual ``‖Hv − θv‖``, a bound on the eigenvalue's error."""
    return lanczos(LossHessian(model, inputs, labels, loss), 1, tol=tol, v0=v0,
                   generator=generator, seed=seed)


def ntk_drift(kernel: Tensor, kernel0: Tensor) -> float:
    """Relative NTK drift ``‖K_t − K_0‖_F / ‖K_0‖_F``."""
    if kernel.shape != kernel0.shape:
        raise ValueError(f"kernels of shapes {tuple(kernel.shape)} and {tuple(kernel0.shape)}; "
                         "compute both on the same probe inputs.")
    return float(torch.linalg.matrix_norm(kernel - kernel0) / torch.linalg.matrix_norm(kernel0))


@dataclass(frozen=True)
class GDRun:
    """One full-batch gradient-descent run.

    ``loss``/``accuracy`` hold every step ``0..last`` (before the step's update); the tracked
    quantities hold the steps in ``tracked_steps`` (every ``track_every`` steps and the last):
    ``sharpness`` and its Lanczos ``sharpness_residual`` (NaN when not tracked), ``drift`` (NaN
    without probe inputs) and ``outputs`` (``(R, n, C)`` training outputs, when recorded).
    ``diverged``: the run stopped at a non-finite loss or one above ``divergence_factor`` × the
    initial loss.
    """

    lr: float
    num_steps: int
    loss: Tensor
    accuracy: Tensor
    tracked_steps: Tensor
    sharpness: Tensor
    sharpness_residual: Tensor
    drift: Tensor
    outputs: Tensor | None
    diverged: bool

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable({k: v for k, v in self.__dict__.items() if k != "outputs"})


def _check_positive_int(value: int, name: str) -> int:
    if isinstance(value, bool) or int(value) != value or int(value) < 1:
        raise ValueError(f"{name}={value!r} must be a positive integer.")
    return int(value)


def train_gd(model: nn.Module, inputs: Tensor, labels: Tensor, *, lr: float, num_steps: int,
             loss: str = "mse", track_every: int = 10, track_sharpness: bool = True,
             probe_inputs: Tensor | None = None, record_outputs: bool = False,
             sharpness_tol: float = 1e-3, divergence_factor: float = 10.0,
             generator: torch.Generator | None = None, seed: int | None = 0,
             show_progress: bool | None = None, desc: str = "gradient descent") -> GDRun:
    """Full-batch gradient descent ``θ ← θ − η ∇_θ L(θ)`` on ``(inputs, labels)``, in place.

    Args:
        model: network in eval mode (the operators refuse train mode); trained in place.
        inputs, labels: the whole training batch and its integer labels.
        lr: the step size η > 0.
        num_steps: gradient steps.
        loss: ``"mse"`` (one-hot targets, ``(1/2n) Σ ‖f − e_y‖²``) or ``"cross_entropy"``.
        track_every: record the tracked quantities every this many steps (and at the last).
        track_sharpness: run Lanczos for ``λ_max(H_t)`` at tracked steps.
        probe_inputs: inputs of the NTK drift; ``None`` records no drift.
        record_outputs: keep the training outputs ``f_t(X)`` at tracked steps.
        sharpness_tol: Lanczos relative residual tolerance.
        divergence_factor: stop once the loss exceeds this multiple of the initial loss.
        generator, seed: Lanczos start vector (the only draw).

    Raises:
        ValueError: η not positive, a bad step count, an unknown loss, or what the operators
            refuse (train mode, wrong shapes, non-integer labels).
    """
    if not lr > 0 or not math.isfinite(lr):
        raise ValueError(f"lr={lr!r} must be a positive finite step size.")
    num_steps = _check_positive_int(num_steps, "num_steps")
    track_every = _check_positive_int(track_every, "track_every")
    if loss not in LOSSES:
        raise ValueError(f"loss={loss!r} is unknown; choose one of {LOSSES}.")
    gen = resolve_generator(generator, seed)
    params = [p for p in model.parameters() if p.requires_grad]
    kernel0 = None if probe_inputs is None else ntk_gram(model, probe_inputs)
    losses, accuracies, tracked, tops, residuals, drifts, outputs = [], [], [], [], [], [], []
    vector, targets, diverged = None, None, False
    for step in progress(range(num_steps + 1), desc=desc, enabled=show_progress):
        logits = model(inputs)
        if targets is None:
            targets = _prepare_targets(loss, labels, inputs.shape[0], logits.shape[1],
                                       logits.dtype, logits.device)
        value = _loss_value(loss, logits, targets)
        losses.append(float(value.detach()))
        accuracies.append(float((logits.argmax(1) == labels).double().mean()))
        if not math.isfinite(losses[-1]) or losses[-1] > divergence_factor * losses[0]:
            diverged = True
            break
        if step % track_every == 0 or step == num_steps:
            tracked.append(step)
            if track_sharpness:
                top = sharpness(model, inputs, labels, loss=loss, v0=vector, tol=sharpness_tol,
                                generator=gen)
                vector = top.vectors[:, 0]
                tops.append(float(top.values[0]))
                residuals.append(float(top.residuals[0]))
            drifts.append(math.nan if kernel0 is None else ntk_drift(ntk_gram(model, probe_inputs),
                                                                      kernel0))
            if record_outputs:
                outputs.append(logits.detach().clone())
        if step == num_steps:
            break
        grads = torch.autograd.grad(value, params)
        with torch.no_grad():
            for p, g in zip(params, grads):
                p.sub_(lr * g)
    nan = [math.nan] * len(tracked)
    return GDRun(
        lr=float(lr), num_steps=num_steps, loss=torch.tensor(losses, dtype=torch.float64),
        accuracy=torch.tensor(accuracies, dtype=torch.float64),
        tracked_steps=torch.tensor(tracked, dtype=torch.long),
        sharpness=torch.tensor(tops or nan, dtype=torch.float64),
        sharpness_residual=torch.tensor(residuals or nan, dtype=torch.float64),
        drift=torch.tensor(drifts, dtype=torch.float64),
        outputs=torch.stack(outputs) if outputs else None, diverged=diverged)


@dataclass(frozen=True)
class LRSweep:
    """One initial network trained at ``η_m = m · 2/λ_max(H_0)`` for each multiple m.

    ``sharpness0`` and ``residual0``: λ_max(H_0) and its Lanczos residual; ``runs[i]`` is the
    run at ``multiples[i]``.
    """

    multiples: tuple[float, ...]
    sharpness0: float
    residual0: float
    runs: tuple[GDRun, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"multiples": list(self.multiples), "sharpness0": self.sharpness0,
                "residual0": self.residual0, "runs": [r.to_dict() for r in self.runs]}


def lr_sweep(model: nn.Module, inputs: Tensor, labels: Tensor, multiples: Sequence[float], *,
             num_steps: int, track_every: int = 10, probe_inputs: Tensor | None = None,
             loss: str = "mse", sharpness_tol: float = 1e-3,
             generator: torch.Generator | None = None, seed: int | None = 0,
             show_progress: bool | None = None) -> LRSweep:
    """λ_max(H_0) of ``model`` by :func:`sharpness`, then a copy of ``model`` trained by
    :func:`train_gd` at each ``η = m · 2/λ_max(H_0)`` (``model`` itself is left as it is).

    Raises:
        ValueError: a multiple ≤ 0 (:func:`learning_rates`) and what :func:`train_gd` refuses.
    """
    gen = resolve_generator(generator, seed)
    top = sharpness(model, inputs, labels, loss=loss, tol=sharpness_tol, generator=gen)
    value = float(top.values[0])
    runs = tuple(
        train_gd(copy.deepcopy(model), inputs, labels, lr=lr, num_steps=num_steps, loss=loss,
                 track_every=track_every, probe_inputs=probe_inputs, sharpness_tol=sharpness_tol,
                 generator=gen, show_progress=show_progress, desc=f"GD at η = {m:g}·2/λ₀")
        for m, lr in zip(multiples, learning_rates(multiples, value)))
    return LRSweep(tuple(float(m) for m in multiples), value, float(top.residuals[0]), runs)


def sharpness_plateau(run: GDRun, fraction: float = 1 / 3) -> float:
    """Median sharpness over the tracked steps in the last ``fraction`` of the run (NaN for a
    diverged run or one without sharpness)."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction={fraction} must lie in (0, 1].")
    if run.diverged:
        return math.nan
    late = run.tracked_steps >= (1 - fraction) * run.num_steps
    return float(run.sharpness[late].median())


def sweep_table(sweeps: Sequence[LRSweep], fraction: float = 1 / 3) -> list[dict[str, Any]]:
    """One row per seed and multiple: λ_max(H_0) and its residual, η, whether the run diverged,
    the plateau ratio ``plateau·η/2`` (1 = at 2/η), the final loss and accuracy, the largest
    Lanczos residual relative to its eigenvalue, and the final NTK drift."""
    return [{"seed": k, "multiple": m, "λ_max(H_0)": s.sharpness0, "residual_0": s.residual0,
             "η": run.lr, "diverged": run.diverged,
             "plateau·η/2": sharpness_plateau(run, fraction) * run.lr / 2,
             "final loss": float(run.loss[-1]), "final accuracy": float(run.accuracy[-1]),
             "max residual/λ": float((run.sharpness_residual / run.sharpness.abs()).max()),
             "final drift": float(run.drift[-1])}
            for k, s in enumerate(sweeps) for m, run in zip(s.multiples, s.runs)]


def interval_in_band(interval: Interval, low: float, high: float) -> bool | None:
    """True when the interval lies inside ``[low, high]``, False when it misses it, else None
    (also for one seed, whose interval is undefined)."""
    if math.isnan(interval.lo):
        return None
    if low <= interval.lo and interval.hi <= high:
        return True
    return False if interval.hi < low or interval.lo > high else None


def edge_of_stability_claim(sweeps: Sequence[LRSweep], *, band: tuple[float, float] = (0.8, 1.3),
                            fraction: float = 1 / 3, name: str = "E8_edge_of_stability") -> Claim:
    """Above the classical bound the sharpness plateaus at ``≈ 2/η`` (Cohen et al. 2021).

    Rule (ours, fixed before the numbers): for each multiple ``m > 1`` at which no seed diverged,
    the ratio ``plateau / (2/η)`` (:func:`sharpness_plateau`) gets a t-interval over seeds; the
    multiple is *in* the band when its interval lies inside ``band``, *out* when it misses it.
    REPRODUCED when every such multiple is in, NOT REPRODUCED when any is out, else (or with no
    such multiple, or one seed) INCONCLUSIVE.
    """
    multiples = sweeps[0].multiples
    ratios: dict[float, Interval] = {}
    for i, m in enumerate(multiples):
        if m <= 1 or any(s.runs[i].diverged for s in sweeps):
            continue
        ratios[m] = seed_interval([sharpness_plateau(s.runs[i], fraction) * s.runs[i].lr / 2
                                   for s in sweeps])
    verdicts = [interval_in_band(r, *band) for r in ratios.values()]
    passed = (None if not verdicts else False if False in verdicts
              else True if all(verdicts) else None)
    summary = "; ".join(f"m={m:g}: {r.format(2)}" for m, r in ratios.items()) or "no stable m > 1"
    return Claim(name=name,
                 statement=f"Above η = 2/λ_max(H_0) the sharpness plateaus within "
                           f"[{band[0]:g}, {band[1]:g}]·2/η (edge of stability).",
                 passed=passed,
                 summary=f"plateau·η/2 {summary} (band {band[0]:g}–{band[1]:g}, "
                         f"seeds={len(sweeps)})",
                 numbers={"ratios": {str(m): r for m, r in ratios.items()}, "band": list(band),
                          "fraction": fraction})


def stable_lr_claim(sweeps: Sequence[LRSweep], *, c: float = 2.0,
                    name: str = "E8_stable_lr") -> Claim:
    """The largest stable step is predicted by the initial sharpness: stable iff
    ``η < c·2/λ_max(H_0)``.

    Rule (ours): every run, on every seed, must be stable exactly when its multiple is below
    ``c``: REPRODUCED if all agree, NOT REPRODUCED otherwise. The summary gives, per seed, the
    largest stable and the smallest divergent multiple.
    """
    multiples = sweeps[0].multiples
    agree = all((s.runs[i].diverged is (m >= c)) for s in sweeps for i, m in enumerate(multiples))
    found = [{"largest_stable": max((m for m, r in zip(multiples, s.runs) if not r.diverged),
                                    default=None),
              "smallest_divergent": min((m for m, r in zip(multiples, s.runs) if r.diverged),
                                        default=None)} for s in sweeps]
    parts = [f"stable up to {f['largest_stable']}, diverged from {f['smallest_divergent']}"
             for f in found]
    return Claim(name=name,
                 statement=f"GD diverges exactly when η ≥ {c:g}·2/λ_max(H_0).",
                 passed=agree,
                 summary=f"predicted boundary m={c:g}; " + "; ".join(parts),
                 numbers={"c": c, "multiples": list(multiples), "per_seed": found,
                          "sharpness0": [s.sharpness0 for s in sweeps]})


def drift_claim(sweeps: Sequence[LRSweep], *, name: str = "E8_ntk_drift_grows") -> Claim:
    """NTK drift grows with the learning rate.

    Rule (ours): per seed, Spearman ρ between the multiple and the drift at the last tracked
    step, over the runs that did not diverge (a diverged run stops before its kernel is tracked
    again; at least three runs, else that seed gives no ρ); REPRODUCED when the t-interval of ρ
    over seeds lies above 0, NOT REPRODUCED when below, else (or one seed) INCONCLUSIVE.
    """
    finals, rhos = [], []
    for s in sweeps:
        kept = [(m, float(r.drift[-1])) for m, r in zip(s.multiples, s.runs) if not r.diverged]
        finals.append(dict(kept))
        pairs = torch.tensor(kept, dtype=torch.float64).reshape(-1, 2)
        rhos.append(float(spearman(pairs[:, 0], pairs[:, 1])) if len(kept) >= 3 else math.nan)
    if not any(math.isfinite(r) for r in rhos):
        return Claim(name=name, statement="The NTK drift ‖K_T − K_0‖_F/‖K_0‖_F grows with η.",
                     passed=None, summary="fewer than three stable runs per seed",
                     numbers={"final_drift": finals})
    rho = seed_interval(rhos)
    passed = None if math.isnan(rho.lo) else True if rho.lo > 0 else False if rho.hi < 0 else None
    first = sweeps[0].multiples[0]
    lazy = [f[first] for f in finals if first in f]
    smallest = seed_interval(lazy).format(3) if lazy else "diverged"
    return Claim(name=name, statement="The NTK drift ‖K_T − K_0‖_F/‖K_0‖_F grows with η.",
                 passed=passed,
                 summary=f"Spearman ρ(η, drift) {rho.format(2)} over stable runs; drift at "
                         f"m={first:g}: {smallest} (seeds={len(sweeps)})",
                 numbers={"rho": rho, "per_seed_rho": rhos,
                          "final_drift": [{str(m): d for m, d in f.items()} for f in finals]})

"""Label noise on a real network: how fast flipped labels are fitted, per NTK eigen-band (E8).

Our reconstruction (``docs/reconstruction.md``, "Training dynamics and label noise on real
networks (E8)"); R7 (:mod:`stabnb.theory.kernels`) is the linearised version.

- :func:`flip_labels`: exactly ``round(p·n)`` labels, drawn without replacement, each moved to a
  uniformly drawn *other* class (``y + s mod C``, ``s ~ U{1, …, C−1}``).
- :func:`label_fit_curves`: the fraction of flipped and of clean examples whose *given* label is
  the network's prediction, per recorded step; :func:`steps_to_fit` the first step a curve
  reaches a level.
- :class:`KernelBasis`: the eigenbasis ``K_0 = U Λ Uᵀ`` of the n×n empirical NTK at
  initialisation (float64, descending), cut into eigen-bands (top / middle / bottom thirds).
- :func:`band_remaining`: for the label-noise residual ``Δy = e_{ỹ} − e_y`` (n×C) and the noise
  the network has fitted, ``D_t = f_t^{noisy}(X) − f_t^{clean}(X)`` (two runs from one
  initialisation), the fraction left in band b, ``‖U_bᵀ(Δy − D_t)‖_F / ‖U_bᵀ Δy‖_F``;
  :func:`linearised_band_remaining` the same for the linearised network under MSE gradient
  descent, where direction i keeps ``|1 − ηλ_i/(nC)|^t`` of its noise (exact for a linear
  model; for a network it assumes the block NTK ``≈ (K/C) ⊗ I_C``).
- :func:`label_noise_run` runs it all for one seed; :func:`noise_speed_claim` and
  :func:`noise_band_claims` judge it.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .claims import Claim
from .dynamics import GDRun, train_gd
from .io import to_jsonable
from .operators import ntk_gram
from .rng import resolve_generator
from .stats import seed_interval

__all__ = ["BAND_NAMES", "band_names", "flip_labels", "label_fit_curves", "steps_to_fit",
           "KernelBasis", "band_remaining", "linearised_band_remaining", "LabelNoiseRun",
           "label_noise_run", "noise_table", "noise_speed_claim", "noise_band_claims"]

BAND_NAMES = ("top", "middle", "bottom")


def band_names(count: int) -> tuple[str, ...]:
    """:data:`BAND_NAMES` for three bands, else ``"band 0"`` (top), ``"band 1"``, …"""
    return BAND_NAMES if count == len(BAND_NAMES) else tuple(f"band {b}" for b in range(count))


def flip_labels(labels: Tensor, fraction: float, num_classes: int, *,
                generator: torch.Generator | None = None, seed: int | None = 0
                ) -> tuple[Tensor, Tensor]:
    """``(noisy, flipped)``: ``round(fraction·n)`` labels moved to a uniform other class, and the
    boolean mask of the moved ones.

    Raises:
        ValueError: ``fraction`` outside [0, 1), fewer than two classes, labels out of range.
    """
    if not (isinstance(fraction, (int, float)) and 0 <= fraction < 1):
        raise ValueError(f"noise fraction={fraction!r} must lie in [0, 1) (0.2 flips 20 % of "
                         "the labels).")
    if num_classes < 2:
        raise ValueError(f"num_classes={num_classes}: flipping needs at least two classes.")
    if labels.dim() != 1 or labels.is_floating_point() or (
            labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes)):
        raise ValueError(f"labels must be a 1-D integer tensor with values in [0, {num_classes}).")
    gen = resolve_generator(generator, seed)
    n = labels.numel()
    chosen = torch.randperm(n, generator=gen)[:round(fraction * n)]
    shift = torch.randint(1, num_classes, (chosen.numel(),), generator=gen)
    noisy = labels.clone()
    noisy[chosen] = (labels[chosen] + shift.to(labels.device)) % num_classes
    flipped = torch.zeros(n, dtype=torch.bool, device=labels.device)
    flipped[chosen] = True
    return noisy, flipped


def label_fit_curves(outputs: Tensor, given: Tensor, flipped: Tensor) -> tuple[Tensor, Tensor]:
    """Per recorded step, the fraction of flipped and of clean examples predicted as their given
    label (``outputs``: (R, n, C); NaN for an empty group)."""
    hit = (outputs.argmax(-1) == given).double()

    def mean(mask: Tensor) -> Tensor:
        return hit[:, mask].mean(1) if bool(mask.any()) else torch.full((hit.shape[0],), math.nan)

    return mean(flipped), mean(~flipped)


def steps_to_fit(steps: Tensor, fractions: Tensor, level: float = 0.5) -> float:
    """The first recorded step at which ``fractions`` reaches ``level`` (``inf``: never)."""
    reached = (fractions >= level).nonzero()
    return float(steps[reached[0, 0]]) if reached.numel() else math.inf


@dataclass(frozen=True)
class KernelBasis:
    """Eigenpairs of a symmetric kernel, eigenvalues descending, in float64.

    ``vectors[:, i]`` is the unit eigenvector of ``eigenvalues[i]``. ``bands(b)`` splits the
    indices into b contiguous groups (top first) of sizes differing by at most one.
    """

    eigenvalues: Tensor
    vectors: Tensor

    @classmethod
    def of(cls, kernel: Tensor) -> KernelBasis:
        """``K = U Λ Uᵀ`` by ``eigh`` of the symmetrised float64 kernel."""
        if kernel.dim() != 2 or kernel.shape[0] != kernel.shape[1]:
            raise ValueError(f"kernel must be square (n, n); got shape {tuple(kernel.shape)}.")
        kernel = kernel.double()
        values, vectors = torch.linalg.eigh((kernel + kernel.T) / 2)
        return cls(values.flip(0), vectors.flip(1))

    def project(self, values: Tensor) -> Tensor:
        """Coefficients ``Uᵀ v`` of ``v`` (n,) or (n, C), or a stack (..., n, C)."""
        return self.vectors.T @ values.double()

    def reconstruct(self, coefficients: Tensor) -> Tensor:
        """``U c``, the inverse of :meth:`project`."""
        return self.vectors @ coefficients

    def reconstruction_error(self, kernel: Tensor) -> float:
        """``‖U Λ Uᵀ − K‖_F / ‖K‖_F`` (an identity: round-off only)."""
        dense = (self.vectors * self.eigenvalues) @ self.vectors.T
        return float(torch.linalg.matrix_norm(dense - kernel.double())
                     / torch.linalg.matrix_norm(kernel.double()))

    def bands(self, num_bands: int = 3) -> list[Tensor]:
        n = self.eigenvalues.numel()
        if not 1 <= num_bands <= n:
            raise ValueError(f"num_bands={num_bands} must lie in 1..{n} (the kernel's size).")
        return [torch.as_tensor(part) for part in np.array_split(np.arange(n), num_bands)]


def _band_ratio(basis: KernelBasis, remaining: Tensor, noise: Tensor, num_bands: int) -> Tensor:
    """``‖U_bᵀ R‖_F / ‖U_bᵀ Δy‖_F`` per band from coefficient tensors (R, n, C) and (n, C)."""
    return torch.stack([torch.linalg.vector_norm(remaining[:, idx], dim=(1, 2))
                        / torch.linalg.vector_norm(noise[idx])
                        for idx in basis.bands(num_bands)], dim=1)


def band_remaining(basis: KernelBasis, noise: Tensor, fitted: Tensor, num_bands: int = 3) -> Tensor:
    """Fraction of the label-noise residual left per eigen-band, shape (R, num_bands).

    Args:
        basis: eigenbasis of the NTK at initialisation on the training inputs.
        noise: ``Δy = e_{ỹ} − e_y``, shape (n, C).
        fitted: ``D_t = f_t^{noisy}(X) − f_t^{clean}(X)``, shape (R, n, C).
    """
    if noise.dim() != 2 or fitted.shape[1:] != noise.shape:
        raise ValueError(f"noise must be (n, C) and fitted (R, n, C) with the same (n, C); got "
                         f"{tuple(noise.shape)} and {tuple(fitted.shape)}.")
    return _band_ratio(basis, basis.project(noise - fitted.double()), basis.project(noise),
                       num_bands)


def linearised_band_remaining(basis: KernelBasis, noise: Tensor, steps: Tensor, *, lr: float,
                              num_outputs: int, num_bands: int = 3) -> Tensor:
    """:func:`band_remaining` for the linearised network: direction i keeps ``(1 − ηλ_i/(nC))^t``
    of its noise after t steps of GD on the MSE mean loss (K the trace NTK, C outputs)."""
    n = basis.eigenvalues.numel()
    factor = 1 - lr * basis.eigenvalues / (n * num_outputs)
    decay = factor[None, :] ** steps.double()[:, None]               # (R, n)
    coefficients = basis.project(noise)
    return _band_ratio(basis, decay[:, :, None] * coefficients[None], coefficients, num_bands)


@dataclass(frozen=True)
class LabelNoiseRun:
    """One seed of the label-noise experiment: GD at ``lr`` for each noise ``fraction``.

    Per fraction (index k): ``runs[k]``, ``flipped[k]`` and the fit curves (``noisy_fit``:
    flipped examples predicted as their given label, ``clean_fit``: the others); for fractions
    above 0, ``remaining[k]`` (R, bands) from :func:`band_remaining` against the clean run and
    ``linearised[k]`` its linearised prediction (``None`` at fraction 0).
    """

    fractions: tuple[float, ...]
    lr: float
    steps: Tensor
    eigenvalues: Tensor
    kernel_error: float
    projection_error: float
    runs: tuple[GDRun, ...]
    flipped: tuple[Tensor, ...]
    noisy_fit: tuple[Tensor, ...]
    clean_fit: tuple[Tensor, ...]
    remaining: tuple[Tensor | None, ...]
    linearised: tuple[Tensor | None, ...]

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable({k: v for k, v in self.__dict__.items()
                            if k not in ("runs", "flipped")}
                           | {"num_flipped": [int(f.sum()) for f in self.flipped]})


def label_noise_run(model: nn.Module, inputs: Tensor, labels: Tensor, fractions: Sequence[float],
                    *, lr: float, num_steps: int, record_every: int = 10, num_bands: int = 3,
                    generator: torch.Generator | None = None, seed: int | None = 0,
                    show_progress: bool | None = None) -> LabelNoiseRun:
    """NTK eigenbasis of ``model`` on ``inputs`` (computed in float64), then a copy of ``model``
    trained by MSE GD (:func:`~stabnb.dynamics.train_gd`, outputs recorded every
    ``record_every`` steps) on the clean labels and on each noisy labelling
    (:func:`flip_labels`, from ``generator``).

    Raises:
        ValueError: a fraction outside [0, 1) and what :func:`~stabnb.dynamics.train_gd` refuses.
    """
    gen = resolve_generator(generator, seed)
    num_classes = int(model(inputs[:1]).shape[1])
    flips = [flip_labels(labels, p, num_classes, generator=gen) for p in fractions]
    kernel = ntk_gram(copy.deepcopy(model).double(), inputs.double())
    basis = KernelBasis.of(kernel)

    def train(given: Tensor, desc: str) -> GDRun:
        run = train_gd(copy.deepcopy(model), inputs, given, lr=lr, num_steps=num_steps,
                       track_every=record_every, track_sharpness=False, record_outputs=True,
                       show_progress=show_progress, desc=desc)
        if run.diverged:
            raise ValueError(f"GD diverged at lr={lr:g} ({desc}); use a smaller step.")
        return run

    clean = train(labels, "clean labels")
    runs = tuple(clean if p == 0 else train(noisy, f"{p:.0%} flipped")
                 for p, (noisy, _) in zip(fractions, flips))
    steps = clean.tracked_steps
    remaining, linearised, projection_error = [], [], 0.0
    for p, (noisy, _), run in zip(fractions, flips, runs):
        if p == 0:
            remaining.append(None)
            linearised.append(None)
            continue
        noise = (F.one_hot(noisy, num_classes) - F.one_hot(labels, num_classes)).double()
        back = basis.reconstruct(basis.project(noise))
        projection_error = max(projection_error, float(torch.linalg.matrix_norm(back - noise)
                                                       / torch.linalg.matrix_norm(noise)))
        remaining.append(band_remaining(basis, noise, run.outputs - clean.outputs, num_bands))
        linearised.append(linearised_band_remaining(basis, noise, steps, lr=lr,
                                                    num_outputs=num_classes, num_bands=num_bands))
    curves = [label_fit_curves(run.outputs, noisy, mask) for run, (noisy, mask) in zip(runs, flips)]
    return LabelNoiseRun(
        tuple(float(p) for p in fractions), float(lr), steps, basis.eigenvalues,
        basis.reconstruction_error(kernel), projection_error, runs,
        tuple(mask for _, mask in flips), tuple(c[0] for c in curves), tuple(c[1] for c in curves),
        tuple(remaining), tuple(linearised))


def noise_table(results: Sequence[LabelNoiseRun]) -> list[dict[str, Any]]:
    """One row per seed and noise fraction: steps to fit half of the flipped and of the clean
    labels, their fitted fractions at the end, and the noise remaining per band at the end."""
    rows = []
    for seed, r in enumerate(results):
        for k, p in enumerate(r.fractions):
            row = {"seed": seed, "flipped": p,
                   "steps to fit 50 % flipped": steps_to_fit(r.steps, r.noisy_fit[k]),
                   "steps to fit 50 % clean": steps_to_fit(r.steps, r.clean_fit[k]),
                   "flipped fitted (end)": float(r.noisy_fit[k][-1]),
                   "clean fitted (end)": float(r.clean_fit[k][-1])}
            if r.remaining[k] is not None:
                last, linear = r.remaining[k][-1], r.linearised[k][-1]
                names = band_names(last.numel())
                row |= {f"remaining {b}": float(v) for b, v in zip(names, last)}
                row |= {f"linearised {b}": float(v) for b, v in zip(names, linear)}
            rows.append(row)
    return rows


def _interval_verdict(values: Sequence[float]) -> tuple[Any, bool | None]:
    interval = seed_interval(values)
    if math.isnan(interval.lo):
        return interval, None
    return interval, True if interval.lo > 0 else False if interval.hi < 0 else None


def noise_speed_claim(results: Sequence[LabelNoiseRun], *,
                      name: str = "E8_noisy_labels_fitted_later") -> Claim:
    """Flipped labels are fitted later than clean ones.

    Rule (ours): per seed, the gap ``clean_fit − noisy_fit`` averaged over the recorded steps
    and over the noise fractions above 0; REPRODUCED when its t-interval over seeds lies above
    0, NOT REPRODUCED when below, else (or one seed) INCONCLUSIVE.
    """
    gaps = [float(np.mean([float((c - f).mean()) for p, c, f in
                           zip(r.fractions, r.clean_fit, r.noisy_fit) if p > 0])) for r in results]
    interval, passed = _interval_verdict(gaps)
    halves = {f"{p:.0%}": seed_interval([steps_to_fit(r.steps, r.noisy_fit[k]) for r in results])
              for k, p in enumerate(results[0].fractions) if p > 0}
    return Claim(name=name, statement="Flipped labels are fitted later than clean labels.",
                 passed=passed,
                 summary=f"mean gap (clean − flipped fitted) {interval.format(3)}; steps to fit "
                         "50 % of flipped: " + ", ".join(f"{k} {v.format(0)}"
                                                         for k, v in halves.items()),
                 numbers={"gap": interval, "steps_to_fit_half": halves})


def noise_band_claims(results: Sequence[LabelNoiseRun], *, name: str = "E8_noise_bands"
                      ) -> list[Claim]:
    """R7 on the trained network: noise along small-NTK-eigenvalue directions is fitted slowly.

    Rule (ours), per noise fraction p > 0: per seed, the remaining fraction of the noise in the
    bottom band minus that in the top band at the last recorded step; REPRODUCED when its
    t-interval over seeds lies above 0, NOT REPRODUCED when below, else INCONCLUSIVE.
    """
    claims = []
    for k, p in enumerate(results[0].fractions):
        if p == 0:
            continue
        last = [r.remaining[k][-1] for r in results]
        interval, passed = _interval_verdict([float(v[-1] - v[0]) for v in last])
        bands = [seed_interval([float(v[b]) for v in last]) for b in range(last[0].numel())]
        names = band_names(len(bands))
        claims.append(Claim(
            name=f"{name}[{p:.0%}]",
            statement="At the end of training more of the label noise remains in the bottom "
                      "third of the NTK spectrum than in the top third.",
            passed=passed,
            summary=f"bottom − top {interval.format(3)}; remaining "
                    + ", ".join(f"{b} {v.format(2)}" for b, v in zip(names, bands)),
            numbers={"difference": interval, "bands": dict(zip(names, bands))}))
    return claims

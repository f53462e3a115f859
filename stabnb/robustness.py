"""Robustness of one trained network: clean, noisy, adversarial and corrupted accuracy, and its
forward sensitivity (experiment E7; ``docs/reconstruction.md``, "Robustness (E7)").

Every model takes pixels in [0, 1] (its normalisation is its first layer), the convention of
torchattacks, and every radius here is in those pixel units:

- :func:`noise_accuracy`: accuracy on ``clip(x + σξ, 0, 1)``, ``ξ ~ N(0, I)``, one ``ξ`` per
  image shared by every σ of the grid (common random numbers);
- :func:`pgd_accuracy`: accuracy under projected gradient descent in the L∞ or L2 ball of radius
  ε (torchattacks ``PGD`` / ``PGDL2``), and :func:`autoattack_accuracy` (torchattacks
  ``AutoAttack``, standard version);
- :func:`corrupt`: blur (Gaussian, σ in pixels), contrast (``m + c(x − m)``, ``m`` the image's
  per-channel mean) and translation (shift right and down by k pixels, zero fill);
- :func:`forward_sensitivity`: ``‖f(x+δ) − f(x)‖₂ / ‖δ‖₂`` on the logits, ``δ ~ N(0, σ²I)``,
  averaged over draws (no clipping: a property of the function, not of valid images).

Randomness (:mod:`stabnb.rng`): noise is drawn from the generator passed in. torchattacks draws
its random starts (and AutoAttack seeds itself) from torch's global stream; those calls run
inside ``torch.random.fork_rng`` with the global seed set from our generator, so the caller's
global stream is untouched and one generator gives one result.
"""

from __future__ import annotations

import hashlib
import importlib
import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from types import ModuleType
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .attribution.stability import _cuda_devices, _draw_seed
from .checks import check_pixel_inputs
from .rng import resolve_generator
from .train import predict

__all__ = ["NORMS", "CORRUPTIONS", "DEFAULT_EPSILONS", "RobustnessConfig", "check_epsilon",
           "check_sigma", "noise_accuracy", "pgd_accuracy", "pgd_attack", "autoattack_accuracy",
           "corrupt", "forward_sensitivity", "column", "evaluate_robustness"]

NORMS = ("Linf", "L2")
CORRUPTIONS = ("blur", "contrast", "translate")
"""Corruption kinds of :func:`corrupt`; each takes a severity: blur σ (pixels, > 0), contrast
factor c in (0, 1), translation k pixels (a positive integer)."""

DEFAULT_EPSILONS: dict[str, dict[str, tuple[float, ...]]] = {
    "mnist": {"Linf": (0.05, 0.1), "L2": (0.5, 1.0)},
    "cifar10": {"Linf": (1 / 255, 2 / 255), "L2": (0.1, 0.25)},
    "cifar100": {"Linf": (1 / 255, 2 / 255), "L2": (0.1, 0.25)},
}
"""Data set → norm → ε grid (pixel units): small radii, where accuracy is between chance and
clean for the networks of E3/E4 (ours, not the paper's)."""


def _torchattacks() -> ModuleType:
    try:
        return importlib.import_module("torchattacks")
    except ImportError as err:
        raise ImportError("stabnb.robustness's attacks (PGD, AutoAttack): this needs "
                          "torchattacks; pip install --no-deps 'torchattacks>=3.5' (its requests pin "
                          "conflicts with JupyterLab's; its other dependencies are stabnb's)") from err


def check_epsilon(eps: float, norm: str = "Linf") -> float:
    """``eps`` as a float if it is a usable attack radius in [0, 1] pixel units, else ValueError."""
    if norm not in NORMS:
        raise ValueError(f"norm={norm!r} is unknown; choose one of {NORMS}.")
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 < eps <= 1:
        raise ValueError(f"eps={eps!r} is out of range: an attack radius is in pixel units of "
                         "[0, 1] images and must satisfy 0 < eps ≤ 1 (e.g. 8/255 for L∞).")
    return float(eps)


def check_sigma(sigma: float) -> float:
    """``sigma`` as a float if it is a usable noise scale (σ > 0, finite), else ValueError."""
    if isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or not 0 < sigma < float("inf"):
        raise ValueError(f"sigma={sigma!r} is out of range: a noise scale must be finite and "
                         "> 0, in pixel units (e.g. 0.1).")
    return float(sigma)


def _check_images(x: Tensor, y: Tensor) -> None:
    check_pixel_inputs(x, "images")
    if x.dim() != 4:
        raise ValueError(f"images have shape {tuple(x.shape)}; pass image batches (N, C, H, W), "
                         "e.g. x.view(-1, 1, 28, 28).")
    if y.shape != (x.shape[0],):
        raise ValueError(f"labels have shape {tuple(y.shape)}; pass one class per image, "
                         f"shape ({x.shape[0]},).")


def _accuracy(model: nn.Module, x: Tensor, y: Tensor) -> float:
    return float((predict(model, x).argmax(1).cpu() == y.cpu()).double().mean())


def noise_accuracy(model: nn.Module, x: Tensor, y: Tensor, sigmas: Sequence[float], *,
                   generator: torch.Generator | None = None, seed: int = 0) -> dict[float, float]:
    """σ → accuracy on ``clip(x + σξ, 0, 1)`` with one ``ξ ~ N(0, I)`` for every σ."""
    _check_images(x, y)
    sigmas = [check_sigma(s) for s in sigmas]
    xi = torch.randn(x.shape, generator=resolve_generator(generator, seed), dtype=x.dtype)
    model.eval()
    return {s: _accuracy(model, (x + s * xi).clamp(0, 1), y) for s in sigmas}


@contextmanager
def _library_rng(device: torch.device, generator: torch.Generator) -> Iterator[None]:
    """Inside: torch's global stream (what torchattacks reads) seeded from ``generator``;
    after: the caller's global stream as it was (``fork_rng``)."""
    seed = _draw_seed(generator)
    with torch.random.fork_rng(devices=_cuda_devices(device)):
        torch.manual_seed(seed)
        yield


def pgd_attack(model: nn.Module, x: Tensor, y: Tensor, *, norm: str = "Linf", eps: float,
               steps: int = 10, alpha: float | None = None, random_start: bool = True,
               generator: torch.Generator | None = None, seed: int = 0) -> Tensor:
    """Adversarial images of PGD (Madry et al. 2018; torchattacks ``PGD``/``PGDL2``) in the
    ``norm`` ball of radius ``eps`` around ``x``, clipped to [0, 1].

    ``alpha`` (step size) defaults to ``2.5 ε / steps``. The random start (uniform in the L∞
    ball, uniform-radius in the L2 ball) is drawn by torchattacks from the global stream, here
    seeded from ``generator`` inside ``fork_rng``; ``random_start=False`` starts at ``x``.

    Raises:
        ImportError: torchattacks is missing. ValueError: ε out of (0, 1], bad ``steps``.
    """
    library = _torchattacks()
    eps = check_epsilon(eps, norm)
    _check_images(x, y)
    if steps < 1:
        raise ValueError(f"steps={steps} must be at least 1.")
    alpha = 2.5 * eps / steps if alpha is None else alpha
    kind = library.PGD if norm == "Linf" else library.PGDL2
    attack = kind(model, eps=eps, alpha=alpha, steps=steps, random_start=random_start)
    device = next(model.parameters()).device
    with _library_rng(device, resolve_generator(generator, seed)):
        adversarial = attack(x.to(device), y.to(device))
    return adversarial.detach().to(x.device)


def pgd_accuracy(model: nn.Module, x: Tensor, y: Tensor, **attack: Any) -> float:
    """Accuracy on :func:`pgd_attack`'s images (``attack`` as it takes them)."""
    return _accuracy(model, pgd_attack(model, x, y, **attack), y)


def autoattack_accuracy(model: nn.Module, x: Tensor, y: Tensor, *, norm: str = "Linf",
                        eps: float, num_classes: int = 10,
                        generator: torch.Generator | None = None, seed: int = 0) -> float:
    """Accuracy under AutoAttack (Croce and Hein 2020; torchattacks, standard version), its
    seed drawn from ``generator`` and its global draws kept inside ``fork_rng``."""
    library = _torchattacks()
    eps = check_epsilon(eps, norm)
    _check_images(x, y)
    generator = resolve_generator(generator, seed)
    device = next(model.parameters()).device
    attack = library.AutoAttack(model, norm=norm, eps=eps, version="standard",
                                n_classes=num_classes, seed=_draw_seed(generator) % 2**31)
    with _library_rng(device, generator):
        adversarial = attack(x.to(device), y.to(device))
    return _accuracy(model, adversarial.detach(), y)


def _blur(x: Tensor, sigma: float) -> Tensor:
    radius = max(1, int(3 * sigma + 0.5))
    offsets = torch.arange(-radius, radius + 1, dtype=x.dtype)
    kernel = torch.exp(-offsets ** 2 / (2 * sigma ** 2))
    kernel = kernel / kernel.sum()
    channels = x.shape[1]
    rows = kernel.view(1, 1, -1, 1).repeat(channels, 1, 1, 1)
    padded = F.pad(x, (radius, radius, radius, radius), mode="replicate")
    out = F.conv2d(padded, rows, groups=channels)
    return F.conv2d(out, rows.transpose(2, 3), groups=channels)


def corrupt(x: Tensor, kind: str, severity: float) -> Tensor:
    """``x`` under the corruption ``kind`` (:data:`CORRUPTIONS`) at ``severity``; same shape,
    values in [0, 1], no randomness.

    - ``"blur"``: separable Gaussian kernel of std ``severity`` pixels (radius ⌈3σ⌉, edges
      replicated);
    - ``"contrast"``: ``m + c (x − m)`` with ``c = severity`` in (0, 1), ``m`` the per-image,
      per-channel mean;
    - ``"translate"``: shift right and down by ``severity`` pixels (an integer), zero fill.
    """
    if x.dim() != 4:
        raise ValueError(f"images have shape {tuple(x.shape)}; pass (N, C, H, W).")
    if kind == "blur":
        return _blur(x, check_sigma(severity)).clamp(0, 1)
    if kind == "contrast":
        if not 0 < severity < 1:
            raise ValueError(f"contrast severity={severity} must lie in (0, 1) (the factor c).")
        mean = x.mean(dim=(2, 3), keepdim=True)
        return (mean + severity * (x - mean)).clamp(0, 1)
    if kind == "translate":
        if int(severity) != severity or not 0 < severity < min(x.shape[2:]):
            raise ValueError(f"translate severity={severity} must be a whole number of pixels in "
                             f"1..{min(x.shape[2:]) - 1}.")
        k = int(severity)
        return F.pad(x, (k, 0, k, 0))[..., :x.shape[2], :x.shape[3]]
    raise ValueError(f"corruption {kind!r} is unknown; choose one of {CORRUPTIONS}.")


def forward_sensitivity(model: nn.Module, x: Tensor, *, sigma: float, num_draws: int = 4,
                        generator: torch.Generator | None = None, seed: int = 0) -> Tensor:
    """Per image, the mean over ``num_draws`` draws ``δ ~ N(0, σ²I)`` of
    ``‖f(x+δ) − f(x)‖₂ / ‖δ‖₂`` (logits; at most ``sup_x‖J_f‖₂`` to first order, R2)."""
    sigma = check_sigma(sigma)
    check_pixel_inputs(x, "images")
    if num_draws < 1:
        raise ValueError(f"num_draws={num_draws} must be at least 1.")
    generator = resolve_generator(generator, seed)
    model.eval()
    clean = predict(model, x)
    ratios = []
    for _ in range(num_draws):
        delta = sigma * torch.randn(x.shape, generator=generator, dtype=x.dtype)
        change = (predict(model, x + delta) - clean).flatten(1).norm(dim=1)
        ratios.append(change.cpu().double() / delta.flatten(1).norm(dim=1).double())
    return torch.stack(ratios).mean(0)


@dataclass(frozen=True)
class RobustnessConfig:
    """What :func:`evaluate_robustness` measures on each network.

    Attributes:
        num_images: the first ``num_images`` images of the accuracy set. Default: 256.
        sigmas: Gaussian-noise σ grid. Default: (0.1, 0.2, 0.3).
        epsilons: norm → PGD ε grid (pixel units). Default: MNIST's of :data:`DEFAULT_EPSILONS`.
        steps: PGD steps. Default: 10.
        random_start: PGD's random start. Default: True.
        autoattack: also run AutoAttack at the smallest ε of each norm (slow: the paper
            profile). Default: False.
        corruptions: kind → severities. Default: blur σ 0.5 and 1, contrast 0.5 and 0.25,
            translation 1 and 2 pixels.
        sensitivity_sigma: σ of the forward-sensitivity noise. Default: 0.05.
        sensitivity_draws: its draws per image. Default: 4.
        seed: seeds the noise, the random starts and AutoAttack. Default: 0.
    """

    num_images: int = 256
    sigmas: tuple[float, ...] = (0.1, 0.2, 0.3)
    epsilons: Mapping[str, tuple[float, ...]] = field(
        default_factory=lambda: dict(DEFAULT_EPSILONS["mnist"]))
    steps: int = 10
    random_start: bool = True
    autoattack: bool = False
    corruptions: Mapping[str, tuple[float, ...]] = field(
        default_factory=lambda: {"blur": (0.5, 1.0), "contrast": (0.5, 0.25),
                                 "translate": (1, 2)})
    sensitivity_sigma: float = 0.05
    sensitivity_draws: int = 4
    seed: int = 0

    def __post_init__(self) -> None:
        if self.num_images < 1 or self.steps < 1 or self.sensitivity_draws < 1:
            raise ValueError("num_images, steps and sensitivity_draws must each be at least 1; "
                             f"got {self.num_images}, {self.steps}, {self.sensitivity_draws}.")
        object.__setattr__(self, "sigmas", tuple(check_sigma(s) for s in self.sigmas))
        check_sigma(self.sensitivity_sigma)
        object.__setattr__(self, "epsilons", {
            norm: tuple(check_epsilon(e, norm) for e in grid)
            for norm, grid in dict(self.epsilons).items()})
        unknown = sorted(set(self.corruptions) - set(CORRUPTIONS))
        if unknown:
            raise ValueError(f"corruptions {unknown} are unknown; choose from {CORRUPTIONS}.")
        object.__setattr__(self, "corruptions", {k: tuple(v) for k, v in self.corruptions.items()})

    @classmethod
    def for_dataset(cls, dataset: str, **overrides: Any) -> RobustnessConfig:
        """The config with ``dataset``'s ε grids (:data:`DEFAULT_EPSILONS`)."""
        if dataset not in DEFAULT_EPSILONS:
            raise ValueError(f"no default ε grid for dataset={dataset!r}; pass epsilons= or use "
                             f"one of {sorted(DEFAULT_EPSILONS)}.")
        return cls(**({"epsilons": dict(DEFAULT_EPSILONS[dataset])} | overrides))

    def fingerprint(self) -> str:
        """A short hash of the settings: equal configs, equal fingerprints."""
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:12]


def column(kind: str, level: float) -> str:
    """A robustness column's name: ``"pgd_l2@0.5"``, ``"noise@0.1"``, ``"blur@1"``."""
    return f"{kind}@{level:g}"


def evaluate_robustness(model: nn.Module, x: Tensor, y: Tensor,
                        config: RobustnessConfig = RobustnessConfig(), *,
                        num_classes: int = 10) -> dict[str, float]:
    """One network's robustness row on the first ``config.num_images`` of ``(x, y)``:
    ``clean_accuracy``, ``noise@σ``, ``pgd_linf@ε``, ``pgd_l2@ε`` (``autoattack_linf@ε``,
    ``autoattack_l2@ε`` at each norm's smallest ε), ``<corruption>@<severity>`` and ``forward_sensitivity`` (mean over
    images). Each measure draws from its own generator seeded from ``config.seed``.
    """
    x, y = x[:config.num_images], y[:config.num_images]
    _check_images(x, y)
    model.eval()

    def stream(offset: int) -> torch.Generator:
        return torch.Generator().manual_seed(config.seed * 1000 + offset)

    row = {"clean_accuracy": _accuracy(model, x, y)}
    row |= {column("noise", s): a for s, a in
            noise_accuracy(model, x, y, config.sigmas, generator=stream(1)).items()}
    for offset, (norm, grid) in enumerate(config.epsilons.items()):
        for eps in grid:
            row[column(f"pgd_{norm.lower()}", eps)] = pgd_accuracy(
                model, x, y, norm=norm, eps=eps, steps=config.steps,
                random_start=config.random_start, generator=stream(10 + offset))
            if config.autoattack and eps == grid[0]:
                row[column(f"autoattack_{norm.lower()}", eps)] = autoattack_accuracy(
                    model, x, y, norm=norm, eps=eps, num_classes=num_classes,
                    generator=stream(20 + offset))
    for kind, severities in config.corruptions.items():
        row |= {column(kind, s): _accuracy(model, corrupt(x, kind, s), y) for s in severities}
    row["forward_sensitivity"] = float(forward_sensitivity(
        model, x, sigma=config.sensitivity_sigma, num_draws=config.sensitivity_draws,
        generator=stream(2)).mean())
    return row

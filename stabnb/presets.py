"""The regularisation studies of E3 (MNIST), E4 (CIFAR-10) and E6 (CIFAR-100) at each profile,
as one function, so a notebook and anything reusing its networks (E7) build the same
:class:`~stabnb.study.StudyConfig` and so find the same study folder.

    config = regularisation_config("mnist", "quick", seed=0)            # what E3 runs
    config = regularisation_config("mnist", "quick", num_seeds=5)       # a notebook override
    profile_table("mnist")                                              # the sizes, per profile

Every size has one value per profile (:data:`PROFILE_SIZES`); an override replaces it, ``None``
keeps it. The λ grids are :data:`stabnb.study.DEFAULT_STRENGTHS`; a profile keeps the
``grid_points`` largest λ of each (``None``: all of them), so the quick profile traces the top of
each accuracy–stability frontier and the paper profile all of it.

The paper profile trains networks worth studying, fast (``benchmarks/check_recipes.py``):
Nesterov SGD with a triangular schedule and label smoothing on the full training sets in large
batches; CIFAR adds flip-and-translate augmentation and trains its ResNet as airbench does
(:class:`stabnb.models.FastResNet`, :data:`FAST_RESNET_RECIPE`). The smoke and quick profiles
keep the plain recipe (:data:`_PLAIN`), so their studies and numbers are unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd

from .regularizers import CONTROLS, SPECTRAL_PENALTIES
from .study.config import DEFAULT_STRENGTHS, ModelSpec, ProbeConfig, StudyConfig
from .train import TrainConfig

__all__ = ["STUDY_DATASETS", "PROFILE_SIZES", "ALL_REGULARIZERS", "FAST_RESNET_RECIPE",
           "regularisation_config", "profile_sizes", "profile_table"]

STUDY_DATASETS = ("mnist", "cifar10", "cifar100")
ALL_REGULARIZERS = (*SPECTRAL_PENALTIES, "input_curvature", *CONTROLS)
"""Every study compares the spectral penalties, our curvature penalty and the two controls."""

_SMOKE_REGULARIZERS = ("input_curvature", "noise_augmentation")

_PLAIN = dict(momentum=0.9, weight_decay=5e-4, schedule="cosine", label_smoothing=0.0,
              augment="none")
"""The training settings of the smoke and quick profiles: :class:`~stabnb.train.TrainConfig`'s
defaults (momentum SGD, cosine schedule, no label smoothing, no augmentation)."""

_MNIST = {
    "smoke": dict(models=("mlp",), regularizers=_SMOKE_REGULARIZERS, grid_points=1, num_seeds=1,
                  epochs=1, batch_size=64, lr=0.1, train_size=256, eval_size=128, probe_size=8,
                  gmsi_size=4, num_draws=2, ig_steps=4, smoothgrad_samples=3,
                  precision="float32", mlp_lr=None, **_PLAIN),
    "quick": dict(models=("mlp",), regularizers=ALL_REGULARIZERS, grid_points=3, num_seeds=3,
                  epochs=3, batch_size=128, lr=0.05, train_size=8192, eval_size=2000,
                  probe_size=128, gmsi_size=32, num_draws=5, ig_steps=16, smoothgrad_samples=8,
                  precision="float32", mlp_lr=None, **_PLAIN),
    "paper": dict(models=("mlp", "cnn"), regularizers=ALL_REGULARIZERS, grid_points=0,
                  num_seeds=3, epochs=5, batch_size=512, lr=0.1, train_size=0, eval_size=0,
                  probe_size=256, gmsi_size=64, num_draws=10, ig_steps=32, smoothgrad_samples=16,
                  precision="bfloat16", mlp_lr=0.2, momentum=0.9, weight_decay=5e-4,
                  schedule="triangle", label_smoothing=0.1, augment="none"),
}
_CIFAR = {
    "smoke": dict(models=("cnn",), regularizers=_SMOKE_REGULARIZERS, grid_points=1, num_seeds=1,
                  epochs=1, batch_size=32, lr=0.1, train_size=128, eval_size=64, probe_size=4,
                  gmsi_size=4, num_draws=2, ig_steps=4, smoothgrad_samples=2, resnet="resnet",
                  resnet_width=4, resnet_blocks=1, precision="float32", **_PLAIN),
    "quick": dict(models=("cnn",), regularizers=ALL_REGULARIZERS, grid_points=2, num_seeds=2,
                  epochs=3, batch_size=128, lr=0.05, train_size=4096, eval_size=1000,
                  probe_size=32, gmsi_size=8, num_draws=4, ig_steps=8, smoothgrad_samples=4,
                  resnet="resnet", resnet_width=8, resnet_blocks=1, precision="float32",
                  **_PLAIN),
    "paper": dict(models=("cnn", "resnet"), regularizers=ALL_REGULARIZERS, grid_points=0,
                  num_seeds=3, epochs=10, batch_size=1024, lr=0.1, train_size=0, eval_size=0,
                  probe_size=128, gmsi_size=32, num_draws=8, ig_steps=32, smoothgrad_samples=16,
                  resnet="resnet_fast", resnet_width=64, resnet_blocks=1, precision="bfloat16",
                  momentum=0.9, weight_decay=5e-4, schedule="triangle", label_smoothing=0.2,
                  augment="flip_translate"),
}
FAST_RESNET_RECIPE = {"lr": 1.3, "momentum": 0.85, "weight_decay": 1.5e-3}
"""What ``resnet_fast`` trains with instead of its study's lr, momentum and weight decay
(:attr:`~stabnb.study.ModelSpec.train`): airbench's ``main0_baseline.py`` settings (lr 10 per
1024 examples, momentum 0.85, weight decay 0.0153 per 1024 examples, for a summed loss) for
the mean loss of :func:`stabnb.train.train` at batch 1024: lr = 10 / (1 + 1/0.15) ≈ 1.3 and
weight decay 0.0153 / 10 ≈ 1.5e-3 (so lr · weight decay = 0.0153 / (1 + 1/0.15), as there).
Another batch size B needs lr × B/1024 and weight decay × 1024/B."""
PROFILE_SIZES: dict[str, dict[str, dict[str, Any]]] = {
    "mnist": _MNIST, "cifar10": _CIFAR, "cifar100": _CIFAR}
"""Data set → profile → size. ``train_size``, ``eval_size`` and ``grid_points`` 0 mean "all";
``precision="bfloat16"`` applies on a GPU (a CPU trains in float32)."""

_DESCRIPTIONS = {
    "models": "architectures", "regularizers": "regularisers and controls",
    "grid_points": "largest λ per regulariser (0: the whole grid)", "num_seeds": "seeds",
    "epochs": "epochs", "batch_size": "minibatch", "lr": "peak learning rate",
    "mlp_lr": "MLP peak learning rate (None: lr)",
    "train_size": "training images per seed (0: all)", "eval_size": "test images (0: all)",
    "probe_size": "probe images per seed", "gmsi_size": "GMSI images",
    "num_draws": "noise draws per probe image", "ig_steps": "Integrated Gradients steps",
    "smoothgrad_samples": "SmoothGrad samples", "resnet": "ResNet architecture",
    "resnet_width": "ResNet first-stage channels", "resnet_blocks": "ResNet blocks per stage",
    "precision": "training precision", "momentum": "SGD (Nesterov) momentum",
    "weight_decay": "weight decay", "schedule": "learning-rate schedule",
    "label_smoothing": "label smoothing", "augment": "augmentation",
}


def _check_dataset(dataset: str, profile: str | None = None) -> None:
    if dataset not in PROFILE_SIZES:
        raise ValueError(f"dataset={dataset!r} has no regularisation study; choose one of "
                         f"{STUDY_DATASETS}.")
    if profile is not None and profile not in PROFILE_SIZES[dataset]:
        raise ValueError(f"profile={profile!r} is unknown; choose one of "
                         f"{tuple(PROFILE_SIZES[dataset])}.")


def profile_sizes(dataset: str, profile: str, **overrides: Any) -> dict[str, Any]:
    """The sizes of ``dataset``'s study at ``profile``, with the non-None ``overrides`` applied.

    Raises:
        ValueError: an unknown data set, profile or override name (the message lists them).
    """
    _check_dataset(dataset, profile)
    sizes = dict(PROFILE_SIZES[dataset][profile])
    unknown = sorted(set(overrides) - set(sizes))
    if unknown:
        raise ValueError(f"unknown size(s) {unknown} for the {dataset} study; known: "
                         f"{sorted(sizes)}.")
    sizes.update({k: v for k, v in overrides.items() if v is not None})
    bad = sorted(set(sizes["regularizers"]) - set(ALL_REGULARIZERS))
    if bad:
        raise ValueError(f"regularizers {bad} are unknown; choose from {ALL_REGULARIZERS}.")
    return sizes


def _model_spec(name: str, sizes: dict[str, Any]) -> ModelSpec:
    if name == "mlp" and sizes.get("mlp_lr") is not None:
        return ModelSpec("mlp", train={"lr": sizes["mlp_lr"]})
    if name != "resnet":
        return ModelSpec(name)
    width, blocks = sizes["resnet_width"], sizes["resnet_blocks"]
    if sizes["resnet"] == "resnet":
        return ModelSpec("resnet", {"width": width, "blocks": blocks})
    if blocks != 1:
        raise ValueError(f"resnet_blocks={blocks}: resnet_fast has one block per stage; set "
                         "resnet_blocks=1.")
    return ModelSpec("resnet_fast", {"widths": [width, 4 * width, 4 * width]},
                     train=FAST_RESNET_RECIPE)


_TRAIN_SIZES = ("epochs", "batch_size", "lr", "precision", "momentum", "weight_decay", "schedule",
                "label_smoothing", "augment")
"""The sizes that are :class:`~stabnb.train.TrainConfig` fields."""


def _grid(grid: Sequence[float], points: int) -> tuple[float, ...]:
    return tuple(grid) if not points else tuple(grid)[-points:]


def regularisation_config(dataset: str, profile: str, *, seed: int = 0,
                          **overrides: Any) -> StudyConfig:
    """The study config of ``dataset`` at ``profile`` (seeds ``seed, seed + 1, ...``).

    Args:
        dataset: ``"mnist"`` (E3), ``"cifar10"`` (E4) or ``"cifar100"`` (E6).
        profile: ``"smoke"``, ``"quick"`` or ``"paper"``.
        seed: the first seed.
        **overrides: any size of :data:`PROFILE_SIZES` (``num_seeds=5``, ``models=("mlp",)``);
            ``None`` keeps the profile's value.

    Raises:
        ValueError: an unknown data set, profile, size or regulariser, and every check of
            :class:`~stabnb.study.StudyConfig`.

    Examples::

        >>> config = regularisation_config("mnist", "smoke")
        >>> sorted(config.regularizers), config.seeds
        (['input_curvature', 'noise_augmentation'], (0,))
    """
    sizes = profile_sizes(dataset, profile, **overrides)
    grids = DEFAULT_STRENGTHS[dataset]
    return StudyConfig(
        dataset=dataset, seeds=tuple(seed + i for i in range(sizes["num_seeds"])),
        regularizers={name: _grid(grids[name], sizes["grid_points"])
                      for name in sizes["regularizers"]},
        models={name: _model_spec(name, sizes) for name in sizes["models"]},
        train=TrainConfig(**{k: sizes[k] for k in _TRAIN_SIZES}),
        probe=ProbeConfig(eval_size=sizes["eval_size"] or None, probe_size=sizes["probe_size"],
                          gmsi_size=sizes["gmsi_size"], num_draws=sizes["num_draws"],
                          ig_steps=sizes["ig_steps"],
                          smoothgrad_samples=sizes["smoothgrad_samples"]),
        train_size=sizes["train_size"] or None)


def profile_table(dataset: str) -> pd.DataFrame:
    """Every size of ``dataset``'s study, one column per profile: what a notebook shows."""
    _check_dataset(dataset)
    profiles = PROFILE_SIZES[dataset]
    rows = {_DESCRIPTIONS[key]: {p: (", ".join(v) if isinstance(v, tuple) else v)
                                 for p, sizes in profiles.items() for v in [sizes[key]]}
            for key in next(iter(profiles.values()))}
    return pd.DataFrame.from_dict(rows, orient="index")

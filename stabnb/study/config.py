"""What decides a study's numbers: the models (name → :class:`ModelSpec`), a
:class:`~stabnb.train.TrainConfig`, a :class:`ProbeConfig`, the λ grids and the seeds.

A config is plain data: :meth:`StudyConfig.from_dict` / :meth:`StudyConfig.to_dict` round-trip
it through JSON or TOML (nested: ``{"train": {"lr": 0.1}, "probe": {"num_draws": 4}}``), naming
any missing or unknown field by its path (``train.lr``).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

from ..attribution import IMAGE_FAMILIES, METHODS, parse_perturbation
from ..models import ARCHITECTURES
from ..regularizers import BASELINE, REGULARIZERS
from ..train import TrainConfig

__all__ = ["DATASETS", "DEFAULT_STRENGTHS", "ModelSpec", "ProbeConfig", "StudyConfig", "Cell",
           "study_cells", "PER_CELL_TRAIN_FIELDS"]

DATASETS = ("mnist", "cifar10", "cifar100", "teacher")

# λ grids per data set and regulariser and control, in half-decade steps. Each runs from about
# no accuracy cost to clearly more than one point, so the accuracy–stability frontier crosses the
# one-point budget (a sweep at the quick sizes, one seed: benchmarks/calibrate_strengths.py, numbers
# in the README, "Regularisation strengths"); noise augmentation costs nothing on either data set
# and its grid stops at three noisy copies' worth. The smooth-activation control's λ is the
# softplus temperature 1/β. CIFAR-100 reuses CIFAR-10's grid and the teacher task MNIST's, both
# uncalibrated. A study's "modest" λ is read off its own frontier (stabnb.effects.modest_strengths).
_MNIST_GRID = {
    "jacobian_spectral": (3e-3, 1e-2, 3e-2, 0.1),
    "jacobian_frobenius": (1e-3, 3e-3, 1e-2, 3e-2),
    "weight_spectral": (3e-3, 1e-2, 3e-2, 0.1),
    "input_curvature": (0.3, 1.0, 3.0, 10.0),
    "noise_augmentation": (0.1, 0.3, 1.0, 3.0),
    "smooth_activation": (0.03, 0.1, 0.3, 1.0),
}
_CIFAR_GRID = {
    "jacobian_spectral": (1e-3, 3e-3, 1e-2, 3e-2),
    "jacobian_frobenius": (3e-4, 1e-3, 3e-3, 1e-2),
    "weight_spectral": (3e-4, 1e-3, 3e-3, 1e-2),
    "input_curvature": (1e-2, 3e-2, 0.1, 0.3),
    "noise_augmentation": (0.1, 0.3, 1.0, 3.0),
    "smooth_activation": (0.01, 0.03, 0.1, 0.3),
}
DEFAULT_STRENGTHS: dict[str, dict[str, tuple[float, ...]]] = {
    "mnist": _MNIST_GRID, "cifar10": _CIFAR_GRID, "cifar100": _CIFAR_GRID, "teacher": _MNIST_GRID,
}
"""Data set → regulariser → λ grid (see the comment above)."""

PER_CELL_TRAIN_FIELDS = ("seed", "device", "progress", "checkpoint_dir")
""":class:`TrainConfig` fields a study sets per cell (from the cell's seed and ``run_study``)."""


def _plain(value: Any) -> Any:
    """JSON's view of ``value`` (tuples → lists), so a config built in Python equals its JSON."""
    return json.loads(json.dumps(value))


@dataclass(frozen=True)
class ModelSpec:
    """One model of a study: a :func:`stabnb.models.build_model` architecture, its arguments
    and the training settings it needs beyond the study's.

    Attributes:
        architecture: one of :data:`stabnb.models.ARCHITECTURES`.
        kwargs: constructor arguments (``widths``, ``activation``, ``width``, ``blocks``...).
        train: :class:`~stabnb.train.TrainConfig` fields that replace the study's for this
            model (its recipe: ``{"lr": 1.3, "momentum": 0.85}``), except ``epochs`` (the
            study's, which E7's snapshots shorten alike for every model) and the per-cell
            fields. Default: none.
    """

    architecture: str
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    train: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.architecture not in ARCHITECTURES:
            raise ValueError(f"architecture={self.architecture!r} is unknown; choose one of "
                             f"{ARCHITECTURES}.")
        object.__setattr__(self, "kwargs", _plain(dict(self.kwargs)))
        object.__setattr__(self, "train", _plain(dict(self.train)))
        known = {f.name for f in fields(TrainConfig)} - {"epochs", *PER_CELL_TRAIN_FIELDS}
        unknown = sorted(set(self.train) - known)
        if unknown:
            raise ValueError(f"ModelSpec.train sets {unknown}, which a model cannot override; "
                             f"choose from {sorted(known)} (epochs is the study's).")
        replace(TrainConfig(), **self.train)          # the values' own checks

    def to_dict(self) -> dict[str, Any]:
        """``architecture`` and ``kwargs``, and ``train`` when it sets anything."""
        values = asdict(self)
        return values if self.train else {k: v for k, v in values.items() if k != "train"}


@dataclass(frozen=True)
class ProbeConfig:
    """How every trained network of a study is measured.

    Attributes:
        methods: attribution methods (:data:`stabnb.attribution.METHODS`).
        radius: Gaussian noise σ in pixels. Default: 0.05.
        num_draws: noise draws K per probe input. Default: 10.
        top_k: top-k fraction of the overlap metric. Default: 0.1.
        ig_steps: Integrated Gradients steps. Default: 20.
        smoothgrad_samples: SmoothGrad's noisy copies. Default: 10.
        eval_size: test images for the clean accuracy (``None``: the full test set). Default: 2000.
        probe_size: images (drawn per seed from the accuracy set) for the attribution probes
            and Jacobian spectra. Default: 256.
        gmsi_size: the first ``gmsi_size`` probe images for the GMSI (an O(n³) NTK and a Hessian
            Lanczos run); 0 leaves the GMSI out. Default: 128.
        heldout: perturbation families never used in training, as
            :func:`stabnb.attribution.parse_perturbation` specs; the saliency's change under
            them, averaged per image over the families, is the primary metric (``heldout.*``).
            ``translate``/``blur`` apply to image inputs only (:meth:`families_for`). Default:
            Gaussian σ 0.02 and 0.1, uniform L∞ 0.05, blur of width up to 0.5 pixels.
        aside: held-out families measured and shown (``family.<spec>.*``) but not averaged
            into the primary. Default: translation by up to 1 pixel — a shifted digit's map
            should move with it, so its raw change measures equivariance as much as stability,
            and at several times the noise families' size it would dominate a plain average.
        attack_steps: projected steps of the attack on the saliency
            (:func:`stabnb.attribution.attribution_attack`); 0 leaves the attack out. Default: 10.
        attack_epsilon: the attack's L∞ radius in pixels. Default: 0.05.
        quality: measure input dependence, the model-randomisation check, deletion
            faithfulness and the ReLU gate mechanism. Default: True.
    """

    methods: tuple[str, ...] = ("saliency", "integrated_gradients", "smoothgrad")
    radius: float = 0.05
    num_draws: int = 10
    top_k: float = 0.1
    ig_steps: int = 20
    smoothgrad_samples: int = 10
    eval_size: int | None = 2000
    probe_size: int = 256
    gmsi_size: int = 128
    heldout: tuple[str, ...] = ("gaussian:0.02", "gaussian:0.1", "uniform:0.05", "blur:0.5")
    aside: tuple[str, ...] = ("translate:1",)
    attack_steps: int = 10
    attack_epsilon: float = 0.05
    quality: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.methods, str) or not len(self.methods):
            raise ValueError(f"probe.methods must be a non-empty list, e.g. ('saliency',); got "
                             f"{self.methods!r}.")
        object.__setattr__(self, "methods", tuple(self.methods))
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown:
            raise ValueError(f"methods {unknown} are unknown; choose from {sorted(METHODS)}.")
        for name in ("num_draws", "ig_steps", "smoothgrad_samples", "probe_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"probe.{name}={getattr(self, name)} must be at least 1.")
        if not 0 <= self.gmsi_size <= self.probe_size:
            raise ValueError(f"gmsi_size={self.gmsi_size} must be in 0..probe_size={self.probe_size} "
                             "(the GMSI uses the first probe inputs).")
        if isinstance(self.heldout, str) or not len(self.heldout):
            raise ValueError(f"probe.heldout must be a non-empty list of specs such as "
                             f"('gaussian:0.02', 'translate:1'); got {self.heldout!r}.")
        object.__setattr__(self, "heldout", tuple(self.heldout))
        for spec in self.heldout:
            parse_perturbation(spec)
        object.__setattr__(self, "aside", (self.aside,) if isinstance(self.aside, str)
                           else tuple(self.aside))
        for spec in self.aside:
            parse_perturbation(spec)
        both = (*self.heldout, *self.aside)
        if len(set(both)) < len(both):
            raise ValueError(f"probe.heldout={self.heldout} and probe.aside={self.aside} name a "
                             "family twice; list each once.")
        if isinstance(self.attack_steps, bool) or int(self.attack_steps) != self.attack_steps \
                or self.attack_steps < 0:
            raise ValueError(f"probe.attack_steps={self.attack_steps} must be an integer ≥ 0 "
                             "(0 leaves the attack out), e.g. 10.")
        if not (isinstance(self.attack_epsilon, (int, float)) and
                math.isfinite(self.attack_epsilon) and self.attack_epsilon > 0):
            raise ValueError(f"probe.attack_epsilon={self.attack_epsilon} must be a positive L∞ "
                             "radius in pixels, e.g. 0.05.")
        if not isinstance(self.quality, bool):
            raise ValueError(f"probe.quality={self.quality!r} must be true or false.")

    def families_for(self, input_shape: tuple[int, ...], *,
                     aside: bool = False) -> tuple[str, ...]:
        """The held-out specs (``aside``: the aside specs) that apply to inputs of
        ``input_shape``: all for images ``(C, H, W)``, without ``translate``/``blur`` for flat
        inputs ``(d,)``.

        Raises:
            ValueError: no held-out family is left for flat inputs (the aside may be empty).
        """
        specs = self.aside if aside else self.heldout
        if len(input_shape) == 3:
            return specs
        kept = tuple(s for s in specs if parse_perturbation(s)[0] not in IMAGE_FAMILIES)
        if aside:
            return kept
        if not kept:
            raise ValueError(f"probe.heldout={self.heldout} holds only image families, but the "
                             f"inputs have shape {tuple(input_shape)}; add e.g. 'gaussian:0.02'.")
        return kept


_REQUIRED = ("dataset", "models", "regularizers", "seeds", "train")
_NESTED: dict[str, Any] = {"train": TrainConfig, "probe": ProbeConfig}


def _check_fields(cls: type, values: Mapping[str, Any], prefix: str, required: tuple[str, ...],
                  missing: list[str], unknown: list[str]) -> None:
    names = {f.name for f in fields(cls)}
    if cls is TrainConfig:
        names -= set(PER_CELL_TRAIN_FIELDS)
    missing += [prefix + name for name in required if name not in values]
    unknown += [prefix + name for name in sorted(set(values) - names)]


@dataclass(frozen=True)
class StudyConfig:
    """Everything that decides a study's numbers.

    Attributes:
        dataset: ``"mnist"``, ``"cifar10"``, ``"cifar100"`` or ``"teacher"`` (inputs uniform in
            ``[0, 1]^d``, labels from a fixed random tanh teacher MLP; see ``teacher``).
        models: name → :class:`ModelSpec` (or a mapping with its fields), e.g.
            ``{"relu": ModelSpec("mlp", {"activation": "relu"}), "tanh": ModelSpec("mlp",
            {"activation": "tanh"})}``; the names label the records' ``model`` column.
        regularizers: regulariser name → λ grid (each λ > 0); the baseline is always added.
        seeds: one replication per seed: the training subset (when subsampled), the initial
            weights, the minibatch order, the probe images, the probe noise and the
            regulariser's draws all follow it; within one seed every cell shares them.
        train: the :class:`~stabnb.train.TrainConfig` of every cell (its ``seed``, ``device``,
            ``progress`` and ``checkpoint_dir`` are set per cell, and a model's
            :attr:`ModelSpec.train` replaces the fields it names).
        probe: the :class:`ProbeConfig`. Default: ``ProbeConfig()``.
        train_size: balanced training subset, drawn per seed (``None``: the full training set).
        regularizer_kwargs: regulariser name → options (``num_iters``, ``form``...).
        teacher: for ``dataset="teacher"``: ``dim``, ``num_classes``, ``widths``, ``n_train``,
            ``n_test``, ``seed`` (the task itself, fixed across the study's seeds).
    """

    dataset: str
    models: Mapping[str, ModelSpec]
    regularizers: Mapping[str, tuple[float, ...]]
    seeds: tuple[int, ...]
    train: TrainConfig
    probe: ProbeConfig = ProbeConfig()
    train_size: int | None = None
    regularizer_kwargs: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    teacher: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.dataset not in DATASETS:
            raise ValueError(f"dataset={self.dataset!r} is unknown; choose one of {DATASETS}.")
        if not isinstance(self.models, Mapping) or not self.models:
            raise ValueError(f"models must be a non-empty mapping name → ModelSpec, e.g. "
                             f"{{'mlp': ModelSpec('mlp')}}; got {self.models!r}.")
        specs = {}
        for name, spec in self.models.items():
            if isinstance(spec, Mapping):
                extra = sorted(set(spec) - {"architecture", "kwargs", "train"})
                if extra or "architecture" not in spec:
                    raise ValueError(f"models.{name} needs 'architecture' (and optional 'kwargs', "
                                     f"'train'); got fields {sorted(spec)}.")
                spec = ModelSpec(**spec)
            specs[str(name)] = spec
        object.__setattr__(self, "models", specs)
        if isinstance(self.seeds, (str, int)) or not len(self.seeds):
            raise ValueError(f"seeds must be a non-empty list, e.g. seeds=(0,); got {self.seeds!r}.")
        object.__setattr__(self, "seeds", tuple(int(s) for s in self.seeds))
        for name, kind in _NESTED.items():
            value = getattr(self, name)
            if isinstance(value, Mapping):
                object.__setattr__(self, name, kind(**value))
        defaults = TrainConfig()
        per_cell = [f"train.{n}" for n in PER_CELL_TRAIN_FIELDS
                    if getattr(self.train, n) != getattr(defaults, n)]
        if per_cell:
            raise ValueError(f"{per_cell} are set per cell by the study (from seeds and run_study's "
                             "device); leave them at their defaults in the study's TrainConfig.")
        grids = {}
        for name, grid in dict(self.regularizers).items():
            if name not in REGULARIZERS or name == BASELINE:
                raise ValueError(f"regularizer {name!r} is unknown; choose from "
                                 f"{[r for r in REGULARIZERS if r != BASELINE]} (the baseline "
                                 "'none' is always part of the grid).")
            grid = (grid,) if isinstance(grid, (int, float)) else tuple(float(s) for s in grid)
            bad = [s for s in grid if not (math.isfinite(s) and s > 0)]
            if bad or not grid:
                raise ValueError(f"regularizer {name!r} has strengths {list(grid)}; each λ must be "
                                 "finite and > 0 (λ = 0 is the baseline, always included).")
            grids[name] = tuple(sorted(set(grid)))
        object.__setattr__(self, "regularizers", grids)
        smoothed = [n for n, spec in self.models.items()
                    if spec.kwargs.get("activation", "relu") != "relu"]
        if "smooth_activation" in grids and smoothed:
            raise ValueError(f"the smooth_activation control swaps ReLU for softplus, but models "
                             f"{smoothed} are not ReLU networks; drop the control or those models.")
        object.__setattr__(self, "regularizer_kwargs", _plain(dict(self.regularizer_kwargs)))
        object.__setattr__(self, "teacher", _plain(dict(self.teacher)))
        if self.train_size is not None and self.train_size < 1:
            raise ValueError(f"train_size={self.train_size} must be at least 1 (None: all).")

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> StudyConfig:
        """Build from a plain nested mapping (JSON, TOML, a notebook's parameters).

        Raises:
            ValueError: missing or unknown fields, each named by its path (``train.lr``), and
                every check of the config and its parts.
        """
        missing: list[str] = []
        unknown: list[str] = []
        _check_fields(cls, values, "", _REQUIRED, missing, unknown)
        for name, kind in _NESTED.items():
            if isinstance(values.get(name), Mapping):
                _check_fields(kind, values[name], f"{name}.", ("epochs",) if name == "train" else (),
                              missing, unknown)
        if missing or unknown:
            optional = sorted({f.name for f in fields(cls)} - set(_REQUIRED))
            raise ValueError(
                "study config " + "; ".join(
                    part for part in (f"lacks required field(s) {missing}" if missing else "",
                                      f"has unknown field(s) {unknown}" if unknown else "") if part)
                + f". Required: {list(_REQUIRED)} and train.epochs; optional: {optional}; "
                  f"train.* as stabnb.train.TrainConfig, probe.* as stabnb.study.ProbeConfig.")
        return cls(**dict(values))

    @classmethod
    def from_toml(cls, path: str | os.PathLike) -> StudyConfig:
        """Read a TOML study config (the layout of :meth:`to_dict`), checked as :meth:`from_dict`.

        Raises:
            FileNotFoundError: no such file.
            ValueError: a TOML syntax error (with its line) or a bad config.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"study config {path} does not exist.")
        try:
            values = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as err:
            raise ValueError(f"{path} is not valid TOML: {err}.") from err
        return cls.from_dict(values)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready and nested, without the per-cell ``train`` fields; :meth:`from_dict` inverts it."""
        train = {k: v for k, v in self.train.to_dict().items() if k not in PER_CELL_TRAIN_FIELDS}
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return _plain(values | {"train": train, "probe": asdict(self.probe),
                                "models": {n: s.to_dict() for n, s in self.models.items()}})

    def fingerprint(self) -> str:
        """A short hash of :meth:`to_dict`: equal configs, equal fingerprints."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:16]

    def train_config(self, seed: int, model: str | None = None, **run: Any) -> TrainConfig:
        """The cell's :class:`TrainConfig`: this study's, with ``model``'s
        :attr:`ModelSpec.train` (``None``: none), ``seed`` and the run settings (``device``,
        ``progress``, ``checkpoint_dir``)."""
        recipe = self.models[model].train if model is not None else {}
        return replace(self.train, **recipe, seed=seed, **run)


@dataclass(frozen=True)
class Cell:
    """One trained network of the grid."""

    model: str
    regularizer: str
    strength: float
    seed: int

    @property
    def name(self) -> str:
        return f"{self.model}-{self.regularizer}-{self.strength:g}-seed{self.seed}"


def study_cells(config: StudyConfig) -> list[Cell]:
    """The grid in run order: per model and seed, the baseline, then each regulariser's λ."""
    return [Cell(model, name, strength, seed)
            for model in config.models for seed in config.seeds
            for name, grid in ((BASELINE, (0.0,)), *config.regularizers.items())
            for strength in grid]

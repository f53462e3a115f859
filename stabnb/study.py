"""Controlled studies: a grid of training runs (model × regulariser × λ × seed), each evaluated
on the same held-out inputs and the same noise draws, as one tidy table.

    config = StudyConfig(dataset="mnist", models=("mlp",), seeds=(0, 1), epochs=2,
                         regularizers={"jacobian_spectral": (1e-3, 1e-2)}, train_size=5000)
    study = run_study(config, "runs/studies/mnist")
    study.records                      # pandas DataFrame, one row per cell

Every cell is one trained network. The unregularised baseline (``regularizer="none"``,
``strength=0``) of every model and seed is always part of the grid, so each regularised run
has a partner that differs only in the penalty (same initial weights, same minibatch order).
Each cell is evaluated on:

- ``accuracy``: clean top-1 accuracy on the first ``eval_size`` test images;
- ``gmsi`` and ``gmsi.<component>``: :func:`stabnb.gmsi.gmsi` on ``gmsi_size`` probe inputs
  (left out with ``gmsi_size=0``);
- ``jacobian.<summary>``: mean over the probe inputs of the per-sample input-Jacobian
  summaries (operator norm, spectral entropy, effective and stable rank; ``.median`` too);
- ``<method>.<metric>`` for each attribution method: the mean over valid probe inputs of
  ``relative_l2``, ``cosine``, ``spearman``, ``top_k``, ``sensitivity_max``, and the absolute
  change ``abs_l2 = ‖a(x̃) − a(x)‖`` (which shrinks trivially with ‖J‖; the relative and rank
  metrics are scale-invariant), plus ``attribution_norm``.

On disk, under ``out_dir``::

    config.json                    the config; a different config refuses to write here
    checkpoints/<key>.pt           training checkpoints (:func:`stabnb.train.train`)
    cells/<cell>.json              one finished cell: its metrics and provenance
    cells/<cell>.per_sample.json   its per-sample entropy-link table (first method)
    results.csv                    the tidy table, rebuilt after every cell

A finished cell is never redone; an interrupted one resumes from its last epoch's checkpoint.
Every file is written atomically.
"""

from __future__ import annotations

import hashlib
import json
import math
import multiprocessing
import os
import platform
import time
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field, fields
from functools import lru_cache
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import Tensor, nn

from .attribution import METHODS, AttributionStability
from .checks import resolve_device
from .data import load_dataset
from .entropy_link import EntropyLinkTable, per_sample_table
from .gmsi import COMPONENTS, gmsi
from .io import project_root, read_json, source_digest, write_json, write_text
from .models import MLP, build_model
from .progress import progress
from .regularizers import BASELINE, REGULARIZERS, make_regularizer
from .train import TrainConfig, evaluate_accuracy, train

__all__ = ["DATASETS", "DEFAULT_STRENGTHS", "StudyConfig", "StudyData", "Cell", "StudyResult",
           "load_study_data", "study_cells", "evaluate_model", "run_cell", "run_study",
           "load_study", "study_dir"]

DATASETS = ("mnist", "cifar10", "cifar100", "teacher")

STABILITY_METRICS = ("relative_l2", "cosine", "spearman", "top_k", "sensitivity_max", "abs_l2",
                     "attribution_norm")
SPECTRAL_COLUMNS = ("operator_norm", "spectral_entropy", "effective_rank", "stable_rank")

# λ grids per data set and regulariser, in half-decade steps. The largest λ of each costs about
# one point of clean accuracy (a calibration sweep, single seed, 3 epochs: MNIST with the MLP on
# 10k images, CIFAR-10 with the small CNN on 5k; command and numbers in the README,
# "Regularisation strengths"). CIFAR-100 reuses CIFAR-10's grid and the teacher task MNIST's,
# both uncalibrated. The studies pick each regulariser's *modest* λ from the grid by accuracy
# alone (stabnb.effects.modest_strengths), never by the stability outcome.
_MNIST_GRID = {
    "jacobian_spectral": (1e-3, 3e-3, 1e-2),
    "jacobian_frobenius": (3e-4, 1e-3, 3e-3),
    "weight_spectral": (3e-3, 1e-2, 3e-2),
    "input_curvature": (0.1, 0.3, 1.0),
}
_CIFAR_GRID = {
    "jacobian_spectral": (1e-4, 3e-4, 1e-3),
    "jacobian_frobenius": (1e-4, 3e-4, 1e-3),
    "weight_spectral": (1e-3, 3e-3, 1e-2),
    "input_curvature": (1e-2, 3e-2, 1e-1),
}
DEFAULT_STRENGTHS: dict[str, dict[str, tuple[float, ...]]] = {
    "mnist": _MNIST_GRID, "cifar10": _CIFAR_GRID, "cifar100": _CIFAR_GRID, "teacher": _MNIST_GRID,
}
"""Data set → regulariser → λ grid (see the comment above)."""

_REQUIRED = ("dataset", "models", "regularizers", "seeds", "epochs")


@dataclass(frozen=True)
class StudyConfig:
    """Everything that decides a study's numbers.

    Attributes:
        dataset: ``"mnist"``, ``"cifar10"``, ``"cifar100"`` or ``"teacher"`` (inputs uniform in
            ``[0, 1]^d``, labels from a fixed random tanh teacher MLP; see ``teacher``).
        models: :func:`stabnb.models.build_model` names, e.g. ``("mlp", "cnn")``.
        regularizers: regulariser name → λ grid (each λ > 0); the baseline is always added.
        seeds: one cell per seed (initial weights and minibatch order).
        epochs, batch_size, lr, optimizer, weight_decay, precision: as :class:`TrainConfig`.
        train_size: balanced training subset (``None``: the full training set).
        eval_size: test images for the clean accuracy (``None``: the full test set).
        probe_size: test images for the attribution probes and Jacobian spectra.
        gmsi_size: the first ``gmsi_size`` probe images for the GMSI (an O(n³) NTK and a
            Hessian Lanczos run); 0 leaves the GMSI out.
        methods: attribution methods (:data:`stabnb.attribution.METHODS`).
        radius, num_draws, top_k: Gaussian noise σ in pixels, draws K per input, top-k fraction.
        ig_steps, smoothgrad_samples: Integrated Gradients steps; SmoothGrad's noisy copies.
        model_kwargs: model name → extra constructor arguments (``widths``, ``activation``...).
        regularizer_kwargs: regulariser name → options (``num_iters``, ``form``...).
        teacher: for ``dataset="teacher"``: ``dim``, ``num_classes``, ``widths``, ``n_train``,
            ``n_test``, ``seed``.
    """

    dataset: str
    models: tuple[str, ...]
    regularizers: Mapping[str, tuple[float, ...]]
    seeds: tuple[int, ...]
    epochs: int
    batch_size: int = 128
    lr: float = 0.05
    optimizer: str = "sgd"
    weight_decay: float = 5e-4
    precision: str = "float32"
    train_size: int | None = None
    eval_size: int | None = 2000
    probe_size: int = 256
    gmsi_size: int = 128
    methods: tuple[str, ...] = ("saliency", "integrated_gradients", "smoothgrad")
    radius: float = 0.05
    num_draws: int = 10
    top_k: float = 0.1
    ig_steps: int = 20
    smoothgrad_samples: int = 10
    model_kwargs: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    regularizer_kwargs: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    teacher: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.dataset not in DATASETS:
            raise ValueError(f"dataset={self.dataset!r} is unknown; choose one of {DATASETS}.")
        for name in ("models", "seeds", "methods"):
            value = getattr(self, name)
            if isinstance(value, (str, int)) or not len(value):
                raise ValueError(f"{name} must be a non-empty list, e.g. {name}=({value!r},); "
                                 f"got {value!r}.")
            object.__setattr__(self, name, tuple(value))
        unknown = [m for m in self.models if m not in ("mlp", "cnn", "resnet")]
        if unknown:
            raise ValueError(f"models {unknown} are unknown; choose from 'mlp', 'cnn', 'resnet'.")
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown:
            raise ValueError(f"methods {unknown} are unknown; choose from {sorted(METHODS)}.")
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
        if int(self.epochs) != self.epochs or self.epochs < 1:
            raise ValueError(f"epochs={self.epochs} must be a positive integer.")
        if not 0 <= self.gmsi_size <= self.probe_size:
            raise ValueError(f"gmsi_size={self.gmsi_size} must be in 0..probe_size={self.probe_size} "
                             "(the GMSI uses the first probe inputs).")

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> StudyConfig:
        """Build from a plain mapping (JSON, a notebook's parameters), naming what is wrong.

        Raises:
            ValueError: missing required fields or unknown fields, each listed.
        """
        names = {f.name for f in fields(cls)}
        missing = [name for name in _REQUIRED if name not in values]
        unknown = sorted(set(values) - names)
        if missing or unknown:
            raise ValueError(
                "study config " + "; ".join(
                    part for part in (f"lacks required field(s) {missing}" if missing else "",
                                      f"has unknown field(s) {unknown}" if unknown else "") if part)
                + f". Required: {list(_REQUIRED)}; optional: "
                  f"{sorted(names - set(_REQUIRED))}.")
        return cls(**dict(values))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: tuples as lists, mappings as dicts."""
        return json.loads(json.dumps(asdict(self) | {"regularizers": dict(self.regularizers)}))

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:16]


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


# --------------------------------------------------------------------------- data

@dataclass(frozen=True)
class StudyData:
    """Training set, accuracy set and probe set, as pixel tensors in [0, 1]."""

    train_x: Tensor
    train_y: Tensor
    test_x: Tensor
    test_y: Tensor
    probe_x: Tensor
    probe_y: Tensor
    input_shape: tuple[int, ...]
    num_classes: int
    mean: tuple[float, ...] | None
    std: tuple[float, ...] | None
    source: str


def _teacher_data(options: Mapping[str, Any]) -> tuple[Tensor, Tensor, Tensor, Tensor, str]:
    opts = {"dim": 64, "num_classes": 4, "widths": (32,), "n_train": 4000, "n_test": 1000,
            "seed": 0} | dict(options)
    generator = torch.Generator().manual_seed(int(opts["seed"]))
    torch_state = torch.random.get_rng_state()
    torch.manual_seed(int(opts["seed"]))
    teacher = MLP(opts["dim"], tuple(opts["widths"]), opts["num_classes"], activation="tanh")
    torch.random.set_rng_state(torch_state)
    x = torch.rand(opts["n_train"] + opts["n_test"], opts["dim"], generator=generator)
    with torch.no_grad():
        y = teacher((x - 0.5) * 4.0).argmax(1)
    n = opts["n_train"]
    return x[:n], y[:n], x[n:], y[n:], f"teacher MLP {json.dumps(opts, sort_keys=True)}"


def load_study_data(config: StudyConfig) -> StudyData:
    """The config's data: a balanced training subset, the accuracy set and the probe set.

    The probe set is the first ``probe_size`` images of the accuracy set, the same for every
    cell. Raises :class:`stabnb.data.DataSourceError` when the data set cannot be had.
    """
    if config.dataset == "teacher":
        train_x, train_y, test_x, test_y, source = _teacher_data(config.teacher)
        mean, std = (0.5,), (0.25,)
        num_classes = int(config.teacher.get("num_classes", 4))
        if config.train_size is not None:
            train_x, train_y = train_x[:config.train_size], train_y[:config.train_size]
    else:
        train = load_dataset(config.dataset, "train")
        test = load_dataset(config.dataset, "test")
        if config.train_size is not None and config.train_size < len(train):
            train = train.subset(config.train_size, seed=0)
        if config.eval_size is not None and config.eval_size < len(test):
            test = test.subset(config.eval_size, seed=0)
        train_x, train_y, test_x, test_y = train.pixels(), train.labels, test.pixels(), test.labels
        mean, std, num_classes = train.mean, train.std, train.num_classes
        source = f"train: {train.source}; test: {test.source}"
    if config.eval_size is not None:
        test_x, test_y = test_x[:config.eval_size], test_y[:config.eval_size]
    if config.probe_size > len(test_x):
        raise ValueError(f"probe_size={config.probe_size} exceeds the {len(test_x)} test inputs; "
                         "lower probe_size or raise eval_size.")
    return StudyData(train_x, train_y, test_x, test_y, test_x[:config.probe_size],
                     test_y[:config.probe_size], tuple(train_x.shape[1:]), num_classes,
                     mean, std, source)


# --------------------------------------------------------------------------- one cell

def _build(config: StudyConfig, data: StudyData, cell: Cell) -> nn.Module:
    torch.manual_seed(cell.seed)
    kwargs = dict(config.model_kwargs.get(cell.model, {}))
    return build_model(cell.model, data.input_shape, data.num_classes, mean=data.mean,
                       std=data.std, **kwargs)


def _method_kwargs(config: StudyConfig, method: str) -> dict[str, Any]:
    if method == "integrated_gradients":
        return {"n_steps": config.ig_steps}
    if method == "smoothgrad":
        return {"nt_samples": config.smoothgrad_samples}
    return {}


def _mean(values: Tensor) -> float:
    finite = values[torch.isfinite(values)]
    return float(finite.mean()) if finite.numel() else math.nan


def evaluate_model(model: nn.Module, config: StudyConfig, data: StudyData, *,
                   noise_seed: int = 0) -> tuple[dict[str, float], EntropyLinkTable]:
    """One trained model's row of metrics (module docstring) and its per-sample table.

    The probe noise is seeded by ``noise_seed`` alone, so every cell sees the same draws.
    """
    model.eval()
    device = next(model.parameters()).device
    metrics: dict[str, float] = {"accuracy": evaluate_accuracy(model, data.test_x, data.test_y)}
    probe_x, probe_y = data.probe_x.to(device), data.probe_y.to(device)
    if config.gmsi_size:
        result = gmsi(model, probe_x[:config.gmsi_size], probe_y[:config.gmsi_size],
                      progress=False)
        metrics["gmsi"] = result.value
        metrics.update({f"gmsi.{name}": float(result.components[name]) for name in COMPONENTS})
    table = None
    for method in config.methods:
        probe = AttributionStability(model, method, radius=config.radius,
                                     num_samples=config.num_draws, top_k=config.top_k,
                                     method_kwargs=_method_kwargs(config, method))
        generator = torch.Generator(device).manual_seed(noise_seed)
        measured = probe.measure(probe_x, generator=generator)
        columns = {name: getattr(measured, name) for name in
                   ("relative_l2", "cosine", "spearman", "top_k", "sensitivity_max",
                    "attribution_norm")}
        columns["abs_l2"] = measured.relative_l2 * measured.attribution_norm
        for name in STABILITY_METRICS:
            metrics[f"{method}.{name}"] = _mean(columns[name].masked_fill(~measured.valid, math.nan))
        if table is None:
            table = per_sample_table(model, probe_x, None, measured)
    assert table is not None
    for name in SPECTRAL_COLUMNS:
        metrics[f"jacobian.{name}"] = _mean(table[name])
        metrics[f"jacobian.{name}.median"] = float(table[name].nanmedian())
    return metrics, table


def run_cell(config: StudyConfig, data: StudyData, cell: Cell, out_dir: str | os.PathLike, *,
             device: str = "auto", progress_bar: bool | None = False) -> dict[str, Any]:
    """Train (or resume, or reuse) one cell, evaluate it, write its record; return the record."""
    out = Path(out_dir)
    record_path = out / "cells" / f"{cell.name}.json"
    if record_path.exists():
        return read_json(record_path, fix=_CELL_FIX)
    started = time.perf_counter()
    model = _build(config, data, cell)
    regularizer = make_regularizer(cell.regularizer, cell.strength,
                                   **(dict(config.regularizer_kwargs.get(cell.regularizer, {}))
                                      if cell.regularizer != BASELINE else {}))
    train_config = TrainConfig(epochs=config.epochs, batch_size=config.batch_size, lr=config.lr,
                               optimizer=config.optimizer, weight_decay=config.weight_decay,
                               seed=cell.seed, device=device, precision=config.precision,
                               progress=progress_bar, checkpoint_dir=str(out / "checkpoints"))
    trained = train(model, data.train_x, data.train_y, train_config, regularizer=regularizer)
    evaluated = time.perf_counter()
    metrics, table = evaluate_model(model, config, data)
    record = {
        **asdict(cell), **metrics, "cell": cell.name,
        "train_seconds": trained.wall_time, "eval_seconds": time.perf_counter() - evaluated,
        "provenance": {
            "config": config.fingerprint(), "device": trained.device,
            "torch": torch.__version__, "python": platform.python_version(),
            "checkpoint_key": trained.key, "resumed_from_epoch": trained.resumed_from_epoch,
            "history": trained.history, "data": data.source,
            "wall_seconds": time.perf_counter() - started,
        },
    }
    write_json(out / "cells" / f"{cell.name}.per_sample.json", table.to_dict())
    write_json(record_path, record)
    return record


# --------------------------------------------------------------------------- the grid

@dataclass(frozen=True)
class StudyResult:
    """A finished (or partly finished) study: its records and where they live."""

    config: StudyConfig
    out_dir: Path
    records: pd.DataFrame

    def per_sample(self, model: str, regularizer: str = BASELINE, strength: float = 0.0,
                   seed: int | None = None) -> EntropyLinkTable:
        """The per-sample entropy-link table of one cell (first seed by default)."""
        cell = Cell(model, regularizer, float(strength),
                    self.config.seeds[0] if seed is None else seed)
        path = self.out_dir / "cells" / f"{cell.name}.per_sample.json"
        if not path.exists():
            raise FileNotFoundError(f"no per-sample table for cell {cell.name} in {self.out_dir}; "
                                    "is it in the grid and finished?")
        stored = read_json(path, fix=_CELL_FIX)
        columns = {name: torch.tensor([math.nan if v is None else v for v in values],
                                      dtype=torch.float64)
                   for name, values in stored["columns"].items()}
        return EntropyLinkTable(columns, stored["settings"])


def _records_frame(records: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    rows = [{k: v for k, v in r.items() if k != "provenance"}
            | {"device": r["provenance"]["device"], "torch": r["provenance"]["torch"]}
            for r in records]
    frame = pd.DataFrame(rows)
    if not frame.empty:
        frame = frame.sort_values(["model", "regularizer", "strength", "seed"], ignore_index=True)
    return frame


_CELL_FIX = ("delete that file and rerun run_study: the cell is recomputed (training resumes "
             "from its checkpoint)")


def _read_config(out: Path) -> dict[str, Any]:
    """``out/config.json`` (fingerprint and config), refused with the fix if unreadable."""
    path = out / "config.json"
    fix = (f"delete the study folder {out} and rerun run_study (its cells are recomputed), or "
           "restore the file")
    stored = read_json(path, fix=fix)
    if not isinstance(stored, dict) or not isinstance(stored.get("config"), dict):
        raise ValueError(f"{path} holds no study config (no 'config' object): it is corrupt or "
                         f"not written by stabnb; {fix}.")
    return stored


def _claim_folder(config: StudyConfig, out: Path) -> None:
    """Write ``config.json``, or refuse a folder that holds another config's results."""
    stored_path = out / "config.json"
    mine = {"fingerprint": config.fingerprint(), "config": config.to_dict()}
    if stored_path.exists():
        stored = _read_config(out)
        if stored.get("fingerprint") != mine["fingerprint"]:
            theirs = stored.get("config", {})
            differ = sorted(k for k in set(theirs) | set(mine["config"])
                            if theirs.get(k) != mine["config"].get(k))
            raise ValueError(f"{out} holds results of a different study config (differs in "
                             f"{differ}); refusing to mix them. Use another out_dir, or delete "
                             "that folder to start over.")
        return
    write_json(stored_path, mine)


@lru_cache(maxsize=2)
def _worker_data(config_json: str) -> StudyData:
    return load_study_data(StudyConfig.from_dict(json.loads(config_json)))


def _worker_cell(config_json: str, cell: Cell, out_dir: str, device: str,
                 threads: int) -> dict[str, Any]:
    torch.set_num_threads(threads)
    config = StudyConfig.from_dict(json.loads(config_json))
    return run_cell(config, _worker_data(config_json), cell, out_dir, device=device)


def run_study(config: StudyConfig, out_dir: str | os.PathLike, *, device: str = "auto",
              jobs: int = 1, data: StudyData | None = None,
              progress_bar: bool | None = None) -> StudyResult:
    """Run every cell of ``config`` not yet finished in ``out_dir``; return all records.

    Args:
        config: the :class:`StudyConfig`.
        out_dir: the study's folder (module docstring for its layout).
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"``.
        jobs: cells trained at once in worker processes on the CPU (each with
            ``cpu_count // jobs`` threads). On a GPU cells run one after another.
            Default: 1.
        data: the loaded data, to skip loading it again. Default: :func:`load_study_data`.
        progress_bar: a bar over cells. Default: ``STABNB_PROGRESS``.

    Raises:
        ValueError: ``out_dir`` holds another config's results; errors of the cells.
        stabnb.data.DataSourceError: the data set cannot be had.
    """
    out = Path(out_dir)
    _claim_folder(config, out)
    cells = study_cells(config)
    todo = [c for c in cells if not (out / "cells" / f"{c.name}.json").exists()]
    if jobs < 1:
        raise ValueError(f"jobs={jobs} must be ≥ 1.")
    resolved = resolve_device(device)
    desc = f"study {config.dataset} ({len(cells) - len(todo)}/{len(cells)} cells done before)"
    if todo and (jobs == 1 or resolved.type != "cpu"):
        data = data or load_study_data(config)
        for cell in progress(todo, desc=desc, enabled=progress_bar):
            run_cell(config, data, cell, out, device=str(resolved))
            _write_table(cells, out)
    elif todo:
        config_json = json.dumps(config.to_dict())
        threads = max(1, (os.cpu_count() or 1) // jobs)
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(jobs, mp_context=context) as pool:
            futures = [pool.submit(_worker_cell, config_json, c, str(out), "cpu", threads)
                       for c in todo]
            for future in progress(as_completed(futures), desc=desc, total=len(todo),
                                   enabled=progress_bar):
                future.result()
                _write_table(cells, out)
    return StudyResult(config, out, _write_table(cells, out))


def _write_table(cells: Sequence[Cell], out: Path) -> pd.DataFrame:
    records = [read_json(p, fix=_CELL_FIX) for c in cells
               if (p := out / "cells" / f"{c.name}.json").exists()]
    frame = _records_frame(records)
    write_text(out / "results.csv", frame.to_csv(index=False))
    return frame


def study_dir(name: str, profile: str, config: StudyConfig) -> Path:
    """Where a notebook keeps the study ``name`` of ``config`` at ``profile``:
    ``$STABNB_WORK_DIR`` (else ``<project>/runs/work``) ``/<profile>/<name>-<code>-<config>``.

    ``<code>`` is a hash of stabnb's sources and ``<config>`` the config's fingerprint, so
    cells computed by older code are never reused as if they were current (the reproduce
    runner reruns a notebook for the same reason), an edited config gets a fresh folder, and
    finished cells of the same code and config are reused.
    """
    root = os.environ.get("STABNB_WORK_DIR") or (project_root() or Path.cwd()) / "runs" / "work"
    return Path(root) / profile / f"{name}-{source_digest([__name__])[:10]}-{config.fingerprint()[:8]}"


def load_study(out_dir: str | os.PathLike) -> StudyResult:
    """A study's config and records from its folder, without running anything."""
    out = Path(out_dir)
    if not (out / "config.json").exists():
        raise FileNotFoundError(f"{out} holds no study (config.json is missing); run_study first.")
    config = StudyConfig.from_dict(_read_config(out)["config"])
    return StudyResult(config, out, _write_table(study_cells(config), out))


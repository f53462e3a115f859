"""The plan of a reproduce run: the study cells each notebook trains, and how long the run should
take on this device, from a short calibration here (``python -m stabnb reproduce --plan``).

Cost model (printed with every plan)::

    t_cell = s(model, regulariser) · epochs · ⌈n_train / batch⌉ + e(model, probe_size)
    t_nb   = Σ_its studies Σ_cells t_cell / u(jobs) + t_rest
    T      = t_calibration + makespan(t_nb handed out in order to notebook_jobs slots)

- ``s`` is the seconds per training step, timed on random inputs of the data set's shape with the
  cell's own regulariser (its largest λ), batch and precision: the difference between a run of
  ``warmup + steps`` steps and one of ``warmup`` steps, so set-up and warm-up cancel.
- ``e`` is :func:`stabnb.study.cell.evaluate_model` of an untrained network, timed at two small
  probe sizes (GMSI images in proportion) and extrapolated linearly to the profile's; the
  attack and randomisation parts are capped in the real run, so this errs high.
- ``u(jobs)`` is the measured throughput of ``jobs`` worker processes running the same step loop
  at once over one's (1 when ``jobs`` is 1): what cells gain from running concurrently.
- ``t_rest`` is what a notebook does beyond its cells (tables, figures, E7's attacks; the whole
  of a notebook without a study here: the theory notebooks, E1, E2, E5, E8). It is the
  notebook's last recorded wall time at the profile on this kind of device, else its recorded
  quick wall time (marked as such: a different size, so a guess), else unknown (listed).
- ``makespan``: the reproduce command hands the notebooks out in order to ``notebook_jobs``
  workers; the plan assumes notebooks running at once do not slow each other (on one GPU they
  do somewhat: with ``notebook_jobs`` > 1 the estimate errs low).

The plan never trains a network worth keeping and writes nothing but what the caller saves.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from ..checks import resolve_device
from ..data import data_availability
from ..data.images import DATASETS
from ..io import read_json
from ..regularizers import BASELINE, make_regularizer
from ..study.cell import StudyData, _build, evaluate_model
from ..study.config import Cell, StudyConfig, study_cells
from ..study.sweep import _jobs_setting
from ..train import train
from .manifest import NOTEBOOKS

__all__ = ["PlannedStudy", "StepCost", "Plan", "planned_studies", "make_plan"]

CLASSES = {"mnist": 10, "cifar10": 10, "cifar100": 100}
"""Classes of each image data set (shapes and statistics: :data:`stabnb.data.images.DATASETS`)."""
TRAIN_SIZES = {"mnist": 60_000, "cifar10": 50_000, "cifar100": 50_000}
WARMUP_STEPS = 2
DEPENDS = {"experiments/E7_robustness.ipynb": ("experiments/E3_mnist.ipynb",
                                               "experiments/E4_cifar10.ipynb")}
"""E7 reuses E3's and E4's trained networks (their study folders, which a bundle leaves
behind), so a run split into parts keeps the three in one."""


@dataclass(frozen=True)
class PlannedStudy:
    """One study a notebook runs: its folder name, config, and whether its data can be had."""

    notebook: str
    name: str
    config: StudyConfig
    data: str = "available"

    @property
    def cells(self) -> list[Cell]:
        return study_cells(self.config)

    def steps(self, model: str) -> int:
        """Training steps of one cell of ``model``: epochs × ⌈n_train / batch⌉ of its recipe."""
        n = self.config.train_size or TRAIN_SIZES[self.config.dataset]
        recipe = self.config.train_config(0, model)
        return recipe.epochs * -(-n // recipe.batch_size)


def planned_studies(profile: str, *, seed: int = 0,
                    notebooks: Sequence[str] | None = None) -> list[PlannedStudy]:
    """The studies of E3, E4 and E6 (:func:`stabnb.presets.regularisation_config`) and E7's own
    (:func:`stabnb.validity.population_studies`: its snapshots, and at smoke its population)
    among ``notebooks`` (default: all); E7's population at quick and paper is E3's and E4's,
    reused, so not counted twice."""
    from ..presets import regularisation_config
    from ..validity import population_studies, snapshot_config

    studies = [PlannedStudy(f"experiments/{name}.ipynb", name,
                            regularisation_config(dataset, profile, seed=seed))
               for name, dataset in (("E3_mnist", "mnist"), ("E4_cifar10", "cifar10"),
                                     ("E6_cifar100", "cifar100"))]
    shared = {study.name for study in studies}
    population, snapshots = population_studies(profile, seed=seed)
    e7 = "experiments/E7_robustness.ipynb"
    studies += [PlannedStudy(e7, name, config) for name, config in population.items()
                if name not in shared]
    studies += [PlannedStudy(e7, f"E7_{name}_epochs{epochs}", snapshot_config(population[name], epochs))
                for name, all_epochs in snapshots.items() for epochs in all_epochs]
    chosen = [s for s in studies if notebooks is None or s.notebook in notebooks]
    return [replace(s, data="available" if data_availability(s.config.dataset).available
                    else "missing") for s in chosen]


@dataclass(frozen=True)
class StepCost:
    """Measured seconds per training step of one (model, regulariser) and per evaluation."""

    dataset: str
    model: str
    regularizer: str
    step_s: float
    eval_s: float


def _synthetic(dataset: str, n: int, probe_size: int, generator: torch.Generator) -> StudyData:
    """``n`` random images and labels of ``dataset``'s shape as a study's data (the first
    ``probe_size`` are the probe), with its normalisation statistics."""
    mean, std, shape = DATASETS[dataset]
    x = torch.rand(n, *shape, generator=generator)
    y = torch.randint(0, CLASSES[dataset], (n,), generator=generator)
    return StudyData(x, y, x, y, x[:probe_size], y[:probe_size], shape, CLASSES[dataset], mean,
                     std, "synthetic")


def _step_seconds(config: StudyConfig, model: str, regularizer: str, strength: float,
                  device: str, steps: int) -> float:
    """Seconds per training step: (run of warmup + steps) − (run of warmup), over steps."""
    generator = torch.Generator().manual_seed(0)
    run = replace(config.train_config(0, model, device=device, progress=False), epochs=1)
    options = {"seed": 0} | dict(config.regularizer_kwargs.get(regularizer, {}))
    timings = []
    for count in (WARMUP_STEPS, WARMUP_STEPS, WARMUP_STEPS + steps):  # the first warms up
        data = _synthetic(config.dataset, run.batch_size * count, 0, generator)
        network = _build(config, data, Cell(model, regularizer, strength, 0))
        reg = None if regularizer == BASELINE else make_regularizer(regularizer, strength, **options)
        start = time.perf_counter()
        train(network, data.train_x, data.train_y, run, regularizer=reg)
        timings.append(time.perf_counter() - start)
    return max(timings[2] - timings[1], 0.0) / steps


def _eval_seconds(config: StudyConfig, model: str, device: str, probe_size: int) -> float:
    """:func:`~stabnb.study.cell.evaluate_model` seconds at ``probe_size``, from two small sizes."""
    generator = torch.Generator().manual_seed(1)
    probe = config.probe
    small = min(probe.probe_size, 16)
    sizes, seconds = (max(small // 2, 1), small), []
    data = _synthetic(config.dataset, min(probe.eval_size or 10_000, 10_000), small, generator)
    network = _build(config, data, Cell(model, BASELINE, 0.0, 0)).to(resolve_device(device)).eval()
    for size in (sizes[0], *sizes):  # the first warms up
        gmsi = math.ceil(probe.gmsi_size * size / probe.probe_size) if probe.gmsi_size else 0
        scaled = replace(config, probe=replace(probe, probe_size=size, gmsi_size=gmsi))
        probed = replace(data, probe_x=data.test_x[:size], probe_y=data.test_y[:size])
        start = time.perf_counter()
        evaluate_model(network, scaled, probed, noise_seed=0)
        seconds.append(time.perf_counter() - start)
    slope = max(seconds[2] - seconds[1], 0.0) / (sizes[1] - sizes[0]) if sizes[1] > sizes[0] else 0.0
    return seconds[2] + slope * (probe.probe_size - sizes[1])


def _concurrent_worker(config_json: str, model: str, device: str, steps: int,
                       barrier: Any, results: Any) -> None:
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // barrier.parties))
    config = StudyConfig.from_dict(json.loads(config_json))
    _step_seconds(config, model, BASELINE, 0.0, device, 1)  # import, initialise, warm up
    barrier.wait()
    results.put(_step_seconds(config, model, BASELINE, 0.0, device, steps))


def _speedup(config: StudyConfig, model: str, device: str, jobs: int, steps: int,
             single_step_s: float) -> float:
    """Throughput of ``jobs`` concurrent step loops over one's, capped at ``jobs``."""
    if jobs == 1:
        return 1.0
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(jobs), context.Queue()
    workers = [context.Process(target=_concurrent_worker, daemon=True,
                               args=(json.dumps(config.to_dict()), model, device, steps,
                                     barrier, results)) for _ in range(jobs)]
    for worker in workers:
        worker.start()
    slowest = max(results.get(timeout=600) for _ in workers)
    for worker in workers:
        worker.join()
    return min(float(jobs), jobs * single_step_s / slowest) if slowest > 0 else float(jobs)


@dataclass
class Plan:
    """A run's cells with their estimated seconds, the other notebooks' times, the total."""

    profile: str
    device: str
    jobs: int
    studies: list[PlannedStudy]
    costs: list[StepCost]
    rest: dict[str, tuple[float | None, str]]
    speedup: float
    calibration_s: float
    notebooks: list[str] = field(default_factory=lambda: list(NOTEBOOKS))
    notebook_jobs: int = 1

    def cost(self, dataset: str, model: str, regularizer: str) -> StepCost:
        return next(c for c in self.costs if (c.dataset, c.model, c.regularizer)
                    == (dataset, model, regularizer))

    def cell_seconds(self, study: PlannedStudy, cell: Cell) -> float:
        cost = self.cost(study.config.dataset, cell.model, cell.regularizer)
        return cost.step_s * study.steps(cell.model) + cost.eval_s

    def study_seconds(self, study: PlannedStudy) -> float:
        """Wall seconds of a study's cells: their sum over the concurrency gain (0 without data)."""
        if study.data != "available":
            return 0.0
        return sum(self.cell_seconds(study, c) for c in study.cells) / self.speedup

    def notebook_seconds(self) -> dict[str, float | None]:
        """Estimated wall seconds per notebook (``None``: nothing known of its rest)."""
        out: dict[str, float | None] = {}
        for notebook in self.notebooks:
            rest = self.rest.get(notebook, (None, "no record"))[0]
            cells = sum(self.study_seconds(s) for s in self.studies if s.notebook == notebook)
            out[notebook] = None if rest is None else rest + cells
        return out

    def makespan(self, notebooks: Sequence[str]) -> float:
        """Wall seconds of ``notebooks`` handed out in order to ``notebook_jobs`` workers
        (unknown ones count as 0)."""
        seconds, slots = self.notebook_seconds(), [0.0] * self.notebook_jobs
        for notebook in sorted(notebooks, key=self.notebooks.index):
            slots[slots.index(min(slots))] += seconds[notebook] or 0.0
        return max(slots)

    @property
    def total_s(self) -> float:
        """Calibration plus the notebooks' makespan (unknown rests count as 0: see render)."""
        return self.calibration_s + self.makespan(self.notebooks)

    def fits(self, budget_s: float, notebooks: Sequence[str] | None = None) -> bool:
        """Whether ``notebooks`` (default: all) run within ``budget_s``, every time known."""
        chosen = self.notebooks if notebooks is None else notebooks
        seconds = self.notebook_seconds()
        return (self.calibration_s + self.makespan(chosen) <= budget_s
                and all(seconds[n] is not None for n in chosen))

    def parts(self, budget_s: float) -> list[list[str]]:
        """The notebooks in runs of at most ``budget_s`` each (calibration counted in each),
        in order, keeping :data:`DEPENDS` together; a unit over the budget alone is a part."""
        units: list[list[str]] = []
        for notebook in self.notebooks:
            tied = [u for u in units if set(u) & set(DEPENDS.get(notebook, ()))]
            if not tied:
                units.append([notebook])
                continue
            for other in tied[1:]:
                tied[0] += other
                units.remove(other)
            tied[0].append(notebook)
        parts: list[list[str]] = []
        for unit in units:
            if not parts or self.calibration_s + self.makespan(parts[-1] + unit) > budget_s:
                parts.append([])
            parts[-1] += unit
        return [sorted(part, key=self.notebooks.index) for part in parts]

    def to_dict(self) -> dict[str, Any]:
        return {"profile": self.profile, "device": self.device, "jobs": self.jobs,
                "notebook_jobs": self.notebook_jobs,
                "speedup": self.speedup, "calibration_s": self.calibration_s,
                "total_s": self.total_s, "costs": [asdict(c) for c in self.costs],
                "notebooks": self.notebook_seconds(),
                "rest": {k: {"seconds": v, "basis": b} for k, (v, b) in self.rest.items()},
                "studies": [{"notebook": s.notebook, "name": s.name, "data": s.data,
                             "cells": len(s.cells),
                             "steps_per_cell": {m: s.steps(m) for m in s.config.models},
                             "seconds": self.study_seconds(s)} for s in self.studies]}

    def render(self, budget_s: float | None = None) -> str:
        """The plan as text: studies and their cells, costs, notebooks, total and verdict."""
        lines = [f"Plan of the {self.profile} profile on {self.device}: {self.notebook_jobs} "
                 f"notebook(s) at once, {self.jobs} cell worker(s) per study (measured "
                 f"concurrency gain u = {self.speedup:.2f})", "",
                 "t_cell = s · epochs · ⌈n_train/batch⌉ + e;  t_nb = Σ t_cell / u + t_rest;  "
                 "T = t_calibration + makespan(t_nb)  (stabnb.reproduce.plan)", "",
                 f"{'study':28} {'cells':>5} {'steps/cell':>10} {'data':>9} {'wall s':>8}"]
        for s in self.studies:
            steps = sorted({s.steps(m) for m in s.config.models})
            shown = f"{steps[0]}–{steps[-1]}" if len(steps) > 1 else str(steps[0])
            lines.append(f"{s.name:28} {len(s.cells):5d} {shown:>10} {s.data:>9} "
                         f"{self.study_seconds(s):8.1f}")
        lines += ["", f"{'data set':9} {'model':8} {'regulariser':26} {'s ms/step':>10} "
                      f"{'e s/cell':>9}"]
        lines += [f"{c.dataset:9} {c.model:8} {c.regularizer:26} {1e3 * c.step_s:10.2f} "
                  f"{c.eval_s:9.2f}" for c in self.costs]
        lines += ["", f"{'notebook':44} {'estimate s':>10}  basis of the rest"]
        for notebook, seconds in self.notebook_seconds().items():
            basis = self.rest.get(notebook, (None, "no record"))[1]
            shown = "unknown" if seconds is None else f"{seconds:.1f}"
            lines.append(f"{notebook:44} {shown:>10}  {basis}")
        unknown = [n for n, v in self.notebook_seconds().items() if v is None]
        lines += ["", f"calibration {self.calibration_s:.1f} s; total {self.total_s:.1f} s "
                      f"({self.total_s / 60:.1f} min)"
                  + (f" plus {len(unknown)} notebook(s) of unknown time" if unknown else "")]
        if self.jobs > 1 and self.speedup < 1:
            lines.append(f"u < 1: {self.jobs} concurrent cell workers are slower here than one "
                         "(--cell-jobs 1)")
        if budget_s is not None:
            verdict = "fits" if self.fits(budget_s) else "does NOT fit"
            lines.append(f"budget {budget_s:.0f} s: the plan {verdict}")
            if not self.fits(budget_s):
                for index, part in enumerate(self.parts(budget_s), 1):
                    total = self.calibration_s + self.makespan(part)
                    lines.append(f"  part {index}: {total:6.0f} s  --only "
                                 + " ".join(Path(n).stem for n in part)
                                 + ("  (over the budget alone: its studies resume across "
                                    "runs)" if total > budget_s else ""))
        return "\n".join(lines)


def _recorded_rest(out_root: Path, profile: str, device_type: str) -> dict[str, tuple[float | None, str]]:
    """Each notebook's last recorded wall time: at ``profile`` on this device type, else quick."""
    rest: dict[str, tuple[float | None, str]] = {}
    for source in (profile, "quick"):
        path = out_root / "results" / source / "claims.json"
        if not path.exists():
            continue
        recorded = read_json(path)
        device = str(recorded.get("provenance", {}).get("device", ""))
        if source == profile and not device.startswith(device_type):
            continue
        for run in recorded.get("notebooks", []):
            if run.get("wall_s") is not None and run["path"] not in rest:
                basis = (f"recorded at {source} on {device}" if source == profile
                         else f"quick record on {device} (other sizes: a guess)")
                rest[run["path"]] = (float(run["wall_s"]), basis)
    return rest


def make_plan(profile: str, *, device: str = "auto", jobs: int | None = None,
              notebook_jobs: int = 1,
              seed: int = 0, out_root: str | os.PathLike = ".", steps: int = 8,
              notebooks: Sequence[str] | None = None) -> Plan:
    """Calibrate on ``device`` and return the plan of ``profile`` with ``jobs`` cell workers.

    Args:
        profile: ``"smoke"``, ``"quick"`` or ``"paper"``.
        device: where the run will happen (the calibration runs there).
        jobs: cell worker processes per study. Default: the ``STABNB_JOBS`` setting, as the
            run's studies read it (:func:`stabnb.study.run_study`), else 1.
        notebook_jobs: notebooks at once (the run's ``--jobs``).
        out_root: where earlier runs' ``results/`` are (for the notebooks' recorded times).
        steps: timed training steps per (model, regulariser).
        notebooks: the notebooks of the run (relative paths). Default: every one.

    Raises:
        ValueError: ``jobs``, ``notebook_jobs`` or ``steps`` below 1, a bad ``STABNB_JOBS``.
    """
    if jobs is None:
        jobs = _jobs_setting()
    if min(jobs, notebook_jobs, steps) < 1:
        raise ValueError(f"jobs={jobs}, notebook_jobs={notebook_jobs} and steps={steps} must "
                         "be at least 1.")
    started = time.perf_counter()
    resolved = str(resolve_device(device))
    chosen = list(notebooks) if notebooks is not None else list(NOTEBOOKS)
    studies = planned_studies(profile, seed=seed, notebooks=chosen)
    costs: dict[tuple[str, str, str], StepCost] = {}
    evals: dict[tuple[str, str], float] = {}
    for study in studies:
        if study.data != "available":
            continue
        config = study.config
        for model in config.models:
            key = (config.dataset, model)
            if key not in evals:
                evals[key] = _eval_seconds(config, model, resolved, config.probe.probe_size)
            grids = {BASELINE: (0.0,), **config.regularizers}
            for name, grid in grids.items():
                if (config.dataset, model, name) not in costs:
                    step = _step_seconds(config, model, name, max(grid), resolved, steps)
                    costs[(config.dataset, model, name)] = StepCost(
                        config.dataset, model, name, step, evals[key])
    heaviest = max(((s, m) for s in studies if s.data == "available" for m in s.config.models),
                   key=lambda sm: costs[(sm[0].config.dataset, sm[1], BASELINE)].step_s,
                   default=None)
    speedup = 1.0
    if heaviest is not None and jobs > 1:
        study, model = heaviest
        speedup = _speedup(study.config, model, resolved, jobs, steps,
                           costs[(study.config.dataset, model, BASELINE)].step_s)
    rest = _recorded_rest(Path(out_root), profile, resolve_device(device).type)
    return Plan(profile, resolved, jobs, studies, list(costs.values()),
                {k: v for k, v in rest.items() if k in chosen}, speedup,
                time.perf_counter() - started, chosen, notebook_jobs)

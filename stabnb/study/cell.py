"""One cell of a study: its data, its network, its training run and its row of metrics.

This module and what it imports is the code a cell runs: :func:`stabnb.study.study_dir` and
the study folder are keyed by its :func:`stabnb.io.source_digest`, so an edit to plotting,
notebook support, prose or docstrings leaves finished cells valid.

Randomness (one rule: every draw has its own generator, nothing touches the global stream):
each seed ``s`` of a study gives independent streams (:func:`stream_seed`) for the training
subset, the probe images, the initial weights, the minibatch order, the probe noise and the
regulariser's draws. Within one seed the baseline and every regularised cell share all of them
(a paired comparison: the cells differ only in the penalty); across seeds all of them change.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import time
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..attribution import (
    AttributionStability,
    attribution_attack,
    attribution_method,
    deletion_faithfulness,
    input_dependence,
    model_randomisation,
    parse_perturbation,
)
from ..attribution.perturbations import perturb
from ..data import load_dataset
from ..entropy_link import EntropyLinkTable, per_sample_table
from ..gates import gate_flips, preactivation_margin
from ..gmsi import COMPONENTS, gmsi
from ..io import read_json, source_digest, write_json
from ..models import MLP, build_model, initialize, smooth_activations
from ..regularizers import ARCHITECTURAL, BASELINE, make_regularizer
from ..train import evaluate_accuracy, train
from .config import Cell, ProbeConfig, StudyConfig

__all__ = ["StudyData", "stream_seed", "load_study_data", "evaluate_model", "run_cell",
           "code_digest"]

STABILITY_METRICS = ("relative_l2", "cosine", "spearman", "top_k", "sensitivity_max", "abs_l2",
                     "attribution_norm")
SPECTRAL_COLUMNS = ("operator_norm", "spectral_entropy", "effective_rank", "stable_rank")
ATTACK_IMAGES = 64
"""The attack runs on the first probe images only (its steps cost double backward passes)."""
SANITY_IMAGES = 32
"""The randomisation check runs on the first probe images only (the study keeps only its
fully randomised stage, one saliency pass)."""
TIMING_FIELDS = ("train_seconds", "eval_seconds")
"""Record fields that vary between identical runs (with ``provenance.wall_seconds``, ``.host``)."""


def code_digest() -> str:
    """:func:`stabnb.io.source_digest` of this module and what it imports: the code of a cell
    (without :mod:`stabnb.plotting`, which :mod:`stabnb.entropy_link` imports only to plot)."""
    return source_digest([__name__], exclude=["stabnb.plotting"])


def stream_seed(seed: int, purpose: str) -> int:
    """The seed of one purpose's stream (``"init"``, ``"order"``, ``"noise"``, ...) of the
    replication ``seed``: a hash, so streams of different purposes or seeds do not overlap."""
    digest = hashlib.sha256(f"stabnb.study:{purpose}:{int(seed)}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def _generator(seed: int, purpose: str, device: str | torch.device = "cpu") -> torch.Generator:
    return torch.Generator(device).manual_seed(stream_seed(seed, purpose))


@dataclass(frozen=True)
class StudyData:
    """One seed's training set, accuracy set and probe set, as pixel tensors in [0, 1]."""

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


def _teacher_task(options: dict[str, Any]) -> tuple[Tensor, Tensor, Tensor, Tensor, str]:
    """The teacher task: fixed by ``options["seed"]`` alone, the same for every study seed."""
    opts = {"dim": 64, "num_classes": 4, "widths": (32,), "n_train": 4000, "n_test": 1000,
            "seed": 0} | options
    teacher = initialize(MLP(opts["dim"], tuple(opts["widths"]), opts["num_classes"],
                             activation="tanh"), _generator(opts["seed"], "teacher"))
    x = torch.rand(opts["n_train"] + opts["n_test"], opts["dim"],
                   generator=_generator(opts["seed"], "teacher_inputs"))
    with torch.no_grad():
        y = teacher((x - 0.5) * 4.0).argmax(1)
    n = opts["n_train"]
    return x[:n], y[:n], x[n:], y[n:], f"teacher MLP {json.dumps(opts, sort_keys=True)}"


@lru_cache(maxsize=4)
def _images(dataset: str, split: str):
    return load_dataset(dataset, split)


def load_study_data(config: StudyConfig, seed: int) -> StudyData:
    """The data of replication ``seed``: a balanced training subset drawn with the seed (all of
    the training set when ``train_size`` is ``None``), the accuracy set (the first
    ``probe.eval_size`` test inputs, fixed), and ``probe.probe_size`` probe inputs drawn from it
    with the seed.

    Raises:
        ValueError: ``probe_size`` larger than the accuracy set.
        stabnb.data.DataSourceError: the data set cannot be had.
    """
    probe = config.probe
    if config.dataset == "teacher":
        train_x, train_y, test_x, test_y, source = _teacher_task(dict(config.teacher))
        mean, std = (0.5,), (0.25,)
        num_classes = int(config.teacher.get("num_classes", 4))
        if config.train_size is not None and config.train_size < len(train_x):
            chosen = torch.randperm(len(train_x), generator=_generator(seed, "train_subset"))
            chosen = chosen[:config.train_size].sort().values
            train_x, train_y = train_x[chosen], train_y[chosen]
    else:
        train, test = _images(config.dataset, "train"), _images(config.dataset, "test")
        if config.train_size is not None and config.train_size < len(train):
            train = train.subset(config.train_size, seed=stream_seed(seed, "train_subset"))
        if probe.eval_size is not None and probe.eval_size < len(test):
            test = test.subset(probe.eval_size, seed=0)
        train_x, train_y, test_x, test_y = train.pixels(), train.labels, test.pixels(), test.labels
        mean, std, num_classes = train.mean, train.std, train.num_classes
        source = f"train: {train.source}; test: {test.source}"
    if probe.eval_size is not None:
        test_x, test_y = test_x[:probe.eval_size], test_y[:probe.eval_size]
    if probe.probe_size > len(test_x):
        raise ValueError(f"probe_size={probe.probe_size} exceeds the {len(test_x)} test inputs; "
                         "lower probe.probe_size or raise probe.eval_size.")
    chosen = torch.randperm(len(test_x), generator=_generator(seed, "probe"))[:probe.probe_size]
    return StudyData(train_x, train_y, test_x, test_y, test_x[chosen], test_y[chosen],
                     tuple(train_x.shape[1:]), num_classes, mean, std, source)


def _build(config: StudyConfig, data: StudyData, cell: Cell) -> nn.Module:
    spec = config.models[cell.model]
    model = build_model(spec.architecture, data.input_shape, data.num_classes, mean=data.mean,
                        std=data.std, **spec.kwargs)
    model = initialize(model, _generator(cell.seed, "init"))
    if cell.regularizer in ARCHITECTURAL:      # the same initial weights, smooth activations
        smooth_activations(model, cell.strength)
    return model


def _method_kwargs(config: StudyConfig, method: str) -> dict[str, Any]:
    if method == "integrated_gradients":
        return {"n_steps": config.probe.ig_steps}
    if method == "smoothgrad":
        return {"nt_samples": config.probe.smoothgrad_samples}
    return {}


def _mean(values: Tensor) -> float:
    finite = values[torch.isfinite(values)]
    return float(finite.mean()) if finite.numel() else math.nan


def _padded(values: Tensor, n: int) -> Tensor:
    """``values`` of the first probe images, NaN for the rest, as a CPU float64 column."""
    column = torch.full((n,), math.nan, dtype=torch.float64)
    column[:len(values)] = values.detach().to("cpu", torch.float64)
    return column


def _saliency_columns(model: nn.Module, probe: ProbeConfig, input_shape: tuple[int, ...],
                      x: Tensor, noise_seed: int) -> dict[str, Tensor]:
    """Per-image columns of the saliency beyond the training family: each held-out and aside
    family, the held-out families' mean (``heldout.*``), the attack, and (``probe.quality``) input dependence, the
    randomisation check, deletion faithfulness and the ReLU gates. Each draw has its own
    stream of ``noise_seed`` (one purpose per family, the attack, sanity, faithfulness)."""
    device, n = x.device, x.shape[0]
    columns: dict[str, Tensor] = {}
    families = probe.families_for(input_shape)
    for spec in (*families, *probe.families_for(input_shape, aside=True)):
        family, size = parse_perturbation(spec)
        measured = AttributionStability(model, "saliency", perturbation=family, radius=size,
                                        num_samples=probe.num_draws, top_k=probe.top_k).measure(
            x, generator=_generator(noise_seed, f"heldout:{spec}", device))
        columns[f"family.{spec}.relative_l2"] = measured.relative_l2
        columns[f"family.{spec}.top_k"] = measured.top_k
    for metric in ("relative_l2", "top_k"):
        per_family = torch.stack([columns[f"family.{spec}.{metric}"] for spec in families])
        columns[f"heldout.{metric}"] = per_family.nanmean(0)
    if probe.attack_steps:
        attacked = attribution_attack(model, x[:ATTACK_IMAGES], epsilon=probe.attack_epsilon,
                                      steps=probe.attack_steps, top_k=probe.top_k,
                                      generator=_generator(noise_seed, "attack", device))
        for name in ("relative_l2", "top_k", "start_relative_l2", "start_top_k"):
            columns[f"attack.{name}"] = _padded(getattr(attacked, name), n)
    if probe.quality:
        with torch.no_grad():
            target = model(x).argmax(1)
        clean = attribution_method("saliency", model)(x, target)
        between = input_dependence(clean, target)
        columns["dependence.between_inputs"] = between
        columns["dependence.ratio"] = columns["heldout.relative_l2"].to(between) / between
        sanity = model_randomisation(model, x[:SANITY_IMAGES], target[:SANITY_IMAGES],
                                     generator=_generator(noise_seed, "sanity", device),
                                     cascade=False)
        columns["sanity.randomised_spearman"] = _padded(sanity.randomised, n)
        deletion = deletion_faithfulness(model, x, clean, target,
                                         generator=_generator(noise_seed, "faithfulness", device))
        columns["faithfulness.deletion_auc"] = deletion.deletion_auc
        columns["faithfulness.random_auc"] = deletion.random_auc
        columns["faithfulness.gain"] = deletion.gain
        training = perturb(x, "gaussian", probe.radius, probe.num_draws,
                           generator=_generator(noise_seed, "noise", device))
        columns["mechanism.gate_flips"] = gate_flips(model, x, training)
        columns["mechanism.margin"] = preactivation_margin(model, x)
    return {name: value.detach().to("cpu", torch.float64) for name, value in columns.items()}


def evaluate_model(model: nn.Module, config: StudyConfig, data: StudyData, *,
                   noise_seed: int = 0) -> tuple[dict[str, float], EntropyLinkTable]:
    """One trained model's row of metrics (:mod:`stabnb.study`) and its per-sample table.

    The probe noise comes from the ``"noise"`` stream of ``noise_seed`` (the cell's seed), so
    every cell of one seed sees the same draws. Besides each method's ``<method>.*`` columns
    under the training family (Gaussian σ = ``probe.radius``), the saliency is measured under
    the held-out families, the attack and the quality checks (:func:`_saliency_columns`);
    their per-image values join the per-sample table under their dotted record names
    (``heldout.relative_l2``), their means (NaN-safe) the record.
    """
    model.eval()
    probe = config.probe
    device = next(model.parameters()).device
    metrics: dict[str, float] = {"accuracy": evaluate_accuracy(model, data.test_x, data.test_y)}
    probe_x, probe_y = data.probe_x.to(device), data.probe_y.to(device)
    if probe.gmsi_size:
        result = gmsi(model, probe_x[:probe.gmsi_size], probe_y[:probe.gmsi_size],
                      progress=False)
        metrics["gmsi"] = result.value
        metrics.update({f"gmsi.{name}": float(result.components[name]) for name in COMPONENTS})
    table = None
    for method in probe.methods:
        stability = AttributionStability(model, method, radius=probe.radius,
                                         num_samples=probe.num_draws, top_k=probe.top_k,
                                         method_kwargs=_method_kwargs(config, method))
        measured = stability.measure(probe_x, generator=_generator(noise_seed, "noise", device))
        columns = {name: getattr(measured, name) for name in
                   ("relative_l2", "cosine", "spearman", "top_k", "sensitivity_max",
                    "attribution_norm")}
        columns["abs_l2"] = measured.relative_l2 * measured.attribution_norm
        for name in STABILITY_METRICS:
            metrics[f"{method}.{name}"] = _mean(columns[name].masked_fill(~measured.valid, math.nan))
        if table is None:
            table = per_sample_table(model, probe_x, None, measured)
    if table is None:
        raise ValueError("probe.methods is empty; a study measures at least one method.")
    for name in SPECTRAL_COLUMNS:
        metrics[f"jacobian.{name}"] = _mean(table[name])
        metrics[f"jacobian.{name}.median"] = float(table[name].nanmedian())
    extra = _saliency_columns(model, probe, data.input_shape, probe_x, noise_seed)
    metrics.update({name: _mean(values) for name, values in extra.items()})
    return metrics, EntropyLinkTable(table.columns | extra, table.settings)


def cell_path(out_dir: str | os.PathLike, cell: Cell) -> Path:
    """Where a finished cell's record lives."""
    return Path(out_dir) / "cells" / f"{cell.name}.json"


def run_cell(config: StudyConfig, data: StudyData, cell: Cell, out_dir: str | os.PathLike, *,
             device: str = "auto", progress_bar: bool | None = False) -> dict[str, Any]:
    """Train (or resume, or reuse) one cell on its seed's ``data``, evaluate it, write its
    record atomically; return the record."""
    out = Path(out_dir)
    record_path = cell_path(out, cell)
    if record_path.exists():
        return read_json(record_path)
    started = time.perf_counter()
    model = _build(config, data, cell)
    options = {}
    if cell.regularizer != BASELINE:
        options = {"seed": stream_seed(cell.seed, "regularizer")} | dict(
            config.regularizer_kwargs.get(cell.regularizer, {}))
    regularizer = make_regularizer(cell.regularizer, cell.strength, **options)
    train_config = config.train_config(stream_seed(cell.seed, "order"), cell.model,
                                       device=device, progress=progress_bar,
                                       checkpoint_dir=str(out / "checkpoints"))
    trained = train(model, data.train_x, data.train_y, train_config, regularizer=regularizer)
    evaluated = time.perf_counter()
    metrics, table = evaluate_model(model, config, data, noise_seed=cell.seed)
    record = {
        **asdict(cell), **metrics, "cell": cell.name,
        "train_seconds": trained.wall_time, "eval_seconds": time.perf_counter() - evaluated,
        "provenance": {
            "config": config.fingerprint(), "code": code_digest(), "device": trained.device,
            "torch": torch.__version__, "python": platform.python_version(),
            "host": platform.node(), "checkpoint_key": trained.key,
            "resumed_from_epoch": trained.resumed_from_epoch, "history": trained.history,
            "data": data.source, "wall_seconds": time.perf_counter() - started,
        },
    }
    write_json(out / "cells" / f"{cell.name}.per_sample.json", table.to_dict())
    write_json(record_path, record)
    return record

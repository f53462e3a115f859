"""Training: a plain minibatch loop with an optional regulariser, checkpoints and resume.

``loss = cross_entropy(model(x), y) + regularizer(model, x, y)``. A regulariser is any
callable with that signature returning a scalar (its strength λ included); if it has
``state_dict``/``load_state_dict`` (carried power-iteration vectors, say) that state is
checkpointed with the model. One with ``shares_forward = True`` (stabnb's input-Jacobian and
curvature penalties) is called as ``regularizer(model, x, y, logits=logits)`` on the step's own
forward pass, ``x`` requiring grad, in float32 precision (see
:func:`stabnb.regularizers.shared_forward_inputs`).

Fast recipes (opt-in, all off by default): label smoothing, batched on-device augmentation
(:func:`augment_batch`) and a triangular learning-rate schedule, after Keller Jordan's airbench
(https://github.com/KellerJordan/cifar10-airbench). The loop never waits on the device within
an epoch except every :data:`FINITE_CHECK_STEPS` steps, when it checks that no loss was
non-finite.

Checkpoints live in ``checkpoint_dir`` under a key hashed from everything that decides the
result (config, architecture, initial weights, data, regulariser), are written atomically
at the end of every epoch, and make a finished run free to repeat and an interrupted one
resume where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .checks import check_finite, resolve_device
from .io import load_torch, save_torch
from .progress import progress
from .regularizers import shared_forward_inputs

__all__ = ["TrainConfig", "TrainResult", "train", "evaluate_accuracy", "predict", "augment_batch",
           "lr_factor"]

Regularizer = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]
OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("cosine", "constant", "triangle")
PRECISIONS = ("float32", "bfloat16")
AUGMENTATIONS = ("none", "translate", "flip_translate")
TRANSLATE_PIXELS = 2
"""Largest shift of the ``translate`` augmentations, per axis (airbench's)."""
TRIANGLE = ((0.0, 0.2), (0.2, 1.0), (1.0, 0.0))
"""The ``triangle`` schedule's corners (fraction of all steps, fraction of ``lr``): linear
warm-up from 0.2·lr to lr over the first 20 % of steps, then linear decay to 0 (airbench)."""
FINITE_CHECK_STEPS = 100
"""Steps between the loop's checks that every loss so far was finite (and at each epoch's end)."""
LATER_FIELDS = ("label_smoothing", "augment")
"""Fields added after the first studies: :meth:`TrainConfig.to_dict` lists them only when they
differ from their defaults, so the configs written before keep their fingerprints and keys."""


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a training run, in one place.

    Attributes:
        epochs: passes over the training set. Default: 5.
        batch_size: minibatch size. Default: 128.
        lr: peak learning rate. Default: 0.05.
        optimizer: ``"sgd"`` (Nesterov momentum) or ``"adam"``. Default: ``"sgd"``.
        momentum: SGD momentum. Default: 0.9.
        weight_decay: L2 weight decay. Default: 5e-4.
        schedule: ``"cosine"`` (to zero over all steps), ``"constant"`` or ``"triangle"``
            (:data:`TRIANGLE`; :func:`lr_factor`). Default: ``"cosine"``.
        seed: seeds the minibatch order. Default: 0.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"``. Default: ``"auto"``.
        precision: ``"float32"`` or ``"bfloat16"`` (autocast, CUDA only). Default: ``"float32"``.
        progress: show a progress bar (``None``: the ``STABNB_PROGRESS`` setting).
        checkpoint_dir: where checkpoints go; ``None`` keeps none. Default: ``None``.
        label_smoothing: ε of the smoothed cross-entropy, whose target is
            ``(1 − ε)·onehot(y) + ε/C``. Default: 0.
        augment: ``"none"``, ``"translate"`` (each image shifted by up to
            :data:`TRANSLATE_PIXELS` per axis, reflect-padded) or ``"flip_translate"`` (also
            mirrored left–right with probability ½), drawn per minibatch on the device
            (:func:`augment_batch`). Default: ``"none"``.
    """

    epochs: int = 5
    batch_size: int = 128
    lr: float = 0.05
    optimizer: str = "sgd"
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "cosine"
    seed: int = 0
    device: str = "auto"
    precision: str = "float32"
    progress: bool | None = None
    checkpoint_dir: str | None = None
    label_smoothing: float = 0.0
    augment: str = "none"

    def __post_init__(self) -> None:
        for name, value, allowed in (("optimizer", self.optimizer, OPTIMIZERS),
                                     ("schedule", self.schedule, SCHEDULES),
                                     ("precision", self.precision, PRECISIONS),
                                     ("augment", self.augment, AUGMENTATIONS)):
            if value not in allowed:
                raise ValueError(f"{name}={value!r} is unknown; choose one of {allowed}.")
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be at least 1.")
        if self.lr <= 0:
            raise ValueError(f"lr={self.lr} must be positive.")
        if not 0 <= self.label_smoothing < 1:
            raise ValueError(f"label_smoothing={self.label_smoothing} must be in [0, 1), e.g. 0.2.")

    def to_dict(self) -> dict[str, Any]:
        """Every field, except those of :data:`LATER_FIELDS` left at their defaults."""
        values = asdict(self)
        return {name: value for name, value in values.items()
                if name not in LATER_FIELDS or value != _DEFAULTS[name]}


_DEFAULTS = {f.name: f.default for f in fields(TrainConfig)}


@dataclass(frozen=True)
class TrainResult:
    """What a run did: per-epoch history, final accuracy, and where its checkpoint is."""

    history: list[dict[str, float]]
    eval_accuracy: float | None
    wall_time: float
    device: str
    key: str
    checkpoint: str | None
    resumed_from_epoch: int
    config: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _fingerprint(*tensors: torch.Tensor) -> str:
    """SHA-256 of the tensors' shapes, dtypes and bytes (read in place, not copied: a training
    set is hashed once per run)."""
    digest = hashlib.sha256()
    for tensor in tensors:
        digest.update(str((tuple(tensor.shape), tensor.dtype)).encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def run_key(model: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: TrainConfig,
            regularizer: Regularizer | None, device: torch.device) -> str:
    """Hash of config, architecture, initial weights, data and regulariser: the checkpoint key."""
    settings = {k: v for k, v in cfg.to_dict().items()
                if k not in ("progress", "checkpoint_dir", "device")}
    description = json.dumps({
        "config": settings, "device": device.type, "model": repr(model),
        "weights": _fingerprint(*model.state_dict().values()), "data": _fingerprint(x, y),
        "regularizer": repr(regularizer),
    }, sort_keys=True)
    return hashlib.sha256(description.encode()).hexdigest()[:20]


def predict(model: nn.Module, x: torch.Tensor, *, batch_size: int = 1024) -> torch.Tensor:
    """Logits of ``model`` on ``x`` in batches, without gradients, on the model's device."""
    device = next(model.parameters()).device
    with torch.no_grad():
        return torch.cat([model(x[i:i + batch_size].to(device)) for i in range(0, len(x), batch_size)])


def evaluate_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *,
                      batch_size: int = 1024) -> float:
    """Top-1 accuracy of ``model`` on ``(x, y)`` (model put in eval mode)."""
    model.eval()
    logits = predict(model, x, batch_size=batch_size)
    return float((logits.argmax(1).cpu() == y.cpu()).float().mean())


def lr_factor(schedule: str, step: int, total_steps: int) -> float:
    """The multiple of ``lr`` at step ``step`` of ``total_steps``, t = step / total_steps:
    ``"cosine"`` ½(1 + cos πt), ``"constant"`` 1, ``"triangle"`` linear between the corners
    of :data:`TRIANGLE`.

    Examples::

        >>> [round(lr_factor("triangle", s, 10), 3) for s in (0, 1, 2, 6, 10)]
        [0.2, 0.6, 1.0, 0.5, 0.0]
    """
    if schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * step / total_steps))
    if schedule == "constant":
        return 1.0
    if schedule != "triangle":
        raise ValueError(f"schedule={schedule!r} is unknown; choose one of {SCHEDULES}.")
    t = step / total_steps
    for (t0, f0), (t1, f1) in zip(TRIANGLE, TRIANGLE[1:]):
        if t <= t1:
            return f0 + (f1 - f0) * (t - t0) / (t1 - t0)
    return TRIANGLE[-1][1]


def augment_batch(x: torch.Tensor, kind: str, generator: torch.Generator) -> torch.Tensor:
    """A randomly shifted (and for ``"flip_translate"`` mirrored) copy of the images ``x``.

    Image i becomes ``pad(x_i)[:, dy + a, dx + b]`` (a < H, b < W) with ``dy, dx`` uniform on
    ``{0, …, 2r}`` (a shift by −r..r, r = :data:`TRANSLATE_PIXELS`, reflect padding), then, for
    ``"flip_translate"``, its columns are reversed with probability ½ — airbench's flip and
    translate, as one gather. The draws come from ``generator``, which must live on ``x``'s
    device; nothing waits on the device. ``"none"`` returns ``x`` itself.

    Raises:
        ValueError: an unknown ``kind``, or inputs that are not image batches (n, C, H, W).
    """
    if kind not in AUGMENTATIONS:
        raise ValueError(f"augment={kind!r} is unknown; choose one of {AUGMENTATIONS}.")
    if kind == "none":
        return x
    if x.dim() != 4:
        raise ValueError(f"augment={kind!r} shifts images (n, C, H, W), but the inputs have shape "
                         f"{tuple(x.shape)}; use augment='none' for flat inputs.")
    n, channels, height, width = x.shape
    r, device = TRANSLATE_PIXELS, x.device
    padded = F.pad(x, (r, r, r, r), mode="reflect")
    shifts = torch.randint(0, 2 * r + 1, (n, 2), generator=generator, device=device)
    rows = shifts[:, :1] + torch.arange(height, device=device)
    cols = shifts[:, 1:] + torch.arange(width, device=device)
    if kind == "flip_translate":
        flip = torch.rand(n, generator=generator, device=device) < 0.5
        cols = torch.where(flip[:, None], cols.flip(1), cols)
    return padded[torch.arange(n, device=device)[:, None, None, None],
                  torch.arange(channels, device=device)[None, :, None, None],
                  rows[:, None, :, None], cols[:, None, None, :]]


def _augment_seed(seed: int) -> int:
    """The augmentation stream's seed: a hash of the run's ``seed``, apart from its order stream."""
    return int.from_bytes(hashlib.sha256(f"stabnb.train:augment:{seed}".encode()).digest()[:8],
                          "little") >> 1


def _raise_if_non_finite(first_bad: torch.Tensor, bad_values: torch.Tensor, epoch: int,
                         step: int) -> None:
    """Raise if a loss before this check (``first_bad`` > 0: its 1-based step) was non-finite."""
    first = int(first_bad)                 # the one wait on the device, every few steps
    if first:
        loss, penalty = bad_values.tolist()
        raise ValueError(f"non-finite loss at epoch {epoch + 1}, step {first} (loss={loss:.4g}, "
                         f"penalty={penalty:.4g}; found at the check after step {step + 1}); "
                         "lower lr or the regulariser strength.")


def _optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0,
                           weight_decay=cfg.weight_decay)


def train(model: nn.Module, train_x: torch.Tensor, train_y: torch.Tensor, cfg: TrainConfig, *,
          regularizer: Regularizer | None = None, eval_x: torch.Tensor | None = None,
          eval_y: torch.Tensor | None = None) -> TrainResult:
    """Train ``model`` in place on ``(train_x, train_y)``; return its history (model left in eval mode).

    Args:
        model: the network; it is moved to ``cfg.device``.
        train_x, train_y: inputs (pixel units for stabnb models) and integer labels (cast to
            int64).
        cfg: the :class:`TrainConfig`.
        regularizer: ``reg(model, x, y) -> scalar`` added to the loss. Default: none.
        eval_x, eval_y: held-out data, evaluated after every epoch. Default: none.

    Raises:
        ValueError: mismatched shapes, non-finite data or a non-finite loss (with the epoch
            and step where it appeared).
    """
    if train_x.shape[0] != train_y.shape[0]:
        raise ValueError(f"train_x has {train_x.shape[0]} samples but train_y has {train_y.shape[0]}.")
    if train_x.is_floating_point():
        check_finite(train_x, "train_x")
    if train_y.is_floating_point() or train_y.dtype == torch.bool:
        raise ValueError(f"train_y has dtype {train_y.dtype}; pass integer class labels "
                         "(n,), e.g. train_y.long().")
    train_y = train_y.long()               # int32/uint8 labels work like int64 ones
    device = resolve_device(cfg.device)
    model.to(device)
    key = run_key(model, train_x, train_y, cfg, regularizer, device)
    checkpoint = Path(cfg.checkpoint_dir) / f"{key}.pt" if cfg.checkpoint_dir else None

    optimizer = _optimizer(model, cfg)
    trainable = [p for p in model.parameters() if p.requires_grad]
    steps_per_epoch = -(-len(train_x) // cfg.batch_size)
    total_steps = cfg.epochs * steps_per_epoch
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(cfg.schedule, step, total_steps))
    order = torch.Generator().manual_seed(cfg.seed)
    augmenter = (torch.Generator(device).manual_seed(_augment_seed(cfg.seed))
                 if cfg.augment != "none" else None)
    history: list[dict[str, float]] = []
    start_epoch, wall_before = 0, 0.0
    if checkpoint is not None and checkpoint.exists():
        state = load_torch(checkpoint, what="training checkpoint", map_location=device)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        order.set_state(state["order"].cpu())
        if augmenter is not None:
            augmenter.set_state(state["augment"].cpu())
        if regularizer is not None and hasattr(regularizer, "load_state_dict") and state["regularizer"]:
            regularizer.load_state_dict(state["regularizer"])
        history, start_epoch, wall_before = state["history"], state["epoch"], state["wall_time"]

    x_all, y_all = train_x.to(device), train_y.to(device)
    low_precision = cfg.precision == "bfloat16" and device.type == "cuda"
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=low_precision)
    started = time.perf_counter()
    for epoch in progress(range(start_epoch, cfg.epochs), desc="epochs", total=cfg.epochs - start_epoch,
                          enabled=cfg.progress):
        model.train()
        permutation = torch.randperm(len(x_all), generator=order).to(device)
        sums = torch.zeros(3, device=device)  # loss, penalty, correct
        first_bad = torch.zeros((), dtype=torch.long, device=device)  # 1-based; 0: none yet
        bad_values = torch.zeros(2, device=device)                    # its loss, penalty
        for step in range(steps_per_epoch):
            index = permutation[step * cfg.batch_size:(step + 1) * cfg.batch_size]
            x, y = x_all[index], y_all[index]
            if augmenter is not None:
                x = augment_batch(x, cfg.augment, augmenter)
            # The penalty reuses this forward pass, except under bfloat16 autocast.
            shared = None if low_precision else shared_forward_inputs(regularizer, x)
            with autocast:
                logits = model(x if shared is None else shared)
                loss = F.cross_entropy(logits.float(), y, label_smoothing=cfg.label_smoothing)
            if regularizer is None:
                penalty = torch.zeros((), device=device)
            elif shared is None:
                penalty = regularizer(model, x, y)
            else:
                penalty = regularizer(model, shared, y, logits=logits)
            total = loss + penalty
            new_bad = (first_bad == 0) & ~torch.isfinite(total)
            first_bad = torch.where(new_bad, step + 1, first_bad)
            bad_values = torch.where(new_bad, torch.stack([loss.detach(), penalty.detach()]),
                                     bad_values)
            if (step + 1) % FINITE_CHECK_STEPS == 0 or step + 1 == steps_per_epoch:
                _raise_if_non_finite(first_bad, bad_values, epoch, step)
            optimizer.zero_grad(set_to_none=True)
            total.backward(inputs=trainable if shared is not None else None)
            optimizer.step()
            scheduler.step()
            sums += torch.stack([loss.detach() * len(y), penalty.detach() * len(y),
                                 (logits.argmax(1) == y).sum()])
        loss_mean, penalty_mean, correct = (sums / len(x_all)).tolist()
        record = {"epoch": epoch + 1, "loss": loss_mean, "penalty": penalty_mean,
                  "train_accuracy": correct}
        if eval_x is not None and eval_y is not None:
            record["eval_accuracy"] = evaluate_accuracy(model, eval_x, eval_y)
        history.append(record)
        if checkpoint is not None:
            reg_state = regularizer.state_dict() if hasattr(regularizer, "state_dict") else None
            save_torch({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(), "order": order.get_state(),
                        "augment": augmenter.get_state() if augmenter is not None else None,
                        "regularizer": reg_state, "history": history, "epoch": epoch + 1,
                        "wall_time": wall_before + time.perf_counter() - started}, checkpoint)
    model.eval()
    return TrainResult(
        history=history,
        eval_accuracy=history[-1].get("eval_accuracy") if history else None,
        wall_time=wall_before + time.perf_counter() - started, device=str(device), key=key,
        checkpoint=str(checkpoint) if checkpoint else None, resumed_from_epoch=start_epoch,
        config=cfg.to_dict())

"""Training-step cost of each regulariser relative to a plain step (MLP on MNIST shape, or CNN).

    .venv/bin/python benchmarks/bench_regularizers.py [--model mlp|cnn] [--device cpu|cuda]
        [--repeats 7] [--quick]

``--model cnn`` times the small CNN on CIFAR-shaped inputs (3×32×32, batch 128 unless given),
the case that dominates the CIFAR-10 study's cost.

A step is forward, cross-entropy (+ penalty), backward and an SGD update, timed as the best
of ``--repeats`` blocks of ``--steps`` steps after warm-up, the cases interleaved block by
block (a shared machine's load then hits every case alike). Each row also shows the step's
pieces in plain steps (forward, the penalty's own passes, backward + update) and its measured
pass count (model forwards, ``autograd.grad`` calls and how many build a graph that the
step's backward differentiates again): the floor of a penalty that keeps its estimator. As in :func:`stabnb.train.train`,
a penalty with ``shares_forward`` reuses the step's forward pass (``reg(model, x, y,
logits=logits)``, backward with ``inputs=`` the parameters); ``--no-share`` times the plain
``reg(model, x, y)`` call instead. Besides stabnb's penalties it
times torch's ``spectral_norm`` parametrisation (reshaped-kernel power iteration inside every
forward) and Hoffman et al.'s Jacobian regulariser with 1 and 10 random projections (stabnb's
``JacobianFrobeniusPenalty``; with C = 10 outputs, 10 orthonormal projections are exact).

Goals (issue 5): weight penalty ≤ 1.5×, Frobenius with one projection ≤ 2.5×, Jacobian
spectral norm with one warm-started iteration ≤ 3×, stochastic curvature penalty ≤ 3×.
"""

from __future__ import annotations

import argparse
import math
import time

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from stabnb.checks import resolve_device
from stabnb.models import build_model
from stabnb.regularizers import (
    InputCurvaturePenalty, JacobianFrobeniusPenalty, JacobianSpectralPenalty,
    WeightSpectralPenalty, shared_forward_inputs,
)

GOALS = {"weight_spectral (1 iter)": 1.5, "jacobian_frobenius (1 proj)": 2.5,
         "jacobian_spectral (1 iter)": 3.0, "input_curvature (finite diff.)": 3.0}


SHAPES = {"mlp": (1, 28, 28), "cnn": (3, 32, 32)}


def make_model(device: torch.device, *, kind: str = "mlp", torch_spectral_norm: bool = False,
               activation: str = "relu") -> nn.Module:
    torch.manual_seed(0)
    model = build_model(kind, SHAPES[kind], 10, activation=activation).to(device)
    if torch_spectral_norm:
        for module in model.modules():
            if isinstance(module, (nn.Linear, nn.Conv2d)):
                spectral_norm(module)
    return model.train()


PIECES = ("forward", "penalty", "backward")


class _Step:
    """One training step of :func:`stabnb.train.train`, timed piece by piece.

    Pieces: the forward pass, the penalty call (its own autograd passes) and the backward
    pass + SGD update (which, for a penalty built with ``create_graph``, double-backwards
    through it). :meth:`count` runs one step and counts the model's forward calls and the
    ``torch.autograd.grad`` calls (those with ``create_graph``) the penalty makes.
    """

    def __init__(self, model: nn.Module, regularizer, x: torch.Tensor, y: torch.Tensor,
                 share: bool):
        self.model, self.regularizer, self.x, self.y, self.share = model, regularizer, x, y, share
        self.params = list(model.parameters())
        self.optimizer = torch.optim.SGD(self.params, lr=1e-3, momentum=0.9)

    def _sync(self) -> None:
        if self.x.device.type == "cuda":
            torch.cuda.synchronize(self.x.device)

    def __call__(self) -> list[float]:
        """Seconds spent in each of :data:`PIECES`."""
        start = time.perf_counter()
        shared = shared_forward_inputs(self.regularizer, self.x) if self.share else None
        logits = self.model(self.x if shared is None else shared)
        self._sync()
        forward = time.perf_counter()
        loss = F.cross_entropy(logits, self.y)
        if self.regularizer is not None:
            loss = loss + (self.regularizer(self.model, self.x, self.y) if shared is None else
                           self.regularizer(self.model, shared, self.y, logits=logits))
        self._sync()
        penalty = time.perf_counter()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward(inputs=self.params if shared is not None else None)
        self.optimizer.step()
        self._sync()
        return [forward - start, penalty - forward, time.perf_counter() - penalty]

    def count(self) -> tuple[int, int, int]:
        """(model forward calls, autograd.grad calls, of which create_graph) in one step."""
        calls = {"forward": 0, "grad": 0, "graph": 0}
        original = torch.autograd.grad

        def counted(*args, **kwargs):
            calls["grad"] += 1
            calls["graph"] += bool(kwargs.get("create_graph", False))
            return original(*args, **kwargs)

        def forward_hook(*_):
            calls["forward"] += 1

        handle = self.model.register_forward_hook(forward_hook)
        torch.autograd.grad = counted
        try:
            self()
        finally:
            torch.autograd.grad = original
            handle.remove()
        return calls["forward"], calls["grad"], calls["graph"]


def time_cases(steps: dict[str, _Step], *, steps_per_block: int,
               repeats: int) -> dict[str, list[float]]:
    """Per-step seconds of each piece, the best block of each case; the cases run
    round-robin, block by block, so a load change on a shared machine hits all alike."""
    for step in steps.values():
        for _ in range(3):
            step()
    best = {name: [math.inf] * len(PIECES) for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            totals = [0.0] * len(PIECES)
            for _ in range(steps_per_block):
                totals = [t + piece for t, piece in zip(totals, step())]
            best[name] = [min(b, t / steps_per_block) for b, t in zip(best[name], totals)]
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--model", choices=sorted(SHAPES), default="mlp")
    parser.add_argument("--batch-size", type=int, default=None, help="default: 256 MLP, 128 CNN")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="3 repeats of 5 steps")
    parser.add_argument("--no-share", action="store_true",
                        help="call reg(model, x, y) without reusing the step's forward pass")
    args = parser.parse_args()
    if args.quick:
        args.steps, args.repeats = 5, 3
    args.batch_size = args.batch_size or (256 if args.model == "mlp" else 128)
    device = resolve_device(args.device)
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(args.batch_size, *SHAPES[args.model], generator=generator).to(device)
    y = torch.randint(0, 10, (args.batch_size,), generator=generator).to(device)

    def model(**kwargs) -> nn.Module:
        return make_model(device, kind=args.model, **kwargs)

    cases = {
        "plain": (model(), None),
        "torch spectral_norm (1 iter)": (model(torch_spectral_norm=True), None),
        "weight_spectral (1 iter)": (model(), WeightSpectralPenalty(1e-3)),
        "jacobian_frobenius (1 proj)": (model(), JacobianFrobeniusPenalty(1e-3)),
        "jacobian_frobenius (10 proj)": (model(), JacobianFrobeniusPenalty(1e-3, 10)),
        "jacobian_spectral (1 iter)": (model(), JacobianSpectralPenalty(1e-3)),
        "jacobian_spectral (2 iter)": (model(), JacobianSpectralPenalty(1e-3, 2)),
        "input_curvature (finite diff.)": (model(), InputCurvaturePenalty(1e-3)),
        "input_curvature (hessian, gelu, 1 iter)": (
            model(activation="gelu"), InputCurvaturePenalty(1e-3, form="hessian")),
    }
    steps = {name: _Step(model, reg, x, y, share=not args.no_share)
             for name, (model, reg) in cases.items()}
    counts = {name: step.count() for name, step in steps.items()}
    pieces = time_cases(steps, steps_per_block=args.steps, repeats=args.repeats)
    plain = sum(pieces["plain"])
    label = "MLP 784-256-256-10" if args.model == "mlp" else "SmallCNN 3×32×32"
    print(f"{label}, batch {args.batch_size}, {device}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; best of {args.repeats} blocks of {args.steps} "
          f"steps, cases interleaved; "
          f"{'own forward pass' if args.no_share else 'shared forward pass'}")
    print("pieces in plain steps: forward | penalty's own passes | backward (+ double "
          "backward through the penalty) + update; passes: model forwards, autograd.grad "
          "calls (create_graph)")
    print(f"{'case':42s} {'ms/step':>9s} {'ratio':>7s}  {'fwd':>5s} {'pen':>5s} {'bwd':>5s}  "
          f"{'passes':>10s}  goal")
    for name, value in pieces.items():
        total = sum(value)
        goal = GOALS.get(name)
        verdict = "" if goal is None else f"≤ {goal}× {'met' if total / plain <= goal else 'MISSED'}"
        forwards, grads, graphs = counts[name]
        parts = " ".join(f"{piece / plain:5.2f}" for piece in value)
        print(f"{name:42s} {1e3 * total:9.2f} {total / plain:6.2f}×  {parts}  "
              f"{forwards:>3d}, {grads} ({graphs})  {verdict}")


if __name__ == "__main__":
    main()

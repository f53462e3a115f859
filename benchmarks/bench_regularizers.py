"""Training-step cost of each regulariser relative to a plain step (MLP on MNIST shape, or CNN).

    .venv/bin/python benchmarks/bench_regularizers.py [--model mlp|cnn] [--device cpu|cuda]
        [--repeats 7] [--quick]

``--model cnn`` times the small CNN on CIFAR-shaped inputs (3×32×32, batch 128 unless given),
the case that dominates the CIFAR-10 study's cost.

A step is forward, cross-entropy (+ penalty), backward and an SGD update, timed as the median
over ``--repeats`` blocks of ``--steps`` steps after warm-up. As in :func:`stabnb.train.train`,
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
import statistics
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


def time_steps(model: nn.Module, regularizer, x: torch.Tensor, y: torch.Tensor, *,
               steps: int, repeats: int, share: bool = True) -> float:
    """Median seconds per training step (the step of :func:`stabnb.train.train`)."""
    params = list(model.parameters())
    optimizer = torch.optim.SGD(params, lr=1e-3, momentum=0.9)

    def step() -> None:
        shared = shared_forward_inputs(regularizer, x) if share else None
        if shared is None:
            loss = F.cross_entropy(model(x), y)
            if regularizer is not None:
                loss = loss + regularizer(model, x, y)
        else:
            logits = model(shared)
            loss = F.cross_entropy(logits, y) + regularizer(model, shared, y, logits=logits)
        optimizer.zero_grad(set_to_none=True)
        loss.backward(inputs=params if shared is not None else None)
        optimizer.step()

    def sync() -> None:
        if x.device.type == "cuda":
            torch.cuda.synchronize(x.device)

    for _ in range(3):
        step()
    blocks = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        for _ in range(steps):
            step()
        sync()
        blocks.append((time.perf_counter() - start) / steps)
    return statistics.median(blocks)


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
    seconds = {name: time_steps(model, reg, x, y, steps=args.steps, repeats=args.repeats,
                                share=not args.no_share)
               for name, (model, reg) in cases.items()}
    plain = seconds["plain"]
    label = "MLP 784-256-256-10" if args.model == "mlp" else "SmallCNN 3×32×32"
    print(f"{label}, batch {args.batch_size}, {device}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; median of {args.repeats}×{args.steps} steps; "
          f"{'own forward pass' if args.no_share else 'shared forward pass'}")
    print(f"{'case':42s} {'ms/step':>9s} {'ratio':>7s}  goal")
    for name, value in seconds.items():
        goal = GOALS.get(name)
        verdict = "" if goal is None else f"≤ {goal}× {'met' if value / plain <= goal else 'MISSED'}"
        print(f"{name:42s} {1e3 * value:9.2f} {value / plain:6.2f}×  {verdict}")


if __name__ == "__main__":
    main()

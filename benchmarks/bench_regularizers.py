"""Training-step cost of each regulariser relative to a plain step (MLP, batch 256, MNIST shape).

    .venv/bin/python benchmarks/bench_regularizers.py [--device cpu|cuda] [--repeats 7]

A step is forward, cross-entropy (+ penalty), backward and an SGD update, timed as the median
over ``--repeats`` blocks of ``--steps`` steps after warm-up. Besides stabnb's penalties it
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
from stabnb.models import MLP
from stabnb.regularizers import (
    InputCurvaturePenalty, JacobianFrobeniusPenalty, JacobianSpectralPenalty,
    WeightSpectralPenalty,
)

GOALS = {"weight_spectral (1 iter)": 1.5, "jacobian_frobenius (1 proj)": 2.5,
         "jacobian_spectral (1 iter)": 3.0, "input_curvature (finite diff.)": 3.0}


def make_model(device: torch.device, *, torch_spectral_norm: bool = False,
               activation: str = "relu") -> nn.Module:
    torch.manual_seed(0)
    model = MLP(784, (256, 256), 10, activation=activation).to(device)
    if torch_spectral_norm:
        for module in model.modules():
            if isinstance(module, nn.Linear):
                spectral_norm(module)
    return model.train()


def time_steps(model: nn.Module, regularizer, x: torch.Tensor, y: torch.Tensor, *,
               steps: int, repeats: int) -> float:
    """Median seconds per training step."""
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

    def step() -> None:
        loss = F.cross_entropy(model(x), y)
        if regularizer is not None:
            loss = loss + regularizer(model, x, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
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
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    device = resolve_device(args.device)
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(args.batch_size, 1, 28, 28, generator=generator).to(device)
    y = torch.randint(0, 10, (args.batch_size,), generator=generator).to(device)

    cases = {
        "plain": (make_model(device), None),
        "torch spectral_norm (1 iter)": (make_model(device, torch_spectral_norm=True), None),
        "weight_spectral (1 iter)": (make_model(device), WeightSpectralPenalty(1e-3)),
        "jacobian_frobenius (1 proj)": (make_model(device), JacobianFrobeniusPenalty(1e-3)),
        "jacobian_frobenius (10 proj)": (make_model(device), JacobianFrobeniusPenalty(1e-3, 10)),
        "jacobian_spectral (1 iter)": (make_model(device), JacobianSpectralPenalty(1e-3)),
        "jacobian_spectral (2 iter)": (make_model(device), JacobianSpectralPenalty(1e-3, 2)),
        "input_curvature (finite diff.)": (make_model(device), InputCurvaturePenalty(1e-3)),
        "input_curvature (hessian, gelu, 1 iter)": (
            make_model(device, activation="gelu"), InputCurvaturePenalty(1e-3, form="hessian")),
    }
    seconds = {name: time_steps(model, reg, x, y, steps=args.steps, repeats=args.repeats)
               for name, (model, reg) in cases.items()}
    plain = seconds["plain"]
    print(f"MLP 784-256-256-10, batch {args.batch_size}, {device}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; median of {args.repeats}×{args.steps} steps")
    print(f"{'case':42s} {'ms/step':>9s} {'ratio':>7s}  goal")
    for name, value in seconds.items():
        goal = GOALS.get(name)
        verdict = "" if goal is None else f"≤ {goal}× {'met' if value / plain <= goal else 'MISSED'}"
        print(f"{name:42s} {1e3 * value:9.2f} {value / plain:6.2f}×  {verdict}")


if __name__ == "__main__":
    main()

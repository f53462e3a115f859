"""Attribution-stability probe vs Captum ``sensitivity_max`` and Quantus ``MaxSensitivity``.

One command, one process::

    .venv/bin/python benchmarks/bench_attribution.py [--quick] [--device cpu|cuda]

(``--quick``: the saliency cases only, 2 repeats; on ``cuda`` every timed call ends with a
device synchronisation, and Quantus is given the device too. The CUDA path has not run yet.)

For each case (model, method, K=10, batch 64, uniform L∞ radius 0.02 as in Captum's default
perturbation) it times ``AttributionStability.measure`` (every metric: relative L2, cosine,
Spearman, top-k, and the max over draws) against stock Captum: ``sensitivity_max`` with
Captum's own ``Saliency``/``IntegratedGradients`` object (its ``compute_gradients``), run on
the same draws through ``AttributionStability.sensitivity_max``. It prints the time ratio
ours/Captum and the largest difference between the two max-sensitivity values.

The floor: ``passes s`` is the attribution of the same ``n·(K+1)`` rows alone (the attribution
calls of ``measure``, same ``max_batch`` chunks: the model's forward and backward passes, no
metric), which any implementation of any of these metrics must pay; ``passes/captum`` is the
best ratio reachable by cutting our metric code to zero. The named methods differentiate ``Σ_i f_{c_i}(x_i)``
once, Captum's objects the N unbound outputs (bitwise-equal attributions), which is why
``passes/captum`` can be below 1.

Quantus ``MaxSensitivity`` at equal work: the same inputs and targets, K, radius, metric
(max over draws of ‖Δa‖_F / ‖a‖_F, ``abs=False``, ``normalise=False``) and the same stock
Captum method with the same options, passed as ``explain_func`` (``quantus.explain`` would
instead take |gradient| (Captum's ``abs=True``), sum it over channels, and run integrated
gradients with 10 Riemann steps, whatever ``n_steps`` says). What still differs: Quantus
draws its own uniform noise (NumPy, not clipped to the pixel range), loops over the K draws in
Python with NumPy conversions, and warns per instance; one run. ``max x`` = Quantus time /
passes time, the largest speed-up over Quantus any implementation could show.

Goals (issue 4, 16): ratio ≤ 1 for every case; the CNN IG-20 case under 15 s; at least 8x
faster than Quantus. Models are untrained (timing does not depend on the weights). Times are
the best of ``REPEATS`` runs, ours, Captum's and the passes alternated so all see the same
load on a shared machine (one run each for the slow IG cases).
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import torch
from captum.attr import IntegratedGradients, Saliency

from stabnb.attribution import AttributionStability
from stabnb.checks import resolve_device
from stabnb.models import build_model

# ---- settings
BATCH = 64
NUM_SAMPLES = 10
RADIUS = 0.02
SEED = 0
REPEATS = 3
CASES = [  # (model name, input shape, method, method_kwargs)
    ("mlp", (1, 28, 28), "saliency", None),
    ("mlp", (1, 28, 28), "integrated_gradients", {"n_steps": 50}),
    ("cnn", (3, 32, 32), "saliency", None),
    ("cnn", (3, 32, 32), "integrated_gradients", {"n_steps": 20}),
]


STOCK = {  # method -> (Captum class, the probe's defaults spelled out for it)
    "saliency": (Saliency, {"abs": False}),
    "integrated_gradients": (IntegratedGradients, {"method": "gausslegendre"}),
}


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved(calls, repeats: int, device: torch.device) -> tuple[list[float], list[object]]:
    """Best wall time of each call, the calls alternated so all see the same machine load."""
    times: list[list[float]] = [[] for _ in calls]
    outs: list[object] = [None] * len(calls)
    for _ in range(repeats):
        for i, fn in enumerate(calls):
            _synchronize(device)
            start = time.perf_counter()
            outs[i] = fn()
            _synchronize(device)
            times[i].append(time.perf_counter() - start)
    return [min(t) for t in times], outs


def quantus_time(model, stock: AttributionStability, x: torch.Tensor,
                 target: torch.Tensor) -> float | None:
    """Seconds of one Quantus ``MaxSensitivity`` run at equal work (module docstring), or None
    when Quantus is not installed (``pip install -e .[bench]``)."""
    try:
        import quantus
    except ImportError:
        return None

    device = x.device

    def explain(model, inputs, targets, **kwargs):
        return stock.method(torch.as_tensor(inputs, device=device),
                            torch.as_tensor(targets, device=device)).cpu().numpy()

    metric = quantus.MaxSensitivity(nr_samples=NUM_SAMPLES, lower_bound=RADIUS, abs=False,
                                    normalise=False, disable_warnings=True)
    start = time.perf_counter()
    metric(model=model, x_batch=x.cpu().numpy(), y_batch=target.cpu().numpy(),
           device=str(device), explain_func=explain, batch_size=BATCH)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="saliency cases only, 2 repeats")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    args = parser.parse_args()
    device = resolve_device(args.device)
    os.environ.setdefault("STABNB_PROGRESS", "0")
    where = (torch.cuda.get_device_name(device) if device.type == "cuda"
             else platform.processor() or platform.machine())
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {where}, "
          f"batch {BATCH}, K {NUM_SAMPLES}, L∞ radius {RADIUS}, float32, {device}")
    header = (f"{'model':5} {'method':22} {'ours s':>7} {'captum s':>8} {'ratio':>5} "
              f"{'passes s':>8} {'passes/captum':>13} {'max |Δ|':>8} {'quantus s':>9} "
              f"{'x':>4} {'max x':>5}")
    print(header)
    print("-" * len(header))
    for name, shape, method, kwargs in CASES:
        if args.quick and method != "saliency":
            continue
        torch.manual_seed(SEED)
        model = build_model(name, shape, 10).eval().to(device)
        x = torch.rand(BATCH, *shape, generator=torch.Generator().manual_seed(SEED)).to(device)
        options = {"perturbation": "linf", "radius": RADIUS, "num_samples": NUM_SAMPLES}
        probe = AttributionStability(model, method, method_kwargs=kwargs, **options)
        captum_class, defaults = STOCK[method]
        stock = AttributionStability(model, captum_class(model),
                                     method_kwargs={**defaults, **(kwargs or {})}, **options)
        def generator() -> torch.Generator:
            return torch.Generator(device).manual_seed(SEED)

        rows = torch.cat([x.unsqueeze(1), probe.perturb(x, generator=generator())],
                         dim=1).flatten(0, 1)
        sample_of_row = torch.arange(BATCH, device=device).repeat_interleave(NUM_SAMPLES + 1)
        with torch.no_grad():
            target = model(x).argmax(1)
        repeats = 1 if method == "integrated_gradients" else 2 if args.quick else REPEATS
        (ours_s, captum_s, passes_s), (result, captum, _) = interleaved([
            lambda: probe.measure(x, generator=generator()),
            lambda: stock.sensitivity_max(x, generator=generator()),
            # the attribution calls of measure (same rows, same max_batch chunks), alone
            lambda: probe._attribute(rows, sample_of_row, x.shape, target, generator()),
        ], repeats, device)
        gap = float((result.sensitivity_max - captum).abs().max())
        label = method + (f"-{kwargs['n_steps']}" if kwargs else "")
        quantus_s = quantus_time(model, stock, x, result.target)
        quantus = ("skipped (quantus not installed)" if quantus_s is None else
                   f"{quantus_s:9.2f} {quantus_s / ours_s:4.1f} {quantus_s / passes_s:5.1f}")
        print(f"{name:5} {label:22} {ours_s:7.3f} {captum_s:8.3f} {ours_s / captum_s:5.2f} "
              f"{passes_s:8.3f} {passes_s / captum_s:13.2f} {gap:8.1e} {quantus}", flush=True)


if __name__ == "__main__":
    main()

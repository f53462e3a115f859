"""Attribution-stability probe vs Captum ``sensitivity_max`` (and Quantus when installed), CPU.

One command, one process::

    .venv/bin/python benchmarks/bench_attribution.py

For each case (model, method, K=10, batch 64, uniform L∞ radius 0.02 as in Captum's default
perturbation) it times ``AttributionStability.measure`` (every metric: relative L2, cosine,
Spearman, top-k, and the max over draws) against Captum's ``sensitivity_max`` run on the same
draws (``AttributionStability.sensitivity_max``), prints the time ratio ours/Captum and the
largest difference between the two max-sensitivity values, and Quantus ``MaxSensitivity`` at
equal work (same inputs, K, radius and metric). Goals (issue 4): ratio ≤ 1 for every case;
the CNN IG-20 case under 15 s; at least 8x faster than Quantus. Models are untrained (timing does not depend on
the weights). Times are the best of ``REPEATS`` runs, ours and Captum's alternated so both
see the same load on a shared machine (one run each for the slow IG cases).
"""

from __future__ import annotations

import os
import platform
import time

import torch

from stabnb.attribution import AttributionStability
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


def interleaved(first, second, repeats: int) -> tuple[float, float, object, object]:
    """Best wall time of each of two calls, alternated so both see the same machine load."""
    times: list[list[float]] = [[], []]
    outs: list[object] = [None, None]
    for _ in range(repeats):
        for i, fn in enumerate((first, second)):
            start = time.perf_counter()
            outs[i] = fn()
            times[i].append(time.perf_counter() - start)
    return min(times[0]), min(times[1]), outs[0], outs[1]


def quantus_time(model, method: str, x: torch.Tensor, target: torch.Tensor,
                 ours_s: float) -> str:
    """Quantus ``MaxSensitivity`` on the same inputs and targets: K uniform draws of radius
    ``RADIUS`` (its ``batch_uniform_noise``, unclipped), the max of ‖Δa‖_F / ‖a‖_F, Captum's
    method through ``quantus.explain`` (which sums attributions over channels); one run."""
    try:
        import quantus
    except ImportError:
        return "skipped (quantus not installed)"
    metric = quantus.MaxSensitivity(nr_samples=NUM_SAMPLES, lower_bound=RADIUS,
                                    disable_warnings=True)
    explain = {"saliency": "Saliency", "integrated_gradients": "IntegratedGradients"}[method]
    start = time.perf_counter()
    metric(model=model, x_batch=x.numpy(), y_batch=target.numpy(), device="cpu",
           explain_func=quantus.explain, explain_func_kwargs={"method": explain},
           batch_size=BATCH)
    seconds = time.perf_counter() - start
    return f"{seconds:.2f} s (ours {seconds / ours_s:.0f}x faster)"


def main() -> None:
    os.environ.setdefault("STABNB_PROGRESS", "0")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{platform.processor() or platform.machine()}, batch {BATCH}, K {NUM_SAMPLES}, "
          f"L∞ radius {RADIUS}, float32, CPU")
    header = (f"{'model':5} {'method':22} {'ours s':>8} {'captum s':>9} {'ratio':>6} "
              f"{'max |Δ|':>9}  quantus")
    print(header)
    print("-" * len(header))
    for name, shape, method, kwargs in CASES:
        torch.manual_seed(SEED)
        model = build_model(name, shape, 10).eval()
        x = torch.rand(BATCH, *shape, generator=torch.Generator().manual_seed(SEED))
        probe = AttributionStability(model, method, perturbation="linf", radius=RADIUS,
                                     num_samples=NUM_SAMPLES, method_kwargs=kwargs)
        repeats = 1 if method == "integrated_gradients" else REPEATS
        ours_s, captum_s, result, captum = interleaved(
            lambda: probe.measure(x, generator=torch.Generator().manual_seed(SEED)),
            lambda: probe.sensitivity_max(x, generator=torch.Generator().manual_seed(SEED)),
            repeats)
        gap = float((result.sensitivity_max - captum).abs().max())
        label = method + (f"-{kwargs['n_steps']}" if kwargs else "")
        print(f"{name:5} {label:22} {ours_s:8.3f} {captum_s:9.3f} {ours_s / captum_s:6.2f} "
              f"{gap:9.1e}  {quantus_time(model, method, x, result.target, ours_s)}", flush=True)


if __name__ == "__main__":
    main()

"""Spectral estimators against PyHessian 0.1, curvlinops + SciPy eigsh and naive loops.

One process, one command::

    python benchmarks/bench_spectra.py [--quick] [--device cpu|cuda] [--threads N]

Setting (issue 3): MLP 784-256-256-10 (269k parameters, ReLU, random init, seed 0) on random
MNIST-shaped pixels (uniform in [0, 1], random labels), Hessian batch 512; input-Jacobian
spectra of 64 inputs; the 640×640 block NTK of 64 inputs (structured layer factors
against the Jacobian contraction) and its 64×64 trace over classes. Ratios, not absolute seconds, are
what count: the machine is shared and noisy. The exact Hessian trace is known here because the
network is piecewise linear in each single parameter, so diag ∇²_θ f = 0 and
``tr H = (1/n) Σ_i tr(Λ_i J_i J_iᵀ)`` with ``Λ_i = diag p_i − p_i p_iᵀ`` (checked against a dense
Hessian of a small ReLU MLP first).
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch
import torch.nn.functional as F
from torch.func import functional_call, jvp

from stabnb.models import MLP
from stabnb.operators import (
    LossHessian, NTKGram, input_jacobian_singular_values, ntk_gram, parameter_jacobian,
)
from stabnb.spectra import (
    estimate_trace, hutchinson_trace, hutchpp_trace, lanczos, slq_density,
)

warnings.filterwarnings("ignore", category=FutureWarning)
ROWS: list[tuple[str, str, str]] = []


def row(task: str, method: str, result: str) -> None:
    ROWS.append((task, method, result))
    print(f"  {task:<26} {method:<34} {result}", flush=True)


def timed(fn, repeats: int = 1):
    """(result, median seconds) over ``repeats`` runs."""
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return out, statistics.median(times)


def rel(value: float, exact: float) -> float:
    return abs(value - exact) / abs(exact)


def relu_trace(model, x, y, chunk: int = 32) -> float:
    """Exact tr(H) of a ReLU MLP under cross-entropy (module docstring)."""
    total = 0.0
    with torch.no_grad():
        probs = torch.softmax(model(x), -1)
    for i in range(0, x.shape[0], chunk):
        jac = parameter_jacobian(model, x[i:i + chunk])
        p = probs[i:i + chunk]
        lam = torch.diag_embed(p) - p[:, :, None] * p[:, None, :]
        total += float(torch.einsum("icd,idc->", lam, jac @ jac.transpose(1, 2)))
    return total / x.shape[0]


def check_trace_identity() -> float:
    torch.manual_seed(0)
    model = MLP(6, (8, 7), 3).double().eval()
    x, y = torch.rand(9, 6, dtype=torch.float64), torch.arange(9) % 3
    dense = torch.trace(LossHessian(model, x, y).to_dense())
    return rel(relu_trace(model, x, y), float(dense))


def hvp_costs(model, x, y, H, repeats: int) -> None:
    params = {k: v.detach() for k, v in model.named_parameters()}

    def forward_backward():
        loss = F.cross_entropy(model(x), y)
        return torch.autograd.grad(loss, list(model.parameters()))

    def loss_of(p):
        return F.cross_entropy(functional_call(model, p, (x,)), y)

    v = torch.randn(H.shape[0], generator=torch.Generator().manual_seed(1)).to(x)
    tangent = dict(zip(params, (t.reshape(p.shape) for t, p in zip(
        torch.split(v, [p.numel() for p in params.values()]), params.values()))))

    def func_hvp():
        return jvp(torch.func.grad(loss_of), (params,), (tangent,))[1]

    _, base = timed(forward_backward, repeats)
    fast, t_fast = timed(lambda: H @ v, repeats)
    slow, t_func = timed(func_hvp, repeats)
    slow_flat = torch.cat([t.reshape(-1) for t in slow.values()])
    row("HVP (batch 512)", "forward+backward", f"1.00x ({base * 1e3:.1f} ms)")
    row("", "stabnb LossHessian @ v (graph reuse)", f"{t_fast / base:.2f}x")
    row("", "torch.func forward-over-reverse", f"{t_func / base:.2f}x   "
        f"(max rel diff {float((fast - slow_flat).norm() / slow_flat.norm()):.1e})")


def hessian_topk(model, x, y, H, quick: bool) -> None:
    # Reference: float64 copy, Lanczos to residual 1e-9·‖H‖.
    model64 = MLP(784, (256, 256), 10).double().eval()
    model64.load_state_dict(model.state_dict())
    ref = lanczos(LossHessian(model64, x.double(), y), 5, tol=1e-9, num_iters=200)
    exact = ref.values.float()
    print(f"  reference top-5 (float64, {ref.num_matvecs} HVPs, converged={ref.converged}): "
          + ", ".join(f"{v:.5f}" for v in ref.values.tolist()))
    curv_times: dict[int, float] = {}
    stabnb_times: dict[int, float] = {}
    for k in (1, 5):
        res, t = timed(lambda: lanczos(H, k, tol=1e-3))
        stabnb_times[k] = t
        err = max(rel(a, b) for a, b in zip(res.values.tolist(), exact[:k].tolist()))
        row(f"Hessian top-{k}", "stabnb lanczos (tol 1e-3)",
            f"{t:.2f}s  {res.num_matvecs} HVPs  max err {100 * err:.3f}%  sorted")
        try:
            from pyhessian import hessian as pyhessian_hessian
            criterion = torch.nn.CrossEntropyLoss()

            def run_pyhessian():
                comp = pyhessian_hessian(model, criterion, data=(x, y), cuda=x.is_cuda)
                return comp.eigenvalues(top_n=k)

            torch.manual_seed(0)
            (values, _), t_py = timed(run_pyhessian)
            model.zero_grad(set_to_none=True)
            ordered = sorted(values, reverse=True)
            err_py = max(rel(a, b) for a, b in zip(ordered, exact[:k].tolist()))
            is_sorted = values == ordered
            row("", "PyHessian 0.1 eigenvalues()",
                f"{t_py:.2f}s  max err {100 * err_py:.3f}%  "
                f"{'sorted' if is_sorted else 'unsorted'}  -> stabnb {t_py / t:.1f}x faster")
        except Exception as err:  # report, don't hide: PyHessian is an external anchor
            row("", "PyHessian 0.1 eigenvalues()", f"crashed: {type(err).__name__}: {err}")
        if quick and k == 5:
            continue
        try:
            from curvlinops import HessianLinearOperator
            from scipy.sparse.linalg import eigsh

            def run_curvlinops():
                op = HessianLinearOperator(model, torch.nn.CrossEntropyLoss(),
                                           [p for p in model.parameters()], [(x, y)],
                                           check_deterministic=False).to_scipy()
                return eigsh(op, k=k, which="LA", return_eigenvectors=False)

            values, t_cv = timed(run_curvlinops)
            ordered = sorted(values.tolist(), reverse=True)
            err_cv = max(rel(a, b) for a, b in zip(ordered, exact[:k].tolist()))
            curv_times[k] = t_cv
            row("", "curvlinops + scipy eigsh",
                f"{t_cv:.2f}s  max err {100 * err_cv:.4f}%  -> stabnb {t_cv / t:.1f}x faster")
        except Exception as err:
            row("", "curvlinops + scipy eigsh", f"crashed: {type(err).__name__}: {err}")
        # Same accuracy as eigsh: tighter tolerance.
        tight, t_tight = timed(lambda: lanczos(H, k, tol=1e-5))
        err_t = max(rel(a, b) for a, b in zip(tight.values.tolist(), exact[:k].tolist()))
        ratio = f"  -> {curv_times[k] / t_tight:.1f}x faster than eigsh" if k in curv_times else ""
        row("", "stabnb lanczos (tol 1e-5)",
            f"{t_tight:.2f}s  {tight.num_matvecs} HVPs  max err {100 * err_t:.4f}%{ratio}")


def hessian_trace(model, x, y, H, quick: bool) -> None:
    print(f"  trace identity check on a small ReLU MLP: rel err {check_trace_identity():.1e}")
    exact, t_exact = timed(lambda: relu_trace(model, x, y))
    print(f"  exact tr(H) = {exact:.4f} ({t_exact:.1f}s, per-sample Jacobians)")
    seeds = range(2 if quick else 5)
    for m in ((30,) if quick else (30, 99)):
        plain = [rel(hutchinson_trace(H, m, seed=s).value, exact) for s in seeds]
        row(f"trace, {m} HVPs", "Hutchinson (Rademacher)",
            f"mean rel err {100 * statistics.mean(plain):.2f}% over {len(plain)} seeds")
        for name, estimator in (("stabnb hutchpp_trace", hutchpp_trace),
                                ("stabnb estimate_trace (default)", estimate_trace)):
            ests = [estimator(H, m, seed=s) for s in seeds]
            errs = [rel(e.value, exact) for e in ests]
            within = sum(abs(e.value - exact) <= 2 * e.std_error for e in ests)
            row("", name, f"mean rel err {100 * statistics.mean(errs):.2f}%  "
                f"({statistics.mean(plain) / statistics.mean(errs):.1f}x lower; "
                f"{within}/{len(ests)} within 2 s.e.)")
    try:
        from pyhessian import hessian as pyhessian_hessian
        torch.manual_seed(0)
        comp = pyhessian_hessian(model, torch.nn.CrossEntropyLoss(), data=(x, y), cuda=x.is_cuda)
        samples, t_py = timed(lambda: comp.trace())
        model.zero_grad(set_to_none=True)
        row("trace, PyHessian default", "PyHessian 0.1 trace()",
            f"{t_py:.2f}s  stopped after {len(samples)} HVPs  "
            f"rel err {100 * rel(statistics.mean(samples), exact):.1f}%")
    except Exception as err:
        row("trace, PyHessian default", "PyHessian 0.1 trace()", f"crashed: {err}")


def density(model, x, y, H) -> None:
    dens, t = timed(lambda: slq_density(H, num_iters=30, num_samples=1))
    mass = float(torch.trapezoid(dens.density, dens.grid))
    row("SLQ density (30 HVPs)", "stabnb slq_density",
        f"{t:.2f}s  integral {mass:.4f}  support [{dens.grid[0]:.3g}, {dens.grid[-1]:.3g}]")
    try:
        from pyhessian import hessian as pyhessian_hessian
        torch.manual_seed(0)
        comp = pyhessian_hessian(model, torch.nn.CrossEntropyLoss(), data=(x, y), cuda=x.is_cuda)
        _, t_py = timed(lambda: comp.density(iter=30, n_v=1))
        model.zero_grad(set_to_none=True)
        row("", "PyHessian 0.1 density()", f"{t_py:.2f}s  ran")
    except Exception as err:
        row("", "PyHessian 0.1 density()", f"crashed: {type(err).__name__}: {err}")


def input_spectra(model, x64: torch.Tensor, repeats: int) -> None:
    fast, t_fast = timed(lambda: input_jacobian_singular_values(model, x64), repeats)

    def loop():
        out = []
        for xi in x64:
            jac = torch.autograd.functional.jacobian(lambda z: model(z.unsqueeze(0))[0], xi)
            out.append(torch.linalg.svdvals(jac.reshape(jac.shape[0], -1)))
        return torch.stack(out)

    slow, t_loop = timed(loop, max(1, repeats // 2))
    row("input-Jacobian spectra (64)", "stabnb (C VJPs, batched svdvals)",
        f"{t_fast * 1e3:.1f} ms")
    row("", "per-sample autograd loop",
        f"{t_loop * 1e3:.0f} ms  -> {t_loop / t_fast:.1f}x  "
        f"(max rel diff {float(((fast - slow).abs() / slow.abs().max()).max()):.1e})")


def ntk(model, x64: torch.Tensor, quick: bool, repeats: int) -> None:
    K, t_fast = timed(lambda: ntk_gram(model, x64, block=True), repeats)
    dense, t_contract = timed(lambda: ntk_gram(model, x64, block=True, method="contraction"),
                              max(1, repeats // 3))
    row("NTK 640x640 (64 x 10)", "stabnb ntk_gram (structured, default)", f"{t_fast:.3f}s")
    row("", "stabnb ntk_gram(method='contraction')",
        f"{t_contract:.2f}s  -> structured {t_contract / t_fast:.1f}x faster  "
        f"(max rel diff {float((K - dense).abs().max() / dense.abs().max()):.1e})")
    trace, t_trace = timed(lambda: ntk_gram(model, x64), repeats)
    trace_c, t_trace_c = timed(lambda: ntk_gram(model, x64, method="contraction"),
                               max(1, repeats // 3))
    row("NTK 64x64 (trace over C)", "stabnb ntk_gram (structured, default)",
        f"{t_trace * 1e3:.1f} ms")
    row("", "stabnb ntk_gram(method='contraction')",
        f"{t_trace_c:.2f}s  -> structured {t_trace_c / t_trace:.0f}x faster  "
        f"(max rel diff {float((trace - trace_c).abs().max() / trace_c.abs().max()):.1e})")
    n_loop = 16 if quick else 64

    def loop():
        rows = []
        params = [p for p in model.parameters()]
        for xi in x64[:n_loop]:
            out = model(xi.unsqueeze(0))[0]
            for c in range(out.shape[0]):
                grads = torch.autograd.grad(out[c], params, retain_graph=True)
                rows.append(torch.cat([g.reshape(-1) for g in grads]))
        J = torch.stack(rows)
        return J @ J.T

    slow, t_loop = timed(loop)
    scale = (64 / n_loop)
    est = t_loop * scale
    diff = float((slow - K[: 10 * n_loop, : 10 * n_loop]).abs().max() / K.abs().max())
    row("", f"per-sample autograd loop ({n_loop} inputs)",
        f"{t_loop:.2f}s{f' (x{scale:.0f} -> ~{est:.1f}s)' if scale > 1 else ''}  "
        f"-> {est / t_fast:.1f}x  (max rel diff {diff:.1e})")
    op = NTKGram(model, x64, block=True)
    top, t_top = timed(lambda: lanczos(op, 1, tol=1e-4))
    exact_top = float(torch.linalg.eigvalsh(K)[-1])
    row("", "implicit NTKGram + lanczos top-1",
        f"{t_top:.2f}s  {top.num_matvecs} J Jᵀv  rel err {rel(float(top.values[0]), exact_top):.1e}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats, seeds and checks")
    parser.add_argument("--device", default="cpu", help="'cpu' or 'cuda' (default: cpu)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    repeats = 3 if args.quick else 7
    torch.manual_seed(0)
    model = MLP(784, (256, 256), 10).to(device).eval()
    g = torch.Generator().manual_seed(0)
    x = torch.rand(512, 1, 28, 28, generator=g).to(device)
    y = torch.randint(0, 10, (512,), generator=g).to(device)
    print(f"torch {torch.__version__}, device {device}, threads {torch.get_num_threads()}, "
          f"MLP 784-256-256-10 ({sum(p.numel() for p in model.parameters())} params), "
          f"random MNIST-shaped data, float32")
    H = LossHessian(model, x, y)
    print("[HVP cost]")
    hvp_costs(model, x, y, H, repeats)
    print("[Hessian top-k]")
    hessian_topk(model, x, y, H, args.quick)
    print("[Hessian trace]")
    hessian_trace(model, x, y, H, args.quick)
    print("[Hessian density]")
    density(model, x, y, H)
    print("[input Jacobian]")
    input_spectra(model, x[:64], repeats)
    print("[NTK]")
    ntk(model, x[:64], args.quick, repeats)
    print("\n| task | method | result |\n|---|---|---|")
    for task, method, result in ROWS:
        print(f"| {task} | {method} | {result} |")


if __name__ == "__main__":
    main()

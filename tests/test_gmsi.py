"""GMSI components against dense float64 references, aggregations and settings."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, hessian, jacrev

from stabnb.gmsi import gmsi
from stabnb.models import MLP

DT = torch.float64


@pytest.fixture(scope="module")
def case():
    torch.manual_seed(0)
    model = MLP(4, (6,), 3, activation="tanh").to(DT).eval()
    x, y = torch.rand(5, 4, dtype=DT), torch.arange(5) % 3
    return model, x, y


@pytest.fixture(scope="module")
def reference(case):
    model, x, y = case
    params = {k: v.detach() for k, v in model.named_parameters()}
    sizes = [p.numel() for p in params.values()]
    flat = torch.cat([p.reshape(-1) for p in params.values()])

    def call(vec, inputs):
        parts = dict(zip(params, torch.split(vec, sizes)))
        return functional_call(model, {k: parts[k].reshape(params[k].shape) for k in params},
                               (inputs,))

    input_norms = torch.stack([torch.linalg.matrix_norm(
        jacrev(lambda z: model(z.unsqueeze(0)).squeeze(0))(xi), ord=2) for xi in x]).detach()
    J = jacrev(lambda v: call(v, x))(flat)                                  # (n, C, p)
    param_norms = torch.linalg.matrix_norm(J, ord=2)
    K = torch.einsum("icp,jcp->ij", J, J)
    H = hessian(lambda v: F.cross_entropy(call(v, x), y))(flat)
    ntk = torch.linalg.eigvalsh(K)
    return {"input": input_norms, "param": param_norms, "ntk_max": ntk[-1], "ntk_min": ntk[0],
            "hess_max": torch.linalg.eigvalsh(H)[-1]}


def test_components_match_dense(case, reference):
    model, x, y = case
    res = gmsi(model, x, y, progress=False, chunk_size=2, hessian_tol=1e-10)
    torch.testing.assert_close(res.input_jacobian_norms, reference["input"])
    torch.testing.assert_close(res.param_jacobian_norms, reference["param"])
    c = res.components
    assert c["input_jacobian"] == pytest.approx(float(reference["input"].max()), rel=1e-10)
    assert c["param_jacobian"] == pytest.approx(float(reference["param"].max()), rel=1e-10)
    assert c["ntk"] == pytest.approx(math.sqrt(reference["ntk_max"] / len(x)), rel=1e-10)
    assert c["hessian"] == pytest.approx(math.sqrt(reference["hess_max"]), rel=1e-6)
    assert res.ntk_condition_number == pytest.approx(
        float(reference["ntk_max"] / reference["ntk_min"]), rel=1e-6)
    assert res.value == max(c.values()) and res.hessian_converged
    first = gmsi(model, x, y, progress=False, chunk_size=2, definition="v0")
    assert first.components["ntk"] == pytest.approx(math.sqrt(reference["ntk_max"]), rel=1e-10)
    # λ_max(K) ≥ max_i K_ii = max_i ‖∇θ f(x_i)‖_F² ≥ max_i ‖∇θ f(x_i)‖₂².
    assert first.components["ntk"] >= c["param_jacobian"]
    assert first.settings["definition"] == "v0" and res.settings["definition"] == "size_free"


def test_aggregations(case, reference):
    model, x, y = case
    base = gmsi(model, x, y, progress=False)
    total = gmsi(model, x, y, aggregate="sum", progress=False)
    assert total.value == pytest.approx(sum(base.components.values()))
    weighted = gmsi(model, x, y, aggregate="weighted_sum",
                    weights={"input_jacobian": 2.0, "ntk": 0.5}, progress=False)
    assert weighted.value == pytest.approx(2 * base.components["input_jacobian"]
                                           + 0.5 * base.components["ntk"])
    mean = gmsi(model, x, y, reduce="mean", progress=False)
    assert mean.components["input_jacobian"] == pytest.approx(float(reference["input"].mean()))
    raw = gmsi(model, x, y, sqrt=False, progress=False)
    assert raw.components["ntk"] == pytest.approx(float(reference["ntk_max"]) / len(x))
    assert raw.components["hessian"] == pytest.approx(base.components["hessian"] ** 2, rel=1e-4)
    record = json.loads(json.dumps(weighted.to_dict()))
    assert record["settings"]["aggregate"] == "weighted_sum"
    assert record["settings"]["weights"]["hessian"] == 0.0
    assert set(record["components"]) == {"input_jacobian", "param_jacobian", "ntk", "hessian"}


def test_mse_and_seed(case):
    model, x, y = case
    first = gmsi(model, x, y, loss="mse", progress=False, seed=3)
    second = gmsi(model, x, y, loss="mse", progress=False, seed=3)
    assert first.to_dict() == second.to_dict()


def test_bad_arguments(case):
    model, x, y = case
    with pytest.raises(ValueError, match="aggregate='median'"):
        gmsi(model, x, y, aggregate="median")
    with pytest.raises(ValueError, match="definition='v2' is unknown"):
        gmsi(model, x, y, definition="v2")
    with pytest.raises(ValueError, match="reduce="):
        gmsi(model, x, y, reduce="min")
    with pytest.raises(ValueError, match="only used by"):
        gmsi(model, x, y, weights={"ntk": 1.0})
    with pytest.raises(ValueError, match="needs weights"):
        gmsi(model, x, y, aggregate="weighted_sum")
    with pytest.raises(ValueError, match="unknown component"):
        gmsi(model, x, y, aggregate="weighted_sum", weights={"curvature": 1.0})
    bad = x.clone()
    bad[0, 0] = float("inf")
    with pytest.raises(ValueError, match="inputs contains"):
        gmsi(model, bad, y, progress=False)
    dropout = nn.Sequential(nn.Linear(4, 6), nn.Dropout(0.5), nn.Linear(6, 3)).to(DT).train()
    with pytest.raises(ValueError, match=r"model\.eval\(\)"):
        gmsi(dropout, x, y, progress=False)


def test_size_free_gmsi_does_not_grow_with_the_sample_set():
    """Doubling the sample set moves the GMSI within its sampling error (the spread of the GMSI
    over independent sample sets of the same size); the v0 NTK term grows like √n."""
    torch.manual_seed(0)  # model initialisation only; every draw below has its own generator
    model = nn.Sequential(nn.Linear(10, 32), nn.Tanh(), nn.Linear(32, 3)).to(DT).eval()
    g = torch.Generator().manual_seed(1)
    pool = torch.rand(8 * 48, 10, dtype=DT, generator=g)
    labels = torch.randint(0, 3, (len(pool),), generator=g)

    def value(rows, **kw):
        return gmsi(model, pool[rows], labels[rows], progress=False, **kw).value

    sets = [torch.arange(i * 48, (i + 1) * 48) for i in range(8)]
    spread = torch.tensor([value(r) for r in sets], dtype=DT).std().item()
    doubled = value(torch.cat(sets[:2]))
    assert abs(doubled - value(sets[0])) <= 3 * spread + 1e-12
    grown = value(torch.cat(sets[:2]), definition="v0") / value(sets[0], definition="v0")
    assert grown > 1.2  # the unnormalised NTK term: λ_max(K) grows with n

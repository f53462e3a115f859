"""Operators and exact paths against dense float64 torch.func references."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, hessian, jacrev

from stabnb.models import MLP, SmallCNN
from stabnb.operators import (
    DenseOperator,
    InputJacobian,
    LoaderLossHessian,
    LossHessian,
    NTKGram,
    ParamJacobian,
    input_jacobian_singular_values,
    input_jacobians,
    ntk_gram,
    parameter_jacobian,
)

DT = torch.float64


def _mlp():
    torch.manual_seed(0)
    return MLP(4, (6,), 3, activation="tanh").to(DT).eval(), torch.rand(5, 4, dtype=DT)


def _cnn():
    torch.manual_seed(1)
    model = SmallCNN(1, 3, 6, channels=(2, 3), hidden=5, activation="gelu").to(DT).eval()
    return model, torch.rand(3, 1, 6, 6, dtype=DT)


@pytest.fixture(params=["mlp", "cnn"])
def case(request):
    model, x = _mlp() if request.param == "mlp" else _cnn()
    y = torch.arange(x.shape[0]) % 3
    return model, x, y


def _flat(model):
    params = {k: v.detach() for k, v in model.named_parameters()}
    sizes = [p.numel() for p in params.values()]

    def unflatten(vec):
        return {k: t.reshape(params[k].shape)
                for k, t in zip(params, torch.split(vec, sizes))}

    flat = torch.cat([p.reshape(-1) for p in params.values()])
    return flat, unflatten


def dense_param_jacobian(model, x):
    flat, unflatten = _flat(model)
    return jacrev(lambda v: functional_call(model, unflatten(v), (x,)).reshape(-1))(flat)


def dense_hessian(model, x, y, loss):
    flat, unflatten = _flat(model)

    def value(v):
        out = functional_call(model, unflatten(v), (x,))
        if loss == "cross_entropy":
            return F.cross_entropy(out, y)
        return 0.5 * (out - F.one_hot(y, 3).to(DT)).pow(2).sum(-1).mean()

    return hessian(value)(flat)


def dense_input_jacobian(model, x1):
    return jacrev(lambda z: model(z.unsqueeze(0)).squeeze(0))(x1).reshape(3, -1)


def test_param_jacobian_matches_dense(case):
    model, x, _ = case
    J = dense_param_jacobian(model, x)
    op = ParamJacobian(model, x)
    assert op.shape == J.shape and op.dtype == DT and op.device == x.device
    torch.testing.assert_close(op.to_dense(), J)
    torch.testing.assert_close(op.T.to_dense(), J.T)
    torch.testing.assert_close(parameter_jacobian(model, x).reshape(J.shape), J)
    torch.testing.assert_close(parameter_jacobian(model, x, chunk_size=2).reshape(J.shape), J)


def test_adjoint_identity(case):
    model, x, _ = case
    g = torch.Generator().manual_seed(0)
    for op in (ParamJacobian(model, x), InputJacobian(model, x[0])):
        u = torch.randn(op.shape[0], dtype=DT, generator=g)
        v = torch.randn(op.shape[1], dtype=DT, generator=g)
        torch.testing.assert_close(u @ (op @ v), (op.T @ u) @ v)
        block = torch.randn(op.shape[1], 4, dtype=DT, generator=g)
        torch.testing.assert_close(op @ block, torch.stack([op @ c for c in block.T], 1))


def test_input_jacobian_matches_dense(case):
    model, x, _ = case
    J = dense_input_jacobian(model, x[1])
    op = InputJacobian(model, x[1])
    torch.testing.assert_close(op.to_dense(), J)
    torch.testing.assert_close(op.T.to_dense(), J.T)
    batched = input_jacobians(model, x)
    assert batched.shape == (x.shape[0], 3, *x.shape[1:])
    torch.testing.assert_close(batched[1].reshape(3, -1), J)
    torch.testing.assert_close(input_jacobians(model, x, chunk_size=2), batched)
    expected = torch.stack([torch.linalg.svdvals(dense_input_jacobian(model, xi)) for xi in x])
    torch.testing.assert_close(input_jacobian_singular_values(model, x, chunk_size=2), expected)


def test_ntk_equals_jacobian_gram(case):
    model, x, _ = case
    n = x.shape[0]
    J = dense_param_jacobian(model, x)
    block = J @ J.T
    trace = torch.einsum("icp,jcp->ij", J.reshape(n, 3, -1), J.reshape(n, 3, -1))
    torch.testing.assert_close(NTKGram(model, x, block=True).to_dense(), block)
    torch.testing.assert_close(NTKGram(model, x).to_dense(), trace)
    torch.testing.assert_close(ntk_gram(model, x, block=True), block)
    torch.testing.assert_close(ntk_gram(model, x), trace)
    torch.testing.assert_close(ntk_gram(model, x, chunk_size=2), trace)
    torch.testing.assert_close(ntk_gram(model, x, block=True, chunk_size=2), block)


@pytest.mark.parametrize("block", [False, True])
def test_structured_ntk_equals_contraction(case, block):
    model, x, _ = case
    n = x.shape[0]
    J = dense_param_jacobian(model, x)
    dense = J @ J.T if block else torch.einsum("icp,jcp->ij", *2 * [J.reshape(n, 3, -1)])
    for chunk_size in (None, 2):
        structured = ntk_gram(model, x, block=block, chunk_size=chunk_size, method="structured")
        torch.testing.assert_close(structured, dense, rtol=1e-6, atol=1e-10)
    torch.testing.assert_close(ntk_gram(model, x, block=block, method="contraction"), dense,
                               rtol=1e-6, atol=1e-10)


def test_structured_ntk_frozen_parameters_and_fallback():
    model, x = _cnn()
    model.net[0].bias.requires_grad_(False)                 # conv bias
    model.net[-1].weight.requires_grad_(False)              # linear weight, bias still trained
    J = dense_param_jacobian(model, x)                      # over trainable parameters only
    keep = torch.cat([torch.full((p.numel(),), p.requires_grad) for p in model.parameters()])
    J = J[:, keep]
    torch.testing.assert_close(ntk_gram(model, x, block=True, method="structured"), J @ J.T)
    shared = nn.Sequential(nn.Linear(4, 4), nn.Tanh())
    twice = nn.Sequential(shared, shared, nn.Linear(4, 3)).to(DT).eval()
    normed = nn.Sequential(nn.Linear(4, 5), nn.LayerNorm(5), nn.Linear(5, 3)).to(DT).eval()
    x = torch.rand(4, 4, dtype=DT)
    for other in (twice, normed):
        J = dense_param_jacobian(other, x)
        torch.testing.assert_close(ntk_gram(other, x, block=True), J @ J.T)   # auto: contraction
        with pytest.raises(ValueError, match="method='structured' needs"):
            ntk_gram(other, x, method="structured")
    with pytest.raises(ValueError, match="method='fast' is unknown"):
        ntk_gram(twice, x, method="fast")


@pytest.mark.parametrize("loss", ["cross_entropy", "mse"])
def test_loss_hessian_matches_dense(case, loss):
    model, x, y = case
    H = dense_hessian(model, x, y, loss)
    op = LossHessian(model, x, y, loss=loss)
    assert op.T is op
    torch.testing.assert_close(op.to_dense(), H)
    loader = [(x[:2], y[:2]), (x[2:], y[2:])]
    torch.testing.assert_close(LoaderLossHessian(model, loader, loss=loss).to_dense(), H)


def test_mse_accepts_float_targets():
    model, x = _mlp()
    y = torch.randint(0, 3, (5,))
    onehot = F.one_hot(y, 3).to(DT)
    v = torch.randn(LossHessian(model, x, y, loss="mse").shape[0], dtype=DT)
    torch.testing.assert_close(LossHessian(model, x, onehot, loss="mse") @ v,
                               LossHessian(model, x, y, loss="mse") @ v)


def test_no_grad_written_and_mode_untouched():
    model, x = _mlp()
    y = torch.arange(5) % 3
    ops = [LossHessian(model, x, y), NTKGram(model, x), ParamJacobian(model, x),
           InputJacobian(model, x[0])]
    for op in ops:
        op @ torch.ones(op.shape[1], dtype=DT)
    ntk_gram(model, x)
    input_jacobians(model, x)
    assert all(p.grad is None for p in model.parameters())
    assert not model.training


def _bn_model():
    return nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 3)).to(DT)


@pytest.mark.parametrize("build", [
    lambda m, x, y: InputJacobian(m, x[0]), lambda m, x, y: ParamJacobian(m, x),
    lambda m, x, y: NTKGram(m, x), lambda m, x, y: LossHessian(m, x, y),
    lambda m, x, y: input_jacobians(m, x), lambda m, x, y: ntk_gram(m, x),
    lambda m, x, y: LoaderLossHessian(m, [(x, y)]),
])
def test_train_mode_refused(build):
    model = _bn_model().train()
    x, y = torch.rand(5, 4, dtype=DT), torch.arange(5) % 3
    with pytest.raises(ValueError, match=r"model\.eval\(\)"):
        build(model, x, y)
    assert model.training


def test_bad_inputs_refused():
    model, x = _mlp()
    y = torch.arange(5) % 3
    bad = x.clone()
    bad[2, 1] = float("nan")
    with pytest.raises(ValueError, match="inputs contains 1 non-finite"):
        ntk_gram(model, bad)
    with pytest.raises(ValueError, match="non-finite"):
        LossHessian(model, bad, y)
    broken, _ = _mlp()
    with torch.no_grad():
        broken.net[1].weight[0, 0] = float("inf")
    with pytest.raises(ValueError, match="net.1.weight"):
        input_jacobians(broken, x)
    op = LossHessian(model, x, y)
    with pytest.raises(ValueError, match="does not fit"):
        op @ torch.ones(op.shape[0] + 1, dtype=DT)
    with pytest.raises(ValueError, match="convert it"):
        op @ torch.ones(op.shape[0], dtype=torch.float32)
    with pytest.raises(ValueError, match="integer class labels"):
        LossHessian(model, x, y.to(DT))
    with pytest.raises(ValueError, match="labels must lie"):
        LossHessian(model, x, y + 3)
    with pytest.raises(ValueError, match="shape"):
        LossHessian(model, x, torch.zeros(5, 2, dtype=DT), loss="mse")
    with pytest.raises(ValueError, match="loss='hinge'"):
        LossHessian(model, x, y, loss="hinge")
    with pytest.raises(ValueError, match="one-shot"):
        LoaderLossHessian(model, iter([(x, y)]))
    with pytest.raises(ValueError, match="batch"):
        ntk_gram(model, x[0])


def test_no_trainable_parameters_refused():
    model, x = _mlp()
    model.requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        ParamJacobian(model, x)
    with pytest.raises(ValueError, match="no trainable parameters"):
        LossHessian(model, x, torch.arange(5) % 3)


def test_dense_operator():
    A = torch.randn(3, 4, dtype=DT)
    op = DenseOperator(A)
    torch.testing.assert_close(op.to_dense(), A)
    torch.testing.assert_close(op.T.to_dense(), A.T)
    assert op.T.T is op

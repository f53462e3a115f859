"""Fault injection (issue 15): each bad input or damaged file gets a clear, specific error.

One test per case; each asserts the message text, and the code-from-files cases assert that
the crafted pickle's payload never ran.
"""

from __future__ import annotations

import json
import pickle
import re
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

from stabnb.attribution import AttributionStability
from stabnb.data import DataSourceError, load_dataset
from stabnb.gmsi import gmsi
from stabnb.models import MLP, SmallCNN
from stabnb.operators import (
    InputJacobian,
    LossHessian,
    NTKGram,
    ParamJacobian,
    input_jacobian_singular_values,
    input_jacobians,
    ntk_gram,
    parameter_jacobian,
)
from stabnb.study import StudyConfig, load_study, study_cells
from stabnb.study.sweep import _claim_folder
from stabnb.train import TrainConfig, run_key, train

DT = torch.float64
UINT8_MESSAGE = ("inputs have dtype torch.uint8; models take float pixels in [0, 1]: "
                 "pass x.float() / 255")


class _WritesMarker:
    """A pickle whose unpickling writes a marker file: proof that loading ran code."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "pwned"))


@pytest.fixture
def mlp():
    torch.manual_seed(0)
    return MLP(12, (8,), 3, activation="tanh").to(DT).eval()


def _pixels(n=6, shape=(12,)):
    return torch.rand(n, *shape, generator=torch.Generator().manual_seed(0), dtype=DT)


# --- one input-domain rule -----------------------------------------------------------------

@pytest.mark.parametrize("entry", ["input_jacobians", "input_jacobian_singular_values",
                                   "parameter_jacobian", "ntk_gram", "ParamJacobian",
                                   "NTKGram", "LossHessian", "gmsi", "probe"])
def test_uint8_inputs_are_refused_everywhere(mlp, entry):
    x = (_pixels() * 255).to(torch.uint8)
    y = torch.arange(6) % 3
    calls = {
        "input_jacobians": lambda: input_jacobians(mlp, x),
        "input_jacobian_singular_values": lambda: input_jacobian_singular_values(mlp, x),
        "parameter_jacobian": lambda: parameter_jacobian(mlp, x),
        "ntk_gram": lambda: ntk_gram(mlp, x),
        "ParamJacobian": lambda: ParamJacobian(mlp, x),
        "NTKGram": lambda: NTKGram(mlp, x),
        "LossHessian": lambda: LossHessian(mlp, x, y),
        "gmsi": lambda: gmsi(mlp, x, y),
        "probe": lambda: AttributionStability(mlp).measure(x),
    }
    with pytest.raises(ValueError, match=re.escape(UINT8_MESSAGE)):
        calls[entry]()


def test_uint8_single_input_is_refused(mlp):
    with pytest.raises(ValueError, match=re.escape(UINT8_MESSAGE.replace("inputs", "x", 1))):
        InputJacobian(mlp, (_pixels(1)[0] * 255).to(torch.uint8))


def test_gmsi_refuses_0_255_float_pixels(mlp):
    x, y = _pixels() * 255, torch.arange(6) % 3
    with pytest.raises(ValueError, match=r"inputs span \[.*\], outside pixel_range=\(0\.0, 1\.0\)"
                                         r" \(they look like 0\.\.255 pixels: divide by 255\)"):
        gmsi(mlp, x, y)
    assert gmsi(mlp, x, y, pixel_range=None).value > 0       # not pixels: the caller says so


def test_probe_refuses_out_of_range_inputs_with_the_shared_message(mlp):
    with pytest.raises(ValueError, match=r"outside pixel_range=\(0\.0, 1\.0\); pass raw pixels"):
        AttributionStability(mlp).measure(_pixels() + 1.5)
    with pytest.raises(ValueError, match=r"span \[.*\], outside pixel_range=\(0\.0, 1\.0\) \(they "
                                         r"look like 0\.\.255 pixels: divide by 255\)"):
        AttributionStability(mlp).measure(_pixels() * 255)


def test_operators_accept_floats_off_the_pixel_box(mlp):
    """Bounds evaluate Jacobians at x + δ outside [0, 1]: the operators declare no range."""
    assert input_jacobians(mlp, _pixels() - 0.5).shape == (6, 3, 12)


# --- samples that interact, NaN logits ------------------------------------------------------

def _batch_stats_model():
    model = nn.Sequential(nn.Linear(12, 8), nn.BatchNorm1d(8, track_running_stats=False),
                          nn.Tanh(), nn.Linear(8, 3)).to(DT).eval()
    return model


@pytest.mark.parametrize("entry", ["input_jacobian_singular_values", "ntk_gram", "probe"])
def test_batchnorm_without_running_stats_is_refused(entry):
    model, x = _batch_stats_model(), _pixels()
    calls = {"input_jacobian_singular_values": lambda: input_jacobian_singular_values(model, x),
             "ntk_gram": lambda: ntk_gram(model, x),
             "probe": lambda: AttributionStability(model).measure(x)}
    with pytest.raises(ValueError, match=re.escape(
            "layer '1' (BatchNorm1d) has track_running_stats=False, so even in eval mode it "
            "normalises with the batch's own statistics and the samples interact; build it "
            "with track_running_stats=True")):
        calls[entry]()


class _LogOfShift(nn.Module):
    """Finite for x > 0.5, NaN below: NaN logits from finite inputs."""

    def forward(self, x):
        return torch.log(x - 0.5)


@pytest.mark.parametrize("entry, quantity", [
    ("input_jacobians", "model outputs (logits) for the input Jacobian"),
    ("input_jacobian_singular_values", "model outputs (logits) for the input Jacobian"),
    ("parameter_jacobian", "model outputs (logits) for the parameter Jacobian"),
    ("ntk_gram", "model outputs (logits) for the parameter Jacobian"),
])
def test_nan_logits_from_finite_inputs_are_named(entry, quantity):
    torch.manual_seed(0)
    model = nn.Sequential(_LogOfShift(), nn.Linear(12, 3)).to(DT).eval()
    x = _pixels()
    fn = {"input_jacobians": input_jacobians,
          "input_jacobian_singular_values": input_jacobian_singular_values,
          "parameter_jacobian": parameter_jacobian, "ntk_gram": ntk_gram}[entry]
    with pytest.raises(ValueError, match=re.escape(quantity) + r" contains \d+ non-finite"):
        fn(model, x)


# --- shapes, dtypes, labels ------------------------------------------------------------------

def test_wrong_input_shape_names_the_expected_shape():
    model = SmallCNN(1, 10, 28).eval()
    x = torch.rand(2, 3, 32, 32)
    message = ("inputs have shape (2, 3, 32, 32) but SmallCNN takes inputs (n, *(1, 28, 28)) "
               "(input_shape=(1, 28, 28)); reshape them")
    with pytest.raises(ValueError, match=re.escape(message)):
        input_jacobians(model, x)
    with pytest.raises(ValueError, match=re.escape(message)):
        AttributionStability(model).measure(x)
    with pytest.raises(ValueError, match=re.escape("MLP takes inputs (n, *(12,))")):
        parameter_jacobian(MLP(12, (4,), 3).eval(), torch.rand(2, 13))
    assert input_jacobians(MLP(12, (4,), 3).eval(), torch.rand(2, 3, 4)).shape == (2, 3, 3, 4)


def test_probe_names_the_dtype_to_cast_to(mlp):
    with pytest.raises(ValueError, match=re.escape(
            "inputs are torch.float32 but the model is torch.float64; cast the inputs with "
            "inputs.to(torch.float64)")):
        AttributionStability(mlp).measure(_pixels().float())


def test_int32_labels_are_accepted(mlp):
    x, y = _pixels(), torch.arange(6) % 3
    v = torch.randn(ParamJacobian(mlp, x).shape[1], dtype=DT)
    for loss in ("cross_entropy", "mse"):
        torch.testing.assert_close(LossHessian(mlp, x, y.int(), loss=loss) @ v,
                                   LossHessian(mlp, x, y, loss=loss) @ v)
    assert gmsi(mlp, x, y.int()).value == gmsi(mlp, x, y).value
    cfg = TrainConfig(epochs=1, batch_size=4, device="cpu", progress=False)
    model = MLP(12, (8,), 3)
    model.load_state_dict(mlp.float().state_dict())
    assert train(model, x.float(), y.int(), cfg).history[0]["loss"] > 0


# --- code run from files -------------------------------------------------------------------

def test_crafted_checkpoint_runs_no_code(tmp_path):
    marker = tmp_path / "marker"
    cfg = TrainConfig(epochs=1, batch_size=4, device="cpu", progress=False,
                      checkpoint_dir=str(tmp_path / "ckpt"))
    torch.manual_seed(0)
    model = MLP(12, (8,), 3)
    x, y = _pixels().float(), torch.arange(6) % 3
    path = tmp_path / "ckpt" / f"{run_key(model, x, y, cfg, None, torch.device('cpu'))}.pt"
    path.parent.mkdir()
    torch.save({"model": _WritesMarker(marker)}, path)
    with pytest.raises(ValueError, match=re.escape(f"training checkpoint {path} cannot be "
                                                   "loaded (corrupt, truncated, or not written "
                                                   "by stabnb")
                       + r".*delete it and rerun"):
        train(model, x, y, cfg)
    assert not marker.exists()


def test_truncated_checkpoint_names_the_file(tmp_path):
    cfg = TrainConfig(epochs=1, batch_size=4, device="cpu", progress=False,
                      checkpoint_dir=str(tmp_path))
    model, x, y = MLP(12, (8,), 3), _pixels().float(), torch.arange(6) % 3
    path = tmp_path / f"{run_key(model, x, y, cfg, None, torch.device('cpu'))}.pt"
    path.write_bytes(b"PK\x03\x04 half a zip file")
    with pytest.raises(ValueError, match=re.escape(str(path)) + r".*delete it and rerun"):
        train(model, x, y, cfg)


def test_crafted_cifar100_batch_is_not_unpickled(tmp_path, monkeypatch):
    monkeypatch.delenv("STABNB_OFFLINE_DATA", raising=False)
    marker = tmp_path / "marker"
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    (folder / "test").write_bytes(pickle.dumps(_WritesMarker(marker)))
    with pytest.raises(DataSourceError, match=re.escape(
            f"{folder / 'test'} does not match torchvision's recorded md5 for test "
            "(f0ef6b0ae62326f3e7ffdfab6717acfc), so it is not the original CIFAR file and "
            "stabnb will not unpickle it")):
        load_dataset("cifar100", "test", root=tmp_path)
    assert not marker.exists()


# --- damaged data and study files ----------------------------------------------------------

def test_file_listed_in_sha256sums_but_missing_is_data_missing(tmp_path):
    (tmp_path / "mnist").mkdir()
    (tmp_path / "SHA256SUMS").write_text(
        "".join(f"{'0' * 64}  mnist/{name}.gz\n" for name in (
            "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")))
    with pytest.raises(DataSourceError, match=re.escape(
            f"{tmp_path / 'mnist' / 't10k-images-idx3-ubyte.gz'} is listed in "
            f"{tmp_path / 'SHA256SUMS'} but missing: the offline copy is incomplete")):
        load_dataset("mnist", "test", offline_root=tmp_path, root=None)


def test_corrupt_data_cache_is_rebuilt_with_a_warning(offline_root, tmp_path):
    first = load_dataset("cifar10", "test", offline_root=offline_root, cache_dir=tmp_path)
    (cache,) = tmp_path.glob("cifar10-test-*.pt")
    cache.write_bytes(b"not a torch file")
    with pytest.warns(RuntimeWarning, match=re.escape(f"data cache {cache} is corrupt")
                      + r".*rebuilding it from"):
        again = load_dataset("cifar10", "test", offline_root=offline_root, cache_dir=tmp_path)
    assert torch.equal(again.images, first.images)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_dataset("cifar10", "test", offline_root=offline_root, cache_dir=tmp_path)


TINY = {"dataset": "teacher", "models": {"mlp": {"architecture": "mlp"}}, "seeds": [0],
        "train": {"epochs": 1}, "regularizers": {},
        "teacher": {"dim": 8, "num_classes": 3, "widths": [16], "n_train": 64, "n_test": 32}}


def test_corrupt_study_config_names_the_file_and_fix(tmp_path):
    (tmp_path / "config.json").write_text('{"fingerprint": "abc", "config": {"data')
    with pytest.raises(ValueError, match=re.escape(
            f"{tmp_path / 'config.json'} is not valid JSON (Unterminated string starting at: "
            "line 1, column 35): it is corrupt or truncated; delete the study folder "
            f"{tmp_path} and rerun run_study (its cells are recomputed), or restore the file.")):
        load_study(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps([1, 2]))
    with pytest.raises(ValueError, match=re.escape("holds no study config (no 'config' object)")):
        load_study(tmp_path)


def test_corrupt_study_cell_names_the_file_and_fix(tmp_path):
    config = StudyConfig.from_dict(TINY)
    _claim_folder(config, tmp_path)
    cell = tmp_path / "cells" / f"{study_cells(config)[0].name}.json"
    cell.parent.mkdir()
    cell.write_text('{"model": "mlp", ')
    with pytest.raises(ValueError, match=re.escape(
            f"{cell} is not valid JSON (Expecting property name enclosed in double quotes: "
            "line 1, column 18): it is corrupt or truncated; delete that file and rerun "
            "run_study: the cell is recomputed")):
        load_study(tmp_path)

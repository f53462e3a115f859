"""Tests for stabnb.study: config validation, the grid, resume, refusing to mix, parallel cells."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from stabnb.study import (
    Cell,
    StudyConfig,
    load_study,
    load_study_data,
    run_study,
    study_cells,
    study_dir,
)

TINY = {
    "dataset": "teacher", "models": ["mlp"], "seeds": [0, 1], "epochs": 2,
    "regularizers": {"jacobian_spectral": [0.01], "input_curvature": [0.1]},
    "teacher": {"dim": 8, "num_classes": 3, "widths": [16], "n_train": 256, "n_test": 64},
    "model_kwargs": {"mlp": {"widths": [16], "activation": "tanh"}},
    "batch_size": 64, "eval_size": 64, "probe_size": 16, "gmsi_size": 8,
    "methods": ["saliency", "integrated_gradients"], "num_draws": 3, "ig_steps": 4,
}


def test_config_names_missing_and_unknown_fields():
    with pytest.raises(ValueError, match=r"lacks required field\(s\) \['seeds', 'epochs'\]"):
        StudyConfig.from_dict({k: v for k, v in TINY.items() if k not in ("seeds", "epochs")})
    with pytest.raises(ValueError, match=r"unknown field\(s\) \['lambda'\]"):
        StudyConfig.from_dict({**TINY, "lambda": 1.0})


@pytest.mark.parametrize("regularizers, message", [
    ({"jacobian_spectral": [-0.1]}, "must be finite and > 0"),
    ({"jacobian_spectral": [0.0]}, "λ = 0 is the baseline"),
    ({"lipschitz": [0.1]}, "regularizer 'lipschitz' is unknown"),
    ({"none": [0.1]}, "regularizer 'none' is unknown"),
])
def test_config_refuses_bad_regularizers(regularizers, message):
    with pytest.raises(ValueError, match=message):
        StudyConfig.from_dict({**TINY, "regularizers": regularizers})


def test_config_refuses_unknown_names():
    with pytest.raises(ValueError, match="dataset='imagenet' is unknown"):
        StudyConfig.from_dict({**TINY, "dataset": "imagenet"})
    with pytest.raises(ValueError, match=r"models \['vit'\] are unknown"):
        StudyConfig.from_dict({**TINY, "models": ["vit"]})
    with pytest.raises(ValueError, match=r"methods \['lime'\] are unknown"):
        StudyConfig.from_dict({**TINY, "methods": ["lime"]})


def test_config_round_trips_through_json():
    config = StudyConfig.from_dict(TINY)
    again = StudyConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config and again.fingerprint() == config.fingerprint()
    assert StudyConfig.from_dict({**TINY, "epochs": 3}).fingerprint() != config.fingerprint()


def test_grid_pairs_every_cell_with_a_baseline():
    cells = study_cells(StudyConfig.from_dict(TINY))
    assert len(cells) == 2 * 3                                         # 2 seeds × (baseline + 2)
    assert Cell("mlp", "none", 0.0, 1) in cells
    assert {c.name for c in cells} >= {"mlp-none-0-seed0", "mlp-jacobian_spectral-0.01-seed1"}


def test_teacher_data_is_fixed_and_in_pixel_range():
    config = StudyConfig.from_dict(TINY)
    a, b = load_study_data(config), load_study_data(config)
    assert torch.equal(a.train_x, b.train_x) and torch.equal(a.train_y, b.train_y)
    assert a.train_x.min() >= 0 and a.train_x.max() <= 1
    assert len(a.probe_x) == 16 and torch.equal(a.probe_x, a.test_x[:16])
    assert a.train_y.unique().numel() == 3                             # every class present


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    folder = tmp_path_factory.mktemp("study")
    return run_study(StudyConfig.from_dict(TINY), folder, device="cpu", progress_bar=False)


def test_records_hold_every_metric_and_provenance(finished):
    records = finished.records
    assert len(records) == 6 and not records.duplicated(["regularizer", "strength", "seed"]).any()
    for column in ("accuracy", "gmsi", "gmsi.ntk", "jacobian.spectral_entropy",
                   "jacobian.stable_rank", "saliency.relative_l2", "saliency.abs_l2",
                   "integrated_gradients.spearman", "saliency.top_k", "train_seconds", "device"):
        assert column in records.columns, column
        assert records[column].notna().all(), column
    assert records["saliency.spearman"].between(-1, 1).all()
    cell = json.loads((finished.out_dir / "cells" / "mlp-none-0-seed0.json").read_text())
    assert cell["provenance"]["config"] == finished.config.fingerprint()
    assert len(cell["provenance"]["history"]) == 2
    on_disk = pd.read_csv(finished.out_dir / "results.csv")
    assert len(on_disk) == 6 and set(on_disk.columns) == set(records.columns)


def test_abs_change_is_relative_change_times_norm_per_sample(finished):
    table = finished.per_sample("mlp", seed=1)
    assert len(table) == 16
    row = finished.records.query("regularizer == 'none' and seed == 1").iloc[0]
    per_sample = table["relative_l2"] * table["attribution_norm"]
    assert row["saliency.abs_l2"] == pytest.approx(float(per_sample.mean()), rel=1e-6)
    assert row["jacobian.spectral_entropy"] == pytest.approx(
        float(table["spectral_entropy"].mean()), rel=1e-9)


def test_regularised_cells_differ_from_their_baseline(finished):
    records = finished.records.set_index(["regularizer", "seed"])
    for seed in (0, 1):
        assert records.loc[("jacobian_spectral", seed), "jacobian.operator_norm"] != \
            records.loc[("none", seed), "jacobian.operator_norm"]


def test_finished_cells_are_reused_and_a_lost_cell_is_redone(finished):
    records = finished.records
    cell = finished.out_dir / "cells" / "mlp-input_curvature-0.1-seed1.json"
    before = {p.name: p.stat().st_mtime_ns for p in (finished.out_dir / "cells").glob("*.json")}
    cell.unlink()
    again = run_study(finished.config, finished.out_dir, device="cpu", progress_bar=False)
    after = {p.name: p.stat().st_mtime_ns for p in (finished.out_dir / "cells").glob("*.json")}
    changed = sorted(name for name in after if after[name] != before.get(name))
    assert changed == ["mlp-input_curvature-0.1-seed1.json",
                       "mlp-input_curvature-0.1-seed1.per_sample.json"]
    numeric = [c for c in records.columns if c not in ("train_seconds", "eval_seconds")
               and pd.api.types.is_numeric_dtype(records[c])]
    pd.testing.assert_frame_equal(again.records[numeric], records[numeric])   # same numbers
    assert load_study(finished.out_dir).records[numeric].equals(records[numeric])


def test_refuses_to_mix_configs_in_one_folder(finished):
    other = StudyConfig.from_dict({**TINY, "epochs": 3, "radius": 0.1})
    with pytest.raises(ValueError, match=r"different study config \(differs in \['epochs', 'radius'\]\)"):
        run_study(other, finished.out_dir, device="cpu")


def test_parallel_cells_give_the_same_numbers(finished, tmp_path):
    config = StudyConfig.from_dict({**TINY, "seeds": [1],
                                    "regularizers": {"jacobian_spectral": [0.01]}})
    parallel = run_study(config, tmp_path, device="cpu", jobs=2, progress_bar=False).records
    serial = finished.records.query("seed == 1 and regularizer != 'input_curvature'")
    columns = ["accuracy", "gmsi", "saliency.relative_l2", "integrated_gradients.spearman"]
    assert parallel[columns].to_numpy() == pytest.approx(serial[columns].to_numpy(), rel=1e-5)


def test_study_dir_is_keyed_by_code_and_config(monkeypatch, tmp_path):
    monkeypatch.setenv("STABNB_WORK_DIR", str(tmp_path))
    config = StudyConfig.from_dict(TINY)
    folder = study_dir("E3_mnist", "smoke", config)
    assert folder.parent == tmp_path / "smoke" and folder.name.startswith("E3_mnist-")
    assert folder.name.endswith(config.fingerprint()[:8])
    assert study_dir("E3_mnist", "smoke", StudyConfig.from_dict({**TINY, "epochs": 3})) != folder


def test_gmsi_can_be_left_out(tmp_path):
    config = StudyConfig.from_dict({**TINY, "seeds": [0], "regularizers": {}, "gmsi_size": 0})
    records = run_study(config, tmp_path, device="cpu", progress_bar=False).records
    assert len(records) == 1 and not any(c.startswith("gmsi") for c in records.columns)
    assert records["saliency.relative_l2"].notna().all()
    with pytest.raises(ValueError, match="gmsi_size=-1 must be in 0..probe_size=16"):
        StudyConfig.from_dict({**TINY, "gmsi_size": -1})

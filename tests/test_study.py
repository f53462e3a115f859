"""Tests for stabnb.study: composed configs, the grid, one randomness rule, cache keys, resume,
refusing to mix, and the same numbers from local processes, Dask, submitit and after a killed
worker."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
import torch

from stabnb.study import (
    Cell,
    ModelSpec,
    ProbeConfig,
    StudyConfig,
    StudyData,
    SubmititExecutor,
    load_study,
    load_study_data,
    open_executor,
    run_study,
    study_cells,
    study_dir,
)
from stabnb.study.cell import _build, evaluate_model
from stabnb.train import TrainConfig

ROOT = Path(__file__).resolve().parents[1]

TINY = {
    "dataset": "teacher", "seeds": [0, 1],
    "models": {"mlp": {"architecture": "mlp", "kwargs": {"widths": [16], "activation": "tanh"}}},
    "regularizers": {"jacobian_spectral": [0.01], "input_curvature": [0.1]},
    "teacher": {"dim": 8, "num_classes": 3, "widths": [16], "n_train": 256, "n_test": 64},
    "train": {"epochs": 2, "batch_size": 64},
    "probe": {"eval_size": 64, "probe_size": 16, "gmsi_size": 8,
              "methods": ["saliency", "integrated_gradients"], "num_draws": 3, "ig_steps": 4},
}
VOLATILE = ("train_seconds", "eval_seconds")


def test_config_names_missing_and_unknown_fields_by_path():
    with pytest.raises(ValueError, match=r"lacks required field\(s\) \['seeds'\]"):
        StudyConfig.from_dict({k: v for k, v in TINY.items() if k != "seeds"})
    with pytest.raises(ValueError, match=r"lacks required field\(s\) \['train.epochs'\]"):
        StudyConfig.from_dict({**TINY, "train": {"lr": 0.1}})
    with pytest.raises(ValueError, match=r"unknown field\(s\) \['lambda', 'train.lrate'\]"):
        StudyConfig.from_dict({**TINY, "lambda": 1.0, "train": {"epochs": 1, "lrate": 0.1}})
    with pytest.raises(ValueError, match=r"unknown field\(s\) \['probe.draws'\]"):
        StudyConfig.from_dict({**TINY, "probe": {"draws": 3}})
    with pytest.raises(ValueError, match=r"unknown field\(s\) \['train.seed'\]"):
        StudyConfig.from_dict({**TINY, "train": {"epochs": 1, "seed": 3}})


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
    with pytest.raises(ValueError, match="architecture='vit' is unknown"):
        StudyConfig.from_dict({**TINY, "models": {"vit": {"architecture": "vit"}}})
    with pytest.raises(ValueError, match=r"methods \['lime'\] are unknown"):
        StudyConfig.from_dict({**TINY, "probe": {"methods": ["lime"]}})
    with pytest.raises(ValueError, match=r"optimizer='lbfgs' is unknown"):
        StudyConfig.from_dict({**TINY, "train": {"epochs": 1, "optimizer": "lbfgs"}})
    with pytest.raises(ValueError, match=r"\['train.seed'\] are set per cell"):
        StudyConfig(dataset="teacher", models={"mlp": ModelSpec("mlp")}, regularizers={},
                    seeds=(0,), train=TrainConfig(seed=3))


def test_config_round_trips_nested_and_composes_its_parts():
    config = StudyConfig.from_dict(TINY)
    assert isinstance(config.train, TrainConfig) and isinstance(config.probe, ProbeConfig)
    assert config.models["mlp"] == ModelSpec("mlp", {"widths": (16,), "activation": "tanh"})
    again = StudyConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config and again.fingerprint() == config.fingerprint()
    assert config.to_dict()["train"]["momentum"] == 0.9 and "seed" not in config.to_dict()["train"]
    moved = StudyConfig.from_dict({**TINY, "train": {"epochs": 2, "batch_size": 64, "momentum": 0.5}})
    assert moved.fingerprint() != config.fingerprint()
    cell_train = config.train_config(7, device="cpu")
    assert (cell_train.seed, cell_train.momentum, cell_train.epochs) == (7, 0.9, 2)


def test_two_variants_of_one_architecture_sit_in_one_study():
    config = StudyConfig.from_dict({**TINY, "models": {
        "tanh": {"architecture": "mlp", "kwargs": {"activation": "tanh", "widths": [8]}},
        "relu": {"architecture": "mlp", "kwargs": {"activation": "relu", "widths": [8]}}}})
    assert {c.model for c in study_cells(config)} == {"tanh", "relu"}


def test_a_model_trains_with_its_own_recipe(monkeypatch, tmp_path):
    models = {"plain": {"architecture": "mlp", "kwargs": {"widths": [8]}},
              "fast": {"architecture": "mlp", "kwargs": {"widths": [8]},
                       "train": {"lr": 0.4, "momentum": 0.85}}}
    config = StudyConfig.from_dict({**TINY, "models": models})
    assert "train" not in config.to_dict()["models"]["plain"]
    assert config.to_dict()["models"]["fast"]["train"] == {"lr": 0.4, "momentum": 0.85}
    again = StudyConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config and again.fingerprint() == config.fingerprint()
    fast, plain = config.train_config(7, "fast"), config.train_config(7, "plain")
    assert (fast.lr, fast.momentum, fast.epochs, fast.seed) == (0.4, 0.85, 2, 7)
    assert (plain.lr, plain.momentum) == (TrainConfig().lr, 0.9)

    seen = []

    def record(model, x, y, cfg, **kwargs):                 # what run_cell trains with
        seen.append(cfg)
        raise KeyboardInterrupt

    monkeypatch.setattr("stabnb.study.cell.train", record)
    from stabnb.study.cell import run_cell
    with pytest.raises(KeyboardInterrupt):
        run_cell(config, load_study_data(config, 0), Cell("fast", "none", 0.0, 0), tmp_path,
                 device="cpu")
    assert seen[0].lr == 0.4 and seen[0].device == "cpu"
    with pytest.raises(ValueError, match=r"sets \['epochs'\], which a model cannot override"):
        ModelSpec("mlp", train={"epochs": 3})
    with pytest.raises(ValueError, match=r"sets \['seed'\]"):
        ModelSpec("mlp", train={"seed": 3})
    with pytest.raises(ValueError, match="lr=-1 must be positive"):
        ModelSpec("mlp", train={"lr": -1})


def test_grid_pairs_every_cell_with_a_baseline():
    cells = study_cells(StudyConfig.from_dict(TINY))
    assert len(cells) == 2 * 3                                         # 2 seeds × (baseline + 2)
    assert Cell("mlp", "none", 0.0, 1) in cells
    assert {c.name for c in cells} >= {"mlp-none-0-seed0", "mlp-jacobian_spectral-0.01-seed1"}


def test_seeds_vary_the_data_draws_and_the_global_stream_does_not():
    config = StudyConfig.from_dict({**TINY, "train_size": 128})
    torch.manual_seed(123)
    a = load_study_data(config, 0)
    torch.manual_seed(456)
    b, c = load_study_data(config, 0), load_study_data(config, 1)
    assert torch.equal(a.train_x, b.train_x) and torch.equal(a.probe_x, b.probe_x)
    assert not torch.equal(a.train_x, c.train_x) and not torch.equal(a.probe_x, c.probe_x)
    assert torch.equal(a.test_x, c.test_x)                             # one accuracy set
    assert a.train_x.min() >= 0 and a.train_x.max() <= 1 and len(a.probe_x) == 16
    assert a.train_y.unique().numel() == 3                             # every class present


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    folder = tmp_path_factory.mktemp("study")
    return run_study(StudyConfig.from_dict(TINY), folder, device="cpu", progress_bar=False)


def _numbers(records: pd.DataFrame) -> pd.DataFrame:
    return records[[c for c in records.columns if c not in VOLATILE
                    and pd.api.types.is_numeric_dtype(records[c])]]


def _cells_json(folder: Path) -> dict[str, dict]:
    """Every cell file minus its timing and host fields."""
    cells = {}
    for path in sorted((folder / "cells").glob("*.json")):
        record = json.loads(path.read_text())
        for name in VOLATILE:
            record.pop(name, None)
        for name in ("wall_seconds", "host", "resumed_from_epoch"):
            record.get("provenance", {}).pop(name, None)
        cells[path.name] = record
    return cells


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


def test_regularised_cells_differ_from_their_baseline_and_seeds_from_each_other(finished):
    records = finished.records.set_index(["regularizer", "seed"])
    for seed in (0, 1):
        assert records.loc[("jacobian_spectral", seed), "jacobian.operator_norm"] != \
            records.loc[("none", seed), "jacobian.operator_norm"]
    assert records.loc[("none", 0), "saliency.relative_l2"] != \
        records.loc[("none", 1), "saliency.relative_l2"]


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
    pd.testing.assert_frame_equal(_numbers(again.records), _numbers(records))
    assert load_study(finished.out_dir).records[_numbers(records).columns].equals(_numbers(records))


def test_refuses_to_mix_configs_in_one_folder(finished):
    other = StudyConfig.from_dict({**TINY, "train": {"epochs": 3}, "train_size": 100})
    with pytest.raises(ValueError, match=r"different study config \(differs in \['train', 'train_size'\]\)"):
        run_study(other, finished.out_dir, device="cpu")


def test_local_processes_give_byte_identical_cells(finished, tmp_path):
    parallel = run_study(finished.config, tmp_path, device="cpu", jobs=2, threads=1,
                         progress_bar=False)
    assert _cells_json(tmp_path) == _cells_json(finished.out_dir)
    pd.testing.assert_frame_equal(_numbers(parallel.records), _numbers(finished.records))


def test_dask_cluster_gives_byte_identical_cells(finished, tmp_path):
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        study = run_study(finished.config, tmp_path, device="cpu", threads=1,
                          executor=client.get_executor(pure=False), progress_bar=False)
    assert _cells_json(tmp_path) == _cells_json(finished.out_dir)
    pd.testing.assert_frame_equal(_numbers(study.records), _numbers(finished.records))


def test_submitit_local_executor_runs_a_study(finished, tmp_path):
    submitit = pytest.importorskip("submitit")
    config = StudyConfig.from_dict({**TINY, "seeds": [1], "regularizers": {}})
    executor = submitit.LocalExecutor(folder=tmp_path / "jobs")
    executor.update_parameters(timeout_min=5)
    study = run_study(config, tmp_path / "study", device="cpu", threads=1,
                      executor=SubmititExecutor(executor), progress_bar=False)
    baseline = finished.records.query("regularizer == 'none' and seed == 1")
    assert study.records["saliency.relative_l2"].tolist() == baseline["saliency.relative_l2"].tolist()


def test_a_worker_killed_mid_cell_is_retried_and_the_study_completes(finished, tmp_path):
    psutil = pytest.importorskip("psutil")
    config = StudyConfig.from_dict({**TINY, "seeds": [0], "regularizers": {"input_curvature": [0.1]},
                                    "train": {"epochs": 40, "batch_size": 64}})
    killed = []

    def kill_the_first_worker_with_a_checkpoint():
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not killed:
            if any((tmp_path / "checkpoints").glob("*.pt")):
                for child in psutil.Process().children(recursive=True):
                    if "spawn_main" in " ".join(child.cmdline()):
                        child.kill()
                        killed.append(child.pid)
                        return
            time.sleep(0.005)

    watcher = threading.Thread(target=kill_the_first_worker_with_a_checkpoint)
    watcher.start()
    study = run_study(config, tmp_path, device="cpu", jobs=2, threads=1, progress_bar=False)
    watcher.join()
    assert killed and study.retried and len(study.records) == 2
    reference = run_study(config, tmp_path / "serial", device="cpu", progress_bar=False)
    assert _cells_json(tmp_path) == _cells_json(tmp_path / "serial")
    assert reference.records["accuracy"].notna().all()


def test_study_dir_is_keyed_by_the_code_a_cell_runs(monkeypatch, tmp_path):
    """Docstring and plotting edits keep the key; code edits in train or regularizers move it."""
    copy = tmp_path / "pkg"
    shutil.copytree(ROOT / "stabnb", copy / "stabnb", ignore=shutil.ignore_patterns("__pycache__"))
    probe = ("import sys, os; sys.path.insert(0, sys.argv[1]); os.environ['STABNB_WORK_DIR'] = sys.argv[2];"
             "from stabnb.study import StudyConfig, study_dir;"
             f"print(study_dir('E', 'smoke', StudyConfig.from_dict({TINY!r})).name)")

    def key() -> str:
        return subprocess.run([sys.executable, "-c", probe, str(copy), str(tmp_path)], check=True,
                              capture_output=True, text=True).stdout.strip()

    def edit(module: str, old: str, new: str) -> None:
        path = copy / "stabnb" / module
        text = path.read_text()
        assert old in text, (module, old)
        path.write_text(text.replace(old, new, 1))

    first = key()
    assert first.startswith("E-") and first.endswith(StudyConfig.from_dict(TINY).fingerprint()[:8])
    edit("train.py", '"""Top-1 accuracy of', '"""The top-1 accuracy of')
    edit("plotting/experiments.py", "import math\n", "import math\nUNUSED = 1\n")
    edit("notebook.py", "import os\n", "import os\nUNUSED = 1\n")
    edit("effects.py", "from __future__ import annotations\n",
         "from __future__ import annotations\nUNUSED = 1\n")
    assert key() == first
    edit("train.py", "model.eval()\n    logits", "model.eval()\n    logits = None\n    logits")
    second = key()
    assert second != first
    edit("regularizers/_base.py", "shares_forward = False", "shares_forward = bool(0)")
    assert key() not in (first, second)
    monkeypatch.setenv("STABNB_WORK_DIR", str(tmp_path))
    config = StudyConfig.from_dict(TINY)
    assert study_dir("E", "smoke", config).parent == tmp_path / "smoke"
    assert study_dir("E", "smoke", StudyConfig.from_dict({**TINY, "seeds": [3]})) != \
        study_dir("E", "smoke", config)


def test_study_refuses_a_folder_of_other_code(finished, tmp_path):
    shutil.copytree(finished.out_dir, tmp_path / "s")
    stored = json.loads((tmp_path / "s" / "config.json").read_text())
    (tmp_path / "s" / "config.json").write_text(json.dumps(stored | {"code": "0" * 64}))
    with pytest.raises(ValueError, match="computed by other code"):
        run_study(finished.config, tmp_path / "s", device="cpu")


def test_gmsi_can_be_left_out(tmp_path):
    config = StudyConfig.from_dict({**TINY, "seeds": [0], "regularizers": {},
                                    "probe": TINY["probe"] | {"gmsi_size": 0}})
    records = run_study(config, tmp_path, device="cpu", progress_bar=False).records
    assert len(records) == 1 and not any(c.startswith("gmsi") for c in records.columns)
    with pytest.raises(ValueError, match="gmsi_size=-1 must be in 0..probe_size=16"):
        StudyConfig.from_dict({**TINY, "probe": TINY["probe"] | {"gmsi_size": -1}})



# --------------------------------------------------------------------------- the saliency probe

PROBE_COLUMNS = ("heldout.relative_l2", "heldout.top_k", "attack.relative_l2", "attack.top_k",
                 "attack.start_relative_l2", "attack.start_top_k", "dependence.between_inputs",
                 "dependence.ratio", "sanity.randomised_spearman", "faithfulness.deletion_auc",
                 "faithfulness.random_auc", "faithfulness.gain", "mechanism.gate_flips",
                 "mechanism.margin")


def test_probe_config_checks_the_probe_fields_and_drops_image_families_for_flat_inputs():
    probe = ProbeConfig()
    assert probe.families_for((1, 28, 28)) == probe.heldout
    assert probe.families_for((64,)) == ("gaussian:0.02", "gaussian:0.1", "uniform:0.05")
    assert probe.families_for((1, 28, 28), aside=True) == ("translate:1",)
    assert probe.families_for((64,), aside=True) == ()
    with pytest.raises(ValueError, match="holds only image families"):
        ProbeConfig(heldout=("blur:0.5",)).families_for((64,))
    for fields, message in [({"heldout": "gaussian:0.02"}, "non-empty list of specs"),
                            ({"heldout": []}, "non-empty list of specs"),
                            ({"heldout": ["gauss:0.1"]}, "'gauss' is unknown"),
                            ({"heldout": ["blur:0.5", "blur:0.5"]}, "name a family twice"),
                            ({"aside": ["gaussian:0.02"]}, "name a family twice"),
                            ({"attack_steps": -1}, "attack_steps=-1 must be an integer"),
                            ({"attack_steps": 2.5}, "attack_steps=2.5 must be an integer"),
                            ({"attack_epsilon": 0}, "attack_epsilon=0 must be a positive"),
                            ({"quality": "yes"}, "quality='yes' must be true or false")]:
        with pytest.raises(ValueError, match=message):
            StudyConfig.from_dict({**TINY, "probe": TINY["probe"] | fields})
    again = StudyConfig.from_dict(json.loads(json.dumps(StudyConfig.from_dict(TINY).to_dict())))
    assert again.probe.heldout == ProbeConfig().heldout


def _image_data(n: int = 6) -> StudyData:
    images = torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    labels = torch.arange(n) % 3
    return StudyData(images, labels, images, labels, images, labels, (1, 8, 8), 3, None, None,
                     "random images")


@pytest.mark.parametrize("kind", ["flat", "image"])
def test_evaluate_model_gives_every_probe_column_finite(kind):
    probe = {"eval_size": 64, "probe_size": 6, "gmsi_size": 0, "methods": ["saliency"],
             "num_draws": 2, "attack_steps": 2}
    if kind == "flat":
        config = StudyConfig.from_dict({**TINY, "probe": probe, "models": {
            "mlp": {"architecture": "mlp", "kwargs": {"widths": [8], "activation": "relu"}}}})
        data = load_study_data(config, 0)
    else:
        config = StudyConfig.from_dict({**TINY, "probe": probe, "models": {
            "cnn": {"architecture": "cnn", "kwargs": {"channels": [2, 2], "hidden": 4}}}})
        data = _image_data()
    model = _build(config, data, study_cells(config)[0])
    metrics, table = evaluate_model(model, config, data, noise_seed=0)
    families = config.probe.families_for(data.input_shape)
    aside = config.probe.families_for(data.input_shape, aside=True)
    assert (len(families), len(aside)) == ((3, 0) if kind == "flat" else (4, 1))
    names = [f"family.{s}.{m}" for s in (*families, *aside) for m in ("relative_l2", "top_k")]
    for name in (*names, *PROBE_COLUMNS):
        assert math.isfinite(metrics[name]), name
        assert table[name].shape == (6,), name
    per_family = torch.stack([table[f"family.{s}.relative_l2"] for s in families])
    torch.testing.assert_close(table["heldout.relative_l2"], per_family.nanmean(0))
    torch.testing.assert_close(table["dependence.ratio"],
                               table["heldout.relative_l2"] / table["dependence.between_inputs"],
                               equal_nan=True)          # NaN: an image alone in its class
    # a further family leaves the draws of the others as they were
    wider = replace(config, probe=replace(config.probe, heldout=(*config.probe.heldout,
                                                                 "gaussian:0.3")))
    more, _ = evaluate_model(model, wider, data, noise_seed=0)
    assert all(more[name] == metrics[name] for name in names)
    assert more["attack.relative_l2"] == metrics["attack.relative_l2"]


def test_samples_carry_the_probe_columns_per_image(finished):
    samples = finished.samples()
    for name in PROBE_COLUMNS[:-2]:                        # a tanh MLP has no ReLU gates
        assert name in samples.columns, name
    row = finished.records.query("regularizer == 'none' and seed == 1").iloc[0]
    cell = samples.query("regularizer == 'none' and seed == 1")
    assert cell["image"].tolist() == list(range(16))
    for name in ("heldout.relative_l2", "attack.relative_l2", "dependence.ratio",
                 "faithfulness.gain", "saliency.relative_l2"):
        assert row[name] == pytest.approx(cell[name].mean(), rel=1e-6), name

# --------------------------------------------------------------------------- the CLI

def _toml(values: dict, path: Path) -> Path:
    def value(v):
        if isinstance(v, str):
            return json.dumps(v)
        if isinstance(v, bool):
            return str(v).lower()
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return repr(v)

    lines, tables = [], []

    def emit(prefix, mapping):
        scalars = {k: v for k, v in mapping.items() if not isinstance(v, dict)}
        if prefix:
            tables.append(f"[{prefix}]")
            tables.extend(f"{k} = {value(v)}" for k, v in scalars.items())
        else:
            lines.extend(f"{k} = {value(v)}" for k, v in scalars.items())
        for k, v in mapping.items():
            if isinstance(v, dict):
                emit(f"{prefix}.{k}" if prefix else k, v)

    emit("", values)
    path.write_text("\n".join(lines + tables) + "\n")
    return path


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stabnb", "study", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120,
                          env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})


def test_cli_refuses_a_bad_config_naming_the_field(tmp_path):
    bad = _toml({**TINY, "train": {"epochs": 1, "lrate": 0.1}}, tmp_path / "bad.toml")
    done = _cli(str(bad), "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert done.returncode == 2 and "unknown field(s) ['train.lrate']" in done.stderr
    assert not (tmp_path / "out").exists()                             # nothing half-written


def test_cli_runs_a_tiny_study_and_refuses_bad_executors(tmp_path):
    config = {**TINY, "seeds": [0], "regularizers": {}}
    good = _toml(config, tmp_path / "tiny.toml")
    assert StudyConfig.from_toml(good) == StudyConfig.from_dict(config)
    done = _cli(str(good), "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "1 cells in" in done.stdout and (tmp_path / "out" / "results.csv").exists()
    unreachable = _cli(str(good), "--out", str(tmp_path / "o2"), "--executor", "dask",
                       "--scheduler", "tcp://127.0.0.1:1", cwd=tmp_path)
    assert unreachable.returncode == 2 and "cannot reach the Dask scheduler" in unreachable.stderr
    assert not (tmp_path / "o2").exists()
    if shutil.which("sbatch") is None:
        slurm = _cli(str(good), "--out", str(tmp_path / "o3"), "--executor", "slurm",
                     "--partition", "gpu", cwd=tmp_path)
        assert slurm.returncode == 2 and "needs Slurm's sbatch" in slurm.stderr
    other = _toml({**config, "train": {"epochs": 3}}, tmp_path / "other.toml")
    mixed = _cli(str(other), "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert mixed.returncode == 2 and "different study config" in mixed.stderr


def test_a_missing_optional_dependency_names_its_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "distributed", None)
    with pytest.raises(ValueError, match=r"pip install 'stabnb\[dask\]'"):
        with open_executor("dask", folder=tmp_path, scheduler="tcp://127.0.0.1:1"):
            pass


def test_retrain_recomputes_cells_finished_before_it(tmp_path, monkeypatch):
    """``reproduce --retrain`` sets STABNB_RETRAIN to its start: older cells are recomputed once,
    cells written since are kept (a notebook calling run_study twice trains once)."""
    import os
    import time

    from stabnb.study.sweep import _forget_older_cells
    cells, checkpoints = tmp_path / "cells", tmp_path / "checkpoints"
    cells.mkdir()
    checkpoints.mkdir()
    old, ckpt = cells / "old.json", checkpoints / "old.pt"
    for path in (old, ckpt):
        path.write_text("{}")
        os.utime(path, (time.time() - 100, time.time() - 100))
    monkeypatch.setenv("STABNB_RETRAIN", f"{time.time() - 50:.3f}")
    fresh = cells / "fresh.json"
    fresh.write_text("{}")
    _forget_older_cells(tmp_path)
    assert not old.exists() and not ckpt.exists() and fresh.exists()
    monkeypatch.setenv("STABNB_RETRAIN", "yes")
    with pytest.raises(ValueError, match="STABNB_RETRAIN='yes'"):
        _forget_older_cells(tmp_path)

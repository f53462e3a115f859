"""The run plan (stabnb.reproduce.plan): its studies, its arithmetic, its calibration, --plan."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stabnb.__main__ import main
from stabnb.reproduce.plan import Plan, StepCost, make_plan, planned_studies

E3 = "experiments/E3_mnist.ipynb"


def test_planned_studies_count_e7s_snapshots_but_not_the_studies_it_reuses() -> None:
    names = [s.name for s in planned_studies("quick")]
    assert names == ["E3_mnist", "E4_cifar10", "E6_cifar100", "E7_E3_mnist_epochs1",
                     "E7_E3_mnist_epochs2"]
    paper = planned_studies("paper", notebooks=[E3])[0]
    assert paper.steps("mlp") == paper.steps("cnn") == 5 * -(-60_000 // 512)   # full MNIST
    smoke = {s.name: s for s in planned_studies("smoke", notebooks=["experiments/E7_robustness.ipynb"])}
    assert list(smoke) == ["E7_smoke_mnist", "E7_E7_smoke_mnist_epochs1"]
    study = smoke["E7_smoke_mnist"]
    assert len(study.cells) == 9 and study.steps("mlp") == 2 * 512 // 64


def _plan(rest: dict[str, tuple[float | None, str]], speedup: float = 2.0) -> Plan:
    study = next(s for s in planned_studies("smoke", notebooks=[E3]))
    costs = [StepCost("mnist", "mlp", name, step_s=0.01, eval_s=1.0)
             for name in ("none", *study.config.regularizers)]
    return Plan("smoke", "cpu", 2, [study], costs, rest, speedup, calibration_s=3.0,
                notebooks=[E3, "theory/R1_product_representation.ipynb"])


def test_plan_arithmetic_is_the_documented_formula() -> None:
    plan = _plan({E3: (10.0, "recorded"), "theory/R1_product_representation.ipynb": (4.0, "quick")})
    study = plan.studies[0]
    cell = study.cells[0]
    assert plan.cell_seconds(study, cell) == pytest.approx(0.01 * study.steps("mlp") + 1.0)
    cells = sum(plan.cell_seconds(study, c) for c in study.cells)
    assert plan.study_seconds(study) == pytest.approx(cells / 2.0)
    assert plan.total_s == pytest.approx(3.0 + 10.0 + cells / 2.0 + 4.0)
    assert plan.fits(plan.total_s) and not plan.fits(plan.total_s - 0.1)
    text = plan.render(budget_s=plan.total_s - 0.1)
    assert "t_cell = s · epochs" in text and "does NOT fit" in text
    assert json.loads(json.dumps(plan.to_dict()))["total_s"] == pytest.approx(plan.total_s)


def test_a_notebook_of_unknown_time_never_fits() -> None:
    plan = _plan({E3: (10.0, "recorded")})
    assert plan.notebook_seconds()["theory/R1_product_representation.ipynb"] is None
    assert not plan.fits(1e9)
    assert "plus 1 notebook(s) of unknown time" in plan.render()


def test_calibration_measures_every_model_and_regulariser_here(tmp_path: Path) -> None:
    record = tmp_path / "results" / "quick" / "claims.json"
    record.parent.mkdir(parents=True)
    record.write_text(json.dumps({"provenance": {"device": "cpu"},
                                  "notebooks": [{"path": E3, "wall_s": 7.0}]}))
    plan = make_plan("smoke", device="cpu", jobs=2, steps=2, notebooks=[E3], out_root=tmp_path)
    assert {(c.model, c.regularizer) for c in plan.costs} == {
        ("mlp", "none"), ("mlp", "input_curvature"), ("mlp", "noise_augmentation")}
    assert all(c.step_s > 0 and c.eval_s > 0 for c in plan.costs)
    assert 0 < plan.speedup <= 2
    assert plan.rest[E3] == (7.0, "quick record on cpu (other sizes: a guess)")
    assert plan.fits(plan.total_s)


def test_plan_command_prints_saves_and_refuses_over_budget(tmp_path: Path, capsys) -> None:
    code = main(["reproduce", "--profile", "smoke", "--device", "cpu", "--plan", "--only", "R1",
                 "--budget", "1", "--out-root", str(tmp_path)])
    captured = capsys.readouterr()
    assert code == 3 and "the plan does NOT fit" in captured.out
    assert "--over-budget" in captured.err
    saved = json.loads((tmp_path / "results" / "smoke" / "plan.json").read_text())
    assert saved["budget_s"] == 1 and list(saved["notebooks"]) == [
        "theory/R1_product_representation.ipynb"]
    assert not (tmp_path / "results" / "smoke" / "claims.json").exists()   # nothing ran
    with pytest.raises(SystemExit):
        main(["reproduce", "--cell-jobs", "0", "--plan"])


def test_parts_keep_e7_with_the_studies_it_reuses_and_fit_the_budget() -> None:
    study = next(s for s in planned_studies("smoke", notebooks=[E3]))
    names = ["theory/R1_product_representation.ipynb", E3, "experiments/E4_cifar10.ipynb",
             "experiments/E5_entropy_instability.ipynb", "experiments/E7_robustness.ipynb"]
    rest = dict(zip(names, [(30.0, "r"), (20.0, "r"), (20.0, "r"), (50.0, "r"), (20.0, "r")]))
    plan = Plan("smoke", "cpu", 1, [study], [StepCost("mnist", "mlp", n, 0.0, 0.0) for n in
                                             ("none", *study.config.regularizers)],
                rest, 1.0, calibration_s=5.0, notebooks=names)
    parts = plan.parts(70.0)
    assert parts == [[names[0]], [E3, "experiments/E4_cifar10.ipynb",
                                  "experiments/E7_robustness.ipynb"], [names[3]]]
    assert "part 2:     65 s  --only E3_mnist E4_cifar10 E7_robustness" in plan.render(70.0)
    assert plan.parts(1e6) == [names]


def test_notebooks_at_once_are_scheduled_in_order_on_free_workers() -> None:
    plan = _plan({E3: (10.0, "r"), "theory/R1_product_representation.ipynb": (4.0, "r")})
    one = plan.total_s
    plan.notebook_jobs = 2
    assert plan.total_s == pytest.approx(3.0 + max(plan.notebook_seconds().values()))
    assert plan.total_s < one


def test_next_part_runs_what_fits_then_the_rest_then_nothing(tmp_path: Path, capsys) -> None:
    """A run in parts: each call runs the first part that fits among the notebooks without a
    result yet, and its report keeps the earlier parts' claims."""
    fixtures = Path(__file__).parent / "fixtures"
    record = tmp_path / "results" / "quick" / "claims.json"
    record.parent.mkdir(parents=True)
    record.write_text(json.dumps({"provenance": {"device": "cpu"}, "notebooks": [
        {"path": "verdicts.ipynb", "wall_s": 100.0}, {"path": "sleeps.ipynb", "wall_s": 100.0}]}))
    args = ["reproduce", str(fixtures / "verdicts.ipynb"), str(fixtures / "sleeps.ipynb"),
            "--profile", "smoke", "--device", "cpu", "--jobs", "1", "--next-part",
            "--budget", "150", "--out-root", str(tmp_path)]
    assert main(args) == 0
    assert "next part (1 of 2 still to run): verdicts.ipynb" in capsys.readouterr().out
    claims = json.loads((tmp_path / "results" / "smoke" / "claims.json").read_text())
    assert {c["notebook"] for c in claims["claims"]} == {"verdicts.ipynb"}
    assert main(args) == 0
    assert "next part (1 of 1 still to run): sleeps.ipynb" in capsys.readouterr().out
    claims = json.loads((tmp_path / "results" / "smoke" / "claims.json").read_text())
    assert {c["notebook"] for c in claims["claims"]} == {"verdicts.ipynb", "sleeps.ipynb"}
    assert main(args) == 0
    assert "nothing to run" in capsys.readouterr().out

import json
from pathlib import Path

import matplotlib.pyplot as plt
import pytest

from stabnb.notebook import setup

ROOT = Path(__file__).resolve().parents[1]


def test_setup_validates_parameters_by_name(tmp_path):
    with pytest.raises(ValueError, match=r"profile='fast' is unknown; allowed values: \('smoke', 'quick', 'paper'\)"):
        setup("x", profile="fast", seed=0, device="cpu")
    with pytest.raises(TypeError, match="seed='1' has type str; it must be int"):
        setup("x", profile="smoke", seed="1", device="cpu")
    with pytest.raises(TypeError, match="num_networks=2.5 has type float"):
        setup("x", profile="smoke", seed=0, device="cpu", num_networks=(2.5, int))
    with pytest.raises(ValueError, match="not a device name"):
        setup("x", profile="smoke", seed=0, device="tpu")


def test_claims_print_verdicts_and_are_written(tmp_path, capsys):
    out = tmp_path / "claims.json"
    nb = setup("demo", profile="smoke", seed=3, device="cpu", output_path=str(out),
               figures_dir=str(tmp_path / "figs"))
    assert nb.pick(smoke=1, quick=2, paper=3) == 1
    nb.claim("C1", "a statement", True, "held 3/3", {"held": 3})
    nb.claim("C2", "another", False, "held 1/3", {"held": 1})
    nb.claim("C3", "undecided", None, "n too small", {})
    assert capsys.readouterr().out.splitlines() == [
        "C1: held 3/3 -> REPRODUCED", "C2: held 1/3 -> NOT REPRODUCED", "C3: n too small -> INCONCLUSIVE"]
    nb.finish(extra_value=1.5)
    written = json.loads(out.read_text())
    assert [c["verdict"] for c in written["claims"]] == ["reproduced", "not reproduced", "inconclusive"]
    assert written["profile"] == "smoke" and written["seed"] == 3 and written["extra_value"] == 1.5
    with pytest.raises(ValueError, match="missing"):
        nb.pick(smoke=1)


def test_figures_are_saved_as_png_and_pdf(tmp_path):
    nb = setup("demo", profile="smoke", seed=0, device="cpu", figures_dir=str(tmp_path))
    fig, ax = plt.subplots()
    ax.plot([0, 1])
    path = nb.save_figure(fig, "line")
    assert path == tmp_path / "smoke" / "line.png"
    assert sorted(p.name for p in (tmp_path / "smoke").iterdir()) == ["line.pdf", "line.png"]


def test_skipped_notebook_says_why(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("STABNB_FIGURES_DIR", str(tmp_path / "env-figs"))
    out = tmp_path / "claims.json"
    nb = setup("E9", profile="smoke", seed=0, device="cpu", output_path=str(out))
    assert nb.figures_dir == tmp_path / "env-figs"
    nb.skip("no source has cifar100/train")
    nb.finish()
    assert capsys.readouterr().out == "E9: SKIPPED (no source has cifar100/train)\n"
    assert json.loads(out.read_text())["skipped"] == "no source has cifar100/train"


@pytest.mark.parametrize("parameters, message", [
    ({"profile": "fast"}, "profile='fast' is unknown; allowed values: ('smoke', 'quick', 'paper')"),
    ({"seed": "1"}, "parameter seed='1' has type str; it must be int."),
])
def test_a_real_notebook_refuses_bad_parameters_in_its_first_cells(tmp_path, parameters, message):
    """papermill injects a bad parameter: the notebook stops at setup(), naming it."""
    import papermill

    notebook = ROOT / "notebooks" / "theory" / "R3_entropy_sensitivity.ipynb"
    with pytest.raises(papermill.PapermillExecutionError) as error:
        papermill.execute_notebook(str(notebook), str(tmp_path / "out.ipynb"),
                                   parameters=parameters, progress_bar=False, cwd=str(notebook.parent))
    assert message in str(error.value)
    executed = json.loads((tmp_path / "out.ipynb").read_text())
    code = [c for c in executed["cells"] if c["cell_type"] == "code"]
    failed = next(i for i, c in enumerate(code) if any(o.get("output_type") == "error"
                                                       for o in c.get("outputs", [])))
    assert failed <= 3, "the bad parameter must fail at setup, before any work"


def test_figures_default_to_a_scratch_folder(monkeypatch):
    """A notebook run by hand (no reproduce command) writes no tracked file."""
    monkeypatch.delenv("STABNB_FIGURES_DIR", raising=False)
    nb = setup("demo", profile="smoke", seed=0, device="cpu")
    assert nb.figures_dir.parts[-3:] == ("runs", "scratch", "figures")


def test_int_is_accepted_where_a_float_is_expected_and_pick_prefers_the_value():
    nb = setup("demo", profile="quick", seed=0, device="cpu", sigma=(1, float))
    assert nb.pick(None, smoke=1, quick=3, paper=5) == 3
    assert nb.pick(7, smoke=1, quick=3, paper=5) == 7
    with pytest.raises(TypeError, match="parameter flag=1 has type int"):
        setup("demo", profile="quick", seed=0, device="cpu", flag=(1, bool))

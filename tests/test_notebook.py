import json

import matplotlib.pyplot as plt
import pytest

from stabnb.notebook import setup


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

"""The reproduce command on tiny notebooks (tests/fixtures): report, skips, resume, errors.

Every run writes under a temporary out-root; kernels start in a few seconds each, so the
tests use few notebooks and two jobs.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import nbformat
import pytest

from stabnb.__main__ import main
from stabnb.io import TEMP_NAME
from stabnb.reproduce import NOTEBOOKS, reproduce
from stabnb.reproduce import run as run_module

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(autouse=True)
def fixed_package_digest(monkeypatch):
    """Other work edits stabnb/ while these tests run; pin the source hash they would see."""
    monkeypatch.setattr(run_module, "library_digest", lambda path: "stabnb source")


@pytest.fixture
def nbs(tmp_path: Path) -> Path:
    """A private copy of the fixture notebooks (tests edit them)."""
    return Path(shutil.copytree(FIXTURES, tmp_path / "nbs"))


def statuses(result) -> dict[str, str]:
    return {run.path: run.status for run in result.notebooks}


def claims_of(out: Path) -> list[dict]:
    return json.loads((out / "results/smoke/claims.json").read_text())["claims"]


def temp_files(out: Path) -> list[Path]:
    """Temporary files left under ``out`` (the lock file ``.stabnb.lock`` stays, by design)."""
    return [p for p in out.rglob("*") if TEMP_NAME.fullmatch(p.name)]


def edit_source(path: Path, old: str, new: str) -> None:
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        cell.source = cell.source.replace(old, new)
    nbformat.write(nb, path)


def test_run_reports_skips_unchanged_resumes_and_parallel_matches_serial(
        nbs: Path, tmp_path: Path, capfd) -> None:
    out = tmp_path / "out"
    paths = [nbs / "verdicts.ipynb", nbs / "env.ipynb"]
    first = reproduce("smoke", device="cpu", jobs=2, notebooks=paths, out_root=out)
    lines = capfd.readouterr().out.splitlines()

    # Both notebooks started before either finished.
    first_done = next(i for i, line in enumerate(lines) if "] ok" in line)
    assert sum("] start" in line for line in lines[:first_done]) == 2
    # A claim that does not reproduce is a result: exit code 0.
    assert first.exit_code == 0 and statuses(first) == {"verdicts.ipynb": "ok", "env.ipynb": "ok"}
    parallel_claims = claims_of(out)
    verdicts = {c["name"]: c["verdict"] for c in parallel_claims}
    assert verdicts == {"bounded": "reproduced", "large": "not reproduced",
                        "headless": "inconclusive"}
    env = next(c for c in parallel_claims if c["name"] == "headless")["numbers"]
    # Two kernels side by side share the cores instead of oversubscribing them.
    threads = os.environ.get("OMP_NUM_THREADS") or str(max(1, (os.cpu_count() or 1) // 2))
    assert env == {"in_notebook_folder": True, "progress": "0", "backend": "module://matplotlib_inline.backend_inline",
                   "threads": threads, "profile": "smoke", "device": "cpu"}
    report = (out / "results/smoke/REPORT.md").read_text()
    for text in ("**large**: NOT REPRODUCED", "| torch |", "| captum |", "| commit |",
                 "| verdicts.ipynb | ok |", "| sum | "):
        assert text in report
    assert (out / "runs/smoke/verdicts.ipynb").is_file() and (out / "runs/smoke/env.ipynb").is_file()
    assert temp_files(out) == []

    # Unchanged (outputs and metadata edits do not count): nothing reruns, claims kept.
    nb = nbformat.read(nbs / "verdicts.ipynb", as_version=4)
    nb.cells[2].execution_count = 7
    nb.metadata["edited"] = True
    nbformat.write(nb, nbs / "verdicts.ipynb")
    second = reproduce("smoke", device="cpu", jobs=2, notebooks=paths, out_root=out)
    assert set(statuses(second).values()) == {"unchanged"}
    assert claims_of(out) == parallel_claims

    # A cell's source edited: that notebook alone reruns (serially here).
    edit_source(nbs / "verdicts.ipynb", "nb.finish()", "nb.finish()  # edited")
    third = reproduce("smoke", device="cpu", jobs=1, notebooks=paths, out_root=out)
    assert statuses(third) == {"verdicts.ipynb": "ok", "env.ipynb": "unchanged"}

    # Resume: a deleted result reruns only its notebook.
    (out / "results/smoke/env.json").unlink()
    fourth = reproduce("smoke", device="cpu", jobs=1, notebooks=paths, out_root=out)
    assert statuses(fourth) == {"verdicts.ipynb": "unchanged", "env.ipynb": "ok"}

    # Both notebooks have now rerun one at a time: the same claims as the parallel run, except
    # the thread share, which only kernels run side by side get.
    serial_claims = claims_of(out)
    next(c for c in serial_claims if c["name"] == "headless")["numbers"]["threads"] = threads
    assert serial_claims == parallel_claims
    assert temp_files(out) == []


def test_failing_notebook_exits_nonzero_while_others_complete(nbs: Path, tmp_path: Path,
                                                              capsys) -> None:
    out = tmp_path / "out"
    argv = ["reproduce", str(nbs / "verdicts.ipynb"), str(nbs / "fails.ipynb"),
            str(nbs / "nodata.ipynb"), "--profile", "smoke", "--device", "cpu", "--jobs", "2",
            "--out-root", str(out)]
    assert main(argv) == 1
    assert "ERROR: fails.ipynb: cell [3]: RuntimeError: fixture failure" in capsys.readouterr().out
    data = json.loads((out / "results/smoke/claims.json").read_text())
    assert {nb["path"]: nb["status"] for nb in data["notebooks"]} == {
        "verdicts.ipynb": "ok", "fails.ipynb": "error", "nodata.ipynb": "data missing"}
    assert len(data["claims"]) == 2
    report = (out / "results/smoke/REPORT.md").read_text()
    # The whole error as a block under the notebook's line, not in a table cell.
    assert ("- **fails.ipynb**: error (executed notebook: `runs/smoke/fails.ipynb`):\n\n"
            "  ```\n  cell [3]: RuntimeError: fixture failure") in report
    assert "DataSourceError: no copy of the fixture data set" in report
    executed = nbformat.read(out / "runs/smoke/fails.ipynb", as_version=4)
    assert any(o.get("ename") == "RuntimeError" for c in executed.cells for o in c.get("outputs", []))

    # The next run reruns only the failed notebooks.
    edit_source(nbs / "fails.ipynb", 'raise RuntimeError("fixture failure")', "x = 1")
    assert main(argv[:3] + argv[4:]) == 0
    data = json.loads((out / "results/smoke/claims.json").read_text())
    assert [nb["status"] for nb in data["notebooks"]] == ["unchanged", "ok"]
    assert temp_files(out) == []


def test_default_list_skips_notebooks_not_written_yet(nbs: Path, tmp_path: Path,
                                                      monkeypatch) -> None:
    root, out = tmp_path / "notebooks", tmp_path / "out"
    (root / "theory").mkdir(parents=True)
    shutil.copy(nbs / "verdicts.ipynb", root / "theory/R1_product_representation.ipynb")

    first = reproduce("smoke", device="cpu", only=["R1", "E6"], out_root=out, notebooks_dir=root)
    assert statuses(first) == {"theory/R1_product_representation.ipynb": "ok",
                               "experiments/E6_cifar100.ipynb": "not on disk"}
    assert first.exit_code == 0
    assert "**experiments/E6_cifar100.ipynb**: not on disk" in first.report_path.read_text()

    everything = reproduce("smoke", device="cpu", out_root=out, notebooks_dir=root)
    assert [run.path for run in everything.notebooks] == list(NOTEBOOKS)
    assert statuses(everything)["theory/R1_product_representation.ipynb"] == "unchanged"
    assert sum(s == "not on disk" for s in statuses(everything).values()) == len(NOTEBOOKS) - 1

    # An edit of the stabnb sources reruns the notebooks.
    monkeypatch.setattr(run_module, "library_digest", lambda path: "stabnb source, edited")
    rerun = reproduce("smoke", device="cpu", only=["R1"], out_root=out, notebooks_dir=root)
    assert statuses(rerun) == {"theory/R1_product_representation.ipynb": "ok"}

    # Notebooks outside --only keep their last results in the report.
    other = reproduce("smoke", device="cpu", only=["E6"], out_root=out, notebooks_dir=root)
    r1 = other.notebooks[0]
    assert r1.status == "not selected" and len(r1.claims) == 2 and "last state: ok" in r1.note
    assert (out / "results/smoke/R1_product_representation.json").is_file()


@pytest.mark.parametrize("args, message", [
    (["--profile", "fast"], "invalid choice: 'fast'"),
    (["--device", "tpu"], "device='tpu' is not a device name"),
    (["no/such/notebook.ipynb"], "do not exist"),
    (["--profile", "paper", "--device", "cpu"], "--allow-cpu-paper"),
    (["--only", "Z9"], "--only 'Z9' matches no notebook"),
    (["--jobs", "0"], "jobs=0 must be at least 1"),
])
def test_bad_input_is_a_clear_usage_error(args, message, tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["reproduce", *args, "--out-root", str(tmp_path)])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "results").exists()


def test_notebook_named_like_a_report_file_is_refused(nbs: Path, tmp_path: Path) -> None:
    shutil.copy(nbs / "env.ipynb", nbs / "claims.ipynb")
    with pytest.raises(ValueError, match=r"\['claims'\] would overwrite"):
        reproduce("smoke", device="cpu", notebooks=[nbs / "claims.ipynb"], out_root=tmp_path)


def test_unknown_parameter_is_refused_before_anything_runs(nbs: Path, tmp_path: Path,
                                                           capsys) -> None:
    with pytest.raises(ValueError, match=r"\['num_inputs'\] are not declared by env.ipynb; "
                                         r"its parameters are: profile, seed, device, output_path"):
        reproduce("smoke", device="cpu", notebooks=[nbs / "env.ipynb"], out_root=tmp_path,
                  parameters={"num_inputs": 2})
    with pytest.raises(ValueError, match=r"\['seed'\] are set by reproduce itself"):
        reproduce("smoke", device="cpu", notebooks=[nbs / "env.ipynb"], out_root=tmp_path,
                  parameters={"seed": 1})
    with pytest.raises(SystemExit) as exit_info:
        main(["reproduce", str(nbs / "env.ipynb"), "--device", "cpu", "-p", "num_inputs", "2",
              "--out-root", str(tmp_path)])
    assert exit_info.value.code == 2 and "not declared by env.ipynb" in capsys.readouterr().err
    assert not (tmp_path / "results").exists()


def test_parameter_values_are_read_like_papermill() -> None:
    from stabnb.__main__ import parse_value
    assert [parse_value(v) for v in ("2", "1e-3", "(16, 64)", "None", "true", "relu")] == \
        [2, 1e-3, (16, 64), None, True, "relu"]

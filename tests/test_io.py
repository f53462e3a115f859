from pathlib import Path

import pytest

from stabnb.io import atomic_open, project_root, read_json, write_json


def test_json_round_trip_and_no_temporary_files(tmp_path):
    target = tmp_path / "sub" / "out.json"
    write_json(target, {"b": 1, "a": [1.5, "x"]})
    assert read_json(target) == {"a": [1.5, "x"], "b": 1}
    assert [p.name for p in target.parent.iterdir()] == ["out.json"]


def test_interrupted_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "report.md"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_open(target) as handle:
            handle.write("half of the new")
            raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["report.md"]


def test_unwritable_folder_is_explained(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(OSError, match="cannot write to"):
        write_json(blocker / "x.json", {})


def test_project_root_is_found_from_inside(tmp_path):
    root = project_root()
    assert root is not None and (root / "stabnb").is_dir()
    assert project_root(root / "stabnb") == root
    assert project_root(tmp_path) is None


def _copy_package(tmp_path):
    import shutil

    import stabnb
    target = tmp_path / "stabnb"
    shutil.copytree(Path(stabnb.__file__).parent, target,
                    ignore=shutil.ignore_patterns("__pycache__"))
    return target


def test_source_digest_ignores_prose_and_unrelated_modules(tmp_path, monkeypatch):
    """The cache key of a study cell: docstring, comment and plotting edits keep it; a change to
    code the cell runs (train, regularizers) makes a new one."""
    import stabnb.io as io_module
    package = _copy_package(tmp_path)
    monkeypatch.setattr(io_module, "__file__", str(package / "io.py"))
    before = io_module.source_digest(["stabnb.study"])

    train = package / "train.py"
    text = train.read_text()
    train.write_text(text.replace('"""', '"""An edited docstring. ', 1) + "\n# a comment\n")
    (package / "plotting" / "experiments.py").write_text("def anything():\n    return 1\n")
    assert io_module.source_digest(["stabnb.study"]) == before

    regularizers = package / "regularizers" / "noise.py"
    regularizers.write_text(regularizers.read_text() + "\nEXTRA = 1\n")
    assert io_module.source_digest(["stabnb.study"]) != before


def test_source_digest_follows_imports():
    from stabnb.io import _imported_modules
    found = _imported_modules(["stabnb.study"], Path(__file__).resolve().parents[1] / "stabnb")
    assert {"stabnb.train", "stabnb.regularizers", "stabnb.attribution"} <= found
    assert not found & {"stabnb.plotting", "stabnb.notebook", "stabnb.reproduce"}
    # a package is followed through its __init__'s re-exports into the modules that hold the code
    assert {"stabnb.operators.ntk", "stabnb.spectra.krylov", "stabnb.data.sources",
            "stabnb.regularizers.curvature", "stabnb.attribution.attack"} <= found


def test_library_digest_covers_the_modules_of_a_subpackage(tmp_path, monkeypatch):
    """A notebook that imports ``stabnb.theory.kernels`` is keyed by the modules of that package:
    a code edit in one of them moves its digest, a docstring edit does not."""
    import nbformat

    import stabnb.io as io_module
    from stabnb.reproduce.manifest import library_digest
    package = _copy_package(tmp_path)
    monkeypatch.setattr(io_module, "__file__", str(package / "io.py"))
    notebook = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("import stabnb.theory.kernels as kernels")])
    path = tmp_path / "nb.ipynb"
    nbformat.write(notebook, path)
    before = library_digest(path)

    dynamics = package / "theory" / "kernels" / "dynamics.py"
    text = dynamics.read_text()
    dynamics.write_text(text.replace('"""', '"""An edited docstring. ', 1))
    assert library_digest(path) == before
    dynamics.write_text(text + "\nEXTRA = 1\n")
    assert library_digest(path) != before


def test_to_jsonable_and_write_json_refuse_nan_nowhere(tmp_path):
    import math

    import torch

    from stabnb.io import to_jsonable, write_json
    value = {"t": torch.tensor([1.0, math.nan]), "f": math.inf, "p": tmp_path, "n": (1, 2)}
    assert to_jsonable(value) == {"t": [1.0, None], "f": None, "p": str(tmp_path), "n": [1, 2]}
    write_json(tmp_path / "x.json", value)
    assert "NaN" not in (tmp_path / "x.json").read_text()
    with pytest.raises(TypeError, match="cannot write object"):
        to_jsonable(object())

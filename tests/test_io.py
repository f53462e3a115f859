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

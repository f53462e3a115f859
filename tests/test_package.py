"""The flat API: every exported name exists, and none hides a submodule (``stabnb.train``)."""

import importlib
import pkgutil
import types

import stabnb


def test_exports_exist_and_submodules_stay_reachable():
    assert all(hasattr(stabnb, name) for name in stabnb.__all__)
    for info in pkgutil.iter_modules(stabnb.__path__):
        if info.name == "__main__":
            continue
        importlib.import_module(f"stabnb.{info.name}")
        assert isinstance(getattr(stabnb, info.name), types.ModuleType), info.name


def test_every_subpackage_is_installed():
    """pyproject lists packages explicitly: a subpackage missing there would not be installed."""
    import tomllib
    from pathlib import Path

    root = Path(stabnb.__file__).resolve().parent
    found = {".".join(("stabnb", *init.parent.relative_to(root).parts))
             for init in root.rglob("__init__.py")}
    listed = tomllib.loads((root.parent / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert set(listed["packages"]) == found

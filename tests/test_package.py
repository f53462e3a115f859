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

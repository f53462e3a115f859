"""The study notebooks at the smoke profile give the claims of tests/reference/smoke_claims.json."""

from pathlib import Path

import pytest

from stabnb.io import read_json
from stabnb.reproduce.reference import STUDY_NOTEBOOKS, smoke_claims

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "tests" / "reference" / "smoke_claims.json"


@pytest.mark.parametrize("key", STUDY_NOTEBOOKS)
def test_study_notebook_claims_match_the_smoke_reference(key):
    reference = read_json(REFERENCE)
    assert key in reference, f"{key} has no smoke reference; run `make smoke-reference`."
    assert smoke_claims(key, ROOT / "notebooks") == reference[key], (
        f"{key}: claims at smoke differ from {REFERENCE.name}; if the change is deliberate, run "
        "`make smoke-reference` and say in the commit which verdicts moved.")


def test_nbval_skips_exactly_the_study_notebooks():
    import fnmatch
    import tomllib

    options = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    pattern = options["addopts"].split("--ignore-glob=")[1].split()[0]
    found = sorted(p.relative_to(ROOT / "notebooks").as_posix()
                   for p in (ROOT / "notebooks").rglob("*.ipynb")
                   if fnmatch.fnmatch(p.relative_to(ROOT).as_posix(), pattern))
    assert found == sorted(STUDY_NOTEBOOKS)

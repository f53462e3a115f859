"""The README's results table is generated from results/quick/claims.json, and stays so."""

from pathlib import Path

import pytest

from stabnb.io import read_json
from stabnb.reproduce.render import README_MARKERS, readme_with_results, results_table

ROOT = Path(__file__).resolve().parents[1]


def test_readme_results_table_matches_committed_claims():
    readme = (ROOT / "README.md").read_text()
    claims = read_json(ROOT / "results" / "quick" / "claims.json")["claims"]
    assert readme_with_results(readme, claims) == readme, (
        "README's results table differs from results/quick/claims.json; run `make readme`.")


def test_results_table_counts_claims_apart_from_identities():
    claims = [{"notebook": "theory/R1.ipynb", "kind": "identity", "verdict": "verified"},
              {"notebook": "theory/R1.ipynb", "kind": "claim", "verdict": "reproduced"},
              {"notebook": "E3.ipynb", "verdict": "inconclusive"}]
    table = results_table(claims).splitlines()
    assert table[2] == "| R1 | 1 | 1 | 0 | 0 | 1/1 |"
    assert table[3] == "| E3 | 1 | 0 | 0 | 1 | – |"
    assert table[4] == "| **all** | **2** | **1** | **0** | **1** | **1/1** |"


def test_readme_without_markers_is_refused():
    with pytest.raises(ValueError, match="no results block"):
        readme_with_results("# README\n", [])
    start, end = README_MARKERS
    assert readme_with_results(f"a\n{start}\nold\n{end}\nb", []).startswith(f"a\n{start}\n| notebook")

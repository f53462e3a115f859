"""REPORT.md: the summary, provenance, the notebooks' states and every claim with its numbers."""

from __future__ import annotations

import os
import re
from collections import Counter
from pathlib import Path
from typing import Any

from ..io import read_json, write_text
from .records import FAILED, ReproduceResult

__all__ = ["README_MARKERS", "readme_with_results", "render_report", "results_table",
           "update_readme", "verdict_counts"]


def _kind(claim: dict[str, Any]) -> str:
    return claim.get("kind", "claim")


def verdict_counts(claims: tuple[dict[str, Any], ...]) -> str:
    """``"3 claim(s): 2 reproduced, 1 inconclusive; 2 identities: 2 verified"``."""
    if not claims:
        return "no claims"
    parts = []
    for kind, label in (("claim", "claim(s)"), ("identity", "identities")):
        mine = [c for c in claims if _kind(c) == kind]
        if mine:
            counts = Counter(c.get("verdict", "?") for c in mine)
            parts.append(f"{len(mine)} {label}: "
                         + ", ".join(f"{n} {v}" for v, n in sorted(counts.items())))
    return "; ".join(parts)


def _flatten(numbers: Any, prefix: str = "") -> list[tuple[str, str]]:
    """Scalar numbers as ``(dotted.key, text)`` rows; lists of numbers summarised, lists of
    records counted (the full numbers stay in claims.json)."""
    if isinstance(numbers, dict):
        rows = []
        for key, value in numbers.items():
            rows += _flatten(value, f"{prefix}{key}.")
        return rows
    key = prefix.rstrip(".")
    if isinstance(numbers, (list, tuple)):
        if all(isinstance(v, (int, float)) or v is None for v in numbers):
            return [(key, _format_number(list(numbers)))]
        return [(key, f"{len(numbers)} records (in claims.json)")]
    return [(key, _format_number(numbers))]


def _format_number(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        shown = ", ".join(_format_number(v) for v in value[:8])
        return f"[{shown}{', ...' if len(value) > 8 else ''}]" + (
            f" ({len(value)} items)" if len(value) > 8 else "")
    return "–" if value is None else str(value)


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def results_table(claims: list[dict[str, Any]]) -> str:
    """The README's results table: per notebook, its claims by verdict and its identities.

    Generated from ``results/<profile>/claims.json`` (a test keeps the README's copy equal).
    """
    lines = ["| notebook | claims | reproduced | not reproduced | inconclusive | identities verified |",
             "|---|---|---|---|---|---|"]
    order = list(dict.fromkeys(c["notebook"] for c in claims))
    totals = Counter()
    for notebook in order:
        mine = [c for c in claims if c["notebook"] == notebook]
        found = [c for c in mine if _kind(c) == "claim"]
        verdicts = Counter(c["verdict"] for c in found)
        identities = [c for c in mine if _kind(c) == "identity"]
        verified = sum(c["verdict"] == "verified" for c in identities)
        row = (len(found), verdicts["reproduced"], verdicts["not reproduced"],
               verdicts["inconclusive"])
        totals.update(dict(zip(("n", "r", "nr", "i"), row)))
        totals.update(identities=len(identities), verified=verified)
        ids = f"{verified}/{len(identities)}" if identities else "–"
        lines.append(f"| {Path(notebook).stem} | " + " | ".join(map(str, row)) + f" | {ids} |")
    lines.append(f"| **all** | **{totals['n']}** | **{totals['r']}** | **{totals['nr']}** | "
                 f"**{totals['i']}** | **{totals['verified']}/{totals['identities']}** |")
    return "\n".join(lines) + "\n"


def _claim_lines(claim: dict[str, Any]) -> list[str]:
    tag = ", reconstructed" if claim.get("reconstructed") else ""
    lines = [f"**{claim.get('name')}**: {str(claim.get('verdict', '?')).upper()}{tag}", "",
             f"> {claim.get('statement', '')}", ""]
    if claim.get("summary"):
        lines += [f"{claim['summary']}", ""]
    rows = _flatten(claim.get("numbers") or {})
    if rows:
        lines += ["| number | value |", "|---|---|"]
        lines += [f"| {_cell(k)} | {_cell(v)} |" for k, v in rows]
        lines.append("")
    return lines


def render_report(result: ReproduceResult) -> str:
    """REPORT.md: summary (claims counted apart from identities), the results table,
    provenance, the notebooks' states, then every claim and every identity with its numbers."""
    prov = result.provenance
    every = [{"notebook": run.path, **claim} for run in result.notebooks for claim in run.claims]
    claims = [c for c in every if _kind(c) == "claim"]
    identities = [c for c in every if _kind(c) == "identity"]
    states = Counter(run.status for run in result.notebooks)

    def counts(items: list[dict[str, Any]]) -> str:
        found = Counter(c.get("verdict", "?") for c in items)
        return ", ".join(f"{n} {v}" for v, n in sorted(found.items())) or "none"

    lines = [f"# Reproduction report: profile `{result.profile}`", "",
             "Generated by `python -m stabnb reproduce`. Definitions marked *reconstructed* are "
             "our reconstruction of the paper's (arXiv:2602.01136; `docs/reconstruction.md`); "
             "no number here is the paper's own.", ""]
    if result.interrupted:
        lines += ["**This run was interrupted; rerun the command to finish it.**", ""]
    lines += ["## Summary", "",
              f"- Claims (statements that could fail on real networks): {len(claims)} "
              f"({counts(claims)})",
              f"- Implementation identities (true by construction; they test the code, not the "
              f"paper): {len(identities)} ({counts(identities)})",
              f"- Notebooks: {', '.join(f'{n} {s}' for s, n in sorted(states.items()))}", "",
              results_table(every) if every else "No claims were recorded.", "",
              "## Provenance", "", "| | |", "|---|---|"]
    dirty = {True: " (uncommitted changes)", False: "", None: " (state unknown)"}[prov["dirty"]]
    commit = prov["commit"] or "none (not a git checkout, or no commit yet)"
    for label, value in (("commit", f"{commit}{dirty}"), ("profile", prov["profile"]),
                         ("seed", prov["seed"]),
                         ("device", f"{prov['device']} ({prov['device_name']})"),
                         ("jobs", prov["jobs"]), ("date (UTC)", prov["date"]),
                         ("wall time of this run", f"{prov['wall_s']} s"),
                         ("python", prov["python"]), ("torch", prov["torch"]),
                         ("captum", prov["captum"]), ("papermill", prov["papermill"]),
                         ("stabnb", prov["stabnb"]), ("platform", prov["platform"]),
                         ("CPU count", prov["cpu_count"])):
        lines.append(f"| {label} | {_cell(value)} |")
    lines += ["", "## Notebooks", "",
              "| notebook | status | wall time (s) | finished (UTC) | commit | results | note |",
              "|---|---|---|---|---|---|---|"]
    for run in result.notebooks:
        wall = "-" if run.wall_s is None else f"{run.wall_s:.1f}"
        commit = (run.commit or "-")[:12]
        note = "see below" if run.error else run.note
        lines.append(f"| {run.path} | {run.status} | {wall} | {run.finished_at or '-'} | "
                     f"{commit} | {verdict_counts(run.claims)} | {_cell(note)} |")
    problems = [run for run in result.notebooks if run.status in (*FAILED, "not on disk")
                or run.note.startswith("skipped by")]
    if problems:
        lines += ["", "## Skipped and failed notebooks", ""]
        for run in problems:
            where = f" (executed notebook: `{run.executed}`)" if run.executed else ""
            text = run.error or run.note
            # The whole message as a block; its fence outruns any backticks inside it.
            fence = "`" * max(3, 1 + max(map(len, re.findall("`+", text)), default=0))
            lines += [f"- **{run.path}**: {run.status}{where}:", "", f"  {fence}",
                      *("  " + line for line in text.splitlines()), f"  {fence}"]
    for title, items in (("Claims", claims), ("Implementation identities", identities)):
        lines += ["", f"## {title}", ""]
        if title != "Claims":
            lines += ["True by construction: each checks that the code computes what it says, "
                      "to round-off. They are not evidence for or against the paper.", ""]
        if not items:
            lines.append("None recorded.")
        for notebook in dict.fromkeys(c["notebook"] for c in items):
            lines += [f"### {notebook}", ""]
            for claim in (c for c in items if c["notebook"] == notebook):
                lines += _claim_lines(claim)
    return "\n".join(lines).rstrip() + "\n"


README_MARKERS = ("<!-- results-table:start (generated: make readme) -->",
                  "<!-- results-table:end -->")


def readme_with_results(readme: str, claims: list[dict[str, Any]]) -> str:
    """``readme`` with the text between :data:`README_MARKERS` replaced by :func:`results_table`.

    Raises:
        ValueError: the markers are missing or out of order.
    """
    start, end = README_MARKERS
    if not 0 <= readme.find(start) < readme.find(end):
        raise ValueError(f"README has no results block; put the lines {start!r} and {end!r} "
                         "where the table belongs.")
    head, rest = readme.split(start, 1)
    tail = rest.split(end, 1)[1]
    return f"{head}{start}\n{results_table(claims)}{end}{tail}"


def update_readme(readme_path: str | os.PathLike = "README.md",
                  claims_path: str | os.PathLike = "results/quick/claims.json") -> None:
    """Rewrite the README's results table from a reproduce run's ``claims.json`` (``make readme``)."""
    claims = read_json(claims_path)["claims"]
    text = Path(readme_path).read_text()
    write_text(readme_path, readme_with_results(text, claims))

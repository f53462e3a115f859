"""Command line: ``python -m stabnb reproduce`` (also the ``stabnb`` console script).

Exit codes: 0 when every notebook ran (whether or not its claims reproduced), 1 when a
notebook errored, 2 for bad arguments, 130 when interrupted.
"""

from __future__ import annotations

import argparse
import ast
from collections.abc import Sequence
from typing import Any

import yaml

from .notebook import PROFILES
from .reproduce import reproduce


def _parser() -> tuple[argparse.ArgumentParser, argparse.ArgumentParser]:
    """The top-level parser and its ``reproduce`` subcommand's."""
    parser = argparse.ArgumentParser(prog="stabnb", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = commands.add_parser(
        "reproduce", help="run the notebooks headless and write results/<profile>/REPORT.md",
        description="Run the notebooks with papermill at a profile, skip those unchanged since "
                    "their last successful run, and write results/<profile>/claims.json and "
                    "REPORT.md. Exit code 1 when a notebook errors; a claim that does not "
                    "reproduce is a result, not an error.")
    run.add_argument("notebooks", nargs="*", metavar="NOTEBOOK",
                     help="notebook files to run instead of the default list (each must exist)")
    run.add_argument("--profile", default="quick", choices=PROFILES,
                     help="smoke: seconds (tests); quick: minutes on a CPU (default); "
                          "paper: full size, on a GPU")
    run.add_argument("--device", default="auto",
                     help="auto (default: CUDA when available), cpu, cuda or cuda:N")
    run.add_argument("--jobs", type=int, default=None,
                     help="notebooks run at once (default: min(2, cpu count); 1 on a GPU)")
    run.add_argument("--only", nargs="+", metavar="PATTERN",
                     help="run only notebooks whose path matches (glob, or substring: E3, theory/)")
    run.add_argument("--seed", type=int, default=0, help="the seed parameter (default: 0)")
    run.add_argument("-p", "--parameter", nargs=2, action="append", default=[],
                     metavar=("NAME", "VALUE"), dest="parameters",
                     help="inject a notebook parameter into every selected notebook, e.g. "
                          "-p num_inputs 2 (VALUE read as a Python literal, else YAML); a name "
                          "a selected notebook does not declare is refused")
    run.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                     type=_name_value, dest="parameters", help="the same, as NAME=VALUE")
    run.add_argument("--force", action="store_true",
                     help="rerun notebooks even when unchanged since their last successful run")
    run.add_argument("--allow-cpu-paper", action="store_true",
                     help="allow --profile paper without a GPU (takes hours)")
    run.add_argument("--out-root", default=".",
                     help="folder receiving runs/ and results/ (default: the working folder)")
    return parser, run


def _name_value(text: str) -> tuple[str, str]:
    """``NAME=VALUE`` split at the first ``=``."""
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME=VALUE (e.g. num_inputs=2).")
    return name, value


def parse_value(text: str) -> Any:
    """A parameter value as papermill's CLI reads one: a Python literal (``2``, ``1e-3``,
    ``(16, 64)``, ``None``), else YAML (``true``, ``relu``), else the text itself."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        try:
            return yaml.safe_load(text)
        except yaml.YAMLError:
            return text


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` (default: ``sys.argv[1:]``), run the command, return its exit code."""
    parser, reproduce_parser = _parser()
    args = parser.parse_args(argv)
    try:
        result = reproduce(args.profile, device=args.device, jobs=args.jobs,
                           notebooks=args.notebooks or None, only=args.only, force=args.force,
                           allow_cpu_paper=args.allow_cpu_paper, seed=args.seed,
                           out_root=args.out_root,
                           parameters={name: parse_value(value) for name, value in args.parameters})
    except ValueError as err:
        reproduce_parser.error(str(err))
    print(f"report: {result.report_path}")
    for run in result.failed:
        print(f"{run.status.upper()}: {run.path}: {run.error or run.note}")
    return result.exit_code


if __name__ == "__main__":
    raise SystemExit(main())

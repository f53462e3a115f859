"""Command line: ``python -m stabnb reproduce`` and ``python -m stabnb study`` (also the
``stabnb`` console script).

Exit codes: 0 when every notebook ran (whether or not its claims reproduced) or every study
cell finished, 1 when a notebook errored or cells failed, 2 for bad arguments, an unwritable
--out-root or one another run holds, 130 / 143 when stopped by SIGINT / SIGTERM.
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from .notebook import PROFILES
from .reproduce import reproduce
from .study import (
    EXECUTORS,
    StudyConfig,
    StudyFailed,
    check_folder,
    open_executor,
    run_study,
)


def _parser() -> tuple[argparse.ArgumentParser, argparse.ArgumentParser, argparse.ArgumentParser]:
    """The top-level parser and its ``reproduce`` and ``study`` subcommands'."""
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
                     help="rerun notebooks even when unchanged since their last successful run "
                          "(finished study cells are reused; see --retrain)")
    run.add_argument("--retrain", action="store_true",
                     help="rerun the notebooks and retrain their studies' finished cells too "
                          "(STABNB_RETRAIN for the kernels)")
    run.add_argument("--wait", action="store_true",
                     help="when another run uses the same --out-root, wait for it to finish "
                          "(default: refuse at once, naming it)")
    run.add_argument("--allow-cpu-paper", action="store_true",
                     help="allow --profile paper without a GPU (takes hours)")
    run.add_argument("--out-root", default=".",
                     help="folder receiving results/, runs/ (executed notebooks, and study "
                          "folders in runs/work) and figures/ (default: the working folder)")
    study = commands.add_parser(
        "study", help="run a study's grid (TOML config) here, on Dask or on Slurm",
        description="Run every unfinished cell of the study in CONFIG.toml (the layout of "
                    "stabnb.study.StudyConfig.to_dict) into --out; finished cells are kept, "
                    "so a rerun (from any machine seeing the folder) resumes. Exit code 1 when "
                    "cells failed after their retries.")
    study.add_argument("config", metavar="CONFIG.toml", help="the study config")
    study.add_argument("--executor", default="local", choices=EXECUTORS,
                       help="local processes (default), a Dask cluster, or Slurm (submitit)")
    study.add_argument("--scheduler", metavar="ADDRESS",
                       help="the Dask scheduler, e.g. tcp://host:8786 (--executor dask)")
    study.add_argument("--partition", nargs="+", default=[], metavar="NAME",
                       help="Slurm partition(s) (--executor slurm)")
    study.add_argument("--out", metavar="DIR",
                       help="the study folder, shared by every worker (default: "
                            "runs/studies/<config file name>)")
    study.add_argument("--jobs", type=int, default=None,
                       help="cells at once: local processes (default 1) or Slurm jobs")
    study.add_argument("--device", default="auto",
                       help="where each cell runs: auto (default), cpu, cuda or cuda:N")
    study.add_argument("--retries", type=int, default=2,
                       help="resubmissions of a cell whose worker died (default: 2)")
    return parser, run, study


def _study(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """The ``study`` command: validate everything, then run; nothing is written before."""
    try:
        config = StudyConfig.from_toml(args.config)
        out = Path(args.out or Path("runs") / "studies" / Path(args.config).stem)
        check_folder(config, out)
        if args.jobs is not None and args.jobs < 1:
            raise ValueError(f"--jobs {args.jobs} must be ≥ 1.")
        with open_executor(args.executor, folder=out, scheduler=args.scheduler,
                           partitions=args.partition, jobs=args.jobs) as executor:
            study = run_study(config, out, device=args.device, executor=executor,
                              jobs=args.jobs or 1, retries=args.retries)
    except (ValueError, FileNotFoundError) as err:
        parser.error(str(err))
    except StudyFailed as err:
        print(f"FAILED: {err}")
        return 1
    print(f"{len(study.records)} cells in {out / 'results.csv'}"
          + (f" ({len(study.retried)} resubmitted after a lost worker)" if study.retried else ""))
    return 0


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
    parser, reproduce_parser, study_parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "study":
        return _study(args, study_parser)
    try:
        result = reproduce(args.profile, device=args.device, jobs=args.jobs,
                           notebooks=args.notebooks or None, only=args.only, force=args.force,
                           allow_cpu_paper=args.allow_cpu_paper, seed=args.seed,
                           out_root=args.out_root, wait=args.wait, retrain=args.retrain,
                           parameters={name: parse_value(value) for name, value in args.parameters})
    except ValueError as err:
        reproduce_parser.error(str(err))
    except OSError as err:  # an unwritable --out-root, or one another run holds
        print(f"stabnb: error: {err}", file=sys.stderr)
        return 2
    print(f"report: {result.report_path}")
    for run in result.failed:
        print(f"{run.status.upper()}: {run.path}: {run.error or run.note}")
    return result.exit_code


if __name__ == "__main__":
    raise SystemExit(main())

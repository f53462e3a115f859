"""Command line: ``python -m stabnb reproduce``, ``study``, ``pack`` and ``unpack`` (also the
``stabnb`` console script).

Exit codes: 0 when every notebook ran (whether or not its claims reproduced) or every study
cell finished, 1 when a notebook errored or cells failed, 2 for bad arguments, an unwritable
--out-root or one another run holds, 3 when the plan exceeds --budget (nothing run), 130 / 143
when stopped by SIGINT / SIGTERM.
"""

from __future__ import annotations

import argparse
import ast
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from .checks import resolve_device
from .io import write_json
from .notebook import PROFILES
from .reproduce import reproduce
from .reproduce.bundle import pack, unpack
from .reproduce.manifest import Entry, Manifest, select
from .reproduce.plan import make_plan
from .reproduce.run import default_jobs
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
    run.add_argument("--cell-jobs", type=int, default=None, metavar="N",
                     help="cell worker processes per study (STABNB_JOBS for the kernels; on a "
                          "GPU they share it). Default: the STABNB_JOBS setting, else 1")
    run.add_argument("--plan", action="store_true",
                     help="calibrate here, print the selected notebooks' cells and estimated "
                          "time (results/<profile>/plan.json), run nothing; exit code 3 when "
                          "over --budget")
    run.add_argument("--budget", type=float, default=None, metavar="SECONDS",
                     help="with --plan: the time the run must fit; without: plan first and "
                          "refuse (exit code 3) a run that would not fit")
    run.add_argument("--next-part", action="store_true",
                     help="run only the first part (of --budget) of the selected notebooks "
                          "that have no result at this profile yet: a run too long for one "
                          "machine lease, in parts, each merged back with unpack")
    run.add_argument("--over-budget", action="store_true",
                     help="run even when the plan says the run exceeds --budget")
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
    pack = commands.add_parser(
        "pack", help="pack results/, figures/ and executed notebooks of a profile into OUT",
        description="Write OUT/bundle.tar.gz.NNN (parts of at most 16 MiB, at most 6) and "
                    "OUT/bundle.json (their SHA-256, the member list): a run's outputs as the "
                    "few files a GPU machine returns.")
    pack.add_argument("out", metavar="OUT", help="folder receiving the bundle")
    pack.add_argument("--profile", default="paper", choices=PROFILES)
    pack.add_argument("--root", default=".", help="the run's out-root (default: here)")
    pack.add_argument("--note", nargs=2, action="append", default=[], metavar=("KEY", "VALUE"),
                      help="add KEY: VALUE to bundle.json (commit, wall time)")
    unpack = commands.add_parser(
        "unpack", help="check a bundle made by `pack` and extract it into a checkout",
        description="Check every part of BUNDLE_DIR against its bundle.json, then extract the "
                    "files (under results/, figures/, runs/ only) into --root.")
    unpack.add_argument("bundle", metavar="BUNDLE_DIR")
    unpack.add_argument("--root", default=".", help="the checkout (default: here)")
    return parser, run, study


def _bundle(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """The ``pack`` and ``unpack`` commands."""
    try:
        if args.command == "pack":
            files = pack(args.root, args.out, args.profile, extra=dict(args.note))
        else:
            files = unpack(args.bundle, args.root)
    except (ValueError, FileNotFoundError) as err:
        parser.error(str(err))
    print(f"{len(files)} files {'written to ' + args.out if args.command == 'pack' else 'extracted'}")
    return 0


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


def _done(entry: Entry, manifest: Manifest) -> bool:
    """Whether ``entry`` ran to the end at this profile before (an earlier part's result)."""
    record = manifest.get(entry.key)
    return bool(record) and record["status"] == "ok" and entry.result.exists()


def _plan(args: argparse.Namespace, parser: argparse.ArgumentParser) -> tuple[bool, list[str]]:
    """Calibrate, print and save the plan of the selected notebooks (with --next-part, those
    without a result yet); whether what is to run fits, and what is to run."""
    out_root = Path(args.out_root)
    results = out_root / "results" / args.profile
    try:
        entries, _ = select(args.notebooks or None, args.only, None, results,
                            out_root / "runs" / args.profile)
        manifest = Manifest(results / "manifest.json")
        chosen = [e.key for e in entries if e.selected
                  and not (args.next_part and _done(e, manifest))]
        device = resolve_device(args.device)
        plan = make_plan(args.profile, device=args.device, seed=args.seed, out_root=out_root,
                         notebook_jobs=args.jobs or default_jobs(device), notebooks=chosen)
    except ValueError as err:
        parser.error(str(err))
    print(plan.render(args.budget))
    if args.next_part and chosen:
        parts = plan.parts(args.budget) if args.budget is not None else [chosen]
        chosen = parts[0]
        print(f"next part (1 of {len(parts)} still to run): {' '.join(chosen)}")
    write_json(results / "plan.json", {**plan.to_dict(), "budget_s": args.budget,
                                       "to_run": chosen})
    return args.budget is None or plan.fits(args.budget, chosen), chosen


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
    if args.command in ("pack", "unpack"):
        return _bundle(args, parser)
    if args.cell_jobs is not None:
        if args.cell_jobs < 1:
            reproduce_parser.error(f"--cell-jobs {args.cell_jobs} must be at least 1.")
        os.environ["STABNB_JOBS"] = str(args.cell_jobs)
    if args.plan or args.budget is not None or args.next_part:
        fits, chosen = _plan(args, reproduce_parser)
        if args.next_part and not chosen:
            print("every selected notebook has a result at this profile: nothing to run")
            return 0
        if args.plan or not fits and not args.over_budget:
            if not fits:
                print("stabnb: the plan exceeds the budget; run fewer notebooks (--only, "
                      "--next-part), lower sizes (-p), or pass --over-budget to run it anyway.",
                      file=sys.stderr)
            return 0 if fits else 3
        if args.next_part:
            args.only = chosen
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

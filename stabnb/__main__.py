"""Command line: ``python -m stabnb reproduce`` (also the ``stabnb`` console script).

Exit codes: 0 when every notebook ran (whether or not its claims reproduced), 1 when a
notebook errored, 2 for bad arguments, an unwritable --out-root or one another run holds,
130 / 143 when stopped by SIGINT / SIGTERM.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

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
    run.add_argument("--force", action="store_true",
                     help="rerun notebooks even when unchanged since their last successful run "
                          "(finished study cells are reused; see --retrain)")
    run.add_argument("--retrain", action="store_true",
                     help="rerun the notebooks and retrain their studies' finished cells too "
                          "(STABNB_RETRAIN=1 for the kernels)")
    run.add_argument("--wait", action="store_true",
                     help="when another run uses the same --out-root, wait for it to finish "
                          "(default: refuse at once, naming it)")
    run.add_argument("--allow-cpu-paper", action="store_true",
                     help="allow --profile paper without a GPU (takes hours)")
    run.add_argument("--out-root", default=".",
                     help="folder receiving results/, runs/ (executed notebooks, and study "
                          "folders in runs/work) and figures/ (default: the working folder)")
    return parser, run


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` (default: ``sys.argv[1:]``), run the command, return its exit code."""
    parser, reproduce_parser = _parser()
    args = parser.parse_args(argv)
    try:
        result = reproduce(args.profile, device=args.device, jobs=args.jobs,
                           notebooks=args.notebooks or None, only=args.only, force=args.force,
                           allow_cpu_paper=args.allow_cpu_paper, seed=args.seed,
                           out_root=args.out_root, wait=args.wait, retrain=args.retrain)
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

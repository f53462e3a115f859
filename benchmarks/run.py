"""Run every benchmark in this folder, one after another, and print their tables.

Usage: ``python benchmarks/run.py [--quick] [--device cuda] [NAME ...]`` (NAME: spectra,
attribution, regularizers).
Each benchmark runs ours and the alternative side by side in one process and prints ratios;
quote the ratios, not the absolute times, from shared machines.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="benchmarks to run (default: all)")
    parser.add_argument("--quick", action="store_true", help="smaller sizes, fewer repeats")
    parser.add_argument("--device", default=None, help="cpu (default) or cuda, for every benchmark")
    args = parser.parse_args()
    available = sorted(p.stem.removeprefix("bench_") for p in HERE.glob("bench_*.py"))
    unknown = sorted(set(args.names) - set(available))
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; choose from {available}")
    failed = []
    for name in args.names or available:
        print(f"\n=== {name} ===", flush=True)
        command = [sys.executable, str(HERE / f"bench_{name}.py")] + (["--quick"] if args.quick else [])
        command += ["--device", args.device] if args.device else []
        if subprocess.run(command).returncode != 0:
            failed.append(name)
    if failed:
        print(f"\nfailed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

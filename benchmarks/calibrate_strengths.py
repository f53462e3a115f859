"""The calibration sweep behind ``stabnb.study.DEFAULT_STRENGTHS`` (README, "Regularisation strengths").

    .venv/bin/python benchmarks/calibrate_strengths.py mnist
    .venv/bin/python benchmarks/calibrate_strengths.py cifar10

One seed at the quick profile's sizes (``stabnb.presets``: MNIST with the MLP on 8192 images,
CIFAR-10 with the small CNN on 4096, 3 epochs), every regulariser and control over its whole grid
and one half-decade beyond each end: prints clean accuracy and its change against the baseline in
points. A grid should run from about no cost to clearly more than one point, with its second
largest λ near the budget (the quick profile keeps the largest ``grid_points``). It is a study
like any other (:func:`stabnb.study.run_study`), so an interrupted sweep resumes.
"""

import sys
import time

from stabnb.presets import regularisation_config
from stabnb.study import DEFAULT_STRENGTHS, ProbeConfig, StudyConfig, run_study

if __name__ == "__main__":
    dataset = sys.argv[1]
    quick = regularisation_config(dataset, "quick", num_seeds=1)
    grids = {name: (grid[0] / 10 ** 0.5, *grid, grid[-1] * 10 ** 0.5)
             for name, grid in DEFAULT_STRENGTHS[dataset].items()}
    config = StudyConfig(
        dataset=dataset, models=quick.models, seeds=(0,), train=quick.train,
        train_size=quick.train_size, regularizers=grids,
        probe=ProbeConfig(eval_size=quick.probe.eval_size, probe_size=8, gmsi_size=0,
                          methods=("saliency",), num_draws=1))
    started = time.time()
    study = run_study(config, f"runs/calibration/{dataset}", jobs=2)
    records = study.records
    base = records.loc[records["regularizer"] == "none", "accuracy"].iloc[0]
    records["Δ accuracy (pt)"] = (100 * (records["accuracy"] - base)).round(2)
    print(records[["model", "regularizer", "strength", "accuracy", "Δ accuracy (pt)"]].to_string())
    print(f"wall time {time.time() - started:.0f} s")

"""The calibration sweep behind ``stabnb.study.DEFAULT_STRENGTHS`` (README, "Regularisation strengths").

    .venv/bin/python benchmarks/calibrate_strengths.py mnist mlp 10000
    .venv/bin/python benchmarks/calibrate_strengths.py cifar10 cnn 5000

One seed, 3 epochs on a balanced training subset, every regulariser at λ ∈ {1e-3, 1e-2, 1e-1, 1};
prints clean accuracy (2000 test images), mean ‖J_f(x)‖₂ and saliency stability per cell. The
grids keep, per regulariser, the λ up to about one point of accuracy below the baseline. It is a
study like any other (:func:`stabnb.study.run_study`), so an interrupted sweep resumes.
"""

import sys
import time

from stabnb.study import ModelSpec, ProbeConfig, StudyConfig, run_study
from stabnb.train import TrainConfig

if __name__ == "__main__":
    dataset, model, train_size = sys.argv[1], sys.argv[2], int(sys.argv[3])
    grid = (1e-3, 1e-2, 1e-1, 1.0)
    config = StudyConfig(
        dataset=dataset, models={model: ModelSpec(model)}, seeds=(0,), train=TrainConfig(epochs=3),
        train_size=train_size,
        regularizers={name: grid for name in ("jacobian_spectral", "jacobian_frobenius",
                                              "weight_spectral", "input_curvature")},
        probe=ProbeConfig(eval_size=2000, probe_size=128, gmsi_size=32, methods=("saliency",),
                          num_draws=4))
    started = time.time()
    study = run_study(config, f"runs/calibration/{dataset}-{model}", jobs=2)
    columns = ["regularizer", "strength", "accuracy", "jacobian.operator_norm",
               "saliency.relative_l2", "saliency.spearman", "train_seconds"]
    print(study.records[columns].to_string())
    print(f"wall time {time.time() - started:.0f} s")

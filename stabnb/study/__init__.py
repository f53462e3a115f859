"""Controlled studies: a grid of training runs (model × regulariser × λ × seed), each evaluated
on the same held-out inputs and the same noise draws within a seed, as one tidy table.

    config = StudyConfig(dataset="mnist", models={"mlp": ModelSpec("mlp")}, seeds=(0, 1),
                         train=TrainConfig(epochs=2), train_size=5000,
                         regularizers={"jacobian_spectral": (1e-3, 1e-2)})
    study = run_study(config, "runs/studies/mnist")
    study.records                      # pandas DataFrame, one row per cell

Every cell is one trained network. The unregularised baseline (``regularizer="none"``,
``strength=0``) of every model and seed is always part of the grid, so each regularised run
has a partner that differs only in the penalty (same training subset, initial weights,
minibatch order, probe images and probe noise; :mod:`stabnb.study.cell`). Each cell is
evaluated on:

- ``accuracy``: clean top-1 accuracy on the first ``probe.eval_size`` test images;
- ``gmsi`` and ``gmsi.<component>``: :func:`stabnb.gmsi.gmsi` on ``probe.gmsi_size`` probe
  inputs (left out with ``gmsi_size=0``);
- ``jacobian.<summary>``: mean over the probe inputs of the per-sample input-Jacobian
  summaries (operator norm, spectral entropy, effective and stable rank; ``.median`` too);
- ``<method>.<metric>`` for each attribution method: the mean over valid probe inputs of
  ``relative_l2``, ``cosine``, ``spearman``, ``top_k``, ``sensitivity_max``, and the absolute
  change ``abs_l2 = ‖a(x̃) − a(x)‖`` (which shrinks trivially with ‖J‖; the relative and rank
  metrics are scale-invariant), plus ``attribution_norm``;
- for the saliency, beyond the training family (``docs/reconstruction.md``, "Held-out perturbation
  families" and after): ``family.<spec>.relative_l2`` / ``.top_k`` per held-out family,
  ``heldout.relative_l2`` / ``heldout.top_k`` (their mean per image, the primary metric),
  ``attack.*`` and ``attack.start_*``, ``dependence.between_inputs`` / ``dependence.ratio``,
  ``sanity.randomised_spearman``, ``faithfulness.deletion_auc`` / ``.random_auc`` / ``.gain``,
  ``mechanism.gate_flips`` / ``mechanism.margin``; their per-image values are in the per-sample
  table under the same names (:meth:`StudyResult.samples`).

On disk, under ``out_dir``::

    config.json                    the config and the cell code's digest; others refuse it
    checkpoints/<key>.pt           training checkpoints (:func:`stabnb.train.train`)
    cells/<cell>.json              one finished cell: its metrics and provenance
    cells/<cell>.per_sample.json   its per-sample table (first method; saliency probes)
    locks/<cell>.lock              one writer per cell
    results.csv                    the tidy table, rebuilt after every cell

A finished cell is never redone; an interrupted one resumes from its last epoch's checkpoint.
Every file is written atomically. The cells run here, in local processes, or on any
``concurrent.futures.Executor`` (:mod:`stabnb.study.executors`: Dask, Slurm).
"""

from .cell import (
    StudyData,
    code_digest,
    evaluate_model,
    load_study_data,
    run_cell,
    stream_seed,
)
from .config import (
    DATASETS,
    DEFAULT_STRENGTHS,
    Cell,
    ModelSpec,
    ProbeConfig,
    StudyConfig,
    study_cells,
)
from .executors import EXECUTORS, SubmititExecutor, open_executor
from .sweep import (
    StudyFailed,
    StudyResult,
    check_folder,
    load_study,
    run_study,
    study_dir,
)

__all__ = ["DATASETS", "DEFAULT_STRENGTHS", "ModelSpec", "ProbeConfig", "StudyConfig", "Cell",
           "StudyData", "StudyResult", "StudyFailed", "SubmititExecutor", "EXECUTORS",
           "study_cells", "load_study_data", "evaluate_model", "run_cell", "run_study",
           "load_study", "study_dir", "check_folder", "code_digest", "stream_seed",
           "open_executor"]

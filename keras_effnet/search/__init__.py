"""Compound-scaling experiments: the alpha-beta-gamma grid search and the scaling curves.

- ``grid_search``: the paper's step 1 (section 3.3). Enumerate (alpha, beta, gamma) on a grid with
  ``alpha * beta**2 * gamma**2`` within a tolerance of a target (2), scale the baseline by phi = 1
  with each, train each candidate for the same budget and rank them by validation accuracy.
- ``scaling_curves``: the experiment of the paper's Figures 3 and 8. Scale the baseline by width
  only, depth only, resolution only and compound to a set of FLOPs targets, train each for the same
  budget and plot accuracy against FLOPs.

Modules: ``store`` (results on disk, the shared candidate loop), ``grid``, ``curves`` and
``trainer`` (the real ``train_fn``). Training is injected: ``train_fn(spec, budget, run_dir) -> {"val_accuracy": ..., ...}`` with
``budget`` in training steps. ``trainer_train_fn(config)`` wraps ``keras_effnet.training.train``.

Restart: every finished candidate is written to ``<out_dir>/results/<key>.json`` atomically; a rerun
with the same ``out_dir`` skips those (and the trainer resumes an interrupted candidate from the
checkpoints in ``<out_dir>/runs/<key>``). ``<out_dir>/settings.json`` pins the baseline, budget and
training setup; a rerun with different ones is refused rather than mixing results. Candidates whose
rounded architecture is identical (common on small baselines) are trained once and share a result.
"""

from keras_effnet.search.curves import (CURVE_COLUMNS, METHOD_LABELS, METHODS, plot_scaling_curves,
                                        scaled_by, scaling_curves, solve_for_flops)
from keras_effnet.search.grid import GRID_COLUMNS, coefficient_grid, grid_key, grid_search, plot_grid_search
from keras_effnet.search.store import (CandidateInterrupted, ResultStore, TrainFn, architecture_signature,
                                       run_candidates, spec_summary)
from keras_effnet.search.trainer import (baseline_from_config, candidate_config, config_settings,
                                         trainer_train_fn)

__all__ = [
    "CURVE_COLUMNS", "GRID_COLUMNS", "METHODS", "METHOD_LABELS", "CandidateInterrupted", "ResultStore",
    "TrainFn", "architecture_signature", "baseline_from_config", "candidate_config", "coefficient_grid",
    "config_settings", "grid_key", "grid_search", "plot_grid_search", "plot_scaling_curves",
    "run_candidates", "scaled_by", "scaling_curves", "solve_for_flops", "spec_summary",
    "trainer_train_fn",
]

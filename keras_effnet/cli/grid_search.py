"""The paper's step 1: grid-search alpha, beta, gamma at phi=1 from a baseline, by training.

    keras-effnet-grid-search --out_dir=/tmp/grid --steps=200      # demo baseline, digits
    keras-effnet-grid-search --out_dir=/tmp/grid --steps=2000 --step=0.1 --tolerance=0.15 \\
        --config=configs/efficientnet-b0.yaml --dataset=tfds:imagenette --image_size=128

Each candidate (alpha*beta^2*gamma^2 within --tolerance of --target) is scaled from the baseline
of the training config (--config/--set, default the embedded demo job), trained for --steps with
keras_effnet.training and ranked by validation accuracy. Results: OUT_DIR/results.csv,
results.json, grid_search.png; per candidate OUT_DIR/results/<key>.json (rerun the same command
to resume: finished candidates are skipped). ``-v 1`` shows progress.
"""

from __future__ import annotations

import os
import sys

from absl import app, flags

from keras_effnet import search
from keras_effnet.cli import common

FLAGS = flags.FLAGS


def define_flags() -> None:
    """Define the job-config flags and this study's (a second call redefines them); ``--help`` lists both."""
    common.define_job_flags()
    again = {"allow_override": True}
    flags.DEFINE_string("out_dir", None, "Directory for results, runs and the plot.", **again)
    flags.DEFINE_integer("steps", 200, "Training budget per candidate, in global-batch steps.", **again)
    flags.DEFINE_float("target", 2.0, "Target of alpha * beta^2 * gamma^2 (FLOPs per phi).", **again)
    flags.DEFINE_float("tolerance", 0.1, "Accepted |alpha * beta^2 * gamma^2 - target|.", **again)
    flags.DEFINE_float("step", 0.05, "Grid step of alpha, beta and gamma.", **again)
    flags.DEFINE_float("max_coefficient", 2.0, "Largest alpha, beta, gamma on the grid.", **again)
    flags.DEFINE_float("search_phi", 1.0, "Compound coefficient of the candidates.", **again)
    flags.DEFINE_list("candidates", [], "Explicit alpha:beta:gamma list instead of the "
                      "grid, e.g. 1.2:1.1:1.15,1.0:1.4:1.0.", **again)
    flags.DEFINE_integer("resolution_divisor", 1, "Round resolutions to this multiple.", **again)
    common.show_in_help(common, sys.modules[__name__])


def parse_candidates(texts: list[str]) -> list[tuple[float, float, float]] | None:
    """``["1.2:1.1:1.15", ...]`` -> ``[(1.2, 1.1, 1.15), ...]``; None for an empty list."""
    if not texts:
        return None
    candidates = []
    for text in texts:
        parts = text.split(":")
        if len(parts) != 3:
            raise ValueError(f"--candidates expects alpha:beta:gamma, got {text!r}")
        candidates.append(tuple(float(p) for p in parts))
    return candidates


def main(argv: list[str]) -> int:
    """Run (or resume) the grid search and print the ranking."""
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not FLAGS.out_dir:
        raise app.UsageError("--out_dir is required")
    if FLAGS.model_dir or FLAGS.epochs:
        raise app.UsageError("use --out_dir and --steps: each candidate gets its own run "
                             "directory and the same step budget")
    common.start_logging()
    try:
        candidates = parse_candidates(FLAGS.candidates)
        config = common.config_from_flags()
        ranked = search.grid_search(
            search.baseline_from_config(config), search.trainer_train_fn(config), FLAGS.out_dir,
            FLAGS.steps, target=FLAGS.target, tolerance=FLAGS.tolerance, step=FLAGS.step,
            maximum=FLAGS.max_coefficient, phi=FLAGS.search_phi, candidates=candidates,
            resolution_divisor=FLAGS.resolution_divisor, settings=search.config_settings(config))
    except search.CandidateInterrupted as error:
        print(f"stopped: {error}", file=sys.stderr)
        return common.EXIT_PREEMPTED
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print("rank  alpha  beta  gamma  FLOPs-ratio  val_accuracy")
    for row in ranked:
        print(f"{row['rank']:4d}  {row['alpha']:5g}  {row['beta']:4g}  {row['gamma']:5g}  "
              f"{row['flops_ratio']:11.3f}  {row['val_accuracy']:.4f}")
    print(f"results: {os.path.join(FLAGS.out_dir, 'results.csv')}, results.json, grid_search.png")
    return 0


def run() -> None:
    """Console-script entry point (``keras-effnet-grid-search``)."""
    define_flags()
    app.run(main)


if __name__ == "__main__":
    run()

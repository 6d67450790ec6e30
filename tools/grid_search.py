"""The paper's step 1: grid-search alpha, beta, gamma at phi=1 from a baseline, by training.

    python tools/grid_search.py --out_dir=/tmp/grid --steps=200      # demo baseline, digits
    python tools/grid_search.py --out_dir=/tmp/grid --steps=2000 --step=0.1 --tolerance=0.15 \
        --config=configs/efficientnet-b0.yaml --dataset=tfds:imagenette --image_size=128

Each candidate (alpha*beta^2*gamma^2 within --tolerance of --target) is scaled from the baseline
of the training config (--config/--set, default the embedded demo job), trained for --steps with
keras_effnet.training and ranked by validation accuracy. Results: OUT_DIR/results.csv,
results.json, grid_search.png; per candidate OUT_DIR/results/<key>.json (rerun the same command
to resume: finished candidates are skipped).
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402

from keras_effnet.cli.common import (EXIT_PREEMPTED, config_from_flags, define_flags,  # noqa: E402
                                     define_once)

define_flags()
FLAGS = flags.FLAGS



define_once(flags.DEFINE_string, "out_dir", None, "Directory for results, runs and the plot.")
define_once(flags.DEFINE_integer, "steps", 200, "Training budget per candidate, in global-batch steps.")
define_once(flags.DEFINE_float, "target", 2.0, "Target of alpha * beta^2 * gamma^2 (FLOPs per phi).")
define_once(flags.DEFINE_float, "tolerance", 0.1, "Accepted |alpha * beta^2 * gamma^2 - target|.")
define_once(flags.DEFINE_float, "step", 0.05, "Grid step of alpha, beta and gamma.")
define_once(flags.DEFINE_float, "max_coefficient", 2.0, "Largest alpha, beta, gamma on the grid.")
define_once(flags.DEFINE_float, "search_phi", 1.0, "Compound coefficient of the candidates.")
define_once(flags.DEFINE_list, "candidates", [], "Explicit alpha:beta:gamma list instead of the "
        "grid, e.g. 1.2:1.1:1.15,1.0:1.4:1.0.")
define_once(flags.DEFINE_integer, "resolution_divisor", 1, "Round resolutions to this multiple.")


def main(argv) -> int:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not FLAGS.out_dir:
        raise app.UsageError("--out_dir is required")
    if FLAGS.model_dir or FLAGS.epochs:
        raise app.UsageError("use --out_dir and --steps: each candidate gets its own run "
                             "directory and the same step budget")
    from keras_effnet import search  # noqa: PLC0415 (flags parse before TensorFlow loads)

    try:
        candidates = None
        if FLAGS.candidates:
            candidates = []
            for text in FLAGS.candidates:
                parts = text.split(":")
                if len(parts) != 3:
                    raise ValueError(f"--candidates expects alpha:beta:gamma, got {text!r}")
                candidates.append(tuple(float(p) for p in parts))
        config = config_from_flags()
        ranked = search.grid_search(
            search.baseline_from_config(config), search.trainer_train_fn(config), FLAGS.out_dir,
            FLAGS.steps, target=FLAGS.target, tolerance=FLAGS.tolerance, step=FLAGS.step,
            maximum=FLAGS.max_coefficient, phi=FLAGS.search_phi, candidates=candidates,
            resolution_divisor=FLAGS.resolution_divisor, settings=search.config_settings(config))
    except search.CandidateInterrupted as error:
        print(f"stopped: {error}", file=sys.stderr)
        return EXIT_PREEMPTED
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print("rank  alpha  beta  gamma  FLOPs-ratio  val_accuracy")
    for row in ranked:
        print(f"{row['rank']:4d}  {row['alpha']:5g}  {row['beta']:4g}  {row['gamma']:5g}  "
              f"{row['flops_ratio']:11.3f}  {row['val_accuracy']:.4f}")
    print(f"results: {os.path.join(FLAGS.out_dir, 'results.csv')}, results.json, grid_search.png")
    return 0


if __name__ == "__main__":
    app.run(main)

"""Scale a baseline by width only, depth only, resolution only and compound to FLOPs targets,
train each with the same budget and plot accuracy against FLOPs (paper Figures 3 and 8).

    keras-effnet-scaling-curves --out_dir=/tmp/curves --steps=200 --flops_targets=2,4,8

The baseline is the model of the training config (--config/--set, default the embedded demo job
on the digits dataset); targets are multiples of its counted multiply-adds. Results:
OUT_DIR/scaling_curves.png with the data in scaling_curves.csv / .json; per model
OUT_DIR/results/<key>.json (rerun the same command to resume). ``-v 1`` shows progress.
"""

from __future__ import annotations

import os
import sys

from absl import app, flags

from keras_effnet import scaling, search
from keras_effnet.cli import common

FLAGS = flags.FLAGS


def define_flags() -> None:
    """Define the job-config flags and this study's (a second call redefines them); ``--help`` lists both."""
    common.define_job_flags()
    again = {"allow_override": True}
    flags.DEFINE_string("out_dir", None, "Directory for results, runs and the plot.", **again)
    flags.DEFINE_integer("steps", 200, "Training budget per model, in global-batch steps.", **again)
    flags.DEFINE_list("flops_targets", ["2", "4", "8"], "FLOPs targets as multiples of the baseline's.",
                      **again)
    flags.DEFINE_list("methods", list(search.METHODS), "Scaling methods to run.", **again)
    flags.DEFINE_float("alpha", scaling.ALPHA, "Depth base of compound scaling.", **again)
    flags.DEFINE_float("beta", scaling.BETA, "Width base of compound scaling.", **again)
    flags.DEFINE_float("gamma", scaling.GAMMA, "Resolution base of compound scaling.", **again)
    flags.DEFINE_integer("resolution_divisor", 1, "Round resolutions to this multiple.", **again)
    common.show_in_help(common, sys.modules[__name__])


def main(argv: list[str]) -> int:
    """Run (or resume) the scaling-curve study and print its rows."""
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not FLAGS.out_dir:
        raise app.UsageError("--out_dir is required")
    if FLAGS.model_dir or FLAGS.epochs:
        raise app.UsageError("use --out_dir and --steps: each model gets its own run "
                             "directory and the same step budget")
    common.start_logging()
    try:
        targets = [float(t) for t in FLAGS.flops_targets]
        config = common.config_from_flags()
        rows = search.scaling_curves(
            search.baseline_from_config(config), search.trainer_train_fn(config), FLAGS.out_dir,
            FLAGS.steps, flops_targets=targets, methods=FLAGS.methods, alpha=FLAGS.alpha,
            beta=FLAGS.beta, gamma=FLAGS.gamma, resolution_divisor=FLAGS.resolution_divisor,
            settings=search.config_settings(config))
    except search.CandidateInterrupted as error:
        print(f"stopped: {error}", file=sys.stderr)
        return common.EXIT_PREEMPTED
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print("method      target  coefficient  FLOPs-ratio  val_accuracy")
    for row in rows:
        print(f"{row['method']:<10}  {row['target_ratio']:5g}x  {row['coefficient']:11.4g}  "
              f"{row['flops_ratio']:11.3f}  {row['val_accuracy']:.4f}")
    print(f"plot: {os.path.join(FLAGS.out_dir, 'scaling_curves.png')} (data: scaling_curves.csv)")
    return 0


def run() -> None:
    """Console-script entry point (``keras-effnet-scaling-curves``)."""
    define_flags()
    app.run(main)


if __name__ == "__main__":
    run()

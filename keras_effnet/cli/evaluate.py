"""Evaluate a training run or a published weight set.

A run (EMA weights): ``keras-effnet-evaluate --model_dir RUN [--follow]``. The job config is the
run's ``config.yaml`` (its data, splits and image size) unless ``--config`` is given; the model
comes from the run's checkpoints, never from the initial weights. Reports top-1/top-5 and writes
``RUN/eval_<split>.json``. ``--follow`` evaluates each new checkpoint as training writes it, until
``--timeout`` seconds pass without one or the final step.

A weight set, no run directory: ``keras-effnet-evaluate --model efficientnet-b0 --weights
autoaugment --data tfds:imagenet2012 --manual_dir DIR`` (or ``--data 'tfrecord:/imagenet/
validation-*' --label_offset=-1``) evaluates the set on ImageNet's validation split with its own
evaluation preprocessing and prints the result beside the published top-1
(``training.evaluation.evaluate_weights``).
"""

from __future__ import annotations

import json
import os
import sys

from absl import app, flags

from keras_effnet import atomic, training
from keras_effnet.cli import common
from keras_effnet.run_dir import CONFIG_FILE
from keras_effnet.training.evaluation import IMAGENET, eval_report_path, evaluate_weights

FLAGS = flags.FLAGS


def define_flags() -> None:
    """The job flags (``cli.common``) and the evaluation's own, shown by ``--help``."""
    common.define_job_flags()
    flags.DEFINE_string("checkpoint", None,
                        "Checkpoint prefix or directory (default: latest in model_dir).")
    flags.DEFINE_string("split", None, "Split to evaluate (default data.eval_split).")
    flags.DEFINE_bool("follow", False, "Poll model_dir and evaluate each new checkpoint.")
    flags.DEFINE_float("timeout", 3600.0,
                       "With --follow: stop after this many seconds without a new one.")
    flags.DEFINE_bool("use_ema", True, "Evaluate the EMA weights (when the run kept an EMA).")
    flags.DEFINE_string("weights", None,
                        "Evaluate --model with this weight set (e.g. autoaugment) or weight file "
                        "instead of a run, with the set's own evaluation preprocessing.")
    flags.DEFINE_alias("data", "dataset")
    flags.DEFINE_string("manual_dir", None,
                        "With --weights and tfds:imagenet2012: the folder holding ImageNet's tars.")
    flags.DEFINE_integer("label_offset", 0,
                         "Added to TFRecord labels (-1 for the original's 1-based ImageNet records).")
    flags.DEFINE_integer("max_batches", None, "With --weights: stop after this many batches.")
    common.show_in_help(common, sys.modules[__name__])


def main(argv) -> int:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    common.start_logging()
    if FLAGS.weights:
        return _evaluate_weights()
    if not FLAGS.model_dir and not FLAGS.checkpoint:
        print("error: pass --model_dir RUN (or --checkpoint PREFIX), or --model VARIANT "
              "--weights SET", file=sys.stderr)
        return 1
    model_dir = FLAGS.model_dir or os.path.dirname(FLAGS.checkpoint)
    saved = os.path.join(model_dir, CONFIG_FILE)
    try:
        config = common.config_from_flags(
            base_files=[saved] if os.path.exists(saved) and not FLAGS.config else None)
        if FLAGS.split:
            config.data.eval_split = FLAGS.split
        config.runtime.model_dir = model_dir
        if FLAGS.follow:
            trainer = training.evaluator(config)
            for result in training.follow_checkpoints(trainer, FLAGS.timeout, FLAGS.use_ema):
                _report(result, config.data.eval_split, model_dir)
            return 0
        result = training.evaluate_checkpoint(config, FLAGS.checkpoint, use_ema=FLAGS.use_ema)
    except (ValueError, FileNotFoundError, PermissionError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    _report(result, config.data.eval_split, model_dir)
    return 0


def _evaluate_weights() -> int:
    """``--model`` with ``--weights`` on ``--data`` (default ImageNet), printed as JSON."""
    if not FLAGS.model:
        print("error: --weights needs --model VARIANT (e.g. efficientnet-b0)", file=sys.stderr)
        return 1
    try:
        result = evaluate_weights(
            FLAGS.model, FLAGS.weights, FLAGS.dataset or IMAGENET, FLAGS.split or "validation",
            batch_size=FLAGS.eval_batch_size or FLAGS.batch_size or 100, data_dir=FLAGS.data_dir,
            manual_dir=FLAGS.manual_dir, label_offset=FLAGS.label_offset,
            max_batches=FLAGS.max_batches)
    except (ValueError, FileNotFoundError, PermissionError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=2, sort_keys=True), flush=True)
    return 0


def _report(result: dict, split: str, model_dir: str) -> None:
    print(json.dumps(result, indent=2, sort_keys=True), flush=True)
    atomic.write_json(eval_report_path(model_dir, split), result)


def run() -> None:
    """Console-script entry point."""
    define_flags()
    app.run(main)


if __name__ == "__main__":
    run()

"""Evaluate checkpoints (EMA weights): ``keras-effnet-evaluate --model_dir DIR [--follow]``.

The job config is read from ``DIR/config.yaml`` (written by training) unless ``--config`` is given.
Reports top-1/top-5 and writes ``DIR/eval_<split>.json``. ``--follow`` evaluates each new
checkpoint as training writes it, until ``--timeout`` seconds pass without one or the final step.
"""

from __future__ import annotations

import json
import os
import sys

from absl import app, flags

from keras_effnet.cli.common import config_from_flags, define_flags

define_flags()
flags.DEFINE_string("checkpoint", None, "Checkpoint prefix or directory (default: latest in model_dir).")
flags.DEFINE_string("split", None, "Split to evaluate (default data.eval_split).")
flags.DEFINE_bool("follow", False, "Poll model_dir and evaluate each new checkpoint.")
flags.DEFINE_float("timeout", 3600.0, "With --follow: stop after this many seconds without a new one.")
flags.DEFINE_bool("use_ema", True, "Evaluate the EMA weights (when the run kept an EMA).")
FLAGS = flags.FLAGS


def main(argv) -> int:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not FLAGS.model_dir and not FLAGS.checkpoint:
        print("error: pass --model_dir (or --checkpoint)", file=sys.stderr)
        return 1
    model_dir = FLAGS.model_dir or os.path.dirname(FLAGS.checkpoint)
    saved = os.path.join(model_dir, "config.yaml")
    from keras_effnet import checkpoints, training  # noqa: PLC0415

    try:
        config = config_from_flags(base_files=[saved] if os.path.exists(saved) and not FLAGS.config
                                   else None)
        if FLAGS.split:
            config.data.eval_split = FLAGS.split
        config.runtime.model_dir = model_dir
        if FLAGS.follow:
            import tensorflow as tf  # noqa: PLC0415

            trainer = training.Trainer(config)
            for path in tf.train.checkpoints_iterator(model_dir, timeout=FLAGS.timeout):
                result = _report(training.evaluate_loaded(trainer, path, FLAGS.use_ema), config,
                                 model_dir, checkpoints)
                if result["step"] >= trainer.stop_step:
                    break
            return 0
        result = training.evaluate_checkpoint(config, FLAGS.checkpoint, use_ema=FLAGS.use_ema)
    except (ValueError, FileNotFoundError, PermissionError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    _report(result, config, model_dir, checkpoints)
    return 0


def _report(result: dict, config, model_dir: str, checkpoints) -> dict:
    print(json.dumps(result, indent=2, sort_keys=True), flush=True)
    checkpoints.write_json_atomic(
        os.path.join(model_dir, f"eval_{config.data.eval_split.replace('/', '_')}.json"), result)
    return result


def run() -> None:
    """Console-script entry point."""
    app.run(main)


if __name__ == "__main__":
    run()

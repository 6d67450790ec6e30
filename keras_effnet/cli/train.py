"""Train (or resume) an EfficientNet: ``keras-effnet-train --config configs/demo.yaml --model_dir DIR``.

The run directory receives config.yaml, run.json and labels.txt at the start, checkpoints as it
goes, and export/model.keras (logits head) at the end. Exit status: 0 done, 1 bad input or a
stopped run (message on stderr), 143 stopped by SIGTERM after saving a checkpoint (rerun the same
command to resume).
"""

from __future__ import annotations

import sys

from absl import app, flags

from keras_effnet import training
from keras_effnet.cli import common

FLAGS = flags.FLAGS


def define_flags() -> None:
    """The job flags (``cli.common``), shown by ``--help``."""
    common.define_job_flags()
    common.show_in_help(common)


def main(argv) -> int:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    common.start_logging()
    try:
        metrics = training.train(common.config_from_flags())
    except (ValueError, OSError, training.TrainingStopped, training.RunLocked) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # Ctrl-C before the loop's handler is installed: nothing trained
        print("interrupted before training started; nothing was changed", file=sys.stderr)
        return 130
    if metrics.get("interrupted"):
        print(f"stopped at step {metrics['step']} (signal); rerun to resume", file=sys.stderr)
        return common.EXIT_PREEMPTED
    return 0  # the loop printed the summary; the metrics are in MODEL_DIR/metrics.json


def run() -> None:
    """Console-script entry point."""
    define_flags()
    app.run(main)


if __name__ == "__main__":
    run()

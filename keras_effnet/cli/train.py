"""Train (or resume) an EfficientNet: ``keras-effnet-train --config configs/demo.yaml --model_dir DIR``.

Exit status: 0 done, 1 bad input or a stopped run (message on stderr), 143 stopped by SIGTERM
after saving a checkpoint (rerun the same command to resume).
"""

from __future__ import annotations

import json
import sys

from absl import app, flags

from keras_effnet.cli.common import EXIT_PREEMPTED, config_from_flags, define_flags

define_flags()
FLAGS = flags.FLAGS


def main(argv) -> int:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from keras_effnet import training  # noqa: PLC0415 (flags parse before TensorFlow loads)

    try:
        config = config_from_flags()
        metrics = training.train(config)
    except (ValueError, FileNotFoundError, PermissionError, training.TrainingStopped) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    if metrics.get("interrupted"):
        print(f"stopped at step {metrics['step']} (signal); rerun to resume", file=sys.stderr)
        return EXIT_PREEMPTED
    print(json.dumps(metrics, indent=2, sort_keys=True))
    return 0


def run() -> None:
    """Console-script entry point."""
    app.run(main)


if __name__ == "__main__":
    run()

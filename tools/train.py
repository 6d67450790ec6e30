"""Train an EfficientNet (thin wrapper of ``keras_effnet.cli.train``); see docs/training.md."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from keras_effnet.cli.train import run  # noqa: E402

if __name__ == "__main__":
    run()

"""Export an EfficientNet (thin wrapper of ``keras_effnet.cli.export``); see docs/export.md."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from keras_effnet.cli.export import run  # noqa: E402

if __name__ == "__main__":
    run()

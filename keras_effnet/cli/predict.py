"""Classify image files: ``keras-effnet-predict --model_dir RUN IMAGE...`` (a training run's
labels and preprocessing) or ``keras-effnet-predict --model efficientnet-b0 --weights imagenet
IMAGE...`` (a weight set's preprocessing, ImageNet labels; ``--weights`` may be a file).

Prints each path, then one line per class, best first. Exit status: 0 done, 1 bad input.
"""

from __future__ import annotations

import sys

from absl import app, flags

from keras_effnet import predict
from keras_effnet.cli import common

FLAGS = flags.FLAGS


def define_flags() -> None:
    """The prediction flags, shown by ``--help``."""
    flags.DEFINE_string("model_dir", None, "Training run directory (its model, labels, "
                        "preprocessing); replaces --model/--weights.")
    flags.DEFINE_string("model", "efficientnet-b0", "Variant, e.g. efficientnet-b0, b3, lite0.")
    flags.DEFINE_string("weights", "imagenet", "Weight-set name or weight file (ImageNet classes).")
    flags.DEFINE_integer("top", 5, "How many classes to print per image.")
    flags.DEFINE_bool("use_ema", True, "With --model_dir: the EMA weights (when the run kept one).")
    common.show_in_help(sys.modules[__name__])


def format_prediction(rank: int, item: predict.Prediction) -> str:
    """``  1. tiger_cat   n02123159   42.00%`` (the synset only for ImageNet classes)."""
    synset = f" {item.synset} " if item.synset else ""
    return f"  {rank}. {item.label:<24}{synset} {100 * item.probability:6.2f}%"


def main(argv) -> int:
    images = argv[1:]
    if not images:
        raise app.UsageError("pass one or more image files")
    common.start_logging()
    try:
        if FLAGS.model_dir:
            results = predict.classify_with_run(images, FLAGS.model_dir, top=FLAGS.top,
                                                use_ema=FLAGS.use_ema)
        else:
            results = predict.classify_with_weights(images, FLAGS.model, FLAGS.weights,
                                                    top=FLAGS.top)
    except (ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    for path, ranked in zip(images, results):
        print(path)
        for rank, item in enumerate(ranked, start=1):
            print(format_prediction(rank, item))
    return 0


def run() -> None:
    """Console-script entry point."""
    define_flags()
    app.run(main)


if __name__ == "__main__":
    run()

"""Top-5 ImageNet labels of images with a weight set's own preprocessing.

    python tools/predict.py cat.jpg dog.png --model efficientnet-lite0 --weights lite0.weights.h5
    python tools/predict.py cat.jpg --model efficientnet-b6 --weights noisy-student

``--weights`` is a weight-set name (its registry resolution, crop and resize are used) or a
file (the variant's defaults are used).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402

flags.DEFINE_string("model", "efficientnet-b0", "Variant, e.g. efficientnet-b0, b3, lite0.")
flags.DEFINE_string("weights", "imagenet", "Weight-set name or weight file.")
flags.DEFINE_integer("top", 5, "How many classes to print per image.")
FLAGS = flags.FLAGS


def main(argv) -> int:
    images = argv[1:]
    if not images:
        raise app.UsageError("pass one or more image files")
    from keras_effnet import weights  # noqa: PLC0415

    try:
        results = weights.classify_files(images, FLAGS.model, FLAGS.weights, top=FLAGS.top)
    except (ValueError, OSError, ImportError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    for path, ranked in zip(images, results):
        print(path)
        for rank, (synset, name, probability) in enumerate(ranked, start=1):
            print(f"  {rank}. {name:<24} {synset}  {100 * probability:6.2f}%")
    return 0


if __name__ == "__main__":
    app.run(main)

"""Convert published EfficientNet weights to a Keras ``.weights.h5`` (see docs/weights.md).

    python tools/convert_weights.py --source tpu-checkpoint --model efficientnet-b0 \
        --input efficientnet-b0.tar.gz --output efficientnet-b0.weights.h5

Sources: ``tpu-checkpoint`` (original TensorFlow checkpoint: directory, prefix or .tar.gz),
``lukemelas`` (EfficientNet-PyTorch .pth), ``keras-h5`` (keras.applications legacy .h5).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402

flags.DEFINE_enum("source", None, ["tpu-checkpoint", "lukemelas", "keras-h5"],
                  "Format of --input.")
flags.DEFINE_string("model", None, "Variant, e.g. efficientnet-b0, b3, lite0.")
flags.DEFINE_string("input", None, "Source file (or checkpoint directory / prefix).")
flags.DEFINE_string("output", None, "Output file, ending in .weights.h5.")
flags.DEFINE_bool("include_top", True, "Keep the 1000-class classifier.")
flags.DEFINE_enum("normalization", None, ["imagenet", "lite", "inception"],
                  "Input normalisation stored with the weights (default: the variant's; "
                  "inception for AdvProp checkpoints).")
for _name in ("source", "model", "input", "output"):
    flags.mark_flag_as_required(_name)
FLAGS = flags.FLAGS


def main(argv) -> int:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from keras_effnet import convert  # noqa: PLC0415 (after flag parsing: --help stays fast)

    try:
        report = convert.convert(FLAGS.source, FLAGS.model, FLAGS.input, FLAGS.output,
                                 include_top=FLAGS.include_top,
                                 normalization=FLAGS.normalization)
    except (ValueError, FileNotFoundError, ImportError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"wrote {report.output} ({report.tensors} tensors of {report.model} "
          f"from {FLAGS.source} {FLAGS.input})")
    return 0


if __name__ == "__main__":
    app.run(main)

"""Convert published EfficientNet weights to a Keras ``.weights.h5`` (see docs/weights.md).

    keras-effnet-convert --source tpu-checkpoint --model efficientnet-b0 \\
        --input efficientnet-b0.tar.gz --output efficientnet-b0.weights.h5

Sources: ``tpu-checkpoint`` (original TensorFlow checkpoint: directory, prefix or .tar.gz),
``lukemelas`` (EfficientNet-PyTorch .pth), ``keras-h5`` (keras.applications legacy .h5).
The library function is ``keras_effnet.weights.convert``.
"""

from __future__ import annotations

import sys

from absl import app, flags

from keras_effnet import logs
from keras_effnet.weights import SOURCES, convert

FLAGS = flags.FLAGS
_REQUIRED = ("source", "model", "input", "output")


def define_flags() -> None:
    """Define this job's flags (once per process) and make them the ones ``--help`` lists."""
    if "source" not in FLAGS:
        flags.DEFINE_enum("source", None, list(SOURCES), "Format of --input.")
        flags.DEFINE_string("model", None, "Variant, e.g. efficientnet-b0, b3, lite0.")
        flags.DEFINE_string("input", None, "Source file (or checkpoint directory / prefix).")
        flags.DEFINE_string("output", None, "Output file, ending in .weights.h5.")
        flags.DEFINE_bool("include_top", True, "Keep the 1000-class classifier.")
        flags.DEFINE_enum("normalization", None, ["imagenet", "lite", "inception"],
                          "Input normalisation stored with the weights (default: the variant's; "
                          "inception for AdvProp checkpoints).")
        flags.DEFINE_bool("overwrite", False, "Replace an existing --output file.")
        for name in _REQUIRED:
            flags.mark_flag_as_required(name)
    # absl's --help lists the key flags of the program that runs (sys.argv[0]: this module with
    # ``python -m``, the tools/ shim or the console script otherwise).
    for name in ("source", "model", "input", "output", "include_top", "normalization",
                 "overwrite"):
        FLAGS.register_key_flag_for_module(sys.argv[0], FLAGS[name])


def main(argv: list[str]) -> int:
    """Convert ``--input`` to ``--output``; exit status 1 with the reason on a bad file."""
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logs.configure(FLAGS.verbosity)
    try:
        report = convert(FLAGS.source, FLAGS.model, FLAGS.input, FLAGS.output,
                         include_top=FLAGS.include_top, normalization=FLAGS.normalization,
                         overwrite=FLAGS.overwrite)
    except (ValueError, OSError, ImportError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"wrote {report.output} ({report.tensors} tensors of {report.model} "
          f"from {FLAGS.source} {FLAGS.input})")
    return 0


def run() -> None:
    """Console-script entry point (``keras-effnet-convert``)."""
    define_flags()
    app.run(main)


if __name__ == "__main__":
    run()

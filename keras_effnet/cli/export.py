"""Export a model: ``keras-effnet-export --model efficientnet-b0 --weights PATH --format tflite --output DIR``.

Sources: ``--model NAME --weights PATH|SET`` (a weight file or a named set such as ``imagenet``)
or ``--model_dir DIR`` (a training run: its EMA weights, class names and evaluation
preprocessing, read from the run directory only; ``--classes`` / ``--image_size`` other than the
run's are refused). Formats: saved_model, hub_feature_vector, hub_classification, tflite, onnx,
openvino (``--quantization float32|bf16|int8``). The output directory is written atomically and
holds ``metadata.json``; see docs/export.md. ``-v 1`` shows progress.

Exit status: 0 done, 1 bad input (message on stderr), 2 a converter failed.
"""

from __future__ import annotations

import os
import sys

from absl import app, flags

from keras_effnet import export as export_lib
from keras_effnet import logs

FLAGS = flags.FLAGS
_FLAG_NAMES = ("model", "model_dir", "image_size", "weights", "format", "output", "overwrite",
               "classes", "quantization", "representative_data", "num_representative", "opset",
               "weight_decay", "top_k")


def define_flags() -> None:
    """Define this job's flags (a second call redefines them) and make them the ones ``--help`` lists."""
    again = {"allow_override": True}
    flags.DEFINE_string("model", None, "Variant name, e.g. efficientnet-b0 (with --weights).",
                        **again)
    flags.DEFINE_string("model_dir", None, "Training run directory (its EMA weights, class names "
                        "and evaluation preprocessing).", **again)
    flags.DEFINE_integer("image_size", None, "Input side in pixels (default: the weights'; "
                         "with --model_dir the run's, and another value is refused).", **again)
    flags.DEFINE_string("weights", None, "Weight file (.weights.h5, .keras, .h5, .pth, checkpoint) "
                        "or weight-set name (imagenet, noisy-student ...).", **again)
    flags.DEFINE_enum("format", None, list(export_lib.FORMATS), "Export format.", **again)
    flags.DEFINE_string("output", None, "Output directory (model + metadata.json).", **again)
    flags.DEFINE_bool("overwrite", False, "Replace an existing output.", **again)
    flags.DEFINE_integer("classes", None, "Classifier outputs (default: read from the weights; "
                         "with --model_dir the run's labels.txt, and another number is "
                         "refused).", **again)
    flags.DEFINE_enum("quantization", "float32", list(export_lib.ALL_QUANTIZATIONS),
                      "tflite: float32|float16|dynamic|int8; openvino: float32|bf16|int8 "
                      "(bf16: inference precision where the CPU has bf16 units; int8: NNCF "
                      "calibrated like TFLite int8).", **again)
    flags.DEFINE_string("representative_data", None,
                        "int8 calibration images: a directory of image files, or a data source "
                        "(digits, tfds:NAME, folder:PATH; train split). Default with --model_dir: "
                        "the run's training data (while it still exists).", **again)
    flags.DEFINE_integer("num_representative", export_lib.NUM_REPRESENTATIVE,
                         "int8 calibration images.", **again)
    flags.DEFINE_integer("opset", export_lib.DEFAULT_OPSET, "ONNX opset.", **again)
    flags.DEFINE_float("weight_decay", None, "Hub regularization_losses factor "
                       "(default: the run's optimizer.weight_decay; none for weight files).",
                       **again)
    flags.DEFINE_integer("top_k", export_lib.DEFAULT_TOP_K,
                         "Classes returned by the serving signatures.", **again)
    # absl's --help lists the key flags of the program that runs (sys.argv[0]: this module with
    # ``python -m``, the tools/ shim or the console script).
    for name in _FLAG_NAMES:
        FLAGS.register_key_flag_for_module(sys.argv[0], FLAGS[name])


def main(argv: list[str]) -> int:
    """Export the source of the flags and print the path written."""
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if FLAGS.format is None or FLAGS.output is None:
        raise app.UsageError("--format and --output are required")
    logs.configure(max(FLAGS.verbosity, 0))
    try:
        if FLAGS.model_dir is None and FLAGS.model is None:
            raise ValueError("pass --model NAME with --weights PATH, or --model_dir DIR")
        if FLAGS.model_dir is None and FLAGS.weights is None:
            raise ValueError(f"--model {FLAGS.model} needs --weights PATH (or a set name such as "
                             "imagenet); --model_dir DIR exports a training run instead")
        # Refuse a bad output before spending minutes loading the model.
        protected = [p for p in (FLAGS.model_dir, FLAGS.weights) if p and os.path.exists(p)]
        export_lib.check_output(FLAGS.output, FLAGS.overwrite, protected)
        source = export_lib.load_source(
            None if FLAGS.model_dir else FLAGS.model, weights=FLAGS.weights,
            model_dir=FLAGS.model_dir, classes=FLAGS.classes, image_size=FLAGS.image_size,
            include_top=FLAGS.format != "hub_feature_vector")
        representative = None
        if FLAGS.representative_data is not None:
            representative = export_lib.calibration_data(FLAGS.representative_data,
                                                         source.eval_preprocessing)
        path = export_lib.export(
            source, FLAGS.format, FLAGS.output, overwrite=FLAGS.overwrite,
            quantization=FLAGS.quantization, representative_data=representative,
            num_representative=FLAGS.num_representative, opset=FLAGS.opset,
            weight_decay=FLAGS.weight_decay, top_k=FLAGS.top_k)
    except (ValueError, FileNotFoundError, FileExistsError, PermissionError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except ImportError as error:  # an optional converter (openvino, nncf, tf2onnx) is missing
        print(f"error: {error}", file=sys.stderr)
        return 1
    except export_lib.ExportError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(path)
    return 0


def run() -> None:
    """Console-script entry point (``keras-effnet-export``)."""
    define_flags()
    app.run(main)


if __name__ == "__main__":
    run()

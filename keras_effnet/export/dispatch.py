"""``export(source, fmt, output)``: one directory holding the model and ``metadata.json``."""

from __future__ import annotations

import logging
import os
from typing import Any

import keras
import tensorflow as tf

from keras_effnet.export.hub import OUTPUT_NAMES, hub_module
from keras_effnet.export.onnx import DEFAULT_OPSET, export_onnx
from keras_effnet.export.openvino import OPENVINO_QUANTIZATIONS, export_openvino
from keras_effnet.export.serving import DEFAULT_TOP_K, serving_module
from keras_effnet.export.tflite import (NUM_REPRESENTATIVE, QUANTIZATIONS, check_quantization,
                                        export_tflite)
from keras_effnet.export.metadata import METADATA_FILE, build_metadata, write_metadata
from keras_effnet.export.source import ExportSource, load_source, source_from_model
from keras_effnet.export.staging import check_output, staged_directory
from keras_effnet.preprocessing import EvalPreprocessing

logger = logging.getLogger(__name__)

FORMATS = ("saved_model", "hub_feature_vector", "hub_classification", "tflite", "onnx",
           "openvino")
MODEL_FILES = {"tflite": "model.tflite", "onnx": "model.onnx", "openvino": "model.xml"}
# ``quantization=`` values each format takes (the others take float32 only).
FORMAT_QUANTIZATIONS = {"tflite": QUANTIZATIONS, "openvino": OPENVINO_QUANTIZATIONS}
ALL_QUANTIZATIONS = tuple(dict.fromkeys(QUANTIZATIONS + OPENVINO_QUANTIZATIONS))


def check_format_quantization(fmt: str, quantization: str) -> None:
    """Raise ValueError when ``fmt`` has no ``quantization`` mode, naming the ones it has."""
    if fmt == "tflite":
        check_quantization(quantization)
    allowed = FORMAT_QUANTIZATIONS.get(fmt, ("float32",))
    if quantization not in allowed:
        raise ValueError(f"format {fmt!r} takes quantization {', '.join(allowed)}, "
                         f"got {quantization!r}")


def _io_metadata(source: ExportSource, fmt: str, *, quantization: str, opset: int, top_k: int,
                 weight_decay: float | None) -> dict[str, Any]:
    size = source.eval_preprocessing.resolution
    if fmt == "saved_model":
        return dict(input={"signatures": {
            "serving_default": "float32 [B, H, W, 3] RGB in [0, 255], any size",
            "uint8_images": "uint8 [B, H, W, 3] RGB, any size",
            "encoded_images": "string [B] of JPEG/PNG/GIF/BMP bytes",
            "preprocessed_images": f"float32 [B, {size}, {size}, 3] in [0, 255], preprocessed"}},
            outputs=["logits", "probabilities", "top_k_classes", "top_k_scores", "top_k_labels"],
            top_k=top_k)
    if fmt.startswith("hub_"):
        return dict(input={"dtype": "float32", "shape": [None, None, None, 3], "range": [0, 1],
                           "note": "hub convention: multiply by 255 happens inside"},
                    outputs=[OUTPUT_NAMES[fmt[len("hub_"):]]],
                    weight_decay=weight_decay)
    int8 = fmt == "tflite" and quantization == "int8"
    if fmt == "openvino":
        return dict(input={"dtype": "float32", "shape": [None, size, size, 3], "range": [0, 255],
                           "note": "apply preprocessing first"},
                    outputs=["logits"], quantization=quantization,
                    files=["model.xml", "model.bin"])
    extra: dict[str, Any] = dict(
        input={"dtype": "uint8" if int8 else "float32",
               "shape": [1 if fmt == "tflite" else None, size, size, 3], "range": [0, 255],
               "note": "apply preprocessing first"},
        outputs=["logits"])
    if fmt == "tflite":
        extra["quantization"] = quantization
    else:
        extra["opset"] = opset
    return extra


def export(model_or_source, fmt: str, output: str | os.PathLike, *, weights: str | None = None,
           model_dir: str | None = None, classes: int | None = None,
           image_size: int | None = None, overwrite: bool = False, quantization: str = "float32",
           representative_data=None, num_representative: int = NUM_REPRESENTATIVE,
           opset: int = DEFAULT_OPSET, weight_decay: float | None = None,
           top_k: int = DEFAULT_TOP_K,
           eval_preprocessing: EvalPreprocessing | None = None,
           labels: list[str] | None = None) -> str:
    """Export to directory ``output``: the model in format ``fmt`` plus ``metadata.json``.

    Args:
        model_or_source: a Keras model (inputs [0, 255]; with ``eval_preprocessing`` and
            ``labels`` when known), an ``ExportSource``, a variant name (with ``weights=``), or
            None with ``model_dir=`` (a training run: its EMA weights and class names).
        fmt: one of ``FORMATS``. saved_model / hub_* write a SavedModel directory at ``output``;
            tflite / onnx / openvino write ``output/model.tflite`` / ``output/model.onnx`` /
            ``output/model.xml`` (+ ``model.bin``).
        quantization, representative_data, num_representative: TFLite (see ``export_tflite``)
            and OpenVINO (float32 / bf16 / int8, see ``export_openvino``); for int8 the
            source's input pipeline is used when ``representative_data`` is None.
        weight_decay: Hub ``regularization_losses`` factor (default: the run's config).

    Returns the path of the model (directory or file).

    Raises:
        ValueError: unknown format / quantization, output inside the source, bad arguments.
        FileExistsError: ``output`` exists and ``overwrite`` is False.
        FileNotFoundError: missing weights or run directory.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    check_format_quantization(fmt, quantization)
    include_top = fmt != "hub_feature_vector"
    source = _as_source(model_or_source, weights=weights, model_dir=model_dir, classes=classes,
                        image_size=image_size, include_top=include_top,
                        eval_preprocessing=eval_preprocessing, labels=labels)
    output = check_output(output, overwrite, source.protected)
    decay = weight_decay if weight_decay is not None else source.weight_decay
    metadata = build_metadata(source, fmt, **_io_metadata(
        source, fmt, quantization=quantization, opset=opset, top_k=top_k, weight_decay=decay))
    if fmt == "hub_feature_vector":
        metadata.update(labels=[], num_classes=None)

    with staged_directory(output, overwrite, source.protected) as target:
        if fmt == "saved_model":
            root = serving_module(source.model, source.eval_preprocessing,
                                          source.labels or None, top_k)
            tf.saved_model.save(root, target, signatures=root.signatures())
        elif fmt.startswith("hub_"):
            root = hub_module(source.model, fmt[len("hub_"):], decay)
            tf.saved_model.save(root, target, signatures=root.signatures())
        elif fmt in ("tflite", "openvino"):
            representative = representative_data
            if representative is None and quantization == "int8":
                representative = source.representative_data
            writer = export_tflite if fmt == "tflite" else export_openvino
            writer(source.model, os.path.join(target, MODEL_FILES[fmt]),
                   quantization=quantization, representative_images=representative,
                   eval_preprocessing=source.eval_preprocessing,
                   num_representative=num_representative)
        else:
            export_onnx(source.model, os.path.join(target, MODEL_FILES["onnx"]), opset=opset,
                             image_size=source.eval_preprocessing.resolution)
        write_metadata(os.path.join(target, METADATA_FILE), metadata)
    if fmt in MODEL_FILES:
        return os.path.join(output, MODEL_FILES[fmt])
    return output


def _as_source(model_or_source, *, weights, model_dir, classes, image_size, include_top,
               eval_preprocessing, labels) -> ExportSource:
    if isinstance(model_or_source, ExportSource):
        return model_or_source
    if isinstance(model_or_source, keras.Model):
        if weights is not None or model_dir is not None:
            raise ValueError("pass weights=/model_dir= with a variant name, not with a Keras model")
        return source_from_model(model_or_source, eval_preprocessing, labels,
                                 include_top=include_top, image_size=image_size)
    if eval_preprocessing is not None or labels is not None:
        raise ValueError("eval_preprocessing=/labels= go with a Keras model; a variant or run "
                         "directory brings its own")
    return load_source(model_or_source, weights=weights, model_dir=model_dir, classes=classes,
                       image_size=image_size, include_top=include_top)

"""Running exported models (tests, the int8 report, the benchmark): TFLite and onnxruntime."""

from __future__ import annotations

import os

import numpy as np
import tensorflow as tf


def tflite_predict(path: str | os.PathLike, images: np.ndarray,
                   num_threads: int | None = None) -> np.ndarray:
    """Run a ``.tflite`` file on float32 images [N, S, S, 3] in [0, 255] -> outputs [N, C].

    uint8 inputs (int8 models) get the pixels rounded; quantised outputs are dequantised.
    """
    interpreter = tf.lite.Interpreter(model_path=os.fspath(path), num_threads=num_threads)
    input_detail = interpreter.get_input_details()[0]
    output_detail = interpreter.get_output_details()[0]
    interpreter.resize_tensor_input(input_detail["index"], [1, *images.shape[1:]])
    interpreter.allocate_tensors()
    results = []
    for image in images:
        value = image[None]
        if input_detail["dtype"] in (np.uint8, np.int8):
            scale, zero = input_detail["quantization"]
            value = np.round(value / (scale or 1.0) + zero)
            info = np.iinfo(input_detail["dtype"])
            value = np.clip(value, info.min, info.max)
        interpreter.set_tensor(input_detail["index"], value.astype(input_detail["dtype"]))
        interpreter.invoke()
        out = interpreter.get_tensor(output_detail["index"]).astype(np.float32)
        if output_detail["dtype"] in (np.uint8, np.int8):
            scale, zero = output_detail["quantization"]
            out = (out - zero) * scale
        results.append(out[0])
    return np.stack(results)


def onnx_predict(path: str | os.PathLike, images: np.ndarray) -> np.ndarray:
    """Run an ``.onnx`` file with onnxruntime on float32 images [N, S, S, 3] in [0, 255]."""
    import onnxruntime  # noqa: PLC0415 (optional dependency: the onnx extra)

    session = onnxruntime.InferenceSession(os.fspath(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return session.run(None, {name: images.astype(np.float32)})[0]


def top1_agreement(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Fraction of rows whose argmax agrees."""
    return float(np.mean(np.argmax(reference, -1) == np.argmax(candidate, -1)))

"""ONNX through tf2onnx: a plain SavedModel (``model.export``) converted by ``tf2onnx.convert``.

tf2onnx runs as ``python -m tf2onnx.convert --saved-model`` in a subprocess: its in-process
``tf2onnx.convert.from_function`` turns the model's variables into graph inputs.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
from typing import Iterable

import keras

from keras_effnet import atomic
from keras_effnet.export.graph import fixed_size, export_view, write_inference_saved_model
from keras_effnet.export.metadata import write_metadata
from keras_effnet.export.staging import ExportError, check_output

logger = logging.getLogger(__name__)

DEFAULT_OPSET = 17


def export_onnx(model: keras.Model, output_path: str | os.PathLike, *, opset: int = DEFAULT_OPSET,
                image_size: int | None = None, metadata: dict | None = None,
                overwrite: bool = False, protected: Iterable[str] = ()) -> str:
    """Convert ``model`` (logits head, input [B, S, S, 3] float32 in [0, 255]) to ONNX.

    Returns the path. ``metadata`` goes to ``<stem>.json``.

    Raises:
        ValueError: a variable input size without ``image_size``.
        ExportError: tf2onnx failed (its output is in the message).
    """
    size = image_size or fixed_size(model)
    if size is None:
        raise ValueError(f"model {model.name!r} has a variable input size; pass image_size=")
    model = export_view(model, input_shape=(size, size, 3))
    output_path = check_output(output_path, overwrite, protected)
    with tempfile.TemporaryDirectory(prefix="keras-effnet-onnx-") as workdir, \
            atomic.atomic_path(output_path, ".onnx") as target:
        saved = os.path.join(workdir, "saved_model")
        write_inference_saved_model(model, saved)
        command = [sys.executable, "-m", "tf2onnx.convert", "--saved-model", saved,
                   "--opset", str(int(opset)), "--output", target]
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
        logger.info("running %s", " ".join(command))
        result = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
        if result.returncode != 0 or not os.path.getsize(target):
            tail = (result.stdout + result.stderr)[-4000:]
            raise ExportError(f"tf2onnx failed (exit {result.returncode}):\n{tail}")
    if metadata is not None:
        write_metadata(os.path.splitext(output_path)[0] + ".json", metadata)
    return output_path


def quantize_onnx_int8(float_path: str | os.PathLike, output_path: str | os.PathLike,
                       images: Iterable) -> str:
    """Static int8 quantisation (QDQ, per-channel weights) of an ONNX file by
    ``onnxruntime.quantization.quantize_static``, calibrated on float32 images [S, S, 3] in
    [0, 255] (e.g. ``tflite.representative_arrays``: the path TFLite int8 calibrates on).

    Raises:
        ImportError: onnxruntime is not installed.
        ValueError: no calibration images.
    """
    try:
        from onnxruntime import quantization as ort_quant  # noqa: PLC0415 (the onnx extra)
    except ImportError as error:
        raise ImportError(f"int8 ONNX needs onnxruntime: pip install onnxruntime ({error})") from error
    batches = [image[None].astype("float32") for image in images]
    if not batches:
        raise ValueError("int8 ONNX quantization needs calibration images; got none")
    import onnx  # noqa: PLC0415 (installed with tf2onnx)

    input_name = onnx.load(os.fspath(float_path), load_external_data=False).graph.input[0].name
    reader = iter([{input_name: batch} for batch in batches])

    class Reader(ort_quant.CalibrationDataReader):
        def get_next(self):
            return next(reader, None)

    ort_quant.quantize_static(os.fspath(float_path), os.fspath(output_path), Reader(),
                              quant_format=ort_quant.QuantFormat.QDQ, per_channel=True,
                              activation_type=ort_quant.QuantType.QInt8,
                              weight_type=ort_quant.QuantType.QInt8)
    return os.fspath(output_path)

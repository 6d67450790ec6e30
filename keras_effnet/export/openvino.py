"""OpenVINO IR (``model.xml`` + ``model.bin``): float32, bf16 inference precision, NNCF int8.

From the deploy graph (``keras_effnet.deploy.deploy``: batch norm folded, dropout removed)
through a plain SavedModel and ``openvino.convert_model``. Input float32 [B, S, S, 3] RGB in
[0, 255] (apply the evaluation preprocessing first), output float32 logits [B, C].

- ``float32``: the IR as converted; outputs match Keras to float32 rounding.
  ``compile_openvino`` compiles it with ``INFERENCE_PRECISION_HINT = f32``: OpenVINO's CPU
  plugin otherwise runs float32 models in bf16 on CPUs with bf16 units (measured on an AMD
  EPYC with AVX512-BF16: logits off by up to 0.2 on the tiny test model).
- ``bf16``: the same float32 IR marked ``keras_effnet/inference_precision = bf16`` in its
  ``rt_info`` (and ``quantization`` in metadata.json); ``compile_openvino`` passes it to
  OpenVINO as ``INFERENCE_PRECISION_HINT`` (OpenVINO 2026.4's CPU plugin ignores a
  ``runtime_options`` precision in ``rt_info``: measured). bfloat16 runs where the CPU has
  bf16 units (AVX512-BF16 / AMX: OpenVINO lists ``BF16`` in the CPU's
  ``OPTIMIZATION_CAPABILITIES``). Elsewhere the export logs a warning: OpenVINO 2026.4 still
  compiles the model in bf16 there (emulated on AVX-512, measured on a Xeon without
  AVX512-BF16/AMX), with no speed gain to expect.
- ``int8``: NNCF post-training quantisation (``nncf.quantize``) calibrated on the same
  representative images TFLite int8 uses (``tflite.representative_arrays``).

OpenVINO and NNCF are optional (the ``openvino`` extra): imported where needed.
"""

from __future__ import annotations

import logging
import os
import tempfile
from typing import Iterable

import keras
import numpy as np

from keras_effnet.deploy import deploy
from keras_effnet.export.graph import (default_eval_preprocessing, export_view,
                                       write_inference_saved_model)
from keras_effnet.export.metadata import write_metadata
from keras_effnet.export.staging import ExportError, check_output
from keras_effnet.export.tflite import NUM_REPRESENTATIVE, representative_arrays
from keras_effnet.preprocessing import EvalPreprocessing

logger = logging.getLogger(__name__)

OPENVINO_QUANTIZATIONS = ("float32", "bf16", "int8")
MODEL_FILE = "model.xml"
PRECISION_KEY = ("keras_effnet", "inference_precision")


def import_openvino():
    """The ``openvino`` module, or ImportError naming the extra to install."""
    try:
        import openvino  # noqa: PLC0415 (optional dependency: the openvino extra)
    except ImportError as error:
        raise ImportError("OpenVINO is not installed: pip install 'keras-effnet[openvino]' "
                          f"({error})") from error
    return openvino


def cpu_capabilities() -> list[str]:
    """OpenVINO's ``OPTIMIZATION_CAPABILITIES`` of the CPU device (``FP32``, ``INT8``, ``BF16`` ...)."""
    core = import_openvino().Core()
    return [str(value) for value in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")]


def bf16_supported() -> bool:
    """Whether OpenVINO runs bfloat16 natively on this CPU (AVX512-BF16 or AMX)."""
    return "BF16" in cpu_capabilities()


def check_openvino_quantization(quantization: str) -> None:
    if quantization not in OPENVINO_QUANTIZATIONS:
        raise ValueError(f"OpenVINO quantization must be one of "
                         f"{', '.join(OPENVINO_QUANTIZATIONS)}, got {quantization!r}")


def _quantize_int8(ov_model, images: list[np.ndarray]):
    try:
        import nncf  # noqa: PLC0415 (optional dependency: the openvino extra)
    except ImportError as error:
        raise ImportError("int8 OpenVINO export needs NNCF: pip install "
                          f"'keras-effnet[openvino]' ({error})") from error
    dataset = nncf.Dataset(images, lambda image: image[None])
    return nncf.quantize(ov_model, dataset, subset_size=len(images))


def export_openvino(model: keras.Model, output_path: str | os.PathLike, *,
                    quantization: str = "float32", representative_images=None,
                    eval_preprocessing: EvalPreprocessing | None = None,
                    num_representative: int = NUM_REPRESENTATIVE,
                    image_size: int | None = None, metadata: dict | None = None,
                    overwrite: bool = False, protected: Iterable[str] = ()) -> str:
    """Convert ``model`` (logits head, RGB [0, 255] in) to OpenVINO IR at ``output_path`` (.xml).

    The ``.bin`` with the weights is written beside it. ``quantization``: ``float32``,
    ``bf16`` (inference precision hint; float32 weights) or ``int8`` (NNCF, calibrated on
    ``representative_images``: any form ``export_tflite`` accepts). ``metadata`` goes to
    ``<stem>.json``. Returns the ``.xml`` path.

    Raises:
        ValueError: unknown quantization, int8 without representative images.
        ImportError: OpenVINO (or NNCF for int8) is not installed.
        ExportError: the conversion failed.
    """
    check_openvino_quantization(quantization)
    ov = import_openvino()
    if eval_preprocessing is None:
        eval_preprocessing = default_eval_preprocessing(model, image_size)
    elif image_size is not None:
        eval_preprocessing = eval_preprocessing.replace(resolution=int(image_size))
    size = eval_preprocessing.resolution
    if quantization == "int8" and representative_images is None:
        raise ValueError("int8 quantization needs representative_images (about 100 images from "
                         "the input pipeline, or a directory of photos: --representative_data)")
    output_path = os.fspath(check_output(output_path, overwrite, protected))
    if not output_path.endswith(".xml"):
        raise ValueError(f"OpenVINO output {output_path!r} must end in .xml (the .bin goes beside)")
    graph = deploy(export_view(model, input_shape=(size, size, 3)))
    with tempfile.TemporaryDirectory(prefix="keras-effnet-openvino-") as workdir:
        saved = os.path.join(workdir, "saved_model")
        write_inference_saved_model(graph, saved)
        try:
            ov_model = ov.convert_model(saved, input=[(-1, size, size, 3)])
        except Exception as error:  # noqa: BLE001 (the converter raises many types)
            raise ExportError(f"OpenVINO conversion failed: {error}") from error
        if quantization == "int8":
            images = list(representative_arrays(representative_images, eval_preprocessing,
                                                num_representative))
            if not images:
                raise ValueError("representative_images yielded no images")
            logger.info("calibrating OpenVINO int8 (NNCF) on %d images", len(images))
            ov_model = _quantize_int8(ov_model, images)
        elif quantization == "bf16":
            ov_model.set_rt_info("bf16", list(PRECISION_KEY))
            if not bf16_supported():
                logger.warning("this CPU has no bf16 units (OpenVINO capabilities: %s): bf16 is "
                               "emulated here; expect its speed only on CPUs with AVX512-BF16 "
                               "or AMX", ", ".join(cpu_capabilities()))
        # Stage beside the target; rename the .bin first: OpenVINO reads <stem>.bin beside
        # the .xml, so a reader never sees a new .xml with an old .bin.
        stem = os.path.splitext(output_path)[0]
        staged = f"{stem}.tmp-{os.getpid()}.xml"
        ov.save_model(ov_model, staged, compress_to_fp16=False)
        os.replace(staged[:-4] + ".bin", stem + ".bin")
        os.replace(staged, output_path)
    if metadata is not None:
        write_metadata(stem + ".json", metadata)
    return output_path


def compile_openvino(path: str | os.PathLike, *, precision: str | None = None,
                     threads: int | None = None, performance_hint: str = "LATENCY"):
    """``openvino.Core().compile_model`` for the CPU, in the precision the export recorded
    (``bf16`` models) or ``f32`` (every other IR) unless ``precision`` (``f32`` / ``bf16``)
    overrides it.

    ``f32`` is passed explicitly: left unset, OpenVINO runs float32 and int8 models' float
    parts in bf16 wherever the CPU has bf16 units, and the float32 export would no longer
    match Keras there.
    """
    ov = import_openvino()
    core = ov.Core()
    model = core.read_model(os.fspath(path))
    if precision is None:
        precision = (str(model.get_rt_info(list(PRECISION_KEY)).astype(str))
                     if model.has_rt_info(list(PRECISION_KEY)) else "f32")
    config: dict[str, str] = {"PERFORMANCE_HINT": performance_hint,
                              "INFERENCE_PRECISION_HINT": precision}
    if threads:
        config["INFERENCE_NUM_THREADS"] = str(int(threads))
    return core.compile_model(model, "CPU", config)


def openvino_predict(path: str | os.PathLike, images: np.ndarray,
                     precision: str | None = None) -> np.ndarray:
    """Run an OpenVINO ``.xml`` on float32 images [N, S, S, 3] in [0, 255] -> outputs [N, C]."""
    compiled = compile_openvino(path, precision=precision)
    return np.asarray(compiled(np.asarray(images, dtype=np.float32))[0], dtype=np.float32)

"""Benchmark engines: our model, its deploy transform, keras.applications, exported TFLite / ONNX
files and timm, each as a blocking step function; ``run_benchmark`` times them all.

The optional peers (the exporter's converters, onnxruntime, timm) are imported where an engine
needs them: a missing one makes that engine unavailable, named in the report, not an error.
"""

from __future__ import annotations

import logging
import os
import tempfile
from typing import Callable, Iterable

import keras
import numpy as np
import tensorflow as tf

from keras_effnet import build_model
from keras_effnet.benchmark.timing import (TRAINABLE_ENGINES, BenchmarkConfig, EngineUnavailable, Row,
                                           interleave, rows_from)
from keras_effnet.deploy import deploy
from keras_effnet.preprocessing import EvalPreprocessing
from keras_effnet.scaling import canonical_name, get_spec

logger = logging.getLogger(__name__)


def configure_frameworks(threads: int | None, precision: str) -> None:
    """Thread counts and the Keras dtype policy; call before any model is built."""
    if threads is not None:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(threads)
        except RuntimeError:  # already initialised: keep what runs
            pass
    keras.config.set_dtype_policy(precision)


def variant_size(model: str, image_size: int | None) -> int:
    """``image_size``, or the variant's own resolution when None."""
    return image_size or get_spec(model).resolution


def build_keras(engine: str, model: str, image_size: int):
    """A Keras model for ``effnet`` / ``applications`` (random weights, 1000 classes)."""
    shape = (image_size, image_size, 3)
    if engine.startswith("effnet"):
        return build_model(model, weights=None, input_shape=shape)
    name = canonical_name(model)
    suffix = name.replace("efficientnet-", "")
    if not (len(suffix) == 2 and suffix[0] == "b" and suffix[1] in "01234567"):
        raise EngineUnavailable(f"keras.applications has no {name}")
    constructor = getattr(keras.applications, f"EfficientNetB{suffix[1]}")
    return constructor(weights=None, input_shape=shape)


KERAS_ENGINES = ("effnet", "effnet-deploy", "applications")


def inference_function(model, jit_compile: bool = False) -> Callable[[tf.Tensor], tf.Tensor]:
    """``model(x, training=False)`` in a ``tf.function``: how the Keras engines run (and
    ``keras_effnet.benchmark.op_profile`` profiles them). ``jit_compile=True`` (XLA) is about
    20x slower for B0 on these CPUs (docs/performance.md, "TensorFlow path")."""
    return tf.function(lambda x: model(x, training=False), jit_compile=jit_compile)


def _inference_step(model, images, jit_compile: bool) -> Callable[[], object]:
    forward = inference_function(model, jit_compile)
    tensor = tf.constant(images)

    def step():
        return forward(tensor).numpy()

    return step


def _training_step(model, images, labels, jit_compile: bool) -> Callable[[], object]:
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
                  loss=keras.losses.SparseCategoricalCrossentropy(), jit_compile=jit_compile)

    def step():
        return model.train_on_batch(images, labels)

    return step


CALIBRATION_IMAGES = 16


def calibration_images(count: int = CALIBRATION_IMAGES) -> list[np.ndarray]:
    """int8 calibration for the benchmark: scikit-image's photographs (uint8, any size) when
    installed, else uniform noise; the speed of an int8 engine does not depend on which."""
    try:
        from skimage import data  # noqa: PLC0415  (the test extra)
        photos = [getattr(data, name)() for name in ("chelsea", "coffee", "astronaut", "rocket")]
    except Exception:  # noqa: BLE001 (missing package or optional downloads)
        photos = []
    rng = np.random.default_rng(0)
    while len(photos) < count:
        photos.append(rng.integers(0, 256, (256, 256, 3), dtype=np.uint8))
    return photos[:count]


def _export(kind: str, model, path: str) -> str:
    """Export through ``keras_effnet.export`` (the one exporter); ``kind`` is ``tflite``,
    ``onnx`` or ``openvino``, optionally with a precision (``tflite-int8``, ``openvino-bf16``)."""
    try:
        from keras_effnet import export  # noqa: PLC0415  (optional converters: tf2onnx, onnx)
    except ImportError as error:
        raise EngineUnavailable(f"keras_effnet.export is not available ({error})") from error
    fmt, _, quantization = kind.partition("-")
    quantization = quantization or "float32"
    calibration = calibration_images() if quantization == "int8" else None
    try:
        if fmt == "tflite":
            export.export_tflite(model, path, quantization=quantization, overwrite=True,
                                 representative_images=calibration)
        elif fmt == "openvino":
            export.export_openvino(model, path, quantization=quantization, overwrite=True,
                                   representative_images=calibration)
        elif quantization == "int8":
            float_path = path.replace("-int8.onnx", ".onnx")
            if not os.path.exists(float_path):
                export.export_onnx(model, float_path, opset=17, overwrite=True)
            size = int(model.input_shape[1])
            images = export.representative_arrays(calibration, EvalPreprocessing(size),
                                                  len(calibration))
            export.quantize_onnx_int8(float_path, path, images)
        else:
            export.export_onnx(model, path, opset=17, overwrite=True)
    except ImportError as error:
        raise EngineUnavailable(str(error)) from error
    return path


def _tflite_step(path: str, images: np.ndarray, threads: int | None) -> Callable[[], object]:
    # XNNPACK is TFLite's default CPU delegate (float and int8 models).
    interpreter = tf.lite.Interpreter(model_path=path, num_threads=threads or os.cpu_count())
    detail = interpreter.get_input_details()[0]
    input_index = detail["index"]
    output_index = interpreter.get_output_details()[0]["index"]
    interpreter.resize_tensor_input(input_index, list(images.shape))
    interpreter.allocate_tensors()
    if detail["dtype"] == np.uint8:  # int8 models take uint8 pixels
        images = np.clip(np.round(images), 0, 255).astype(np.uint8)

    def step():
        interpreter.set_tensor(input_index, images)
        interpreter.invoke()
        return interpreter.get_tensor(output_index)

    return step


def _onnxruntime_step(path: str, images: np.ndarray,
                      threads: int | None) -> Callable[[], object]:
    try:
        import onnxruntime  # noqa: PLC0415
    except ImportError as error:
        raise EngineUnavailable(f"onnxruntime is not installed ({error})") from error
    options = onnxruntime.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name

    def step():
        return session.run(None, {input_name: images})

    return step


def _openvino_step(path: str, images: np.ndarray, threads: int | None) -> Callable[[], object]:
    try:
        from keras_effnet import export  # noqa: PLC0415
        compiled = export.compile_openvino(path, threads=threads)
    except ImportError as error:
        raise EngineUnavailable(str(error)) from error
    request = compiled.create_infer_request()

    def step():
        return request.infer([images])

    return step


def _timm_model(image_size: int, threads: int | None):
    try:
        import timm  # noqa: PLC0415
        import torch  # noqa: PLC0415
    except ImportError as error:  # timm needs torchvision, which not every torch install has
        raise EngineUnavailable(f"timm does not import here ({error})") from error
    if threads:
        torch.set_num_threads(threads)
    model = timm.create_model("efficientnet_b0", pretrained=False, num_classes=1000)
    return model.to(memory_format=torch.channels_last), torch


def _timm_inference_step(bundle, images: np.ndarray) -> Callable[[], object]:
    model, torch = bundle
    model.eval()
    tensor = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(
        memory_format=torch.channels_last)

    def step():
        with torch.inference_mode():
            return model(tensor)

    return step


def _timm_training_step(bundle, images: np.ndarray, labels: np.ndarray) -> Callable[[], object]:
    model, torch = bundle
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    tensor = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(
        memory_format=torch.channels_last)
    target = torch.from_numpy(labels.astype(np.int64))

    def step():
        model.train()
        optimizer.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(model(tensor), target)
        loss.backward()
        optimizer.step()
        return loss.item()

    return step


class EngineSet:
    """Builds each engine once and hands out blocking step functions per batch size."""

    def __init__(self, config: BenchmarkConfig):
        self.config = config
        self.image_size = variant_size(config.model, config.image_size)
        self.models: dict[str, object] = {}
        self.exports: dict[str, str] = {}
        self.unavailable: dict[str, str] = {}
        self._tempdir = None

    def _export_dir(self) -> str:
        if self.config.export_dir:
            os.makedirs(self.config.export_dir, exist_ok=True)
            return self.config.export_dir
        if self._tempdir is None:
            self._tempdir = tempfile.TemporaryDirectory(prefix="effnet_bench_")
        return self._tempdir.name

    def keras_model(self, engine: str):
        """Keras model for effnet / effnet-deploy / applications (cached; effnet-deploy is
        the deploy transform of the effnet model, same weights)."""
        if engine not in self.models:
            if engine == "effnet-deploy":
                self.models[engine] = deploy(self.keras_model("effnet"))
            else:
                self.models[engine] = build_keras(engine, self.config.model, self.image_size)
        return self.models[engine]

    def _exported(self, engine: str) -> str:
        if engine not in self.exports:
            source, kind = engine.split("-", 1)  # effnet / tflite-int8
            kind = kind.replace("onnxruntime", "onnx")
            fmt, _, quantization = kind.partition("-")
            # Our exported engines start from the deploy transform.
            model = self.keras_model("effnet-deploy" if source == "effnet" else "applications")
            suffix = f"-{quantization}" if quantization else ""
            extension = {"openvino": "xml"}.get(fmt, fmt)
            path = os.path.join(self._export_dir(), f"{source}_{self.config.model}_"
                                f"{self.image_size}{suffix}.{extension}")
            self.exports[engine] = _export(kind, model, path)
        return self.exports[engine]

    def inference_step(self, engine: str, images: np.ndarray) -> Callable[[], object]:
        if engine in KERAS_ENGINES:
            return _inference_step(self.keras_model(engine), images, self.config.jit_compile)
        if "-tflite" in engine:
            return _tflite_step(self._exported(engine), images, self.config.threads)
        if "-onnxruntime" in engine:
            return _onnxruntime_step(self._exported(engine), images, self.config.threads)
        if "-openvino" in engine:
            return _openvino_step(self._exported(engine), images, self.config.threads)
        if engine == "timm":
            if "timm" not in self.models:
                self.models["timm"] = _timm_model(self.image_size, self.config.threads)
            return _timm_inference_step(self.models["timm"], images)
        raise ValueError(f"unknown engine {engine!r}")

    def training_step(self, engine: str, images: np.ndarray,
                      labels: np.ndarray) -> Callable[[], object]:
        if engine == "timm":
            if "timm" not in self.models:
                self.models["timm"] = _timm_model(self.image_size, self.config.threads)
            return _timm_training_step(self.models["timm"], images, labels)
        return _training_step(self.keras_model(engine), images, labels, self.config.jit_compile)


def collect_steps(make: Callable[[str], Callable[[], object]], engines: Iterable[str],
                  unavailable: dict[str, str]) -> dict[str, Callable[[], object]]:
    """``make(engine)`` for each engine; an ``EngineUnavailable`` goes into ``unavailable``."""
    steps = {}
    for engine in engines:
        if engine in unavailable:
            continue
        try:
            steps[engine] = make(engine)
        except EngineUnavailable as error:
            unavailable[engine] = str(error)
    return steps


def random_batch(batch_size: int, image_size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Float images in [0, 255] [batch, size, size, 3] and int32 labels [batch]."""
    rng = np.random.default_rng(seed)
    images = rng.uniform(0, 255, (batch_size, image_size, image_size, 3)).astype(np.float32)
    return images, rng.integers(0, 1000, batch_size).astype(np.int32)


def run_benchmark(config: BenchmarkConfig,
                  log: Callable[[str], None] | None = None) -> tuple[list[Row], dict[str, str]]:
    """Measure every engine of ``config``; returns (rows, unavailable engine -> reason).

    ``log`` receives one progress line per phase (default: this module's logger at INFO).
    """
    log = log or logger.info
    configure_frameworks(config.threads, config.precision)
    engines = EngineSet(config)
    size = engines.image_size
    rows: list[Row] = []
    for batch_size in config.batch_sizes:
        images, _ = random_batch(batch_size, size, config.seed)
        log(f"inference, batch {batch_size}, {size}x{size}: preparing")
        steps = collect_steps(lambda e: engines.inference_step(e, images), config.engines,
                              engines.unavailable)
        log(f"inference, batch {batch_size}: timing {list(steps)}")
        rows += rows_from(interleave(steps, batch_size, "inference", rounds=config.rounds,
                                     warmup=config.warmup,
                                     min_round_seconds=config.min_round_seconds))
    if config.train_batch_size:
        images, labels = random_batch(config.train_batch_size, size, config.seed)
        trainable = [e for e in config.engines if e in TRAINABLE_ENGINES]
        log(f"training, batch {config.train_batch_size}: preparing {trainable}")
        steps = collect_steps(lambda e: engines.training_step(e, images, labels), trainable,
                              engines.unavailable)
        log(f"training, batch {config.train_batch_size}: timing {list(steps)}")
        rows += rows_from(interleave(steps, config.train_batch_size, "training",
                                     rounds=config.rounds, warmup=config.warmup,
                                     min_round_seconds=config.min_round_seconds))
    return rows, engines.unavailable

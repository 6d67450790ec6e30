"""TFLite: float32, float16, dynamic-range and full-integer int8 models.

Through a plain SavedModel (``model.export``) and ``tf.lite.TFLiteConverter.from_saved_model``;
the int8 model takes uint8 RGB pixels and returns float32 logits.
"""

from __future__ import annotations

import glob
import logging
import os
import tempfile
from typing import Any, Iterable, Iterator

import keras
import numpy as np
import tensorflow as tf

from keras_effnet import atomic, preprocessing
from keras_effnet import data as data_lib
from keras_effnet.export.graph import (default_eval_preprocessing, export_view,
                                       write_inference_saved_model)
from keras_effnet.export.metadata import write_metadata
from keras_effnet.export.staging import ExportError, check_output
from keras_effnet.preprocessing import EvalPreprocessing

logger = logging.getLogger(__name__)

QUANTIZATIONS = ("float32", "float16", "dynamic", "int8")
DATA_SOURCE_KINDS = ("tfds", "folder", "tfrecord")
NUM_REPRESENTATIVE = 100
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".gif", ".bmp")


def check_quantization(quantization: str) -> None:
    if quantization not in QUANTIZATIONS:
        raise ValueError(f"quantization must be one of {', '.join(QUANTIZATIONS)}, "
                         f"got {quantization!r}")


def export_tflite(model: keras.Model, output_path: str | os.PathLike, *,
                  quantization: str = "float32", representative_images=None,
                  eval_preprocessing: EvalPreprocessing | None = None,
                  num_representative: int = NUM_REPRESENTATIVE, image_size: int | None = None,
                  metadata: dict | None = None, overwrite: bool = False,
                  protected: Iterable[str] = ()) -> str:
    """Convert ``model`` (logits head, input [1, S, S, 3]) to a ``.tflite`` file; returns its path.

    quantization: ``float32``; ``float16`` (weights in half precision); ``dynamic`` (int8
    weights, float activations); ``int8`` (full integer: int8 weights and activations, uint8
    RGB input in [0, 255], float32 output), calibrated on ``representative_images``: a
    directory or list of image files, encoded bytes, uint8/float arrays [H, W, 3] of any size
    (run through ``preprocess_for_eval``), a ``tf.data.Dataset`` of preprocessed float32
    images [S, S, 3] / batches / (image, label) pairs, or a callable(n) returning any of these.
    ``metadata`` goes to ``<stem>.json``.
    """
    check_quantization(quantization)
    if eval_preprocessing is None:
        eval_preprocessing = default_eval_preprocessing(model, image_size)
    elif image_size is not None:
        eval_preprocessing = eval_preprocessing.replace(resolution=int(image_size))
    size = eval_preprocessing.resolution
    model = export_view(model, input_shape=(size, size, 3))
    if quantization == "int8" and representative_images is None:
        raise ValueError("int8 quantization needs representative_images (about 100 images from "
                         "the input pipeline, or a directory of photos: --representative_data)")
    output_path = check_output(output_path, overwrite, protected)
    with tempfile.TemporaryDirectory(prefix="keras-effnet-tflite-") as workdir:
        saved = os.path.join(workdir, "saved_model")
        write_inference_saved_model(model, saved)
        converter = tf.lite.TFLiteConverter.from_saved_model(saved)
        if quantization in ("float16", "dynamic", "int8"):
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if quantization == "float16":
            converter.target_spec.supported_types = [tf.float16]
        elif quantization == "int8":
            images = list(representative_arrays(representative_images, eval_preprocessing,
                                                num_representative))
            if not images:
                raise ValueError("representative_images yielded no images")
            logger.info("calibrating int8 on %d images", len(images))

            def dataset():
                for image in images:
                    yield [image[None]]

            converter.representative_dataset = dataset
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            converter.inference_input_type = tf.uint8
        try:
            flatbuffer = converter.convert()
        except Exception as error:  # noqa: BLE001 (the converter raises many types)
            raise ExportError(f"TFLite conversion ({quantization}) failed: {error}") from error
    with atomic.atomic_path(output_path, ".tflite") as tmp:
        with open(tmp, "wb") as stream:
            stream.write(flatbuffer)
    if metadata is not None:
        write_metadata(os.path.splitext(output_path)[0] + ".json", metadata)
    return output_path


def _image_files(directory: str) -> list[str]:
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"representative image directory {directory!r} does not exist")
    files = sorted(path for path in glob.glob(os.path.join(directory, "**", "*"), recursive=True)
                   if path.lower().endswith(IMAGE_SUFFIXES))
    if not files:
        raise ValueError(f"no {'/'.join(IMAGE_SUFFIXES)} images under {directory!r}")
    return files


def _dataset_images(dataset: tf.data.Dataset, settings: EvalPreprocessing) -> Iterator[np.ndarray]:
    size = settings.resolution
    for element in dataset:
        batch = element[0] if isinstance(element, (tuple, list)) else element
        batch = np.asarray(batch, dtype=np.float32)
        for image in (batch if batch.ndim == 4 else batch[None]):
            if image.shape[:2] != (size, size):
                image = preprocessing.preprocess_for_eval(image, settings).numpy()
            yield image


def representative_arrays(images: Any, settings: EvalPreprocessing,
                          limit: int = NUM_REPRESENTATIVE) -> Iterator[np.ndarray]:
    """float32 [S, S, 3] arrays in [0, 255] from the forms ``export_tflite`` accepts."""
    if callable(images) and not isinstance(images, tf.data.Dataset):
        images = images(limit)
    if isinstance(images, (str, os.PathLike)):
        images = _image_files(os.fspath(images))
    if isinstance(images, tf.data.Dataset):
        stream = _dataset_images(images, settings)
    else:
        stream = (_one_image(item, settings) for item in images)
    for count, image in enumerate(stream):
        if count >= limit:
            return
        yield image


def _one_image(item: Any, settings: EvalPreprocessing) -> np.ndarray:
    if isinstance(item, (str, os.PathLike)):
        item = tf.io.read_file(os.fspath(item))
    elif isinstance(item, bytes):
        item = tf.constant(item)
    return preprocessing.preprocess_for_eval(item, settings).numpy()


def calibration_data(value: str, settings: EvalPreprocessing) -> str | tf.data.Dataset:
    """``--representative_data``: a directory of image files stays a path; a data source
    (``digits``, ``tfds:NAME``, ``folder:PATH``, ``tfrecord:GLOB``) becomes its train split
    through the evaluation preprocessing.

    Raises:
        FileNotFoundError: neither an existing directory nor a data source.
    """
    if os.path.isdir(value):
        return value
    if value == "digits" or value.split(":", 1)[0] in DATA_SOURCE_KINDS:
        dataset = data_lib.make_dataset(value, "train", image_size=settings.resolution,
                                        batch_size=1, training=False,
                                        eval_preprocessing=settings)
        return dataset.map(lambda images, labels: images)
    raise FileNotFoundError(f"--representative_data {value!r} is neither a directory nor a data "
                            "source (digits, tfds:NAME, folder:PATH, tfrecord:GLOB)")

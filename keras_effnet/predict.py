"""Classify image files with a training run or a variant + weights.

``classify_with_run(paths, run_dir)`` uses the run's class names and evaluation preprocessing
(``run.json``, ``labels.txt``) and its model (``training.load_run_model``): the training data and
the initial weights are not needed. ``classify_with_weights(paths, variant, weights)`` uses a weight
set's own preprocessing (resolution, crop, resize) and the ImageNet class names. Both apply the one
``preprocessing.preprocess_for_eval`` and a softmax over the model's logits.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Sequence

import keras
import numpy as np
import tensorflow as tf

from keras_effnet import imagenet
from keras_effnet import weights as weight_sets
from keras_effnet.applications import build_model
from keras_effnet.preprocessing import EvalPreprocessing, preprocess_for_eval
from keras_effnet.scaling import get_spec
from keras_effnet.training import load_run_model


@dataclasses.dataclass(frozen=True)
class Prediction:
    """One ranked class of one image: output ``index``, ``label``, softmax ``probability`` and,
    for ImageNet classes, the WordNet ``synset`` id."""

    index: int
    label: str
    probability: float
    synset: str | None = None


def load_images(paths: Sequence[str | os.PathLike], settings: EvalPreprocessing) -> np.ndarray:
    """Image files -> float32 [N, S, S, 3] in [0, 255], preprocessed with ``settings``.

    Raises:
        FileNotFoundError: naming every missing file.
        ValueError: naming the first file that is not a decodable image.
    """
    missing = [os.fspath(path) for path in paths if not os.path.isfile(path)]
    if missing:
        raise FileNotFoundError(f"image files not found: {', '.join(missing)}")
    images = []
    for path in paths:
        with open(path, "rb") as stream:
            data = stream.read()
        # TF decodes a truncated JPEG without error (grey bottom rows): refuse it by its markers.
        if data.startswith(b"\xff\xd8") and not data.rstrip(b"\0\r\n").endswith(b"\xff\xd9"):
            raise ValueError(f"cannot read image {os.fspath(path)!r}: the JPEG is truncated (no "
                             "end-of-image marker); copy the file again")
        try:
            encoded = tf.constant(data)
            images.append(preprocess_for_eval(encoded, settings).numpy())
        except (tf.errors.InvalidArgumentError, tf.errors.UnknownError) as error:
            message = getattr(error, "message", str(error)).strip().splitlines()[0]
            raise ValueError(f"cannot read image {os.fspath(path)!r}: not a decodable JPEG, PNG, "
                             f"GIF or BMP ({message})") from None
    return np.stack(images)


def rank(logits: np.ndarray, class_names: Sequence[str], top: int = 5,
         synsets: Sequence[str] | None = None) -> list[list[Prediction]]:
    """The ``top`` most probable classes of each row of ``logits`` [N, C], best first."""
    logits = np.asarray(logits, np.float32)
    if logits.ndim != 2 or logits.shape[1] != len(class_names):
        raise ValueError(f"logits of shape {logits.shape} do not match {len(class_names)} "
                         "class names")
    if top < 1:
        raise ValueError(f"top must be >= 1, got {top}")
    probabilities = keras.ops.convert_to_numpy(keras.ops.softmax(logits, axis=-1))
    results = []
    for row in probabilities:
        best = np.argsort(-row, kind="stable")[:min(top, len(class_names))]
        results.append([Prediction(int(i), str(class_names[i]), float(row[i]),
                                   synsets[i] if synsets is not None else None) for i in best])
    return results


def classify_files(paths: Sequence[str | os.PathLike], model: keras.Model,
                   settings: EvalPreprocessing, class_names: Sequence[str], top: int = 5,
                   synsets: Sequence[str] | None = None) -> list[list[Prediction]]:
    """Top-``top`` classes of image files for a logits ``model`` with its preprocessing."""
    images = load_images(paths, settings)
    logits = model.predict(images, verbose=0, batch_size=32)
    return rank(logits, class_names, top, synsets)


def classify_with_run(paths: Sequence[str | os.PathLike], run_dir: str | os.PathLike,
                      top: int = 5, use_ema: bool = True) -> list[list[Prediction]]:
    """Classify with a training run's model, class names and evaluation preprocessing."""
    model, metadata, _ = load_run_model(run_dir, use_ema=use_ema)
    return classify_files(paths, model, metadata.eval_preprocessing, metadata.class_names, top)


def classify_with_weights(paths: Sequence[str | os.PathLike], variant: str,
                          weights: str | None = "imagenet", top: int = 5) -> list[list[Prediction]]:
    """Classify with a variant and ImageNet weights (a set name or a file), with the weight set's
    own preprocessing; labels are the ImageNet class names."""
    spec = get_spec(variant)
    settings = weight_sets.eval_preprocessing(spec, weights)
    model = build_model(spec, weights=weights, classifier_activation=None,
                        input_shape=(settings.resolution, settings.resolution, 3))
    index = imagenet.class_index()
    return classify_files(paths, model, settings, [name for _, name in index], top,
                          synsets=[synset for synset, _ in index])

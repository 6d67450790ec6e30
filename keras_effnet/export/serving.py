"""Serving SavedModel: TF Serving signatures that run THE evaluation preprocessing.

Every signature returns ``logits``, ``probabilities`` [B, C], ``top_k_classes`` int32 [B, k],
``top_k_scores`` [B, k] and ``top_k_labels`` string [B, k]:

- ``serving_default``: float32 [B, H, W, 3] RGB in [0, 255], any H, W;
- ``uint8_images``: uint8 [B, H, W, 3], any H, W;
- ``encoded_images``: tf.string [B] of JPEG / PNG / GIF / BMP bytes, each of its own size;
- ``preprocessed_images``: float32 [B, S, S, 3] in [0, 255], already preprocessed.

The first three call ``keras_effnet.preprocessing.preprocess_batch_for_eval(images, settings)``
with the source's ``EvalPreprocessing``: the function training and evaluation use.

The network inside is the deploy graph (``keras_effnet.deploy.deploy``: batch norm folded into
the convolutions, dropout removed): a serving model is never trained, and the folded graph is
1.3-1.5x faster in TensorFlow (docs/performance.md) with outputs within 1e-4 of the model's.
The Hub modules stay on the trainable graph (``hub``).
"""

from __future__ import annotations

import logging
import os
from typing import Iterable, Sequence

import keras
import tensorflow as tf

from keras_effnet import preprocessing
from keras_effnet.deploy import deploy
from keras_effnet.export.graph import default_eval_preprocessing, export_view, has_classifier
from keras_effnet.export.metadata import METADATA_FILE, write_metadata
from keras_effnet.export.staging import staged_directory
from keras_effnet.preprocessing import EvalPreprocessing

logger = logging.getLogger(__name__)

DEFAULT_TOP_K = 5
SIGNATURES = ("serving_default", "uint8_images", "encoded_images", "preprocessed_images")


class ServingModule(tf.Module):
    """The trackable root of a serving SavedModel: the model's variables and the signatures."""

    def __init__(self, model: keras.Model, settings: EvalPreprocessing, labels: Sequence[str],
                 top_k: int):
        super().__init__(name="serving")
        self.model_variables = [variable.value for variable in model.variables]
        size = settings.resolution
        label_table = tf.constant(list(labels), dtype=tf.string)
        top_k = max(1, min(int(top_k), len(labels)))

        # One trace of the network, shared by every signature (tracing dominates export time).
        @tf.function(input_signature=[tf.TensorSpec([None, size, size, 3], tf.float32,
                                                    name="images")])
        def classify(images):
            logits = tf.cast(model(images, training=False), tf.float32)
            probabilities = tf.nn.softmax(logits, axis=-1)
            scores, indices = tf.math.top_k(probabilities, k=top_k)
            return {"logits": logits, "probabilities": probabilities,
                    "top_k_classes": tf.cast(indices, tf.int32), "top_k_scores": scores,
                    "top_k_labels": tf.gather(label_table, indices)}

        def checked(images, name, height=None):
            """Signatures do not enforce shapes when called; fail with a message that says why."""
            shape = tf.shape(images)
            expected = f"[batch, {height or 'height'}, {height or 'width'}, 3]"
            checks = [tf.debugging.assert_equal(shape[-1], 3, message=(
                f"{name}: images must be RGB {expected}; convert grayscale/RGBA first"))]
            if height is not None:
                checks.append(tf.debugging.assert_equal(shape[1:3], [height, height], message=(
                    f"{name}: images must be {expected} (already preprocessed); use "
                    "serving_default or uint8_images for images of other sizes")))
            with tf.control_dependencies(checks):
                return tf.identity(images)

        def prepared(images):
            return preprocessing.preprocess_batch_for_eval(images, settings)

        any_size = [None, None, None, 3]

        @tf.function(input_signature=[tf.TensorSpec(any_size, tf.float32, name="images")])
        def float_images(images):
            """float32 [B, H, W, 3] RGB in [0, 255], any size: eval crop + resize inside."""
            return classify(prepared(checked(images, "serving_default")))

        @tf.function(input_signature=[tf.TensorSpec(any_size, tf.uint8, name="images")])
        def uint8_images(images):
            """uint8 [B, H, W, 3] RGB, any size: eval crop + resize inside."""
            return classify(prepared(checked(images, "uint8_images")))

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])
        def encoded_images(image_bytes):
            """tf.string [B] of encoded JPEG / PNG / GIF / BMP images, each of its own size."""
            return classify(prepared(image_bytes))

        @tf.function(input_signature=[tf.TensorSpec([None, size, size, 3], tf.float32,
                                                    name="images")])
        def preprocessed_images(images):
            """float32 [B, S, S, 3] in [0, 255], already preprocessed: straight into the model."""
            return classify(checked(images, "preprocessed_images", size))

        self.serving_default = float_images
        self.uint8_images = uint8_images
        self.encoded_images = encoded_images
        self.preprocessed_images = preprocessed_images

    def signatures(self) -> dict:
        """The concrete functions ``tf.saved_model.save`` exposes, by signature name."""
        return {name: getattr(self, name).get_concrete_function() for name in SIGNATURES}


def serving_module(model: keras.Model, settings: EvalPreprocessing,
                   labels: Sequence[str] | None = None,
                   top_k: int = DEFAULT_TOP_K) -> ServingModule:
    """The serving root for ``model`` (a classifier; a softmax head is served as logits), running
    its deploy graph (batch norm folded; a subclassed model, which has no graph, runs as is).

    Raises:
        ValueError: no classifier, or labels that do not match it.
    """
    model = export_view(model)
    if not has_classifier(model) and len(model.output_shape) != 2:
        raise ValueError("a serving model needs a classifier (include_top=True)")
    classes = int(model.output_shape[-1])
    labels = list(labels) if labels else [str(i) for i in range(classes)]
    if len(labels) != classes:
        raise ValueError(f"{len(labels)} labels for a model with {classes} classes")
    try:
        model = deploy(model)
    except ValueError as error:  # a subclassed model: no graph to fold
        logger.info("serving %r as built: %s", model.name, error)
    return ServingModule(model, settings, labels, top_k)


def export_saved_model(model: keras.Model, output_dir: str | os.PathLike, *,
                       eval_preprocessing: EvalPreprocessing | None = None,
                       labels: Sequence[str] | None = None, top_k: int = DEFAULT_TOP_K,
                       metadata: dict | None = None, overwrite: bool = False,
                       protected: Iterable[str] = ()) -> str:
    """Write a serving SavedModel to ``output_dir`` (atomically); returns its path.

    ``eval_preprocessing`` defaults to the model's input size with the original crop rule.
    ``metadata`` (if given) is written to ``metadata.json`` inside.
    """
    if eval_preprocessing is None:
        eval_preprocessing = default_eval_preprocessing(model)
    root = serving_module(model, eval_preprocessing, labels, top_k)
    with staged_directory(output_dir, overwrite, protected) as target:
        tf.saved_model.save(root, target, signatures=root.signatures())
        if metadata is not None:
            write_metadata(os.path.join(target, METADATA_FILE), metadata)
    return os.path.abspath(output_dir)

"""Views of a Keras model for export, through public Keras APIs (no config-JSON editing).

- ``export_view``: the same layers (shared variables) on a new input shape: any size for Hub
  modules, a fixed size for TFLite / ONNX (``keras.models.clone_model`` reusing each layer).
- A classifier with a softmax head (e.g. ``keras.applications`` models built with the default
  ``classifier_activation="softmax"``) is exported as logits: the view calls a linear ``Dense``
  holding a copy of the ``predictions`` weights instead. Serving computes probabilities itself.
  Run directories and variant + weights sources already build logits heads; only a user's own
  Keras model takes this path. Other head activations are refused.
"""

from __future__ import annotations

import logging
import os

import keras

from keras_effnet.layers import NORMALIZATIONS, ImageNormalization
from keras_effnet.preprocessing import EvalPreprocessing

logger = logging.getLogger(__name__)

CLASSIFIER = "predictions"


def find_layer(model: keras.Model, name: str) -> keras.layers.Layer | None:
    """The layer called ``name``, or None."""
    return next((layer for layer in model.layers if layer.name == name), None)


def has_classifier(model: keras.Model) -> bool:
    return find_layer(model, CLASSIFIER) is not None


def head_activation(model: keras.Model) -> str | None:
    """The activation name of the ``predictions`` layer (``linear`` for logits), or None."""
    layer = find_layer(model, CLASSIFIER)
    if layer is None:
        return None
    return keras.activations.serialize(layer.activation) if callable(layer.activation) else None


def fixed_size(model: keras.Model) -> int | None:
    """The side S of a square fixed-size input [B, S, S, C], else None."""
    shape = model.input_shape
    return int(shape[1]) if shape[1] is not None and shape[1] == shape[2] else None


def normalization_layer(model: keras.Model) -> ImageNormalization | None:
    return next((layer for layer in model.layers if isinstance(layer, ImageNormalization)), None)


def normalization_name(model: keras.Model) -> str:
    """``imagenet`` / ``lite`` / ``inception`` when the model's normalisation layer matches one,
    ``none`` without such a layer; ``custom`` for other statistics."""
    layer = normalization_layer(model)
    if layer is None:
        return "none"
    for name, (mean, stddev) in NORMALIZATIONS.items():
        if (tuple(round(m, 6) for m in layer.initial_mean) == tuple(round(m, 6) for m in mean)
                and tuple(round(s, 6) for s in layer.initial_stddev)
                == tuple(round(s, 6) for s in stddev)):
            return name
    return "custom"


def default_eval_preprocessing(model: keras.Model, image_size: int | None = None
                               ) -> EvalPreprocessing:
    """The model's input size (or ``image_size``) with the original crop rule and the
    normalisation its ``normalization`` layer does (``none`` for statistics of its own).

    Raises:
        ValueError: a variable input size and no ``image_size``.
    """
    size = image_size or fixed_size(model)
    if size is None:
        raise ValueError(f"model {model.name!r} has a variable input size {model.input_shape}; "
                         "pass image_size= or eval_preprocessing=EvalPreprocessing(...)")
    name = normalization_name(model)
    return EvalPreprocessing(int(size), normalization="none" if name == "custom" else name)


def _linear_copy(dense: keras.layers.Dense) -> keras.layers.Dense:
    """A new linear ``Dense`` with ``dense``'s units, bias and dtype policy (weights set later)."""
    return keras.layers.Dense(dense.units, use_bias=dense.use_bias, name=dense.name,
                              dtype=dense.dtype_policy)


def export_view(model: keras.Model, input_shape: tuple | None = None) -> keras.Model:
    """``model`` with a logits head, on an input of ``input_shape`` (H, W, C) when given.

    Returns ``model`` itself when nothing changes; otherwise a functional model calling the
    same layers (shared variables), except a softmax ``predictions`` layer, replaced by a linear
    copy of its weights.

    Raises:
        ValueError: a ``predictions`` activation other than softmax or linear.
    """
    activation = head_activation(model)
    if activation not in (None, "linear", "softmax"):
        raise ValueError(f"model {model.name!r} ends in a {activation!r} classifier; export "
                         "needs logits: build it with classifier_activation=None")
    new_shape = None
    if input_shape is not None and tuple(model.input_shape[1:]) != tuple(input_shape):
        new_shape = tuple(input_shape)
    if activation != "softmax" and new_shape is None:
        return model
    copies = []

    def reuse(layer):
        if layer.name == CLASSIFIER and activation == "softmax":
            copy = _linear_copy(layer)
            copies.append((copy, layer.get_weights()))
            logger.info("exporting %r as logits (its softmax is left to the consumer)", model.name)
            return copy
        return layer

    inputs = None
    if new_shape is not None:
        inputs = keras.tree.map_structure(
            lambda tensor: keras.Input(shape=new_shape, dtype=tensor.dtype, name=tensor.name),
            model.input)
    view = keras.models.clone_model(model, input_tensors=inputs, clone_function=reuse)
    for layer, weights in copies:
        layer.set_weights(weights)
    return view


def backbone_model(model: keras.Model) -> keras.Model:
    """The model up to its global-average-pooled features (``avg_pool``; no dropout).

    Take it from the model as built, before ``export_view``: a layer reached through a view
    reports the outputs of its first call (the original graph).
    """
    pool = find_layer(model, "avg_pool")
    if pool is not None:
        if model.layers[-1] is pool:
            return model
        return keras.Model(model.input, pool.output, name=f"{model.name}_features")
    if len(model.output_shape) == 2 and not has_classifier(model):
        return model
    raise ValueError(f"model {model.name!r} has no 'avg_pool' layer and outputs "
                     f"{model.output_shape}: build it with include_top=True or pooling='avg'")


def write_inference_saved_model(model: keras.Model, directory: str | os.PathLike) -> None:
    """A plain SavedModel of ``model`` (one ``serve`` endpoint) for the TFLite / ONNX converters."""
    model.export(os.fspath(directory), format="tf_saved_model", verbose=False)

"""Inference-only transform: batch norm folded into the convolutions, dropout removed.

``deploy(model)`` rebuilds a functional Keras model as an equivalent inference graph:

- every ``Conv2D`` / ``DepthwiseConv2D`` (linear activation, channels last) whose only consumer
  is a ``BatchNormalization`` becomes one convolution with a bias,
  ``w' = w * gamma / sqrt(var + eps)``, ``b' = beta + (b - mean) * gamma / sqrt(var + eps)``,
  keeping the convolution's layer name (``stem_conv``, ``block2a_dwconv`` ...);
- ``Dropout`` (and its variants) and ``StochasticDepth`` are removed (identities at inference);
- every other layer is copied with its weights. The result shares no variables with the input.

The ``normalization`` layer is kept: folding its affine into ``stem_conv`` is not exact, because
'same' padding pads the *normalised* image with zeros, i.e. the raw image with the channel mean,
and a folded convolution would pad the raw image with zeros instead (tests/test_deploy.py
measures the border error). It is one multiply-add per input pixel, about 0.04% of B0's work.

The deployed model is for inference only: calling it with ``training=True`` does not update or
use batch statistics. It saves to ``.keras`` and loads with ``safe_mode=True``.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import layers

from keras_effnet.layers import StochasticDepth

# Layers that are the identity at inference.
INFERENCE_IDENTITIES = (layers.Dropout, layers.SpatialDropout1D, layers.SpatialDropout2D,
                        layers.SpatialDropout3D, layers.GaussianDropout, layers.GaussianNoise,
                        layers.AlphaDropout, StochasticDepth)

FOLDABLE_CONVOLUTIONS = (layers.Conv2D, layers.DepthwiseConv2D)


def fold_batch_norm(kernel: np.ndarray, bias: np.ndarray | None, gamma: np.ndarray | None,
                    beta: np.ndarray | None, mean: np.ndarray, variance: np.ndarray,
                    epsilon: float, depthwise: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Fold inference batch norm into a preceding convolution's kernel and bias.

    Args:
        kernel: Conv2D kernel [kh, kw, in, out], or DepthwiseConv2D kernel
            [kh, kw, in, multiplier] with ``depthwise=True`` (output channel = in * multiplier + m).
        bias: the convolution's bias [out] or ``None``.
        gamma, beta: batch-norm scale and offset [out], ``None`` when the layer has none.
        mean, variance: batch-norm moving statistics [out].
        epsilon: batch-norm epsilon.

    Returns:
        (kernel, bias) in float32, kernel in the input kernel's shape, bias [out].
    """
    kernel = np.asarray(kernel, dtype=np.float64)
    mean = np.asarray(mean, dtype=np.float64)
    scale = 1.0 / np.sqrt(np.asarray(variance, dtype=np.float64) + epsilon)
    if gamma is not None:
        scale = scale * np.asarray(gamma, dtype=np.float64)
    shift = np.zeros_like(mean) if beta is None else np.asarray(beta, dtype=np.float64)
    conv_bias = np.zeros_like(mean) if bias is None else np.asarray(bias, dtype=np.float64)
    if depthwise:
        kernel = kernel * scale.reshape(kernel.shape[2], kernel.shape[3])
    else:
        kernel = kernel * scale
    folded_bias = shift + (conv_bias - mean) * scale
    return kernel.astype(np.float32), folded_bias.astype(np.float32)


def _graph_calls(model: keras.Model) -> list[tuple[keras.layers.Layer, list[int], list[int]]]:
    """Every layer call of functional ``model`` in graph order: (layer, input ids, output ids).

    Read by re-running the graph through ``keras.models.clone_model`` with a ``call_function``
    that records each call on throwaway clones of the layers (the model is not touched).
    """
    calls = []
    originals: dict[int, keras.layers.Layer] = {}

    def clone(layer):
        copy = layer.__class__.from_config(layer.get_config())
        originals[id(copy)] = layer
        return copy

    def record(layer, *args, **kwargs):
        outputs = layer(*args, **kwargs)
        inputs = [id(t) for t in keras.tree.flatten((args, kwargs))
                  if keras.backend.is_keras_tensor(t)]
        calls.append((originals[id(layer)], inputs, [id(t) for t in keras.tree.flatten(outputs)]))
        return outputs

    clone_model_graph = keras.models.clone_model(model, clone_function=clone, call_function=record)
    output_ids = [id(t) for t in keras.tree.flatten(clone_model_graph.outputs)]
    return calls + [(None, output_ids, [])]


def _fold_pairs(model: keras.Model) -> dict[int, layers.BatchNormalization]:
    """``{id(conv): batch norm}`` for each convolution whose only consumer is a batch norm."""
    calls = _graph_calls(model)
    producer: dict[int, keras.layers.Layer] = {}
    consumers: dict[int, int] = {}
    uses: dict[int, int] = {}
    for layer, inputs, outputs in calls:
        for tensor in inputs:
            consumers[tensor] = consumers.get(tensor, 0) + 1
        for tensor in outputs:
            producer[tensor] = layer
        if layer is not None:
            uses[id(layer)] = uses.get(id(layer), 0) + 1
    folds: dict[int, layers.BatchNormalization] = {}
    for norm, inputs, _ in calls:
        if not isinstance(norm, layers.BatchNormalization) or len(inputs) != 1:
            continue
        conv = producer.get(inputs[0])
        if (conv is not None and consumers[inputs[0]] == 1 and uses[id(conv)] == 1
                and uses[id(norm)] == 1 and _foldable(conv, norm)):
            folds[id(conv)] = norm
    return folds


def deploy(model: keras.Model) -> keras.Model:
    """An inference-only copy of a functional ``model`` with batch norm folded and dropout gone.

    Outputs agree with ``model(x, training=False)`` to float32 rounding (tests check 1e-4 on
    B0 and Lite0 with non-trivial batch-norm statistics). Layer names are kept; the folded
    batch-norm layers (``*_bn``) and dropout / stochastic-depth layers (``top_dropout``,
    ``*_drop``) no longer exist. Built with ``keras.models.clone_model`` (a ``clone_function``
    choosing each layer's replacement, a ``call_function`` skipping the removed ones).

    Raises:
        ValueError: if ``model`` is not a functional (graph) model.
    """
    if isinstance(model, keras.Sequential) and model.built:
        model = keras.Model(model.inputs, model.outputs, name=model.name)
    if not isinstance(model, keras.Model) or not _is_functional(model):
        raise ValueError(f"deploy() needs a functional keras.Model, got {type(model).__name__}; "
                         "build the model with keras.Model(inputs, outputs)")
    folds = _fold_pairs(model)
    folded_norms = {id(norm) for norm in folds.values()}
    skipped: set[int] = set()
    weight_copies: list[tuple[keras.layers.Layer, list[np.ndarray]]] = []

    def clone(layer):
        if isinstance(layer, INFERENCE_IDENTITIES) or id(layer) in folded_norms:
            skipped.add(id(layer))
            return layer
        if id(layer) in folds:
            config = dict(layer.get_config(), use_bias=True, bias_initializer="zeros")
            copy = layer.__class__.from_config(config)
            weight_copies.append((copy, list(_folded_weights(layer, folds[id(layer)]))))
        else:
            copy = layer.__class__.from_config(layer.get_config())
            weight_copies.append((copy, layer.get_weights()))
        return copy

    def call(layer, *args, **kwargs):
        if id(layer) in skipped:
            return args[0]
        kwargs.pop("training", None)
        return layer(*args, **kwargs)

    deployed = keras.models.clone_model(model, clone_function=clone, call_function=call)
    for layer, weights in weight_copies:
        layer.set_weights(weights)
    return deployed


def _is_functional(model: keras.Model) -> bool:
    """Whether ``model`` is a graph of layers (``keras.Model(inputs, outputs)``)."""
    try:
        return bool(model.inputs) and bool(model.outputs)
    except (AttributeError, ValueError):
        return False


def _foldable(conv, norm: layers.BatchNormalization) -> bool:
    if not isinstance(conv, FOLDABLE_CONVOLUTIONS):
        return False
    config = conv.get_config()
    if config.get("activation") not in (None, "linear"):
        return False
    if config.get("data_format", "channels_last") != "channels_last":
        return False
    axis = norm.axis if isinstance(norm.axis, int) else (
        norm.axis[0] if len(norm.axis) == 1 else None)
    return axis in (-1, len(conv.output.shape) - 1)


def _folded_weights(conv, norm: layers.BatchNormalization) -> tuple[np.ndarray, np.ndarray]:
    kernel = keras.ops.convert_to_numpy(conv.kernel)
    bias = keras.ops.convert_to_numpy(conv.bias) if conv.use_bias else None
    gamma = keras.ops.convert_to_numpy(norm.gamma) if norm.scale else None
    beta = keras.ops.convert_to_numpy(norm.beta) if norm.center else None
    return fold_batch_norm(kernel, bias, gamma, beta,
                           keras.ops.convert_to_numpy(norm.moving_mean),
                           keras.ops.convert_to_numpy(norm.moving_variance),
                           norm.epsilon,
                           depthwise=isinstance(conv, layers.DepthwiseConv2D))

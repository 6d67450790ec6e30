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


def deploy(model: keras.Model) -> keras.Model:
    """An inference-only copy of a functional ``model`` with batch norm folded and dropout gone.

    Outputs agree with ``model(x, training=False)`` to float32 rounding (tests check 1e-4 on
    B0 and Lite0 with non-trivial batch-norm statistics). Layer names are kept; the folded
    batch-norm layers (``*_bn``) and dropout / stochastic-depth layers (``top_dropout``,
    ``*_drop``) no longer exist.

    Raises:
        ValueError: if ``model`` is not a functional (graph) model.
    """
    nodes_by_depth = getattr(model, "_nodes_by_depth", None)
    if nodes_by_depth is None:
        raise ValueError(f"deploy() needs a functional keras.Model, got {type(model).__name__}; "
                         "build the model with keras.Model(inputs, outputs)")
    nodes = [node for depth in sorted(nodes_by_depth, reverse=True)
             for node in nodes_by_depth[depth]]
    producers = {id(t): node for node in nodes for t in node.outputs}
    consumers: dict[int, int] = {}
    for node in nodes:
        for tensor in node.input_tensors:
            consumers[id(tensor)] = consumers.get(id(tensor), 0) + 1
    for tensor in model.outputs:
        consumers[id(tensor)] = consumers.get(id(tensor), 0) + 1

    # Pair each foldable convolution node with the batch norm that consumes it.
    folds: dict[int, layers.BatchNormalization] = {}  # id(conv node) -> batch norm layer
    folded_norms: set[int] = set()  # id(batch-norm node)
    for node in nodes:
        norm = node.operation
        if not isinstance(norm, layers.BatchNormalization) or len(node.input_tensors) != 1:
            continue
        source = node.input_tensors[0]
        conv_node = producers.get(id(source))
        if conv_node is None or consumers.get(id(source)) != 1:
            continue
        if _foldable(conv_node.operation, norm):
            folds[id(conv_node)] = norm
            folded_norms.add(id(node))

    tensors: dict[int, object] = {}
    new_inputs = []
    for tensor in model.inputs:
        new_input = keras.Input(batch_shape=tensor.shape, dtype=tensor.dtype,
                                name=tensor.name)
        tensors[id(tensor)] = new_input
        new_inputs.append(new_input)

    weight_copies: list[tuple[keras.layers.Layer, list[np.ndarray]]] = []
    for node in nodes:
        operation = node.operation
        if node.is_input or operation is None or isinstance(operation, layers.InputLayer):
            continue
        if id(node) in folded_norms or isinstance(operation, INFERENCE_IDENTITIES):
            tensors[id(node.outputs[0])] = tensors[id(node.input_tensors[0])]
            continue
        args, kwargs = node.arguments.fill_in(tensors)
        kwargs.pop("training", None)
        if id(node) in folds:
            norm = folds[id(node)]
            config = dict(operation.get_config(), use_bias=True, bias_initializer="zeros")
            new_layer = operation.__class__.from_config(config)
            outputs = new_layer(*args, **kwargs)
            weight_copies.append((new_layer, list(_folded_weights(operation, norm))))
        else:
            new_layer = operation.__class__.from_config(operation.get_config())
            outputs = new_layer(*args, **kwargs)
            weight_copies.append((new_layer, operation.get_weights()))
        for old, new in zip(node.outputs, keras.tree.flatten(outputs)):
            tensors[id(old)] = new

    for new_layer, weights in weight_copies:
        new_layer.set_weights(weights)
    outputs = keras.tree.pack_sequence_as(
        model._outputs_struct, [tensors[id(t)] for t in model.outputs])
    inputs = new_inputs[0] if len(new_inputs) == 1 else new_inputs
    return keras.Model(inputs, outputs, name=model.name)


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

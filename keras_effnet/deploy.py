"""Inference-only transform: batch norm folded into the convolutions, dropout removed.

``deploy(model)`` rebuilds a functional Keras model as an equivalent inference graph:

- every ``Conv2D`` / ``DepthwiseConv2D`` (linear activation, channels last) whose only consumer
  is a ``BatchNormalization`` becomes one convolution with a bias,
  ``w' = w * gamma / sqrt(var + eps)``, ``b' = beta + (b - mean) * gamma / sqrt(var + eps)``,
  keeping the convolution's layer name (``stem_conv``, ``block2a_dwconv`` ...);
- ``Dropout`` (and its variants) and ``StochasticDepth`` are removed (identities at inference);
- each ``Activation("swish")`` becomes ``x * sigmoid(x)`` written as two standard layers, an
  ``Activation("sigmoid")`` named ``<name>_sigmoid`` and a ``Multiply`` keeping ``<name>``: the
  same numbers, but TensorFlow's graph optimiser (grappler's remapper, oneDNN) then fuses
  convolution + bias + swish into one kernel. Keras' swish is ``tf.nn.silu``, whose custom
  gradient wraps it in an ``IdentityN`` that blocks that fusion: the swish ran as a separate
  pass over each activation, 30% of B0's op time at batch 32, of which the part after the
  expand / stem / top convolutions (19%) is now fused; after a depthwise convolution it stays
  a separate op (TF fuses Relu6 into a depthwise convolution, not swish or sigmoid). See
  docs/performance.md, "TensorFlow path"; ``keras-effnet-profile-tf`` shows the ops;
- every other layer is copied with its weights. The result shares no variables with the input.

The ``normalization`` layer is kept: folding its affine into ``stem_conv`` is not exact, because
'same' padding pads the *normalised* image with zeros, i.e. the raw image with the channel mean,
and a folded convolution would pad the raw image with zeros instead (tests/test_deploy.py
measures the border error). It costs two elementwise passes over the input image (a multiply and
an add), about 3% of B0's op time at batch 32.

The deployed model is for inference only: calling it with ``training=True`` does not update or
use batch statistics. It uses only Keras' own layers (plus the package's registered ones the
model had), saves to ``.keras`` and loads with ``safe_mode=True``.
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


def _functional_graph(model: keras.Model) -> tuple[dict, dict, dict]:
    """The call graph of functional ``model``, read from its config (no layer is rebuilt).

    Returns ``(inputs, consumers, uses)``: ``inputs[name]`` the tensors each call of layer
    ``name`` reads, as ``(layer, node, index)`` triples (its ``keras_history``);
    ``consumers[tensor]`` how many calls read that tensor, a model output counting as one;
    ``uses[name]`` how many times the layer is called.

    Raises:
        ValueError: a config without the functional ``layers`` list (a subclass's own config).
    """
    config = model.get_config()
    if "layers" not in config:
        raise ValueError(f"deploy() reads the graph from the model's functional config; "
                         f"{type(model).__name__}.get_config() has no 'layers' list. Rebuild it "
                         "as keras.Model(inputs, outputs)")
    inputs: dict[str, list[tuple]] = {}
    consumers: dict[tuple, int] = {}
    uses: dict[str, int] = {}
    for layer in config["layers"]:
        nodes = layer["inbound_nodes"]
        uses[layer["name"]] = len(nodes)
        inputs[layer["name"]] = [t for node in nodes for t in _tensor_refs(node)]
        for tensor in inputs[layer["name"]]:
            consumers[tensor] = consumers.get(tensor, 0) + 1
    for tensor in _tensor_refs(config["output_layers"], outputs=True):
        consumers[tensor] = consumers.get(tensor, 0) + 1
    return inputs, consumers, uses


def _tensor_refs(structure, *, outputs: bool = False) -> list[tuple]:
    """Every ``(layer, node, index)`` tensor reference in a serialised call (its Keras tensors'
    ``keras_history``) or, with ``outputs=True``, in the config's ``output_layers``."""
    if isinstance(structure, dict):
        if "keras_history" in structure.get("config", {}):
            return [tuple(structure["config"]["keras_history"])]
        return [t for value in structure.values() for t in _tensor_refs(value, outputs=outputs)]
    if isinstance(structure, (list, tuple)):
        if (outputs and len(structure) == 3 and isinstance(structure[0], str)
                and all(isinstance(i, int) for i in structure[1:])):
            return [tuple(structure)]
        return [t for value in structure for t in _tensor_refs(value, outputs=outputs)]
    return []


def _fold_pairs(model: keras.Model) -> dict[str, layers.BatchNormalization]:
    """``{conv name: batch norm}`` for each convolution whose only consumer is a batch norm."""
    inputs, consumers, uses = _functional_graph(model)
    folds: dict[str, layers.BatchNormalization] = {}
    for name, tensors in inputs.items():
        norm = model.get_layer(name)
        if not isinstance(norm, layers.BatchNormalization) or len(tensors) != 1:
            continue
        tensor = tensors[0]
        conv = model.get_layer(tensor[0])
        if (consumers[tensor] == 1 and uses[conv.name] == 1 and uses[name] == 1
                and _foldable(conv, norm)):
            folds[conv.name] = norm
    return folds


def deploy(model: keras.Model) -> keras.Model:
    """An inference-only copy of a functional ``model`` with batch norm folded and dropout gone.

    Outputs agree with ``model(x, training=False)`` to float32 rounding (tests check 1e-4 on
    B0 and Lite0 with non-trivial batch-norm statistics). Layer names are kept; the folded
    batch-norm layers (``*_bn``) and dropout / stochastic-depth layers (``top_dropout``,
    ``*_drop``) no longer exist, and each swish ``Activation`` becomes ``*_sigmoid`` and a
    ``Multiply`` with the swish layer's name (the same numbers; see the module docstring).
    Built with one ``keras.models.clone_model`` pass (a ``clone_function`` choosing each
    layer's replacement, a ``call_function`` skipping the removed ones); which convolutions
    fold is read from the model's config.

    Raises:
        ValueError: if ``model`` is not a functional (graph) model.
    """
    if isinstance(model, keras.Sequential) and model.built:
        model = keras.Model(model.inputs, model.outputs, name=model.name)
    if not isinstance(model, keras.Model) or not _is_functional(model):
        raise ValueError(f"deploy() needs a functional keras.Model, got {type(model).__name__}; "
                         "build the model with keras.Model(inputs, outputs)")
    folds = {id(model.get_layer(name)): norm for name, norm in _fold_pairs(model).items()}
    folded_norms = {id(norm) for norm in folds.values()}
    names = {layer.name for layer in model.layers}
    skipped: set[int] = set()
    sigmoids: dict[int, keras.layers.Layer] = {}
    weight_copies: list[tuple[keras.layers.Layer, list[np.ndarray]]] = []

    def clone(layer):
        if isinstance(layer, INFERENCE_IDENTITIES) or id(layer) in folded_norms:
            skipped.add(id(layer))
            return layer
        if _is_swish(layer) and f"{layer.name}_sigmoid" not in names:
            copy = layers.Multiply(name=layer.name, dtype=layer.dtype_policy)
            sigmoids[id(copy)] = layers.Activation("sigmoid", name=f"{layer.name}_sigmoid",
                                                   dtype=layer.dtype_policy)
            return copy
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
        if id(layer) in sigmoids:
            return layer([args[0], sigmoids[id(layer)](args[0])])
        return layer(*args, **kwargs)

    deployed = keras.models.clone_model(model, clone_function=clone, call_function=call)
    for layer, weights in weight_copies:
        layer.set_weights(weights)
    return deployed


def _is_swish(layer: keras.layers.Layer) -> bool:
    """An ``Activation("swish")`` / ``Activation("silu")`` layer."""
    return (type(layer) is layers.Activation
            and layer.get_config().get("activation") in ("swish", "silu"))


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

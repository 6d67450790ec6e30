"""The functional EfficientNet builder and the public model functions.

``EfficientNet(spec, ...)`` turns a ``ModelSpec`` (stage table + coefficients) into a Keras 3
functional model whose layer names and weight order are those of ``keras.applications``
(a stable contract: weight files and user code depend on them).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import keras
from keras import layers

from keras_effnet.blocks import BlockArgs
from keras_effnet.layers import (NORMALIZATIONS, BatchNormalization, ImageNormalization,
                                 StochasticDepth)
from keras_effnet.scaling import STOCHASTIC_DEPTH_RATE, ModelSpec, get_spec

BATCH_NORM_MOMENTUM = 0.99
BATCH_NORM_EPSILON = 1e-3
MIN_INPUT_SIZE = 32

# Original initialisers: conv normal(0, sqrt(2 / fan_out)) with fan_out = k * k * out_channels
# (k * k for depthwise); dense uniform(+-1 / sqrt(classes)).
CONV_INITIALIZER = {"class_name": "VarianceScaling",
                    "config": {"scale": 2.0, "mode": "fan_out",
                               "distribution": "untruncated_normal"}}
DENSE_INITIALIZER = {"class_name": "VarianceScaling",
                     "config": {"scale": 1.0 / 3.0, "mode": "fan_out", "distribution": "uniform"}}


@dataclasses.dataclass(frozen=True)
class FeatureInfo:
    """One multi-scale endpoint: output of ``layer_name`` with ``channels`` at ``stride``."""

    name: str
    layer_name: str
    channels: int
    stride: int


def _conv(filters: int, kernel_size: int, name: str, strides: int = 1, **kwargs) -> layers.Conv2D:
    return layers.Conv2D(filters, kernel_size, strides=strides, padding="same", use_bias=False,
                         kernel_initializer=CONV_INITIALIZER, name=name, **kwargs)


def _batch_norm(name: str) -> BatchNormalization:
    return BatchNormalization(axis=-1, momentum=BATCH_NORM_MOMENTUM, epsilon=BATCH_NORM_EPSILON,
                              name=name)


def mbconv_block(x, block: BlockArgs, activation: str, stochastic_depth: float, prefix: str):
    """One MBConv block: [expand 1x1] -> depthwise kxk -> [SE] -> project 1x1 -> [skip].

    ``block`` carries the block's own (scaled) input/output channels and stride.
    """
    inputs = x
    expanded = int(block.input_filters * block.expand_ratio)
    if block.expand_ratio != 1:
        x = _conv(expanded, 1, name=f"{prefix}expand_conv")(x)
        x = _batch_norm(f"{prefix}expand_bn")(x)
        x = layers.Activation(activation, name=f"{prefix}expand_activation")(x)

    # 'same' padding equals keras.applications' explicit ZeroPadding2D + 'valid' for stride 2
    # at every input size (and is right for odd sizes, where theirs is not).
    x = layers.DepthwiseConv2D(block.kernel_size, strides=block.strides, padding="same",
                               use_bias=False, depthwise_initializer=CONV_INITIALIZER,
                               name=f"{prefix}dwconv")(x)
    x = _batch_norm(f"{prefix}bn")(x)
    x = layers.Activation(activation, name=f"{prefix}activation")(x)

    if block.has_se:
        # The reduced width comes from the block's INPUT channels, not the expanded ones.
        reduced = max(1, int(block.input_filters * block.se_ratio))
        se = layers.GlobalAveragePooling2D(keepdims=True, name=f"{prefix}se_squeeze")(x)
        se = layers.Conv2D(reduced, 1, padding="same", activation=activation,
                           kernel_initializer=CONV_INITIALIZER, name=f"{prefix}se_reduce")(se)
        se = layers.Conv2D(expanded, 1, padding="same", activation="sigmoid",
                           kernel_initializer=CONV_INITIALIZER, name=f"{prefix}se_expand")(se)
        x = layers.Multiply(name=f"{prefix}se_excite")([x, se])

    x = _conv(block.output_filters, 1, name=f"{prefix}project_conv")(x)
    x = _batch_norm(f"{prefix}project_bn")(x)

    if block.id_skip and block.strides == 1 and block.input_filters == block.output_filters:
        if stochastic_depth > 0:
            x = StochasticDepth(stochastic_depth, name=f"{prefix}drop")(x)
        x = layers.Add(name=f"{prefix}add")([x, inputs])
    return x


def block_sequence(spec: ModelSpec) -> list[tuple[str, BlockArgs]]:
    """Every block of the scaled model in order, as (layer-name prefix, block arguments).

    Prefixes are ``block{stage}{letter}_`` (stage 1-based, letters a, b, ...); only the first
    block of a stage has the stage's stride and input channels.
    """
    sequence = []
    for stage, stage_args in enumerate(spec.scaled_blocks(), start=1):
        for index in range(stage_args.repeats):
            block = stage_args if index == 0 else dataclasses.replace(
                stage_args, strides=1, input_filters=stage_args.output_filters)
            sequence.append((f"block{stage}{_letters(index)}_", dataclasses.replace(block, repeats=1)))
    return sequence


def _letters(index: int) -> str:
    """0 -> 'a', 25 -> 'z', 26 -> 'ba' ... (keras.applications' chr(index + 97) below 26)."""
    if index < 26:
        return chr(97 + index)
    return _letters(index // 26) + chr(97 + index % 26)


def feature_info(spec: ModelSpec | str) -> list[FeatureInfo]:
    """The multi-scale endpoints (strides 2, 4, 8, 16, 32) of a variant.

    Each endpoint is the output of the last block that runs at that stride.
    """
    spec = get_spec(spec)
    stride = 2  # the stem
    last_at_stride: dict[int, tuple[str, int]] = {}
    for prefix, block in block_sequence(spec):
        stride *= block.strides
        last_at_stride[stride] = (f"{prefix}add" if _has_skip(block) else f"{prefix}project_bn",
                                  block.output_filters)
    return [FeatureInfo(f"stride_{s}", layer, channels, s)
            for s, (layer, channels) in sorted(last_at_stride.items())]


def _has_skip(block: BlockArgs) -> bool:
    return block.id_skip and block.strides == 1 and block.input_filters == block.output_filters



def _default_name(spec: ModelSpec) -> str:
    return spec.name.replace("-", "").replace(".", "_")


def _validate_input_shape(input_shape, include_top: bool, spec: ModelSpec,
                          need_rgb: bool) -> tuple:
    if input_shape is None:
        size = spec.resolution if include_top else None
        return (size, size, 3)
    input_shape = tuple(input_shape)
    if len(input_shape) != 3:
        raise ValueError(f"input_shape must be (height, width, channels), got {input_shape}")
    height, width, channels = input_shape
    for label, value in (("height", height), ("width", width)):
        if value is not None and value < MIN_INPUT_SIZE:
            raise ValueError(f"input {label} {value} is smaller than {MIN_INPUT_SIZE} pixels "
                             f"(input_shape={input_shape}); EfficientNet downsamples 32x, use "
                             f"at least {MIN_INPUT_SIZE}x{MIN_INPUT_SIZE}")
    if need_rgb and channels != 3:
        raise ValueError(f"input_shape {input_shape} has {channels} channels; with "
                         "include_preprocessing=True or pretrained weights the model needs RGB "
                         "images (3 channels). Convert the images, or pass "
                         "include_preprocessing=False and weights=None")
    return input_shape


def EfficientNet(
    spec: ModelSpec | str,
    include_top: bool = True,
    weights: str | None = None,
    input_tensor=None,
    input_shape: tuple | None = None,
    pooling: str | None = None,
    classes: int = 1000,
    classifier_activation: str | None = "softmax",
    name: str | None = None,
    stochastic_depth_rate: float = STOCHASTIC_DEPTH_RATE,
    dropout_rate: float | None = None,
    include_preprocessing: bool = True,
) -> keras.Model:
    """Build any member of the family from a ``ModelSpec`` (or a variant name).

    Args:
        spec: stage table and coefficients (``keras_effnet.scaling.get_spec`` / ``compound_spec``).
        include_top: whether to add global pooling, dropout and the ``predictions`` classifier.
        weights: ``None``, a file path, or a named weight set (see ``keras_effnet.weights``).
        input_tensor: optional Keras tensor to use as the model input.
        input_shape: (height, width, 3); default (res, res, 3) with the top, else (None, None, 3).
        pooling: without the top, ``None`` (4-D feature map), ``"avg"`` or ``"max"``.
        classes: classifier outputs (1000 for ImageNet weights).
        classifier_activation: activation of ``predictions``; ``None`` returns logits.
        name: model name (default e.g. ``efficientnetb0``).
        stochastic_depth_rate: drop probability of the last block; block i of N gets
            ``rate * i / N`` with N counted in the scaled model.
        dropout_rate: dropout before the classifier (default: the variant's).
        include_preprocessing: normalise [0, 255] inputs inside the model.

    Returns:
        A functional ``keras.Model`` taking float RGB images in [0, 255].
    """
    spec = get_spec(spec)
    if pooling not in (None, "avg", "max"):
        raise ValueError(f"pooling must be None, 'avg' or 'max', got {pooling!r}")
    if not isinstance(classes, int) or classes < 1:
        raise ValueError(f"classes must be a positive integer, got {classes!r}")
    if not 0.0 <= stochastic_depth_rate < 1.0:
        raise ValueError(f"stochastic_depth_rate must be in [0, 1), got {stochastic_depth_rate}")
    dropout_rate = spec.dropout if dropout_rate is None else dropout_rate
    if not 0.0 <= dropout_rate < 1.0:
        raise ValueError(f"dropout_rate must be in [0, 1), got {dropout_rate}")

    normalization = spec.normalization
    if weights is not None:
        from keras_effnet import weights as weight_sets  # noqa: PLC0415 (avoid import cycle)
        weight_sets.check_weights_argument(weights, spec, include_top, classes)
        normalization = weight_sets.normalization_for(spec, weights)

    need_rgb = include_preprocessing or weights is not None
    if input_tensor is not None and input_shape is None:
        input_shape = tuple(input_tensor.shape[1:])
    input_shape = _validate_input_shape(input_shape, include_top, spec, need_rgb)
    if input_tensor is None:
        inputs = layers.Input(shape=input_shape, name="input_layer")
    elif keras.backend.is_keras_tensor(input_tensor):
        inputs = input_tensor
    else:
        inputs = layers.Input(tensor=input_tensor, shape=input_shape)

    activation = spec.activation
    x = inputs
    if include_preprocessing and normalization != "none":
        mean, stddev = NORMALIZATIONS[normalization]
        x = ImageNormalization(mean, stddev, name="normalization", dtype=_float32_if_mixed())(x)

    x = _conv(spec.stem_channels(), 3, strides=2, name="stem_conv")(x)
    x = _batch_norm("stem_bn")(x)
    x = layers.Activation(activation, name="stem_activation")(x)

    sequence = block_sequence(spec)
    for index, (prefix, block) in enumerate(sequence):
        rate = stochastic_depth_rate * index / len(sequence)
        x = mbconv_block(x, block, activation, rate, prefix)

    x = _conv(spec.head_channels(), 1, name="top_conv")(x)
    x = _batch_norm("top_bn")(x)
    x = layers.Activation(activation, name="top_activation")(x)

    if include_top:
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
        if dropout_rate > 0:
            x = layers.Dropout(dropout_rate, name="top_dropout")(x)
        x = layers.Dense(classes, activation=classifier_activation,
                         kernel_initializer=DENSE_INITIALIZER, name="predictions",
                         dtype=_float32_if_mixed())(x)
    elif pooling == "avg":
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    elif pooling == "max":
        x = layers.GlobalMaxPooling2D(name="max_pool")(x)

    model_inputs = inputs
    if input_tensor is not None:
        model_inputs = keras.utils.get_source_inputs(input_tensor)
    model = keras.Model(model_inputs, x, name=name or _default_name(spec))

    if weights is not None:
        weight_sets.load_weights_into(model, weights, spec, include_top)
    return model


def _float32_if_mixed() -> str | None:
    """float32 for layers that must stay exact (input scaling, logits) under mixed precision."""
    policy = keras.config.dtype_policy()
    return "float32" if policy.compute_dtype in ("float16", "bfloat16") else None


def build_model(name_or_spec: ModelSpec | str, **kwargs: Any) -> keras.Model:
    """``EfficientNet`` by variant name (``"efficientnet-b0"``, ``"b3"``, ``"lite0"`` ...)."""
    return EfficientNet(get_spec(name_or_spec), **kwargs)


def feature_extractor(spec: ModelSpec | str, input_shape: tuple | None = None,
                      weights: str | None = None, **kwargs: Any) -> keras.Model:
    """A backbone whose output is a dict of the stride 2, 4, 8, 16 and 32 feature maps.

    Keys are ``stride_2`` ... ``stride_32``; ``feature_info(spec)`` gives each one's channels.
    Works at any input size >= 32 (default ``(None, None, 3)``).
    """
    spec = get_spec(spec)
    base = EfficientNet(spec, include_top=False, weights=weights,
                        input_shape=input_shape or (None, None, 3), **kwargs)
    outputs = {info.name: base.get_layer(info.layer_name).output for info in feature_info(spec)}
    return keras.Model(base.inputs, outputs, name=f"{base.name}_features")


def _public(variant: str):
    spec = get_spec(variant)
    default_name = _default_name(spec)

    def constructor(include_top: bool = True, weights: str | None = None, input_tensor=None,
                    input_shape: tuple | None = None, pooling: str | None = None,
                    classes: int = 1000, classifier_activation: str | None = "softmax",
                    name: str = default_name, **kwargs: Any) -> keras.Model:
        return EfficientNet(spec, include_top=include_top, weights=weights,
                            input_tensor=input_tensor, input_shape=input_shape, pooling=pooling,
                            classes=classes, classifier_activation=classifier_activation,
                            name=name, **kwargs)

    title = variant.replace("efficientnet-", "").upper().replace("LITE", "Lite")
    constructor.__name__ = constructor.__qualname__ = f"EfficientNet{title}"
    constructor.__doc__ = (
        f"EfficientNet-{title} ({spec.resolution}x{spec.resolution} by default, width "
        f"{spec.width}, depth {spec.depth}). Arguments as ``keras.applications`` plus "
        "``stochastic_depth_rate``, ``dropout_rate`` and ``include_preprocessing``; see "
        "``keras_effnet.model.EfficientNet``.")
    return constructor


EfficientNetB0 = _public("efficientnet-b0")
EfficientNetB1 = _public("efficientnet-b1")
EfficientNetB2 = _public("efficientnet-b2")
EfficientNetB3 = _public("efficientnet-b3")
EfficientNetB4 = _public("efficientnet-b4")
EfficientNetB5 = _public("efficientnet-b5")
EfficientNetB6 = _public("efficientnet-b6")
EfficientNetB7 = _public("efficientnet-b7")
EfficientNetB8 = _public("efficientnet-b8")
EfficientNetL2 = _public("efficientnet-l2")
EfficientNetLite0 = _public("efficientnet-lite0")
EfficientNetLite1 = _public("efficientnet-lite1")
EfficientNetLite2 = _public("efficientnet-lite2")
EfficientNetLite3 = _public("efficientnet-lite3")
EfficientNetLite4 = _public("efficientnet-lite4")

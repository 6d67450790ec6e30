"""The functional EfficientNet builder: architecture only.

``EfficientNet(spec, ...)`` turns a ``ModelSpec`` (stage table + coefficients) into a Keras 3
functional model whose layer names and weight order are those of ``keras.applications``
(a stable contract: weight files and user code depend on them). The per-block numbers come from
``keras_effnet.plan.block_plan``. Pretrained weights are the business of
``keras_effnet.applications`` (resolve a weight set, build here, then load); nothing here imports
weights code, and nothing here needs TensorFlow (the JAX and PyTorch backends build the same
model).
"""

from __future__ import annotations

import numbers

import keras
from keras import layers

from keras_effnet.layers import (NORMALIZATIONS, BatchNormalization, ImageNormalization,
                                 StochasticDepth, channel_statistics)
from keras_effnet.plan import BlockPlan, block_plan
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


def _conv(filters: int, kernel_size: int, name: str, strides: int = 1, **kwargs) -> layers.Conv2D:
    return layers.Conv2D(filters, kernel_size, strides=strides, padding="same", use_bias=False,
                         kernel_initializer=CONV_INITIALIZER, name=name, **kwargs)


def _batch_norm(name: str) -> BatchNormalization:
    return BatchNormalization(axis=-1, momentum=BATCH_NORM_MOMENTUM, epsilon=BATCH_NORM_EPSILON,
                              name=name)


def mbconv_block(x, block: BlockPlan, activation: str, stochastic_depth: float):
    """One MBConv block: [expand 1x1] -> depthwise kxk -> [SE] -> project 1x1 -> [skip].

    ``block`` (from ``block_plan``) carries the widths, stride, skip and layer-name prefix.
    """
    inputs = x
    prefix = block.prefix
    if block.has_expand:
        x = _conv(block.expanded_channels, 1, name=f"{prefix}expand_conv")(x)
        x = _batch_norm(f"{prefix}expand_bn")(x)
        x = layers.Activation(activation, name=f"{prefix}expand_activation")(x)

    # 'same' padding equals keras.applications' explicit ZeroPadding2D + 'valid' for stride 2
    # at every input size (and is right for odd sizes, where theirs is not).
    x = layers.DepthwiseConv2D(block.kernel_size, strides=block.stride, padding="same",
                               use_bias=False, depthwise_initializer=CONV_INITIALIZER,
                               name=f"{prefix}dwconv")(x)
    x = _batch_norm(f"{prefix}bn")(x)
    x = layers.Activation(activation, name=f"{prefix}activation")(x)

    if block.has_se:
        se = layers.GlobalAveragePooling2D(keepdims=True, name=f"{prefix}se_squeeze")(x)
        se = layers.Conv2D(block.se_channels, 1, padding="same", activation=activation,
                           kernel_initializer=CONV_INITIALIZER, name=f"{prefix}se_reduce")(se)
        se = layers.Conv2D(block.expanded_channels, 1, padding="same", activation="sigmoid",
                           kernel_initializer=CONV_INITIALIZER, name=f"{prefix}se_expand")(se)
        x = layers.Multiply(name=f"{prefix}se_excite")([x, se])

    x = _conv(block.output_channels, 1, name=f"{prefix}project_conv")(x)
    x = _batch_norm(f"{prefix}project_bn")(x)

    if block.skip:
        if stochastic_depth > 0:
            x = StochasticDepth(stochastic_depth, name=f"{prefix}drop")(x)
        x = layers.Add(name=f"{prefix}add")([x, inputs])
    return x


def default_model_name(spec: ModelSpec) -> str:
    """keras.applications' model name for a variant: ``efficientnet-b0`` -> ``efficientnetb0``."""
    return spec.name.replace("-", "").replace(".", "_")


def validate_input_shape(input_shape: tuple | None, include_top: bool, spec: ModelSpec,
                         need_rgb: bool, in_channels: int | None = None) -> tuple:
    """The model's (height, width, channels), checked.

    ``None`` gives (res, res, C) with the top and (None, None, C) without, C = ``in_channels``
    or 3. ``need_rgb``: the model normalises RGB inputs or loads pretrained weights, so channels
    must be 3 unless ``in_channels`` asks for another count explicitly.
    """
    channels_wanted = 3 if in_channels is None else int(in_channels)
    if channels_wanted < 1:
        raise ValueError(f"in_channels must be positive, got {in_channels}")
    if input_shape is None:
        size = spec.resolution if include_top else None
        return (size, size, channels_wanted)
    input_shape = tuple(input_shape)
    if len(input_shape) != 3:
        raise ValueError(f"input_shape must be (height, width, channels), got {input_shape}")
    height, width, channels = input_shape
    for label, value in (("height", height), ("width", width)):
        if value is not None and value < MIN_INPUT_SIZE:
            raise ValueError(f"input {label} {value} is smaller than {MIN_INPUT_SIZE} pixels "
                             f"(input_shape={input_shape}); EfficientNet downsamples 32x, use "
                             f"at least {MIN_INPUT_SIZE}x{MIN_INPUT_SIZE}")
    if in_channels is not None and channels != in_channels:
        raise ValueError(f"input_shape {input_shape} has {channels} channels but "
                         f"in_channels={in_channels}; make them agree")
    if need_rgb and channels != 3 and in_channels is None:
        raise ValueError(f"input_shape {input_shape} has {channels} channels; with "
                         "include_preprocessing=True or pretrained weights the model needs RGB "
                         f"images (3 channels). Pass in_channels={channels} to adapt the "
                         "normalisation and the pretrained stem (timm's adapt_input_conv), "
                         "convert the images, or pass include_preprocessing=False and "
                         "weights=None")
    return input_shape


def EfficientNet(
    spec: ModelSpec | str,
    include_top: bool = True,
    input_tensor=None,
    input_shape: tuple | None = None,
    pooling: str | None = None,
    classes: int = 1000,
    classifier_activation: str | None = "softmax",
    name: str | None = None,
    stochastic_depth_rate: float = STOCHASTIC_DEPTH_RATE,
    dropout_rate: float | None = None,
    include_preprocessing: bool = True,
    normalization: str | None = None,
    in_channels: int | None = None,
    classifier_initializer: str | dict | None = None,
) -> keras.Model:
    """Build any member of the family from a ``ModelSpec`` (or a variant name), untrained.

    Args:
        spec: stage table and coefficients (``keras_effnet.scaling.get_spec`` / ``compound_spec``).
        include_top: whether to add global pooling, dropout and the ``predictions`` classifier.
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
        normalization: the input normalisation, a key of ``keras_effnet.layers.NORMALIZATIONS``
            or ``"none"``; default the spec's (weight sets may need another, e.g. AdvProp's
            ``inception``: ``keras_effnet.applications`` passes it).
        in_channels: input channels other than RGB (1 for grayscale, 4 for RGB + another
            band); the normalisation statistics are adapted (``layers.channel_statistics``).
        classifier_initializer: kernel initialiser of ``predictions`` (default the original
            uniform fan-out one; ``"zeros"`` for a new fine-tuning head, see applications).

    Returns:
        A functional ``keras.Model`` taking float RGB images in [0, 255].
    """
    spec = get_spec(spec)
    if pooling not in (None, "avg", "max"):
        raise ValueError(f"pooling must be None, 'avg' or 'max', got {pooling!r}")
    if isinstance(classes, bool) or not isinstance(classes, numbers.Integral) or classes < 1:
        raise ValueError(f"classes must be a positive integer, got {classes!r}")
    classes = int(classes)  # numpy integers (e.g. from a label array) are welcome
    if not 0.0 <= stochastic_depth_rate < 1.0:
        raise ValueError(f"stochastic_depth_rate must be in [0, 1), got {stochastic_depth_rate}")
    dropout_rate = spec.dropout if dropout_rate is None else dropout_rate
    if not 0.0 <= dropout_rate < 1.0:
        raise ValueError(f"dropout_rate must be in [0, 1), got {dropout_rate}")
    normalization = spec.normalization if normalization is None else normalization
    if normalization != "none" and normalization not in NORMALIZATIONS:
        raise ValueError(f"unknown normalization {normalization!r}; use one of "
                         f"{', '.join(NORMALIZATIONS)} or 'none'")

    if input_tensor is not None and input_shape is None:
        input_shape = tuple(input_tensor.shape[1:])
    input_shape = validate_input_shape(input_shape, include_top, spec,
                                       need_rgb=include_preprocessing, in_channels=in_channels)
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
        channels = input_shape[-1]
        mean, stddev = channel_statistics(mean, channels), channel_statistics(stddev, channels)
        x = ImageNormalization(mean, stddev, name="normalization", dtype=_float32_if_mixed())(x)

    x = _conv(spec.stem_channels(), 3, strides=2, name="stem_conv")(x)
    x = _batch_norm("stem_bn")(x)
    x = layers.Activation(activation, name="stem_activation")(x)

    plan = block_plan(spec)
    for block in plan:
        x = mbconv_block(x, block, activation, stochastic_depth_rate * block.index / len(plan))

    x = _conv(spec.head_channels(), 1, name="top_conv")(x)
    x = _batch_norm("top_bn")(x)
    x = layers.Activation(activation, name="top_activation")(x)

    if include_top:
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
        if dropout_rate > 0:
            x = layers.Dropout(dropout_rate, name="top_dropout")(x)
        x = layers.Dense(classes, activation=classifier_activation,
                         kernel_initializer=classifier_initializer or DENSE_INITIALIZER,
                         name="predictions",
                         dtype=_float32_if_mixed())(x)
    elif pooling == "avg":
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    elif pooling == "max":
        x = layers.GlobalMaxPooling2D(name="max_pool")(x)

    model_inputs = inputs
    if input_tensor is not None:
        model_inputs = keras.utils.get_source_inputs(input_tensor)
    return keras.Model(model_inputs, x, name=name or default_model_name(spec))


def _float32_if_mixed() -> str | None:
    """float32 for layers that must stay exact (input scaling, logits) under mixed precision."""
    policy = keras.config.dtype_policy()
    return "float32" if policy.compute_dtype in ("float16", "bfloat16") else None

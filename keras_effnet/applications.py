"""The public model functions: resolve a weight set, build the architecture, load the weights.

``EfficientNetB0(...)`` .. ``EfficientNetL2``, ``EfficientNetLite0..4`` take the arguments of
``keras.applications.EfficientNetB0`` (``weights`` included) plus ``stochastic_depth_rate``,
``dropout_rate`` and ``include_preprocessing``; ``build_model`` does the same by variant name or
``ModelSpec``; ``feature_extractor`` returns the multi-scale feature maps.

Two differences from keras.applications: ``weights`` defaults to ``None`` (a random
initialisation; nothing is downloaded unless asked: pass ``weights="imagenet"``), and
fine-tuning is explicit: ``EfficientNetLite0(weights=W, classes=4, new_head=True)`` loads the
backbone and starts a zero-initialised 4-class head (``in_channels=1`` adapts the RGB stem).

One way through for ``weights``: ``keras_effnet.weights`` checks the argument (before anything
is built or downloaded) and names the input normalisation the weights need (e.g. AdvProp's
``inception``), ``keras_effnet.model.EfficientNet`` builds with it, then
``keras_effnet.weights.load_weights_into`` assigns every tensor (strictly).
"""

from __future__ import annotations

from typing import Any, Callable

import keras

from keras_effnet import finetune
from keras_effnet import weights as weight_sets
from keras_effnet.model import EfficientNet, default_model_name, validate_input_shape
from keras_effnet.plan import FeatureInfo, feature_info
from keras_effnet.scaling import ModelSpec, get_spec

__all__ = ["build_model", "feature_extractor", "feature_info", "FeatureInfo",
           "EfficientNetB0", "EfficientNetB1", "EfficientNetB2", "EfficientNetB3",
           "EfficientNetB4", "EfficientNetB5", "EfficientNetB6", "EfficientNetB7",
           "EfficientNetB8", "EfficientNetL2", "EfficientNetLite0", "EfficientNetLite1",
           "EfficientNetLite2", "EfficientNetLite3", "EfficientNetLite4"]

CLASSIFIER = "predictions"
BACKBONE_OUTPUT = "top_activation"


def build_model(name_or_spec: ModelSpec | str, *, weights: str | None = None,
                new_head: bool = False, **kwargs: Any) -> keras.Model:
    """An EfficientNet by variant name (``"efficientnet-b0"``, ``"b3"``, ``"lite0"`` ...) or spec.

    Args:
        name_or_spec: a published variant name or a ``ModelSpec``.
        weights: ``None`` (random initialisation), a weight-set name (``"imagenet"``,
            ``"noisy-student"`` ..., see ``keras_effnet.weights.available_weights``) or a file
            path (``.weights.h5``, ``.keras``, legacy ``.h5``, ``.pth``, TensorFlow checkpoint).
        new_head: load only the backbone from ``weights`` and start a new ``classes``-way
            classifier, zero-initialised so the first loss is ln(classes) (the "zero head" of
            Big Transfer, Kolesnikov et al. 2020, section 3.3). Without it, ``weights`` must
            hold a classifier of ``classes`` outputs.
        **kwargs: the arguments of ``keras_effnet.model.EfficientNet``; ``in_channels=1`` (or
            4 ...) with pretrained weights adapts the RGB stem (``finetune.adapt_stem_kernel``).

    Raises:
        ValueError: a bad argument, an unknown weight set, or pretrained weights with
            ``classes != 1000`` and the top without ``new_head=True``, or non-RGB inputs
            without ``in_channels``.
        FileNotFoundError: ``weights`` is a path that does not exist.
    """
    spec = get_spec(name_or_spec)
    if weights is None:
        return EfficientNet(spec, **kwargs)
    include_top = kwargs.get("include_top", True)
    classes = kwargs.get("classes", 1000)
    if new_head and not include_top:
        raise ValueError("new_head=True replaces the classifier, which include_top=False "
                         "leaves out; drop new_head or use include_top=True")
    if (include_top and not new_head and classes != 1000
            and weight_sets.is_weight_set_name(weights)):
        weight_sets.get_weight_set(spec, weights)  # an unknown set name fails first
        raise ValueError(
            f"weights={weights!r} has a 1000-class ImageNet classifier; pass new_head=True to "
            f"load the backbone and start a new {classes}-class classifier (fine-tuning), use "
            f"include_top=False for a feature extractor, or classes=1000")
    weight_sets.check_weights_argument(weights, spec, include_top and not new_head, classes)
    # Fail before downloading anything: pretrained weights need RGB inputs (or in_channels).
    input_shape = kwargs.get("input_shape")
    input_tensor = kwargs.get("input_tensor")
    if input_shape is None and input_tensor is not None:
        input_shape = tuple(input_tensor.shape[1:])
    input_shape = validate_input_shape(input_shape, include_top, spec, need_rgb=True,
                                       in_channels=kwargs.get("in_channels"))
    kwargs.setdefault("normalization",
                      weight_sets.eval_preprocessing(spec, weights).normalization)
    if new_head:
        kwargs.setdefault("classifier_initializer", "zeros")
    model = EfficientNet(spec, **kwargs)
    source = model
    if input_shape[-1] != 3:  # load into an RGB twin, then adapt its stem
        rgb_kwargs = dict(kwargs, input_shape=input_shape[:2] + (3,), input_tensor=None,
                          in_channels=None)
        source = EfficientNet(spec, **rgb_kwargs)
    target = source
    if new_head:
        target = keras.Model(source.input, source.get_layer(BACKBONE_OUTPUT).output,
                             name=f"{source.name}_backbone")
    try:
        weight_sets.load_weights_into(target, weights, spec)
    except ValueError as error:
        if include_top and not new_head:
            raise ValueError(f"{error}\nIf {weights} was trained for another number of classes, "
                             f"pass new_head=True to keep its backbone and start a new "
                             f"{classes}-class classifier") from error
        raise
    if source is not model:
        finetune.copy_weights_adapting_stem(source, model,
                                            skip=(CLASSIFIER,) if new_head else ())
    return model


def feature_extractor(spec: ModelSpec | str, input_shape: tuple | None = None,
                      weights: str | None = None, **kwargs: Any) -> keras.Model:
    """A backbone whose output is a dict of the stride 2, 4, 8, 16 and 32 feature maps.

    Keys are ``stride_2`` ... ``stride_32``; ``feature_info(spec)`` gives each one's channels
    and layer. Works at any input size >= 32 (default ``(None, None, 3)``).
    """
    spec = get_spec(spec)
    base = build_model(spec, include_top=False, weights=weights,
                       input_shape=input_shape or (None, None, 3), **kwargs)
    outputs = {info.name: base.get_layer(info.layer_name).output for info in feature_info(spec)}
    # base.input (one tensor, not a list): called with a tensor, no structure warning
    return keras.Model(base.input, outputs, name=f"{base.name}_features")


def _public(variant: str) -> Callable[..., keras.Model]:
    spec = get_spec(variant)
    default_name = default_model_name(spec)

    def constructor(include_top: bool = True, weights: str | None = None, input_tensor=None,
                    input_shape: tuple | None = None, pooling: str | None = None,
                    classes: int = 1000, classifier_activation: str | None = "softmax",
                    name: str = default_name, **kwargs: Any) -> keras.Model:
        return build_model(spec, include_top=include_top, weights=weights,
                           input_tensor=input_tensor, input_shape=input_shape, pooling=pooling,
                           classes=classes, classifier_activation=classifier_activation,
                           name=name, **kwargs)

    title = variant.replace("efficientnet-", "").upper().replace("LITE", "Lite")
    constructor.__name__ = constructor.__qualname__ = f"EfficientNet{title}"
    constructor.__doc__ = (
        f"EfficientNet-{title} ({spec.resolution}x{spec.resolution} by default, width "
        f"{spec.width}, depth {spec.depth}). Arguments as ``keras.applications`` plus "
        "``stochastic_depth_rate``, ``dropout_rate`` and ``include_preprocessing``; see "
        "``keras_effnet.applications.build_model``.")
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

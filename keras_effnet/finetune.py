"""Fine-tuning helpers: freeze the backbone up to a stage, layer-wise learning-rate decay, and
adapting a pretrained RGB stem to other channel counts.

``freeze(model, up_to="block5")`` sets ``trainable=False`` on every layer from the input up to
the end of stage 5. A frozen ``BatchNormalization`` runs in inference mode in Keras 3 (it uses
its moving statistics and does not update them, even under ``fit``/``training=True``), which
is what fine-tuning on a small data set needs (the Keras transfer-learning guide,
keras.io/guides/transfer_learning, "BatchNormalization layer"). ``unfreeze(model,
keep_batch_norm_frozen=True)`` ends a frozen warm-up and, as that guide advises, leaves the
frozen batch norm in inference mode.

``layer_decay_multipliers(model, decay)`` gives each trainable variable a learning-rate
multiplier ``decay ** (depth_groups - 1 - group)`` (the head gets 1, each block below a factor
``decay`` less: BEiT, Bao et al. 2021, section 2.6; timm's ``param_groups_layer_decay``), and
``scale_learning_rates(optimizer, multipliers)`` makes any Keras 3 optimizer apply them (in
``model.fit`` and in ``keras_effnet.training``).

``adapt_stem_kernel(kernel, in_channels)`` (used by ``build_model(..., in_channels=)``) is
timm's ``adapt_input_conv`` (``timm/models/_manipulate.py``): one channel sums the RGB
kernels; more channels repeat the RGB kernels cyclically and scale them by ``3 / in_channels``,
so an input whose extra channels repeat R, G, B gives the pretrained response.
"""

from __future__ import annotations

import math
import re
from typing import Iterable

import keras
import numpy as np

CLASSIFIER = "predictions"
_BLOCK = re.compile(r"^block(\d+)([a-z]+)_")
STAGES = ("stem",) + tuple(f"block{i}" for i in range(1, 8)) + ("top",)


def _stage_of(layer_name: str) -> str | None:
    """``stem``, ``block<N>``, ``top`` or None (input, normalisation, pooling, classifier)."""
    match = _BLOCK.match(layer_name)
    if match:
        return f"block{match.group(1)}"
    for stage in ("stem", "top"):
        if layer_name.startswith(f"{stage}_"):
            return stage
    return None


def _stage_names(model: keras.Model) -> list[str]:
    names = []
    for layer in model.layers:
        stage = _stage_of(layer.name)
        if stage and stage not in names:
            names.append(stage)
    return names


def freeze(model: keras.Model, up_to: str | None = None) -> list[str]:
    """Freeze ``model`` from its input through stage ``up_to``; returns the frozen layer names.

    ``up_to``: ``"stem"``, ``"block1"`` .. ``"block7"`` or ``"top"`` (the last conv); None
    freezes the whole backbone (everything but the ``predictions`` classifier). Frozen batch
    norm layers run in inference mode. Layers after ``up_to`` are made trainable.

    Raises:
        ValueError: ``up_to`` is not a stage of this model.
    """
    stages = _stage_names(model)
    if up_to is None:
        up_to = stages[-1]
    if up_to not in stages:
        raise ValueError(f"up_to={up_to!r} is not a stage of {model.name}; use one of "
                         f"{', '.join(stages)} (or None for the whole backbone)")
    included = set(stages[:stages.index(up_to) + 1])
    last = max(index for index, layer in enumerate(model.layers)
               if _stage_of(layer.name) in included)
    frozen = []
    for index, layer in enumerate(model.layers):
        layer.trainable = index > last
        if not layer.trainable:
            frozen.append(layer.name)
    return frozen


def unfreeze(model: keras.Model, keep_batch_norm_frozen: bool = False) -> None:
    """Make every layer trainable again (after a frozen warm-up).

    ``keep_batch_norm_frozen``: batch-norm layers that are frozen now stay frozen: inference mode
    with their pretrained statistics, gamma and beta fixed (the Keras transfer-learning guide's
    advice when unfreezing for a small data set).
    """
    for layer in model.layers:
        if (keep_batch_norm_frozen and not layer.trainable
                and isinstance(layer, keras.layers.BatchNormalization)):
            continue
        layer.trainable = True


def depth_groups(model: keras.Model) -> dict[str, int]:
    """Layer name -> depth group: 0 for the stem (and input normalisation), one group per block
    (``block1a``, ``block1b`` ...), then ``top`` and, last, the classifier and pooling."""
    groups, current, block = {}, 0, None
    for layer in model.layers:
        match = _BLOCK.match(layer.name)
        if match:
            name = match.group(1) + match.group(2)
            if name != block:
                block, current = name, current + 1
        elif layer.name.startswith("top_") and block != "top":
            block, current = "top", current + 1
        elif layer.name == CLASSIFIER:
            block, current = CLASSIFIER, current + 1
        groups[layer.name] = current
    return groups


def layer_decay_multipliers(model: keras.Model, decay: float = 0.75) -> dict[str, float]:
    """Variable path -> learning-rate multiplier ``decay ** (last_group - group)``.

    ``decay`` in (0, 1]; 1 gives every variable multiplier 1.
    """
    if not 0.0 < decay <= 1.0:
        raise ValueError(f"decay must be in (0, 1], got {decay}")
    groups = depth_groups(model)
    last = max(groups.values())
    multipliers = {}
    for layer in model.layers:
        for variable in layer.trainable_weights:
            multipliers[variable.path] = float(decay ** (last - groups[layer.name]))
    return multipliers


def scale_learning_rates(optimizer: keras.optimizers.Optimizer,
                         multipliers: dict[str, float]) -> keras.optimizers.Optimizer:
    """Make ``optimizer`` use ``learning_rate * multipliers[variable.path]`` per variable.

    Works for every Keras 3 optimizer (it wraps ``update_step``, which all of them implement and
    every backend calls once per variable), in ``model.fit`` and custom loops. Call it before
    the optimizer is built (its first ``apply``). Variables not in ``multipliers`` keep the full
    rate. Returns the same optimizer. Weight decay (``weight_decay=``) is not scaled.
    """
    if optimizer.built:
        raise ValueError("scale_learning_rates needs an optimizer that is not built yet (call it "
                         "before compile/fit or the first apply)")
    by_path = dict(multipliers)
    by_id: dict[int, float] = {}
    base_build, base_update = optimizer.build, optimizer.update_step

    def build(variables):
        # update_step may receive the backend's variable (TensorFlow: the tf.Variable, or its
        # per-replica components under a distribution strategy), so index those too.
        for variable in variables:
            factor = by_path.get(variable.path)
            if factor is None:
                continue
            by_id[id(variable)] = factor
            value = getattr(variable, "value", None)
            if value is not None:
                by_id[id(value)] = factor
                for component in getattr(value, "values", ()) or ():
                    by_id[id(component)] = factor
        return base_build(variables)

    def update_step(gradient, variable, learning_rate):
        factor = by_id.get(id(variable), 1.0)
        if factor != 1.0:
            learning_rate = learning_rate * factor
        return base_update(gradient, variable, learning_rate)

    optimizer.build = build
    optimizer.update_step = update_step
    optimizer.learning_rate_multipliers = by_path
    return optimizer


def adapt_stem_kernel(kernel: np.ndarray, in_channels: int) -> np.ndarray:
    """A (kh, kw, 3, out) RGB conv kernel for ``in_channels`` inputs (timm's adapt_input_conv)."""
    kernel = np.asarray(kernel)
    if kernel.ndim != 4 or kernel.shape[2] != 3:
        raise ValueError(f"expected an RGB kernel of shape (kh, kw, 3, out), got {kernel.shape}")
    if in_channels < 1:
        raise ValueError(f"in_channels must be positive, got {in_channels}")
    if in_channels == 3:
        return kernel
    if in_channels == 1:
        return kernel.sum(axis=2, keepdims=True)
    repeat = math.ceil(in_channels / 3)
    return np.tile(kernel, (1, 1, repeat, 1))[:, :, :in_channels, :] * (3.0 / in_channels)


def copy_weights_adapting_stem(source: keras.Model, target: keras.Model,
                               skip: Iterable[str] = ()) -> None:
    """Copy every layer's weights from an RGB ``source`` into ``target`` (same architecture,
    other input channels), adapting ``stem_conv`` with ``adapt_stem_kernel``; the input
    normalisation keeps ``target``'s own (adapted) statistics; layers in ``skip`` (a new
    classifier) keep theirs."""
    channels = int(target.inputs[0].shape[-1])
    skip = set(skip) | {"normalization"}
    for layer in source.layers:
        values = layer.get_weights()
        if not values or layer.name in skip:
            continue
        if layer.name == "stem_conv":
            values = [adapt_stem_kernel(values[0], channels)] + values[1:]
        target.get_layer(layer.name).set_weights(values)

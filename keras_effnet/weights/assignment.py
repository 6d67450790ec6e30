"""Strict assignment of source tensors to a model's variables.

Every variable of the model needs a tensor of the same shape and every tensor needs a variable;
the first mismatch raises ``ConversionError`` naming the source tensor, the target layer and both
shapes, and nothing is assigned. The model's input normalisation (layer ``normalization``) is not
part of the published sources: ``set_normalization`` sets it from the weight set instead.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Mapping

import numpy as np

from keras_effnet.layers import NORMALIZATIONS

# Layers whose tensors are dropped on purpose when the model does not have them.
TOP_LAYERS = ("predictions",)
NORMALIZATION_LAYER = "normalization"


class ConversionError(ValueError):
    """A source file does not fit the requested model (names the first mismatch)."""


@dataclasses.dataclass(frozen=True)
class SourceTensor:
    """One tensor of a source file, already in Keras layout.

    Attributes:
        name: its name in the source file (for error messages).
        value: the array in the Keras variable's layout.
    """

    name: str
    value: np.ndarray


# Tensors keyed by Keras ``"layer_name/variable_name"`` (e.g. ``"stem_bn/gamma"``). Readers put
# tensors they cannot place under ``"?<source name>"`` so that ``assign`` reports them unused.
Tensors = dict[str, SourceTensor]


@dataclasses.dataclass(frozen=True)
class ConversionReport:
    """What a conversion did: the output file and how many tensors were matched."""

    output: Path
    model: str
    source: str
    tensors: int
    notes: tuple[str, ...] = ()


def assign(model, tensors: Mapping[str, SourceTensor], *, source: str = "source",
           hint: str = "") -> int:
    """Copy ``tensors`` into ``model``'s variables after checking every one of them.

    Every variable of the model (except the input ``normalization``, unless the source has it)
    needs a tensor of the same shape, and every tensor needs a variable; the classifier's
    tensors are dropped when the model has no ``predictions`` layer. Nothing is assigned when a
    check fails.

    Args:
        model: the Keras model to fill.
        tensors: source tensors keyed by ``"layer/variable"``.
        source: how to name the source in errors (usually its path).
        hint: appended to errors (e.g. ``variant_hint``'s "is the model name right?").

    Returns:
        the number of variables assigned.

    Raises:
        ConversionError: naming the first mismatch (source tensor, target layer, both shapes).
    """
    suffix = f" {hint}" if hint else ""
    plan = []
    used: set[str] = set()
    for layer in model.layers:
        for variable in layer.weights:
            key = f"{layer.name}/{variable.name}"
            if key not in tensors:
                if layer.name == NORMALIZATION_LAYER:
                    continue
                raise ConversionError(
                    f"{source} has no tensor for layer {layer.name!r} variable "
                    f"{variable.name!r} (shape {tuple(variable.shape)}){suffix}")
            tensor = tensors[key]
            if tuple(tensor.value.shape) != tuple(variable.shape):
                raise ConversionError(
                    f"shape mismatch: source tensor {tensor.name!r} has shape "
                    f"{tuple(tensor.value.shape)} but target layer {layer.name!r} variable "
                    f"{variable.name!r} has shape {tuple(variable.shape)}{suffix}")
            plan.append((variable, tensor.value))
            used.add(key)
    layer_names = {layer.name for layer in model.layers}
    for key, tensor in tensors.items():
        if key in used:
            continue
        layer_name = key.split("/")[0]
        if layer_name in TOP_LAYERS and layer_name not in layer_names:
            continue  # include_top=False: the classifier is dropped on purpose
        if layer_name == NORMALIZATION_LAYER and layer_name not in layer_names:
            continue  # include_preprocessing=False
        where = (f"no layer {layer_name!r} in model {model.name!r}"
                 if layer_name not in layer_names and not key.startswith("?")
                 else "it matches no variable of the model")
        raise ConversionError(f"source tensor {tensor.name!r} in {source} was not used: "
                              f"{where}{suffix}")
    for variable, value in plan:
        variable.assign(value.astype(variable.dtype) if hasattr(value, "astype") else value)
    return len(plan)


def set_normalization(model, normalization: str) -> None:
    """Set the ``normalization`` layer's statistics to one of ``layers.NORMALIZATIONS``.

    ``"none"`` and models without the layer (``include_preprocessing=False``) are left alone.
    """
    if normalization == "none":
        return
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"unknown normalization {normalization!r}; "
                         f"expected one of {', '.join(NORMALIZATIONS)} or 'none'")
    try:
        layer = model.get_layer(NORMALIZATION_LAYER)
    except ValueError:
        return  # include_preprocessing=False
    mean, stddev = NORMALIZATIONS[normalization]
    layer.mean.assign(np.asarray(mean, np.float32))
    layer.variance.assign(np.square(np.asarray(stddev, np.float64)).astype(np.float32))

"""What is there: ``list_models()``, ``list_weights()`` and ``summary(model_or_name)``.

As timm's ``list_models``/``list_pretrained`` and ``keras.Model.summary`` in one call::

    >>> keras_effnet.list_models("*lite*")
    ['efficientnet-lite0', ..., 'efficientnet-lite4']
    >>> print(keras_effnet.summary("lite0"))
    efficientnet-lite0: 4.65M parameters, 385.5M multiply-adds at 224x224 ...

Multiply-adds are the paper's "FLOPs" (conv, depthwise, SE and dense, one image), counted by
``keras_effnet.flops``; feature maps are the stride 2 .. 32 endpoints of ``feature_extractor``.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import re

import keras

from keras_effnet import flops
from keras_effnet import weights as weight_sets
from keras_effnet.config import Config
from keras_effnet.plan import feature_info
from keras_effnet.scaling import VARIANTS, ModelSpec, get_spec

_BLOCK_OUTPUT = re.compile(r"^block\d+[a-z]+_(project_bn|add)$")


def list_models(pattern: str | None = None, pretrained: bool = False) -> list[str]:
    """Published variant names (``efficientnet-b0`` ...), optionally filtered.

    ``pattern``: a shell-style wildcard (``"*lite*"``, ``"efficientnet-b[0-3]"``).
    ``pretrained``: only variants with at least one weight set (``list_weights``).
    """
    names = list(VARIANTS)
    if pattern:
        names = [name for name in names if fnmatch.fnmatch(name, pattern)]
    if pretrained:
        table = weight_sets.available_weights()
        names = [name for name in names if table.get(name)]
    return names


def list_weights(model: ModelSpec | str | None = None) -> dict[str, list[str]] | list[str]:
    """Weight-set names: ``{variant: [names]}`` for all, or the list for ``model``.

    Any name here is a valid ``weights=`` for that variant (downloaded on first use).
    """
    return weight_sets.available_weights(model)


@dataclasses.dataclass(frozen=True)
class FeatureMap:
    """One endpoint: ``layer`` outputs ``channels`` at ``stride`` (``size`` pixels, or None)."""

    name: str
    layer: str
    channels: int
    stride: int
    size: tuple[int, int] | None


@dataclasses.dataclass(frozen=True)
class ModelSummary:
    """Parameters, multiply-adds, resolution and feature maps of one model (for one image)."""

    name: str
    params: int
    trainable_params: int | None
    multiply_adds: int
    resolution: tuple[int, int]
    feature_maps: tuple[FeatureMap, ...]
    weights: tuple[str, ...]

    def __str__(self) -> str:
        height, width = self.resolution
        lines = [f"{self.name}: {flops.format_count(self.params)} parameters"
                 + (f" ({flops.format_count(self.trainable_params)} trainable)"
                    if self.trainable_params is not None and self.trainable_params != self.params
                    else "")
                 + f", {flops.format_count(self.multiply_adds)} multiply-adds at {height}x{width}"]
        lines.append("feature maps: " + ", ".join(
            f"{item.name} {item.channels}ch"
            + (f" {item.size[0]}x{item.size[1]}" if item.size else "")
            for item in self.feature_maps))
        lines.append("weights: " + (", ".join(self.weights) or "none published"))
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def summary(model_or_name: keras.Model | ModelSpec | str, resolution: int | None = None,
            classes: int = 1000) -> ModelSummary:
    """Parameters, multiply-adds, resolution and feature maps of a built model or a variant.

    A name or spec is counted from its block table (nothing is built; ``resolution`` defaults to
    the variant's); a built model is counted from its layers (it needs a fixed input size).

    Raises:
        ValueError: an unknown variant, or a built model without a fixed input size.
    """
    if isinstance(model_or_name, keras.Model):
        return _model_summary(model_or_name)
    spec = get_spec(model_or_name)
    size = resolution or spec.resolution
    count = flops.count_spec_flops(spec, resolution=size, classes=classes)
    maps = tuple(FeatureMap(info.name, info.layer_name, info.channels, info.stride,
                            (-(-size // info.stride),) * 2) for info in feature_info(spec))
    return ModelSummary(spec.name, count.params, None, count.flops, (size, size), maps,
                        tuple(weight_sets.available_weights(spec)))


def _model_summary(model: keras.Model) -> ModelSummary:
    shape = tuple(model.inputs[0].shape[1:3])
    if None in shape:
        raise ValueError(f"{model.name} has input shape {tuple(model.inputs[0].shape)}; "
                         "summary needs a fixed size: build it with input_shape=(H, W, 3)")
    count = flops.count_model_flops(model)
    trainable = sum(int(keras.ops.size(w)) for w in model.trainable_weights)
    return ModelSummary(model.name, count.params, trainable, count.flops, shape,
                        _feature_maps(model, shape), ())


def _feature_maps(model: keras.Model, input_size: tuple[int, int]) -> tuple[FeatureMap, ...]:
    """The last block output of each stride before the head (timm's feature_info, by walking)."""
    last: dict[int, tuple[str, int, tuple[int, int]]] = {}
    for layer in model.layers:
        if layer.name.startswith("top_"):
            break
        if not _BLOCK_OUTPUT.match(layer.name):
            continue
        output = getattr(layer, "output", None)
        shape = getattr(output, "shape", None)
        if shape is None or len(shape) != 4 or shape[1] in (None, 1):
            continue
        stride = round(input_size[0] / shape[1])
        if stride > 1:
            last[stride] = (layer.name, int(shape[-1]), (int(shape[1]), int(shape[2])))
    return tuple(FeatureMap(f"stride_{stride}", name, channels, stride, size)
                 for stride, (name, channels, size) in sorted(last.items()))


def config_reference() -> str:
    """A markdown reference of every config key (section, key, type, default), generated from
    the ``keras_effnet.config`` dataclasses, so it cannot drift from the code
    (``keras-effnet-info --config_keys``)."""
    lines = ["| key | type | default |", "|---|---|---|"]
    notes = []
    for section in dataclasses.fields(Config):
        section_type = type(getattr(Config(), section.name))
        doc = (section_type.__doc__ or "").strip().split("\n")[0]
        notes.append(f"- `{section.name}`: {doc}")
        for field in dataclasses.fields(section_type):
            default = getattr(getattr(Config(), section.name), field.name)
            kind = field.type if isinstance(field.type, str) else getattr(field.type, "__name__",
                                                                          str(field.type))
            kind = str(kind).replace("|", "\\|")  # a pipe would end the table cell
            lines.append(f"| `{section.name}.{field.name}` | {kind} | `{default!r}` |")
    return "\n".join(notes) + "\n\n" + "\n".join(lines) + "\n"

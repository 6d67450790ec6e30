"""Loading weights into a built model: a named set (downloaded, converted once, cached) or a file.

``weights=`` of every model function accepts ``None``, a file path (``.weights.h5``, ``.keras``,
keras.applications legacy ``.h5``, a lukemelas ``.pth``, an original TensorFlow checkpoint or its
``.tar.gz``) or a weight-set name of ``WEIGHT_SETS``. Original checkpoints are converted once into
``<cache>/<variant>_<set>.weights.h5`` beside the downloaded archive.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

from keras_effnet.plan import block_plan
from keras_effnet.scaling import VARIANTS, ModelSpec, get_spec
from keras_effnet.weights.assignment import TOP_LAYERS, assign
from keras_effnet.weights.cache import Progress, cache_dir, fetch, file_name
from keras_effnet.weights.conversion import convert, read_source, variant_hint
from keras_effnet.weights.keras_files import (
    is_readable_keras_weights, read_keras_h5, read_keras_weights)
from keras_effnet.weights.registry import (
    KERAS_H5, available_weights, get_weight_set, is_weight_set_name)

logger = logging.getLogger(__name__)

# File formats ``file_format`` tells apart (``SOURCES`` of the converter, plus Keras 3 files).
KERAS_WEIGHTS = "keras-weights"


def file_format(path: str | os.PathLike) -> str:
    """The format of a weight file by its name: ``keras-weights``, ``keras-h5``, ``lukemelas``
    or ``tpu-checkpoint``.

    Raises:
        ValueError: a name of none of these formats (lists the accepted ones).
    """
    path = Path(path)
    name = path.name.lower()
    if name.endswith((".weights.h5", ".keras")):
        return KERAS_WEIGHTS
    if name.endswith((".h5", ".hdf5")):
        return "keras-h5"
    if name.endswith((".pth", ".pt")):
        return "lukemelas"
    if path.is_dir() or name.endswith((".tar.gz", ".tgz", ".tar", ".index")) or ".ckpt" in name:
        return "tpu-checkpoint"
    raise ValueError(
        f"cannot tell the format of weight file {path}: expected .weights.h5, .keras, a legacy "
        ".h5, a PyTorch .pth, or a TensorFlow checkpoint (directory, prefix, .index, .tar.gz)")


def check_weights_argument(weights: str | os.PathLike | None, spec: ModelSpec | str,
                           include_top: bool, classes: int) -> None:
    """Validate ``weights=`` before a model is built (fail fast, before building anything).

    Raises:
        ValueError: unknown set name for this variant, a file of unknown format, or a named
            set with ``include_top=True`` and ``classes != 1000``.
        FileNotFoundError: a path that does not exist.
    """
    if weights is None:
        return
    if not isinstance(weights, (str, os.PathLike)):
        raise ValueError(f"weights must be None, a weight-set name (e.g. 'imagenet') or a file "
                         f"path, got {weights!r} of type {type(weights).__name__}")
    spec = get_spec(spec)
    if is_weight_set_name(weights):
        get_weight_set(spec, weights)
        if include_top and classes != 1000:
            raise ValueError(
                f"weights={weights!r} has a 1000-class ImageNet classifier; with "
                f"include_top=True use classes=1000, or include_top=False for {classes} classes")
        return
    path = Path(weights)
    if not path.exists() and not Path(f"{path}.index").exists():  # checkpoint prefixes
        raise FileNotFoundError(
            f"weights={weights!r} is neither a weight-set name for {spec.name} "
            f"({', '.join(available_weights(spec)) or 'none published'}) nor an existing file")
    file_format(path)  # an unknown format fails here, before the model is built


def weights_file(model: ModelSpec | str, name: str, include_top: bool = True,
                 progress: bool | Progress = True) -> Path:
    """Local path of a named set's Keras-loadable file, downloading/converting when needed.

    keras.applications files are used as downloaded (with or without the classifier);
    original checkpoints are downloaded, then converted once to
    ``<cache>/<variant>_<set>.weights.h5`` (with the classifier; it is dropped at load time).

    Raises:
        WeightsUnavailableError: the file cannot be downloaded (says where to put it by hand).
        ChecksumError: the download does not have the published checksum.
    """
    spec = get_spec(model)
    weight_set = get_weight_set(spec, name)
    if weight_set.source == KERAS_H5:
        url, checksum = weight_set.url, weight_set.checksum
        if not include_top and weight_set.notop_url:
            url, checksum = weight_set.notop_url, weight_set.notop_checksum
        return fetch(url, cache_dir() / file_name(url), checksum, progress=progress)

    converted = cache_dir() / f"{spec.name}_{weight_set.name}.weights.h5"
    if converted.exists():
        if is_readable_keras_weights(converted):
            return converted
        logger.warning("cached %s is unreadable (corrupt?); converting again", converted)
        converted.unlink()
    archive = fetch(weight_set.url, cache_dir() / file_name(weight_set.url), weight_set.checksum,
                    progress=progress)
    logger.info("converting %s to %s", archive.name, converted.name)
    convert(weight_set.source, spec, archive, converted,
            normalization=weight_set.eval.normalization, overwrite=True)
    return converted


def load_weights_into(model, weights: str | os.PathLike, spec: ModelSpec | str) -> None:
    """Load a named set or a file into ``model`` (built by ``keras_effnet.model.EfficientNet``).

    Tensors are matched by layer name with full shape and completeness checks (``assign``);
    the classifier's tensors are dropped when the model has no ``predictions`` layer.

    Raises:
        ConversionError: the weights do not fit the model (names the first mismatch).
    """
    spec = get_spec(spec)
    if is_weight_set_name(weights):
        weight_set = get_weight_set(spec, weights)
        has_top = any(layer.name in TOP_LAYERS for layer in model.layers)
        path = weights_file(spec, weights, include_top=has_top)
        if weight_set.source == KERAS_H5:
            tensors = read_keras_h5(path)
        else:
            tensors = read_keras_weights(path, model)
        assign(model, tensors, source=f"{weights!r} weights ({path})")
        return
    path = Path(weights)
    source = file_format(path)
    if source == KERAS_WEIGHTS:
        tensors = read_keras_weights(path, model)
        hint = keras_variant_hint(tensors, spec)
    else:
        tensors = read_source(source, path, spec)
        hint = variant_hint(tensors, spec, source)
    assign(model, tensors, source=str(path), hint=hint)


_KERAS_BLOCK = re.compile(r"^(block\d+[a-z]+)_")


def _architecture(blocks: int, stem: int | None, head: int | None) -> tuple:
    return blocks, stem, head


def keras_variant_hint(tensors, spec: ModelSpec) -> str:
    """"this file holds efficientnet-b1" when a Keras file's layers match another variant."""
    blocks = len({m.group(1) for key in tensors if (m := _KERAS_BLOCK.match(key))})
    stem = tensors.get("stem_conv/kernel")
    head = tensors.get("top_conv/kernel")
    found = _architecture(blocks, stem.value.shape[-1] if stem is not None else None,
                          head.value.shape[-1] if head is not None else None)

    def of(variant: ModelSpec) -> tuple:
        plan = block_plan(variant)
        return _architecture(len(plan), variant.stem_channels(),
                             variant.head_channels() if head is not None else None)

    if not blocks or found == of(spec):
        return ""
    matches = [name for name, variant in VARIANTS.items() if of(variant) == found]
    if matches:
        return f"(this file holds {' or '.join(matches)}, not {spec.name}: pass that model name)"
    return (f"(this file holds a network with {blocks} blocks; {spec.name} has "
            f"{len(block_plan(spec))}: is the model name right?)")

"""Readers for Keras weight files: keras.applications' legacy ``.h5`` and Keras 3's
``.weights.h5`` / ``.keras``.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import zipfile
from pathlib import Path

import h5py
import numpy as np

from keras_effnet.weights.assignment import (
    NORMALIZATION_LAYER, ConversionError, SourceTensor, Tensors)

# keras.applications' names that differ from Keras 3's.
_LEGACY_WEIGHT_ALIASES = {"depthwise_kernel": "kernel"}
_LEGACY_LAYER_ALIASES = {"probs": "predictions"}


def read_keras_h5(path: str | os.PathLike) -> Tensors:
    """Tensors of a keras.applications legacy ``.h5`` weight file, keyed by Keras names.

    Handles weight-only files (``save_weights``) and full-model files (``model_weights``
    group). The file's ``normalization`` layer is left out: it holds the ImageNet statistics
    with the std in the variance slot (tensorflow/tensorflow#49930); the model's normalisation
    comes from the weight set instead.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ConversionError: not a legacy Keras weight file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weight file {path} does not exist")
    try:
        handle = h5py.File(path, "r")
    except OSError as error:
        raise ConversionError(f"{path} is not a readable HDF5 file (truncated or not .h5?): "
                              f"{error}") from None
    with handle as f:
        group = f["model_weights"] if "model_weights" in f else f
        if "layer_names" not in group.attrs:
            raise ConversionError(
                f"{path} is not a legacy Keras .h5 weight file (no 'layer_names' attribute); "
                "for Keras 3 files use the .weights.h5 suffix")
        tensors: Tensors = {}
        for layer_name in _strings(group.attrs["layer_names"]):
            target_layer = _LEGACY_LAYER_ALIASES.get(layer_name, layer_name)
            if target_layer == NORMALIZATION_LAYER:
                continue
            layer = group[layer_name]
            for weight_name in _strings(layer.attrs.get("weight_names", [])):
                short = weight_name.split("/")[-1].split(":")[0]
                short = _LEGACY_WEIGHT_ALIASES.get(short, short)
                tensors[f"{target_layer}/{short}"] = SourceTensor(
                    f"{layer_name}/{weight_name}", np.asarray(layer[weight_name]))
        return tensors


def _strings(values) -> list[str]:
    return [v.decode("utf8") if isinstance(v, bytes) else str(v) for v in values]


def read_keras_weights(path: str | os.PathLike, model) -> Tensors:
    """Tensors of a Keras 3 ``.weights.h5`` (or the weights inside a ``.keras`` archive).

    Keras 3 stores variables by position within each layer; the layer names (attribute
    ``name`` of each ``vars`` group) are matched to ``model``'s layers and the positions to
    their variables, so a file saved with the classifier loads into a model without one.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ConversionError: not a Keras 3 weight file, or one without layer names.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weight file {path} does not exist")
    with contextlib.ExitStack() as stack:
        if path.name.endswith(".keras"):
            try:
                archive = stack.enter_context(zipfile.ZipFile(path))
                raw = stack.enter_context(archive.open("model.weights.h5"))
            except (zipfile.BadZipFile, KeyError) as error:
                raise ConversionError(f"{path} is not a .keras archive with model.weights.h5: "
                                      f"{error}") from None
            tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="keras_effnet_"))
            h5_path = Path(tmp) / "model.weights.h5"
            h5_path.write_bytes(raw.read())
        else:
            h5_path = path
        try:
            f = stack.enter_context(h5py.File(h5_path, "r"))
        except OSError as error:
            raise ConversionError(
                f"{path} is not a readable HDF5 file (truncated?): {error}") from None
        if "layers" not in f:
            raise ConversionError(f"{path} is not a Keras 3 weight file (no 'layers' group)")
        tensors: Tensors = {}
        by_name = {layer.name: layer for layer in model.layers}
        for group_name, group in f["layers"].items():
            if "vars" not in group:
                continue
            variables = group["vars"]
            layer_name = variables.attrs.get("name")
            if layer_name is None:
                raise ConversionError(
                    f"{path} was written by a Keras version that does not record layer names; "
                    "load it with model.load_weights() into the same architecture")
            layer_name = layer_name.decode() if isinstance(layer_name, bytes) else str(layer_name)
            layer = by_name.get(layer_name)
            for index in sorted(variables, key=int):
                value = np.asarray(variables[index])
                if layer is not None and int(index) < len(layer.weights):
                    key = f"{layer_name}/{layer.weights[int(index)].name}"
                else:
                    key = f"{layer_name}/#{index}"
                tensors[key] = SourceTensor(f"layers/{group_name}/vars/{index} ({layer_name})",
                                            value)
        return tensors


def is_readable_keras_weights(path: str | os.PathLike) -> bool:
    """Whether ``path`` opens as a Keras 3 ``.weights.h5`` (a cached conversion is not corrupt)."""
    try:
        with h5py.File(path, "r") as f:
            return "layers" in f
    except OSError:
        return False

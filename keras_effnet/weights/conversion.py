"""File conversion: a published weight file -> a Keras ``.weights.h5`` for one variant.

Read the source (``tpu-checkpoint``, ``lukemelas`` or ``keras-h5``), build a target model with the
weight set's input normalisation, ``assign`` strictly, save atomically.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Callable

from keras_effnet import atomic
from keras_effnet.model import EfficientNet
from keras_effnet.plan import block_plan
from keras_effnet.scaling import ModelSpec, get_spec
from keras_effnet.weights.assignment import ConversionError, ConversionReport, Tensors, assign
from keras_effnet.weights.keras_files import read_keras_h5
from keras_effnet.weights.lukemelas import read_lukemelas
from keras_effnet.weights.tpu_checkpoint import read_tpu_checkpoint

SOURCES = ("tpu-checkpoint", "lukemelas", "keras-h5")

READERS: dict[str, Callable[[str | os.PathLike, ModelSpec], Tensors]] = {
    "tpu-checkpoint": read_tpu_checkpoint,
    "lukemelas": read_lukemelas,
    "keras-h5": lambda path, spec: read_keras_h5(path),
}

_BLOCK_INDEX = re.compile(r"(?:blocks_|_blocks\.)(\d+)[/.]")


HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def _is_hdf5(path: str | os.PathLike) -> bool:
    try:
        with open(path, "rb") as stream:
            return stream.read(len(HDF5_SIGNATURE)) == HDF5_SIGNATURE
    except OSError:  # a directory (checkpoint) or missing: the reader says what is wrong
        return False


def read_source(source: str, path: str | os.PathLike, model: ModelSpec | str) -> Tensors:
    """Tensors of ``path`` in format ``source`` (one of ``SOURCES``)."""
    if source not in READERS:
        raise ValueError(f"unknown source format {source!r}; known: {', '.join(SOURCES)}")
    if source != "keras-h5" and _is_hdf5(path):
        raise ConversionError(f"{path} is an HDF5 (.h5) file, not a {source} file: convert "
                              "keras.applications .h5 files with --source keras-h5")
    try:
        return READERS[source](path, get_spec(model))
    except ConversionError as error:
        if source == "lukemelas" and "weights_only" in str(error):
            # Never relay torch's advice to load with weights_only=False: that runs pickled code.
            raise ConversionError(
                f"{path} is not a PyTorch state_dict of plain tensors (torch.load with "
                "weights_only=True refused it). Use the .pth files of the EfficientNet-PyTorch "
                "releases; this converter never unpickles code") from None
        raise
    except (AttributeError, TypeError) as error:
        raise ConversionError(f"{path} holds an entry that is not a tensor ({error}); it is not "
                              f"a {source} weight file") from None


def build_target(model: ModelSpec | str, include_top: bool = True, classes: int = 1000,
                 normalization: str | None = None):
    """A randomly initialised model (logits head) to receive converted weights."""
    spec = get_spec(model)
    return EfficientNet(spec, include_top=include_top, classes=classes,
                        classifier_activation=None,
                        normalization=normalization or spec.normalization)


def convert(source: str, model: ModelSpec | str, input_path: str | os.PathLike,
            output_path: str | os.PathLike, *, include_top: bool = True,
            normalization: str | None = None, overwrite: bool = False) -> ConversionReport:
    """Convert ``input_path`` (format ``source``) into a Keras ``.weights.h5`` for ``model``.

    Args:
        source: ``"tpu-checkpoint"``, ``"lukemelas"`` or ``"keras-h5"``.
        model: variant name (``"efficientnet-b0"``) or ``ModelSpec``.
        input_path: the source file (see the ``read_*`` functions).
        output_path: where to write; must end in ``.weights.h5``. Written to a temporary file
            in the same directory and renamed, so it is never left half-written.
        include_top: keep the classifier (``predictions``); without it its tensors are dropped.
        normalization: input normalisation stored with the weights (``imagenet``, ``lite``,
            ``inception``); default the variant's.
        overwrite: replace an existing ``output_path`` (the rule of ``export``: never silently).

    Raises:
        ValueError: ``output_path`` does not end in ``.weights.h5``, is a directory, or an
            unknown ``source``.
        FileExistsError: ``output_path`` exists and ``overwrite`` is False.
        PermissionError: ``output_path``'s directory cannot be written.
        ConversionError: the file does not fit the model (names the first mismatch).
    """
    spec = get_spec(model)
    output_path = Path(output_path)
    if not output_path.name.endswith(".weights.h5"):
        raise ValueError(
            f"output file must end in .weights.h5 (Keras 3 weights), got {output_path}")
    check_output_file(output_path, overwrite)
    tensors = read_source(source, input_path, spec)
    target = build_target(spec, include_top=include_top,
                          classes=_classes(tensors, include_top), normalization=normalization)
    count = assign(target, tensors, source=str(input_path),
                   hint=variant_hint(tensors, spec, source))
    atomic.save_keras(target, output_path)
    return ConversionReport(output_path, spec.name, source, count)


def check_output_file(path: Path, overwrite: bool) -> None:
    """Refuse a directory, an existing file without ``overwrite``, or an unwritable folder."""
    if path.is_dir():
        raise ValueError(f"output {str(path)!r} is a directory; name a file ending in .weights.h5")
    if path.exists() and not overwrite:
        raise FileExistsError(f"output {str(path)!r} already exists; pass overwrite=True "
                              "(--overwrite) to replace it, or choose another path")
    parent = path.parent if str(path.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise PermissionError(f"cannot create the output folder {str(parent)!r} "
                              f"({error.strerror or error}); choose another --output") from None
    if not os.access(parent, os.W_OK):
        raise PermissionError(f"the output folder {str(parent)!r} is not writable; choose "
                              "another --output")


def convert_tpu_checkpoint(model: ModelSpec | str, input_path, output_path,
                           **kwargs) -> ConversionReport:
    """``convert("tpu-checkpoint", ...)``: original TensorFlow checkpoint -> ``.weights.h5``."""
    return convert("tpu-checkpoint", model, input_path, output_path, **kwargs)


def convert_lukemelas(model: ModelSpec | str, input_path, output_path,
                      **kwargs) -> ConversionReport:
    """``convert("lukemelas", ...)``: EfficientNet-PyTorch ``.pth`` -> ``.weights.h5``."""
    return convert("lukemelas", model, input_path, output_path, **kwargs)


def convert_keras_h5(model: ModelSpec | str, input_path, output_path,
                     **kwargs) -> ConversionReport:
    """``convert("keras-h5", ...)``: keras.applications legacy ``.h5`` -> ``.weights.h5``."""
    return convert("keras-h5", model, input_path, output_path, **kwargs)


def variant_hint(tensors: Tensors, spec: ModelSpec | str, source: str) -> str:
    """Block counts, to say 'wrong model name' when the file is another variant ("" if not)."""
    if source == "keras-h5":
        return ""
    indices = {int(m.group(1)) for t in tensors.values() if (m := _BLOCK_INDEX.search(t.name))}
    spec = get_spec(spec)
    expected = len(block_plan(spec))
    if indices and max(indices) + 1 != expected:
        return (f"(the source has {max(indices) + 1} blocks, {spec.name} has {expected}: "
                "is the model name right?)")
    return ""


def _classes(tensors: Tensors, include_top: bool) -> int:
    bias = tensors.get("predictions/bias")
    if include_top and bias is not None and bias.value.ndim == 1:
        return int(bias.value.shape[0])
    return 1000

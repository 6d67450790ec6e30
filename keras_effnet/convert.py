"""Converters from published EfficientNet weight formats to Keras ``.weights.h5`` files.

Three sources are understood, each mapped by NAME onto the Keras layer names of
``keras_effnet.model`` (``stem_conv``, ``block2a_expand_bn``, ``predictions`` ...):

* ``tpu-checkpoint``: the original TensorFlow checkpoints of tensorflow/tpu
  (``efficientnet-b0/blocks_3/depthwise_conv2d/depthwise_kernel`` ...), as a directory, a
  checkpoint prefix, an ``.index`` file or the published ``.tar.gz``. The
  ``ExponentialMovingAverage`` copies are used when present (the published accuracy is that of
  the EMA weights).
* ``lukemelas``: state_dicts of lukemelas/EfficientNet-PyTorch (``_blocks.3._depthwise_conv.weight``
  ...), read with ``torch.load(..., weights_only=True)`` only.
* ``keras-h5``: keras.applications' legacy ``.h5`` weight files (``efficientnetb0.h5``).

Every converter checks each tensor's shape against the target layer and that every source tensor
was used; it fails on the first mismatch with ``ConversionError`` naming the source tensor, the
target layer and both shapes. The model's input normalisation (layer ``normalization``) is not
part of any of these sources: it is set from the weight set's normalisation instead.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import tarfile
import tempfile
import zipfile
from pathlib import Path
from typing import Callable, Iterator, Mapping

import numpy as np

from keras_effnet import atomic
from keras_effnet.scaling import ModelSpec, get_spec

SOURCES = ("tpu-checkpoint", "lukemelas", "keras-h5")

_BN_TF = ("gamma", "beta", "moving_mean", "moving_variance")
_BN_TORCH = {"weight": "gamma", "bias": "beta", "running_mean": "moving_mean",
             "running_var": "moving_variance"}

# Training state stored beside the weights in the original checkpoints: never model weights.
TPU_CHECKPOINT_TRAINING_STATE = (
    re.compile(r"(^|/)global_step$"),
    re.compile(r"/(RMSProp|RMSProp_1|Momentum|Adam|Adam_1)$"),
    re.compile(r"(^|/)(beta1_power|beta2_power|learning_rate)$"),
)


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


# Tensors keyed by Keras ``"layer_name/variable_name"`` (e.g. ``"stem_bn/gamma"``).
Tensors = dict[str, SourceTensor]


@dataclasses.dataclass(frozen=True)
class ConversionReport:
    """What a conversion did: the output file and how many tensors were matched."""

    output: Path
    model: str
    source: str
    tensors: int
    notes: tuple[str, ...] = ()


# --------------------------------------------------------------------------------------------
# Block layout shared by the name mappings.

@dataclasses.dataclass(frozen=True)
class _Block:
    index: int          # global block index (``blocks_{i}`` / ``_blocks.{i}``)
    prefix: str         # Keras prefix, e.g. ``block2a_``
    has_expand: bool
    has_se: bool


def _blocks(spec: ModelSpec) -> list[_Block]:
    from keras_effnet.model import block_sequence  # noqa: PLC0415 (model imports weights)
    return [_Block(i, prefix, block.expand_ratio != 1, block.has_se)
            for i, (prefix, block) in enumerate(block_sequence(spec))]



# --------------------------------------------------------------------------------------------
# Source readers: file -> Tensors in Keras layout.

def read_tpu_checkpoint(path: str | os.PathLike, model: ModelSpec | str) -> Tensors:
    """Tensors of an original tensorflow/tpu checkpoint, keyed by Keras names.

    ``path`` is a checkpoint prefix (``.../model.ckpt``), its ``.index`` file, a directory that
    holds exactly one checkpoint, or a ``.tar.gz`` / ``.tar`` archive as published.
    Layouts already match Keras (HWIO kernels, [k, k, C, 1] depthwise, [in, out] dense).
    """
    spec = get_spec(model)
    with _checkpoint_prefix(Path(path)) as prefix:
        import tensorflow as tf  # noqa: PLC0415 (heavy; only this converter needs it)
        try:
            reader = tf.train.load_checkpoint(str(prefix))
        except Exception as error:  # tf raises several types for unreadable files
            raise ConversionError(
                f"{path} is not a readable TensorFlow checkpoint: {error}") from None
        shapes = reader.get_variable_to_shape_map()
        found = _tpu_model_name(shapes, path)
        if found != spec.name:
            raise ConversionError(
                f"{path} holds the weights of {found!r} (variables '{found}/...'), not "
                f"{spec.name!r}: pass the matching model name")
        use_ema = any(name.endswith("/ExponentialMovingAverage") for name in shapes)
        tensors: Tensors = {}
        consumed: set[str] = set()
        for keras_key, tf_name in _tpu_names(spec):
            full = f"{spec.name}/{tf_name}"
            ema = f"{full}/ExponentialMovingAverage"
            name = ema if use_ema and ema in shapes else full
            if name not in shapes:
                continue  # reported as missing by ``assign`` with the expected name
            tensors[keras_key] = SourceTensor(name, np.asarray(reader.get_tensor(name)))
            consumed.update({full, ema})
        for name in sorted(shapes):
            if name in consumed or any(p.search(name) for p in TPU_CHECKPOINT_TRAINING_STATE):
                continue
            # Unknown tensors go in under their own name so that ``assign`` reports them unused.
            tensors[f"?{name}"] = SourceTensor(name, np.empty(0))
        return tensors


def _tpu_model_name(shapes: Mapping[str, list], path) -> str:
    names = {name.split("/")[0] for name in shapes if "/stem/conv2d/kernel" in name}
    if len(names) != 1:
        raise ConversionError(
            f"{path} is not an original EfficientNet checkpoint: expected one variable "
            f"'<model>/stem/conv2d/kernel', found {sorted(names) or 'none'} among "
            f"{len(shapes)} variables")
    return names.pop()


def _tpu_names(spec: ModelSpec) -> Iterator[tuple[str, str]]:
    """(Keras key, checkpoint name without model prefix and EMA suffix) for every weight.

    Inside a block the original code numbers its layers in creation order: with an expansion,
    conv2d = expand, conv2d_1 = project and tpu_batch_normalization(_1, _2) = expand,
    depthwise, project; without one (expand ratio 1), conv2d = project and
    tpu_batch_normalization(_1) = depthwise, project.
    """
    def bn(keras_layer: str, tf_scope: str):
        for weight in _BN_TF:
            yield f"{keras_layer}/{weight}", f"{tf_scope}/{weight}"

    yield "stem_conv/kernel", "stem/conv2d/kernel"
    yield from bn("stem_bn", "stem/tpu_batch_normalization")
    for block in _blocks(spec):
        k, t = block.prefix, f"blocks_{block.index}"
        if block.has_expand:
            yield f"{k}expand_conv/kernel", f"{t}/conv2d/kernel"
            yield from bn(f"{k}expand_bn", f"{t}/tpu_batch_normalization")
        yield f"{k}dwconv/kernel", f"{t}/depthwise_conv2d/depthwise_kernel"
        yield from bn(f"{k}bn", f"{t}/tpu_batch_normalization" + ("_1" if block.has_expand else ""))
        if block.has_se:
            for keras_layer, tf_layer in (("se_reduce", "se/conv2d"), ("se_expand", "se/conv2d_1")):
                yield f"{k}{keras_layer}/kernel", f"{t}/{tf_layer}/kernel"
                yield f"{k}{keras_layer}/bias", f"{t}/{tf_layer}/bias"
        yield (f"{k}project_conv/kernel",
               f"{t}/conv2d" + ("_1" if block.has_expand else "") + "/kernel")
        yield from bn(f"{k}project_bn",
                      f"{t}/tpu_batch_normalization" + ("_2" if block.has_expand else "_1"))
    yield "top_conv/kernel", "head/conv2d/kernel"
    yield from bn("top_bn", "head/tpu_batch_normalization")
    yield "predictions/kernel", "head/dense/kernel"
    yield "predictions/bias", "head/dense/bias"


def tpu_checkpoint_names(model: ModelSpec | str, ema: bool = True) -> dict[str, str]:
    """Keras key -> full original checkpoint name (with the EMA suffix when ``ema``).

    The inverse mapping, used to write test fixtures and to document the format.
    """
    spec = get_spec(model)
    suffix = "/ExponentialMovingAverage" if ema else ""
    return {k: f"{spec.name}/{t}{suffix}" for k, t in _tpu_names(spec)}


@contextlib.contextmanager
def _checkpoint_prefix(path: Path) -> Iterator[Path]:
    """Yield the checkpoint prefix inside ``path`` (extracting archives to a temp dir)."""
    if not path.exists() and not Path(f"{path}.index").exists():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    name = path.name.lower()
    if path.is_file() and (name.endswith((".tar.gz", ".tgz", ".tar"))):
        with tempfile.TemporaryDirectory(prefix="keras_effnet_ckpt_",
                                         dir=path.parent if os.access(path.parent, os.W_OK)
                                         else None) as tmp:
            _extract_tar(path, Path(tmp))
            yield _find_prefix(Path(tmp), path)
        return
    if path.is_dir():
        yield _find_prefix(path, path)
    elif path.suffix == ".index":
        yield path.with_suffix("")
    else:
        yield path


def _extract_tar(archive: Path, target: Path) -> None:
    try:
        with tarfile.open(archive) as tar:
            # Checkpoint files only: the Lite archives also hold .tflite models.
            members = [m for m in tar.getmembers() if m.isfile()
                       and (m.name.endswith(".index") or ".data-" in m.name)]
            try:
                tar.extractall(target, members=members, filter="data")
            except TypeError:  # Python without extraction filters
                tar.extractall(target, members=members)  # noqa: S202 (regular files only)
    except (tarfile.TarError, EOFError, OSError) as error:
        raise ConversionError(f"{archive} is not a readable .tar.gz archive "
                              f"(truncated or corrupt?): {error}") from None


def _find_prefix(directory: Path, shown: Path) -> Path:
    indexes = sorted(directory.rglob("*.index"))
    if not indexes:
        raise ConversionError(f"no TensorFlow checkpoint (*.index file) found in {shown}")
    if len(indexes) > 1:
        preferred = [p for p in indexes if p.name == "model.ckpt.index"]
        if len(preferred) != 1:
            raise ConversionError(
                f"{shown} holds several checkpoints ({', '.join(p.name for p in indexes)}); "
                "pass the prefix of the one to convert")
        indexes = preferred
    return indexes[0].with_suffix("")


def read_lukemelas(path: str | os.PathLike, model: ModelSpec | str) -> Tensors:
    """Tensors of a lukemelas/EfficientNet-PyTorch state_dict (``.pth``), keyed by Keras names.

    Loaded with ``torch.load(path, map_location="cpu", weights_only=True)`` (no pickled code
    runs). Layouts are converted: conv OIHW -> HWIO, depthwise O1HW -> HW(O)1, dense
    (out, in) -> (in, out). ``num_batches_tracked`` counters are ignored.
    """
    spec = get_spec(model)
    try:
        import torch  # noqa: PLC0415
    except ImportError:
        raise ImportError("converting PyTorch state_dicts needs torch: pip install torch "
                          "(CPU wheels suffice)") from None
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"state_dict file {path} does not exist")
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as error:  # unpickling errors have many types
        raise ConversionError(f"{path} is not a PyTorch state_dict that loads with "
                              f"weights_only=True: {error}") from None
    if isinstance(state, Mapping) and isinstance(state.get("state_dict"), Mapping):
        state = state["state_dict"]  # a training checkpoint that wraps the state_dict
    if not isinstance(state, Mapping) or not state:
        raise ConversionError(f"{path} does not hold a state_dict (a name -> tensor mapping)")
    state = {(k[len("module."):] if k.startswith("module.") else k): v for k, v in state.items()}
    if not any(k.startswith("_conv_stem.") for k in state):
        raise ConversionError(f"{path} is not a lukemelas/EfficientNet-PyTorch state_dict: no "
                              f"'_conv_stem.weight' among keys such as {sorted(state)[:3]}")

    tensors: Tensors = {}
    consumed: set[str] = set()
    for keras_key, torch_name, layout in _lukemelas_names(spec):
        if torch_name not in state:
            continue
        value = state[torch_name].detach().cpu().numpy()
        tensors[keras_key] = SourceTensor(torch_name, _torch_to_keras(value, layout, torch_name))
        consumed.add(torch_name)
    for name in state:
        if name in consumed or name.endswith(".num_batches_tracked"):
            continue
        tensors[f"?{name}"] = SourceTensor(name, np.empty(0))
    return tensors


def _torch_to_keras(value: np.ndarray, layout: str, name: str) -> np.ndarray:
    if layout == "conv":
        if value.ndim != 4:
            raise ConversionError(f"source tensor {name} should be a 4-D conv kernel (OIHW), "
                                  f"has shape {value.shape}")
        return np.transpose(value, (2, 3, 1, 0))
    if layout == "depthwise":
        if value.ndim != 4:
            raise ConversionError(f"source tensor {name} should be a 4-D depthwise kernel "
                                  f"(O1HW), has shape {value.shape}")
        return np.transpose(value, (2, 3, 0, 1))
    if layout == "dense":
        if value.ndim != 2:
            raise ConversionError(f"source tensor {name} should be a 2-D dense weight "
                                  f"(out, in), has shape {value.shape}")
        return value.T
    return value


def _lukemelas_names(spec: ModelSpec) -> Iterator[tuple[str, str, str]]:
    """(Keras key, state_dict key, layout) for every weight."""
    def bn(keras_layer: str, torch_layer: str):
        for torch_weight, keras_weight in _BN_TORCH.items():
            yield f"{keras_layer}/{keras_weight}", f"{torch_layer}.{torch_weight}", "vector"

    yield "stem_conv/kernel", "_conv_stem.weight", "conv"
    yield from bn("stem_bn", "_bn0")
    for block in _blocks(spec):
        k, t = block.prefix, f"_blocks.{block.index}."
        if block.has_expand:
            yield f"{k}expand_conv/kernel", f"{t}_expand_conv.weight", "conv"
            yield from bn(f"{k}expand_bn", f"{t}_bn0")
        yield f"{k}dwconv/kernel", f"{t}_depthwise_conv.weight", "depthwise"
        yield from bn(f"{k}bn", f"{t}_bn1")
        if block.has_se:
            for layer in ("se_reduce", "se_expand"):
                yield f"{k}{layer}/kernel", f"{t}_{layer}.weight", "conv"
                yield f"{k}{layer}/bias", f"{t}_{layer}.bias", "vector"
        yield f"{k}project_conv/kernel", f"{t}_project_conv.weight", "conv"
        yield from bn(f"{k}project_bn", f"{t}_bn2")
    yield "top_conv/kernel", "_conv_head.weight", "conv"
    yield from bn("top_bn", "_bn1")
    yield "predictions/kernel", "_fc.weight", "dense"
    yield "predictions/bias", "_fc.bias", "vector"


def lukemelas_names(model: ModelSpec | str) -> dict[str, str]:
    """Keras key -> lukemelas state_dict key (the mapping, for fixtures and documentation)."""
    return {k: t for k, t, _ in _lukemelas_names(get_spec(model))}


# keras.applications' variable names that differ from Keras 3's.
_KERAS_WEIGHT_ALIASES = {"depthwise_kernel": "kernel"}
_KERAS_LAYER_ALIASES = {"probs": "predictions"}


def read_keras_h5(path: str | os.PathLike) -> Tensors:
    """Tensors of a keras.applications legacy ``.h5`` weight file, keyed by Keras names.

    Handles weight-only files (``save_weights``) and full-model files (``model_weights``
    group). The file's ``normalization`` layer is left out: it holds the ImageNet statistics
    with the std in the variance slot (tensorflow/tensorflow#49930); the model's normalisation
    comes from the weight set instead.
    """
    import h5py  # noqa: PLC0415

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
            layer = group[layer_name]
            target_layer = _KERAS_LAYER_ALIASES.get(layer_name, layer_name)
            for weight_name in _strings(layer.attrs.get("weight_names", [])):
                short = weight_name.split("/")[-1].split(":")[0]
                short = _KERAS_WEIGHT_ALIASES.get(short, short)
                source = f"{layer_name}/{weight_name}"
                value = np.asarray(layer[weight_name])
                if target_layer == "normalization":
                    continue
                tensors[f"{target_layer}/{short}"] = SourceTensor(source, value)
        return tensors


def _strings(values) -> list[str]:
    return [v.decode("utf8") if isinstance(v, bytes) else str(v) for v in values]


def read_keras_weights(path: str | os.PathLike, model) -> Tensors:
    """Tensors of a Keras 3 ``.weights.h5`` (or the weights inside a ``.keras`` archive).

    Keras 3 stores variables by position within each layer; the layer names (attribute
    ``name`` of each ``vars`` group) are matched to ``model``'s layers and the positions to
    their variables, so a file saved with the classifier loads into a model without one.
    """
    import h5py  # noqa: PLC0415

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


# --------------------------------------------------------------------------------------------
# Assignment with checks.

TOP_LAYERS = ("predictions",)


def assign(model, tensors: Mapping[str, SourceTensor], *, source: str = "source",
           hint: str = "") -> int:
    """Copy ``tensors`` into ``model``'s variables after checking every one of them.

    Every variable of the model (except the input ``normalization``, unless the source has it)
    needs a tensor of the same shape, and every tensor needs a variable; the classifier's
    tensors are dropped when the model has no ``predictions`` layer. Nothing is assigned when a
    check fails.

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
                if layer.name == "normalization":
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
        if layer_name == "normalization" and layer_name not in layer_names:
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
    """Set the ``normalization`` layer's statistics to one of ``layers.NORMALIZATIONS``."""
    from keras_effnet.layers import NORMALIZATIONS  # noqa: PLC0415

    if normalization == "none":
        return
    try:
        layer = model.get_layer("normalization")
    except ValueError:
        return  # include_preprocessing=False
    mean, stddev = NORMALIZATIONS[normalization]
    layer.mean.assign(np.asarray(mean, np.float32))
    layer.variance.assign(np.square(np.asarray(stddev, np.float64)).astype(np.float32))


# --------------------------------------------------------------------------------------------
# Converters: source file -> .weights.h5.

READERS: dict[str, Callable] = {
    "tpu-checkpoint": read_tpu_checkpoint,
    "lukemelas": read_lukemelas,
    "keras-h5": lambda path, spec: read_keras_h5(path),
}


def read_source(source: str, path: str | os.PathLike, model: ModelSpec | str) -> Tensors:
    """Tensors of ``path`` in format ``source`` (one of ``SOURCES``)."""
    if source not in READERS:
        raise ValueError(f"unknown source format {source!r}; known: {', '.join(SOURCES)}")
    return READERS[source](path, get_spec(model))


def build_target(model: ModelSpec | str, include_top: bool = True, classes: int = 1000,
                 normalization: str | None = None):
    """A randomly initialised model to receive converted weights."""
    from keras_effnet.model import build_model  # noqa: PLC0415

    spec = get_spec(model)
    target = build_model(spec, include_top=include_top, classes=classes, weights=None,
                         classifier_activation=None)
    set_normalization(target, normalization or spec.normalization)
    return target


def convert(source: str, model: ModelSpec | str, input_path: str | os.PathLike,
            output_path: str | os.PathLike, *, include_top: bool = True,
            normalization: str | None = None) -> ConversionReport:
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

    Raises:
        ConversionError: the file does not fit the model (names the first mismatch).
    """
    spec = get_spec(model)
    output_path = Path(output_path)
    if not output_path.name.endswith(".weights.h5"):
        raise ValueError(
            f"output file must end in .weights.h5 (Keras 3 weights), got {output_path}")
    tensors = read_source(source, input_path, spec)
    target = build_target(spec, include_top=include_top,
                          classes=_classes(tensors, include_top), normalization=normalization)
    count = assign(target, tensors, source=str(input_path), hint=variant_hint(tensors, spec, source))
    output_path.parent.mkdir(parents=True, exist_ok=True)
    save_weights_atomic(target, output_path)
    return ConversionReport(output_path, spec.name, source, count)


def _classes(tensors: Tensors, include_top: bool) -> int:
    bias = tensors.get("predictions/bias")
    if include_top and bias is not None and bias.value.ndim == 1:
        return int(bias.value.shape[0])
    return 1000


def variant_hint(tensors: Tensors, spec: ModelSpec, source: str) -> str:
    """Block counts, to say 'wrong --model' when the file is another variant."""
    if source == "keras-h5":
        return ""
    pattern = re.compile(r"(?:blocks_|_blocks\.)(\d+)[/.]")
    indices = {int(m.group(1)) for t in tensors.values() if (m := pattern.search(t.name))}
    expected = len(_blocks(spec))
    if indices and max(indices) + 1 != expected:
        return (f"(the source has {max(indices) + 1} blocks, {spec.name} has {expected}: "
                "is the model name right?)")
    return ""


def save_weights_atomic(model, output_path: Path) -> None:
    """``model.save_weights`` to a temporary file next to ``output_path``, then rename."""
    atomic.save_keras(model, output_path)


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


# --------------------------------------------------------------------------------------------
# Inverse mappings: a Keras model's weights in the source formats (test fixtures, round trips).

def _model_tensors(model) -> dict[str, np.ndarray]:
    return {f"{layer.name}/{v.name}": np.asarray(v.numpy())
            for layer in model.layers if layer.name != "normalization" for v in layer.weights}


def write_tpu_checkpoint(model, spec: ModelSpec | str, prefix: str | os.PathLike, *,
                         ema: bool = True,
                         extra: Mapping[str, np.ndarray] | None = None) -> Path:
    """Write ``model``'s weights as an original-format TF checkpoint at ``prefix``.

    Variables get the tensorflow/tpu names (``efficientnet-b0/blocks_0/...``), with the
    ``/ExponentialMovingAverage`` suffix when ``ema``; ``extra`` adds more named tensors
    (e.g. non-EMA copies, ``global_step``). Uses TensorFlow's checkpoint writer (SaveV2).
    """
    import tensorflow as tf  # noqa: PLC0415

    names = tpu_checkpoint_names(spec, ema=ema)
    values = _model_tensors(model)
    tensors = {names[key]: value for key, value in values.items() if key in names}
    tensors.update(extra or {})
    prefix = Path(prefix)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    ordered = sorted(tensors)
    tf.raw_ops.SaveV2(prefix=str(prefix), tensor_names=ordered,
                      shape_and_slices=[""] * len(ordered),
                      tensors=[tf.constant(tensors[n]) for n in ordered])
    return prefix


def lukemelas_state_dict(model, spec: ModelSpec | str) -> dict[str, np.ndarray]:
    """``model``'s weights as a lukemelas state_dict (numpy arrays in torch layouts)."""
    inverse = {"conv": (3, 2, 0, 1), "depthwise": (2, 3, 0, 1)}
    values = _model_tensors(model)
    state: dict[str, np.ndarray] = {}
    for keras_key, torch_name, layout in _lukemelas_names(get_spec(spec)):
        if keras_key not in values:
            continue
        value = values[keras_key]
        if layout in inverse:
            value = np.transpose(value, inverse[layout])
        elif layout == "dense":
            value = value.T
        state[torch_name] = np.ascontiguousarray(value)
        if torch_name.endswith(".running_var"):
            counter = torch_name.replace(".running_var", ".num_batches_tracked")
            state[counter] = np.array(0, np.int64)
    return state

"""Reader for the original TensorFlow checkpoints (tensorflow/tpu ``models/official/efficientnet``).

Variables are named ``efficientnet-b0/blocks_3/depthwise_conv2d/depthwise_kernel`` and so on; the
``ExponentialMovingAverage`` copies are used when present (the published accuracy is that of the
EMA weights). Layouts already match Keras (HWIO kernels, [k, k, C, 1] depthwise, [in, out] dense).
"""

from __future__ import annotations

import contextlib
import os
import re
import tarfile
import tempfile
from pathlib import Path
from typing import Iterator, Mapping

import numpy as np

from keras_effnet.plan import block_plan
from keras_effnet.scaling import ModelSpec, get_spec
from keras_effnet.weights.assignment import ConversionError, SourceTensor, Tensors

EMA_SUFFIX = "/ExponentialMovingAverage"
_BN = ("gamma", "beta", "moving_mean", "moving_variance")

# Training state stored beside the weights in the original checkpoints: never model weights.
TPU_CHECKPOINT_TRAINING_STATE = (
    re.compile(r"(^|/)global_step$"),
    re.compile(r"/(RMSProp|RMSProp_1|Momentum|Adam|Adam_1)$"),
    re.compile(r"(^|/)(beta1_power|beta2_power|learning_rate)$"),
)


def read_tpu_checkpoint(path: str | os.PathLike, model: ModelSpec | str) -> Tensors:
    """Tensors of an original tensorflow/tpu checkpoint, keyed by Keras names.

    ``path`` is a checkpoint prefix (``.../model.ckpt``), its ``.index`` file, a directory that
    holds exactly one checkpoint, or a ``.tar.gz`` / ``.tar`` archive as published.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ConversionError: not a checkpoint, or one of another variant.
    """
    import tensorflow as tf  # noqa: PLC0415 (TF-only reader; the package imports under every backend)

    spec = get_spec(model)
    with _checkpoint_prefix(Path(path)) as prefix:
        try:
            reader = tf.train.load_checkpoint(str(prefix))
        except Exception as error:  # noqa: BLE001 (tf raises several types for unreadable files)
            raise ConversionError(
                f"{path} is not a readable TensorFlow checkpoint: {error}") from None
        shapes = reader.get_variable_to_shape_map()
        found = _checkpoint_model_name(shapes, path)
        if found != spec.name:
            raise ConversionError(
                f"{path} holds the weights of {found!r} (variables '{found}/...'), not "
                f"{spec.name!r}: pass the matching model name")
        use_ema = any(name.endswith(EMA_SUFFIX) for name in shapes)
        tensors: Tensors = {}
        consumed: set[str] = set()
        for keras_key, tf_name in _names(spec):
            full = f"{spec.name}/{tf_name}"
            ema = f"{full}{EMA_SUFFIX}"
            name = ema if use_ema and ema in shapes else full
            if name not in shapes:
                continue  # reported as missing by ``assign`` with the expected name
            tensors[keras_key] = SourceTensor(name, np.asarray(reader.get_tensor(name)))
            consumed.update({full, ema})
        for name in sorted(shapes):
            if name in consumed or any(p.search(name) for p in TPU_CHECKPOINT_TRAINING_STATE):
                continue
            tensors[f"?{name}"] = SourceTensor(name, np.empty(0))
        return tensors


def tpu_checkpoint_names(model: ModelSpec | str, ema: bool = True) -> dict[str, str]:
    """Keras key -> full original checkpoint name (with the EMA suffix when ``ema``).

    The mapping, for documentation and for writing test fixtures.
    """
    spec = get_spec(model)
    suffix = EMA_SUFFIX if ema else ""
    return {k: f"{spec.name}/{t}{suffix}" for k, t in _names(spec)}


def _checkpoint_model_name(shapes: Mapping[str, list], path) -> str:
    names = {name.split("/")[0] for name in shapes if "/stem/conv2d/kernel" in name}
    if len(names) != 1:
        raise ConversionError(
            f"{path} is not an original EfficientNet checkpoint: expected one variable "
            f"'<model>/stem/conv2d/kernel', found {sorted(names) or 'none'} among "
            f"{len(shapes)} variables")
    return names.pop()


def _names(spec: ModelSpec) -> Iterator[tuple[str, str]]:
    """(Keras key, checkpoint name without model prefix and EMA suffix) for every weight.

    Inside a block the original code numbers its layers in creation order: with an expansion,
    conv2d = expand, conv2d_1 = project and tpu_batch_normalization(_1, _2) = expand,
    depthwise, project; without one (expand ratio 1), conv2d = project and
    tpu_batch_normalization(_1) = depthwise, project.
    """
    def bn(keras_layer: str, tf_scope: str):
        for weight in _BN:
            yield f"{keras_layer}/{weight}", f"{tf_scope}/{weight}"

    yield "stem_conv/kernel", "stem/conv2d/kernel"
    yield from bn("stem_bn", "stem/tpu_batch_normalization")
    for block in block_plan(spec):
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


@contextlib.contextmanager
def _checkpoint_prefix(path: Path) -> Iterator[Path]:
    """Yield the checkpoint prefix inside ``path`` (extracting archives to a temp dir)."""
    if not path.exists() and not Path(f"{path}.index").exists():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    name = path.name.lower()
    if path.is_file() and name.endswith((".tar.gz", ".tgz", ".tar")):
        scratch = path.parent if os.access(path.parent, os.W_OK) else None
        with tempfile.TemporaryDirectory(prefix="keras_effnet_ckpt_", dir=scratch) as tmp:
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

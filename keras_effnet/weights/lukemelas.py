"""Reader for lukemelas/EfficientNet-PyTorch state_dicts (``_blocks.3._depthwise_conv.weight`` ...).

Files are read with ``torch.load(..., weights_only=True)`` only, so no pickled code runs.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator, Mapping

import numpy as np

from keras_effnet.plan import block_plan
from keras_effnet.scaling import ModelSpec, get_spec
from keras_effnet.weights.assignment import ConversionError, SourceTensor, Tensors

# PyTorch BatchNorm2d names -> Keras BatchNormalization names.
_BN = {"weight": "gamma", "bias": "beta", "running_mean": "moving_mean",
       "running_var": "moving_variance"}


def read_lukemelas(path: str | os.PathLike, model: ModelSpec | str) -> Tensors:
    """Tensors of a lukemelas/EfficientNet-PyTorch state_dict (``.pth``), keyed by Keras names.

    Loaded with ``torch.load(path, map_location="cpu", weights_only=True)``. Layouts are
    converted: conv OIHW -> HWIO, depthwise O1HW -> HW(O)1, dense (out, in) -> (in, out).
    ``num_batches_tracked`` counters are ignored.

    Raises:
        ImportError: torch is not installed.
        FileNotFoundError: ``path`` does not exist.
        ConversionError: not a state_dict of this format.
    """
    spec = get_spec(model)
    try:
        import torch  # noqa: PLC0415 (optional dependency)
    except ImportError:
        raise ImportError("converting PyTorch state_dicts needs torch: pip install torch "
                          "(CPU wheels suffice)") from None
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"state_dict file {path} does not exist")
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 (unpickling errors have many types)
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
    for keras_key, torch_name, layout in _names(spec):
        if torch_name not in state:
            continue
        value = state[torch_name].detach().cpu().numpy()
        tensors[keras_key] = SourceTensor(torch_name, _to_keras_layout(value, layout, torch_name))
        consumed.add(torch_name)
    for name in state:
        if name in consumed or name.endswith(".num_batches_tracked"):
            continue
        tensors[f"?{name}"] = SourceTensor(name, np.empty(0))
    return tensors


def lukemelas_names(model: ModelSpec | str) -> dict[str, str]:
    """Keras key -> lukemelas state_dict key (the mapping, for fixtures and documentation)."""
    return {k: t for k, t, _ in _names(get_spec(model))}


def _to_keras_layout(value: np.ndarray, layout: str, name: str) -> np.ndarray:
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


def _names(spec: ModelSpec) -> Iterator[tuple[str, str, str]]:
    """(Keras key, state_dict key, layout) for every weight."""
    def bn(keras_layer: str, torch_layer: str):
        for torch_weight, keras_weight in _BN.items():
            yield f"{keras_layer}/{keras_weight}", f"{torch_layer}.{torch_weight}", "vector"

    yield "stem_conv/kernel", "_conv_stem.weight", "conv"
    yield from bn("stem_bn", "_bn0")
    for block in block_plan(spec):
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

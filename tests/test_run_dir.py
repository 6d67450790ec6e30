"""The run directory is the artefact: fine-tune from a weights FILE, delete the file, evaluate;
delete the data too, and the run's model, class names and preprocessing still classify images."""

import json
import os
import shutil

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import make_folder_dataset, run_cli

from keras_effnet import export, predict, training
from keras_effnet.config import load_config, resolve_spec
from keras_effnet.model import EfficientNet
from keras_effnet.run_dir import NotARunDirectory, RunDirectory

TINY = ["model.phi=-8", "model.resolution=32", "data.image_size=32", "augmentation.name=none",
        "runtime.progress_bar=false", "runtime.seed=0", "optimizer.ema_decay=0.9",
        "data.batch_size=8", "data.cache=false", "schedule.epochs=1",
        "runtime.checkpoint_every_steps=3"]
NAMES = ("class0", "class1", "class2", "class3")


def pretrained_file(path, config):
    """A 'pretrained' weights file of the same architecture with a 10-class head."""
    model = EfficientNet(resolve_spec(config.model), input_shape=(32, 32, 3), classes=10,
                         classifier_activation=None)
    model.set_weights([np.random.default_rng(1).normal(0, 0.05, w.shape).astype(w.dtype)
                       if w.dtype == np.float32 and "moving_variance" not in w.path
                       and "normalization" not in w.path else w.numpy() for w in model.weights])
    model.save_weights(str(path))
    return model


def write_images(folder, count=3, size=40):
    rng = np.random.default_rng(3)
    os.makedirs(folder, exist_ok=True)
    paths = []
    for index in range(count):
        image = rng.uniform(0, 60, (size, size, 3))
        image[..., index % 3] += 150
        path = os.path.join(folder, f"photo{index}.png")
        tf.io.write_file(path, tf.io.encode_png(image.astype("uint8")))
        paths.append(path)
    return paths


@pytest.mark.slow
def test_fine_tuned_run_outlives_its_weights_file_and_its_data(tmp_path, capsys):
    data_root = make_folder_dataset(str(tmp_path / "data"))
    run_dir = tmp_path / "run"
    base = load_config(overrides=TINY + [f"runtime.model_dir={run_dir}",
                                         f"data.source=folder:{data_root}"])
    weights_file = tmp_path / "pretrained.weights.h5"
    source = pretrained_file(weights_file, base)
    config = load_config(overrides=[f"model.weights={weights_file}", "model.new_head=true"],
                         base=base)

    # Fresh start: the backbone comes from the file (strict), the head is new.
    trainer = training.Trainer(config)
    trainer.build(initial_weights=True)
    for layer in ("stem_conv", "top_conv", "top_bn"):
        for got, expected in zip(trainer.model.get_layer(layer).weights,
                                 source.get_layer(layer).weights):
            np.testing.assert_array_equal(got.numpy(), expected.numpy())
    assert trainer.model.get_layer("predictions").kernel.shape == (source.get_layer(
        "predictions").kernel.shape[0], 4)

    metrics = training.train(config)
    assert metrics["step"] == 6
    run = RunDirectory(run_dir)
    metadata = run.read_metadata()
    assert metadata.class_names == NAMES
    assert metadata.weight_source == {"kind": "file", "path": str(weights_file), "new_head": True}
    assert metadata.dataset["source"] == f"folder:{data_root}"
    assert metadata.eval_preprocessing.resolution == 32

    # 1. The weights file goes: evaluation reads only the run directory (and the data). The
    # evaluate command line's main, in this process (helpers.run_cli, no second TensorFlow
    # import): a new model from the run's files, the file it started from gone.
    os.remove(weights_file)
    capsys.readouterr()
    returncode = run_cli("evaluate", [f"--model_dir={run_dir}"])
    assert returncode == 0, capsys.readouterr().err[-3000:]
    result = json.loads((run_dir / "eval_validation.json").read_text())
    assert result["step"] == 6 and result["top1"] == pytest.approx(metrics["top1"])
    saved = load_config([run.config_path])
    resumed = training.train(saved)  # resuming a finished run never re-reads model.weights
    assert resumed["step"] == 6

    # 2. The data goes too: the run's model, names and preprocessing still classify.
    shutil.rmtree(data_root)
    images = write_images(tmp_path / "photos")
    model, metadata, weight_source = training.load_run_model(run_dir)
    assert weight_source["path"] == run.final_model_path and weight_source["ema"]
    assert model.get_layer("predictions").activation is keras.activations.linear
    ranked = predict.classify_with_run(images, run_dir, top=2)
    assert len(ranked) == 3 and all(len(row) == 2 for row in ranked)
    assert all(item.label in NAMES for row in ranked for item in row)
    assert all(row[0].probability >= row[1].probability for row in ranked)
    # ... and the export serves the run's class names (no labels guessed, no data re-opened).
    served = export.export(None, "saved_model", tmp_path / "served", model_dir=str(run_dir))
    signature = tf.saved_model.load(served).signatures["encoded_images"]
    out = signature(image_bytes=tf.constant([open(path, "rb").read() for path in images]))
    served_labels = [row[0].decode() for row in out["top_k_labels"].numpy()]
    assert set(served_labels) <= set(NAMES)
    assert all(label == row[0].label for label, row in zip(served_labels, ranked)
               if row[0].probability - row[1].probability > 1e-4)  # same top-1 unless a near tie

    # 3. Without export/ the latest checkpoint (with its EMA) gives the same model.
    pixels = predict.load_images(images, metadata.eval_preprocessing)
    exported_logits = model.predict(pixels, verbose=0)
    shutil.rmtree(run_dir / "export")
    restored, _, weight_source = training.load_run_model(run_dir)
    assert weight_source["checkpoint"].endswith("ckpt-6") and weight_source["step"] == 6
    np.testing.assert_allclose(restored.predict(pixels, verbose=0), exported_logits,
                               rtol=1e-4, atol=1e-4)
    raw, _, weight_source = training.load_run_model(run_dir, use_ema=False)
    assert not weight_source["ema"]
    assert not np.allclose(raw.predict(pixels, verbose=0), exported_logits, atol=1e-6)


def test_load_run_model_names_what_is_missing(tmp_path):
    with pytest.raises(NotARunDirectory, match="does not exist"):
        training.load_run_model(tmp_path / "nothing")
    with pytest.raises(NotARunDirectory, match="holds no run.json"):
        training.load_run_model(tmp_path)

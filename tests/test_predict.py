"""keras_effnet.predict and its command line: a run's labels and preprocessing, bad files named."""

import os
import re
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from helpers import randomized_batch_norm, run_cli

from keras_effnet import data, imagenet, predict
from keras_effnet import weights as weight_sets
from keras_effnet.config import load_config, resolve_spec
from keras_effnet.model import EfficientNet
from keras_effnet.preprocessing import EvalPreprocessing
from keras_effnet.run_dir import RunDirectory, RunMetadata
from keras_effnet.training.run_files import write_final_model, write_run_start

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAMES = ("cat", "dog", "fish")


def tiny_run(run_dir):
    """A finished run directory without training: metadata, labels, config and a logits model."""
    config = load_config(overrides=["model.phi=-8", "model.resolution=32", "data.image_size=32",
                                    f"runtime.model_dir={run_dir}"])
    spec = resolve_spec(config.model)
    model = EfficientNet(spec, input_shape=(32, 32, 3), classes=3, classifier_activation=None)
    run = RunDirectory(run_dir)
    metadata = RunMetadata(spec, NAMES, data.eval_preprocessing_for("digits", 32, "imagenet"))
    assert write_run_start(run, config, metadata)
    assert not write_run_start(run, config, metadata)  # written once
    write_final_model(run, model)
    return model


def write_png(path, seed=0, size=48):
    image = np.random.default_rng(seed).uniform(0, 255, (size, size, 3)).astype("uint8")
    tf.io.write_file(str(path), tf.io.encode_png(image))
    return str(path)


def test_rank_is_a_softmax_over_logits_best_first():
    ranked = predict.rank(np.array([[0.0, 2.0, 1.0]]), NAMES, top=2)
    assert [item.label for item in ranked[0]] == ["dog", "fish"]
    expected = np.exp([2.0, 1.0]) / np.exp([0.0, 2.0, 1.0]).sum()
    np.testing.assert_allclose([item.probability for item in ranked[0]], expected, rtol=1e-6)
    assert predict.rank(np.zeros((1, 3)), NAMES, top=10)[0][-1].index == 2  # top capped at C
    with pytest.raises(ValueError, match="do not match 3 class names"):
        predict.rank(np.zeros((1, 4)), NAMES)


def test_bad_and_missing_files_are_named(tmp_path):
    settings = EvalPreprocessing(32)
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not an image at all")
    with pytest.raises(ValueError, match=r"cannot read image .*broken\.png"):
        predict.load_images([write_png(tmp_path / "good.png"), str(bad)], settings)
    with pytest.raises(FileNotFoundError, match=r"missing\.jpg"):
        predict.load_images([str(tmp_path / "missing.jpg")], settings)


def test_classify_with_run_uses_its_labels_and_preprocessing(tmp_path):
    model = tiny_run(tmp_path / "run")
    images = [write_png(tmp_path / f"{i}.png", seed=i) for i in range(2)]
    ranked = predict.classify_with_run(images, tmp_path / "run", top=3)
    pixels = predict.load_images(images, data.eval_preprocessing_for("digits", 32, "imagenet"))
    expected = predict.rank(model.predict(pixels, verbose=0), NAMES, top=3)
    assert ranked == expected and {item.label for item in ranked[0]} == set(NAMES)


def test_classify_with_a_weights_file_uses_imagenet_names(tmp_path):
    model = EfficientNet("efficientnet-b0", classifier_activation=None)
    model.set_weights(randomized_batch_norm(model))
    path = str(tmp_path / "b0.weights.h5")
    model.save_weights(path)
    image = write_png(tmp_path / "photo.png", size=260)
    ranked = predict.classify_with_weights([image], "efficientnet-b0", path, top=3)
    settings = weight_sets.eval_preprocessing("efficientnet-b0", path)
    logits = model.predict(predict.load_images([image], settings), verbose=0)
    names = imagenet.class_names()
    assert [item.label for item in ranked[0]] == [names[i] for i in np.argsort(-logits[0])[:3]]
    assert all(item.synset.startswith("n") for item in ranked[0])


@pytest.mark.slow
def test_predict_tool_with_a_run_directory(tmp_path, capsys):
    tiny_run(tmp_path / "run")
    image = write_png(tmp_path / "photo.png")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    done = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "predict.py"),
                           f"--model_dir={tmp_path / 'run'}", "--top=2", image],
                          capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.strip().splitlines()
    assert lines[0] == image and len(lines) == 3
    assert all(line.strip().startswith(("1.", "2.")) and "%" in line for line in lines[1:])
    assert any(name in lines[1] for name in NAMES)
    # A directory that is no run: the same main in this process (helpers.run_cli), without a
    # second TensorFlow import.
    capsys.readouterr()
    returncode = run_cli("predict", [f"--model_dir={tmp_path}", image])
    assert returncode == 1 and "holds no run.json" in capsys.readouterr().err


def test_help_lists_the_tools_own_flags():
    done = subprocess.run([sys.executable, "tools/predict.py", "--help"], capture_output=True, text=True,
                          timeout=300, cwd=ROOT, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert done.returncode in (0, 1), done.stderr[-2000:]  # absl's --help exits 1
    for flag in ("model_dir", "weights", "top", "use_ema"):
        assert re.search(rf"--(\[no\])?{flag}:", done.stdout), done.stdout

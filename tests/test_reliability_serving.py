"""Issue 13, serving side: bad inputs into the serving SavedModel's signatures (loaded with
``tf.saved_model.load`` and called as a TF Serving client would) and ``--classes`` /
``--image_size`` against a run directory (the export command line in a subprocess).

One tiny SavedModel (compound phi=-8, 32 px, 4 classes) serves every probe.
"""

import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import keras
from keras_effnet import export as ex
from keras_effnet import preprocessing
from keras_effnet.applications import build_model
from keras_effnet.preprocessing import EvalPreprocessing
from keras_effnet.scaling import compound_spec

SIZE = 32
CLASSES = 4
TOP_K = 3
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REFUSED = tf.errors.InvalidArgumentError


@pytest.fixture(scope="module")
def signatures(tmp_path_factory):
    keras.utils.set_random_seed(0)
    net = build_model(compound_spec(-8), input_shape=(SIZE, SIZE, 3), classes=CLASSES,
                      classifier_activation=None)
    path = ex.export(net, "saved_model", tmp_path_factory.mktemp("serving") / "model",
                     top_k=TOP_K)
    return tf.saved_model.load(path).signatures


@pytest.fixture(scope="module")
def photos():
    """Three uint8 [40, 50, 3] images and their PNG / JPEG bytes."""
    pixels = np.random.RandomState(0).randint(0, 256, (3, 40, 50, 3)).astype("uint8")
    return pixels, tf.io.encode_png(pixels[0]).numpy(), tf.io.encode_jpeg(pixels[1]).numpy()


def refusal(signature, match, **inputs):
    with pytest.raises(REFUSED, match=match) as error:
        signature(**{name: tf.constant(value) for name, value in inputs.items()})
    return str(error.value)


# -- encoded_images: one bad entry in a batch is named by its index --------------------------

@pytest.mark.parametrize("bad, match", [
    pytest.param(b"", r"image_bytes\[1\] is empty", id="empty"),
    pytest.param(b"<html>404 Not Found</html>",
                 r"image_bytes\[1\] is not a JPEG, PNG, GIF or BMP file", id="html"),
    pytest.param("jpeg-cut", r"image_bytes\[1\] is a JPEG cut short \(\d+ bytes, no "
                 r"end-of-image marker\)", id="truncated-jpeg"),
    pytest.param("png-cut", r"image_bytes\[1\] is a PNG cut short", id="truncated-png"),
])
def test_one_bad_image_in_an_encoded_batch_is_named_by_index(signatures, photos, bad, match):
    _, png, jpeg = photos
    bad = {"jpeg-cut": jpeg[:len(jpeg) * 9 // 10], "png-cut": png[:len(png) // 2]}.get(bad, bad)
    message = refusal(signatures["encoded_images"], match, image_bytes=[png, bad, jpeg])
    assert "(1 of 3 refused)" in message and "send" in message


def test_a_jpeg_cut_short_would_decode_without_an_error(photos):
    """Why the end marker is checked: the fused decode-and-crop serving uses decodes what it
    has of a truncated JPEG (the rest grey) without failing."""
    _, _, jpeg = photos
    cut = jpeg[:len(jpeg) * 9 // 10]
    window = preprocessing.center_crop_window(tf.io.extract_jpeg_shape(cut)[:2], SIZE)
    assert tf.io.decode_and_crop_jpeg(cut, window, channels=3).shape[-1] == 3
    assert not bool(preprocessing.looks_complete(tf.constant(cut)))


def test_a_single_encoded_image_needs_a_list(signatures, photos):
    refusal(signatures["encoded_images"], r"must be a batch \[batch\].*got shape \[\]; pass a "
            "list of one", image_bytes=photos[1])


# -- shapes: empty batches, missing batch axis, images without pixels -------------------------

@pytest.mark.parametrize("name, inputs", [
    ("serving_default", {"images": np.zeros([0, 0, 0, 3], "float32")}),
    ("serving_default", {"images": np.zeros([0, 40, 50, 3], "float32")}),
    ("uint8_images", {"images": np.zeros([0, 40, 50, 3], "uint8")}),
    ("encoded_images", {"image_bytes": tf.constant([], tf.string)}),
    ("preprocessed_images", {"images": np.zeros([0, SIZE, SIZE, 3], "float32")}),
])
def test_an_empty_batch_returns_empty_outputs(signatures, name, inputs):
    out = signatures[name](**{key: tf.constant(value) for key, value in inputs.items()})
    assert out["logits"].shape == (0, CLASSES) and out["probabilities"].shape == (0, CLASSES)
    assert out["top_k_classes"].shape == (0, TOP_K) and out["top_k_labels"].dtype == tf.string


@pytest.mark.parametrize("name, dtype, side", [("serving_default", "float32", 40),
                                                ("uint8_images", "uint8", 40),
                                                ("preprocessed_images", "float32", SIZE)])
def test_one_image_without_a_batch_axis_is_refused(signatures, name, dtype, side):
    message = refusal(signatures[name], rf"{name}: images must be a batch \[batch, .*\], got "
                      rf"shape \[{side}, {side}, 3\]; add a batch axis",
                      images=np.zeros([side, side, 3], dtype))
    assert "Index out of range" not in message


@pytest.mark.parametrize("name, dtype, shape", [("serving_default", "float32", [1, 0, 0, 3]),
                                                 ("serving_default", "float32", [2, 0, 5, 3]),
                                                 ("uint8_images", "uint8", [1, 7, 0, 3])])
def test_an_image_without_pixels_is_refused(signatures, name, dtype, shape):
    refusal(signatures[name], rf"{name}: images are {shape[1]} x {shape[2]} pixels .*at least "
            "one pixel each way", images=np.zeros(shape, dtype))


# -- float signatures: the [0, 255] scale -----------------------------------------------------

def _scaled(pixels, convention):
    x = pixels.astype("float32")
    return {"[0, 1]": x / 255, "[-1, 1]": x / 127.5 - 1, "mean/std": (x / 255 - 0.45) / 0.225,
            "caffe": x - 123.68, "16-bit": x * 257}[convention]


@pytest.mark.parametrize("convention, match", [
    pytest.param("[0, 1]", r"looks like \[0, 1\] \(min 0, max 1\): multiply by 255", id="0-1"),
    pytest.param("[-1, 1]", r"looks like \[-1, 1\] \(min -1, max 1\): pass \(x \+ 1\) \* 127.5",
                 id="minus1-1"),
    pytest.param("mean/std", r"looks mean/std normalised .*: pass the RGB values themselves",
                 id="mean-std"),
    pytest.param("caffe", r"has values below 0 \(min -123.68.*mean-subtracted\?", id="caffe"),
    pytest.param("16-bit", r"has values above 255 \(min 0, max 65535\): 16-bit\? divide by 257",
                 id="16-bit"),
])
def test_float_images_on_another_scale_are_refused(signatures, photos, convention, match):
    pixels = photos[0].astype("float32")
    batch = np.stack([pixels[0], pixels[1], _scaled(photos[0][2], convention)])
    message = refusal(signatures["serving_default"], r"serving_default expects RGB in \[0, 255\]; "
                      r"images\[2\] " + match, images=batch)
    assert message.count("refused") == 1 and "(1 of 3 refused)" in message


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_values_are_refused(signatures, photos, value):
    batch = photos[0][:2].astype("float32")
    batch[1, 5, 5, 0] = value
    refusal(signatures["serving_default"], r"images\[1\] holds NaN or infinity", images=batch)
    crop = batch[:, :SIZE, :SIZE]
    refusal(signatures["preprocessed_images"], r"preprocessed_images expects RGB in \[0, 255\]; "
            r"images\[1\] holds NaN", images=crop)


def test_preprocessed_images_in_0_1_are_refused(signatures, photos):
    crop = photos[0][0, :SIZE, :SIZE].astype("float32")[None]
    refusal(signatures["preprocessed_images"], r"images\[0\] looks like \[0, 1\]",
            images=crop / 255)


def test_black_integer_and_overshooting_images_are_served(signatures, photos):
    """All zeros, all ones (integers: [0, 255] scale) and the bicubic resize's worst overshoot
    ([-113.55, 368.55], reached at half-pixel offsets by a pattern of period 4) are valid."""
    for value in (0.0, 1.0, 255.0):
        out = signatures["serving_default"](images=tf.fill([1, 20, 30, 3], value))
        assert out["logits"].shape == (1, CLASSES)
    stripes = np.array([1, 0, 0, 1] * 4)
    board = np.where((stripes[:, None] + stripes[None, :]) % 2 == 0, 255.0, 0.0)
    board = np.repeat(board[None, :, :, None], 3, axis=-1).astype("float32")
    resized = preprocessing.preprocess_batch_for_eval(
        board, EvalPreprocessing(SIZE, crop_fraction=1.0))
    assert float(tf.reduce_min(resized)) < -100 and float(tf.reduce_max(resized)) > 350
    out = signatures["preprocessed_images"](images=resized)
    assert np.all(np.isfinite(out["logits"]))
    pixels, png, jpeg = photos
    out = signatures["encoded_images"](image_bytes=tf.constant([png, jpeg]))
    assert out["logits"].shape == (2, CLASSES)


# -- export --classes / --image_size against a run directory ----------------------------------

NAMES = ("cat", "dog", "fox")


@pytest.fixture(scope="module")
def checkpoint_run(tmp_path_factory):
    """A run directory as training leaves it when stopped before the end: config.yaml,
    run.json, labels.txt and a checkpoint with its EMA, no export/."""
    from keras_effnet import config as config_lib, data  # noqa: PLC0415
    from keras_effnet.run_dir import RunDirectory, RunMetadata  # noqa: PLC0415
    from keras_effnet.training import run_files, task  # noqa: PLC0415

    run = tmp_path_factory.mktemp("runs") / "interrupted"
    config = config_lib.load_config(overrides=[f"runtime.model_dir={run}", "model.phi=-8",
                                               "data.image_size=32"],
                                    base=config_lib.demo_config())
    spec = config_lib.resolve_spec(config.model)
    metadata = RunMetadata(spec=spec, class_names=NAMES, weight_source={"kind": "none"},
                           eval_preprocessing=data.eval_preprocessing_for("digits", 32,
                                                                          spec.normalization))
    run_files.write_run_start(RunDirectory(run), config, metadata)
    keras.utils.set_random_seed(0)
    net = task.build_network(config.model, spec, len(NAMES), 32, spec.normalization,
                             for_training=True)
    step = tf.Variable(7, dtype=tf.int64, trainable=False, name="global_step")
    tf.train.Checkpoint(model=net, step=step, ema=task.make_ema(net, config)).save(
        str(run / "ckpt"))
    assert not (run / "export").exists()
    return run


def test_export_refuses_classes_the_run_does_not_have(checkpoint_run, tmp_path):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=ROOT)
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "tools", "export.py"), "--model_dir",
         str(checkpoint_run), "--classes", "10", "--format", "saved_model", "--output",
         str(tmp_path / "out")], capture_output=True, text=True, env=env, timeout=240)
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert "--classes 10 does not match run" in result.stderr
    assert "it has 3 classes (labels.txt: cat, dog, fox)" in result.stderr
    assert "drop --classes" in result.stderr and not (tmp_path / "out").exists()


def test_classes_and_image_size_of_the_run_are_accepted_and_others_refused(checkpoint_run):
    source = ex.load_source(model_dir=str(checkpoint_run), classes=3, image_size=32)
    assert list(source.labels) == list(NAMES) and source.weight_source["step"] == 7
    with pytest.raises(ValueError, match=r"--image_size 64 does not match run .*32 x 32 images"):
        ex.load_source(model_dir=str(checkpoint_run), image_size=64)
    with pytest.raises(ValueError, match="--classes 2 does not match"):
        ex.export(None, "tflite", str(checkpoint_run.parent / "t"), model_dir=str(checkpoint_run),
                  classes=2)

"""Export: serving SavedModel, TF-Hub modules, TFLite, ONNX, the dispatcher and the command line.

A tiny random-weight EfficientNet (compound phi=-8, 64 px, 10 classes) whose batch-norm
statistics are calibrated on one batch, so outputs are O(1) and tolerances mean something
(``tiny_model`` of tests/conftest.py, shared with tests/test_openvino.py).
"""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import keras
from helpers import (ROOT, TINY_CLASSES as CLASSES, TINY_SIZE as SIZE, real_photos, run_cli,
                     run_together)
from keras_effnet import export as ex
from keras_effnet import preprocessing
from keras_effnet.applications import build_model
from keras_effnet.deploy import deploy
from keras_effnet.preprocessing import EvalPreprocessing
from keras_effnet.scaling import compound_spec


def _tolerance(reference, relative):
    return relative * max(1.0, float(np.abs(reference).max()))


@pytest.fixture(scope="module")
def saved_model_dir(tiny_model, tmp_path_factory):
    return ex.export(tiny_model, "saved_model", tmp_path_factory.mktemp("sm") / "serving")


# -- serving SavedModel ------------------------------------------------------------------------

def test_serving_signatures_run_the_shared_eval_preprocessing(saved_model_dir, tiny_model,
                                                                tiny_images, tiny_logits):
    loaded = tf.saved_model.load(saved_model_dir)
    assert set(loaded.signatures) == {"serving_default", "uint8_images", "encoded_images",
                                      "preprocessed_images"}
    out = loaded.signatures["preprocessed_images"](images=tf.constant(tiny_images))
    np.testing.assert_allclose(out["logits"], tiny_logits, atol=_tolerance(tiny_logits, 1e-5))
    # The served network is the deploy graph (folded batch norm, keras_effnet.deploy): its logits
    # follow the trainable model's within the 1e-5 above, and its probabilities are those of
    # the deployed model to 1e-6.
    deployed = deploy(tiny_model).predict(tiny_images, verbose=0)
    np.testing.assert_allclose(out["probabilities"], tf.nn.softmax(deployed), atol=1e-6)
    np.testing.assert_allclose(out["probabilities"], tf.nn.softmax(out["logits"]), atol=1e-6)

    raw = np.random.RandomState(1).randint(0, 256, (2, 90, 120, 3)).astype("uint8")
    expected = tiny_model.predict(preprocessing.preprocess_batch_for_eval(raw, SIZE).numpy(),
                                  verbose=0)
    for name, value in (("serving_default", {"images": tf.constant(raw, tf.float32)}),
                        ("uint8_images", {"images": tf.constant(raw)})):
        got = loaded.signatures[name](**value)
        np.testing.assert_allclose(got["logits"], expected, atol=_tolerance(expected, 1e-5), err_msg=name)
    # Encoded images, each of its own size, through preprocess_for_eval one by one.
    encoded = [tf.io.encode_png(raw[0]).numpy(), tf.io.encode_jpeg(raw[1][:70, :50]).numpy()]
    got = loaded.signatures["encoded_images"](image_bytes=tf.constant(encoded))
    each = np.stack([preprocessing.preprocess_for_eval(tf.constant(b), SIZE).numpy() for b in encoded])
    expected = tiny_model.predict(each, verbose=0)
    np.testing.assert_allclose(got["logits"], expected, atol=_tolerance(expected, 1e-5))
    assert got["top_k_classes"].shape == (2, 5)
    assert got["top_k_labels"].dtype == tf.string
    assert int(got["top_k_classes"][0, 0]) == int(np.argmax(expected[0]))
    assert got["top_k_labels"][0, 0].numpy().decode() == str(np.argmax(expected[0]))

    metadata = ex.read_metadata(saved_model_dir)
    assert metadata["format"] == "saved_model" and metadata["resolution"] == SIZE
    assert metadata["labels"] == [str(i) for i in range(CLASSES)]
    assert metadata["preprocessing"]["crop_padding"] == 32


def test_serving_signatures_reject_wrong_dtype_and_shape(saved_model_dir):
    loaded = tf.saved_model.load(saved_model_dir)
    errors = (TypeError, ValueError, tf.errors.InvalidArgumentError)
    with pytest.raises(errors, match="expected to be a uint8 tensor but is a float"):
        loaded.signatures["uint8_images"](images=tf.zeros([1, 32, 32, 3], tf.float32))
    with pytest.raises(errors, match="must be RGB"):
        loaded.signatures["serving_default"](images=tf.zeros([1, 32, 32, 4], tf.float32))
    with pytest.raises(errors, match="already preprocessed"):
        loaded.signatures["preprocessed_images"](images=tf.zeros([1, 32, 32, 3], tf.float32))


@pytest.mark.slow
def test_saved_model_cli_shows_the_signatures(saved_model_dir):
    result = subprocess.run([sys.executable, "-m", "tensorflow.python.tools.saved_model_cli",
                             "show", "--dir", saved_model_dir, "--all"],
                            capture_output=True, text=True, check=True)
    for name in ("serving_default", "uint8_images", "encoded_images", "top_k_labels", "DT_UINT8"):
        assert name in result.stdout


# -- TF-Hub modules ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def hub_dirs(tiny_model, tmp_path_factory):
    base = tmp_path_factory.mktemp("hub")
    return {kind: ex.export(tiny_model, f"hub_{kind}", base / kind, weight_decay=1e-5)
            for kind in ("feature_vector", "classification")}


def test_hub_load_matches_keras(hub_dirs, tiny_model, tiny_images, tiny_logits):
    hub = ex.import_tensorflow_hub()
    classifier = hub.load(hub_dirs["classification"])
    np.testing.assert_allclose(classifier(tiny_images / 255.0), tiny_logits,
                               atol=_tolerance(tiny_logits, 1e-5))
    features = hub.load(hub_dirs["feature_vector"])
    backbone = keras.Model(tiny_model.input, tiny_model.get_layer("avg_pool").output)
    expected = backbone.predict(tiny_images, verbose=0)
    got = features(tiny_images / 255.0)
    assert got.shape == (len(tiny_images), expected.shape[-1])
    np.testing.assert_allclose(got, expected, atol=_tolerance(expected, 1e-5))
    # Any input size, training=False default, and the serving signature.
    assert features(tf.zeros([1, 96, 80, 3])).shape == (1, expected.shape[-1])
    assert "serving_default" in features.signatures
    assert len(features.regularization_losses) == 1
    assert len(features.trainable_variables) < len(features.variables)


def test_hub_keras_layer_fine_tunes_in_tf_keras(hub_dirs, tiny_images):
    hub = ex.import_tensorflow_hub()
    import tf_keras  # noqa: PLC0415

    tf_keras.utils.set_random_seed(0)
    layer = hub.KerasLayer(hub_dirs["feature_vector"], trainable=True)
    net = tf_keras.Sequential([layer, tf_keras.layers.Dense(3)])
    net.build([None, SIZE, SIZE, 3])
    assert len(net.losses) == 1 and float(net.losses[0]) > 0  # regularization_losses
    labels = np.array([0, 1, 2, 0])
    x = tiny_images / 255.0

    moving_mean = next(v for v in layer.variables if "stem_bn" in v.name and "moving_mean" in v.name)
    stem_kernel = next(v for v in net.trainable_variables if "stem_conv" in v.name)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(net(x, training=True))
    assert float(tf.norm(tape.gradient(loss, stem_kernel))) > 0  # gradients reach the first conv

    before = moving_mean.numpy().copy()
    net.predict(x, verbose=0)
    np.testing.assert_array_equal(moving_mean.numpy(), before)  # inference: no update
    net.compile(optimizer=tf_keras.optimizers.SGD(0.05),
                loss=tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = net.fit(x, labels, epochs=4, batch_size=4, verbose=0).history["loss"]
    assert history[-1] < history[0]
    assert np.abs(moving_mean.numpy() - before).max() > 0  # training: BN statistics update


def test_tfsm_layer_inside_a_keras3_model(hub_dirs, tiny_images, tiny_logits):
    inputs = keras.Input((SIZE, SIZE, 3))
    outputs = keras.layers.TFSMLayer(hub_dirs["classification"], call_endpoint="serving_default")(inputs)
    wrapper = keras.Model(inputs, outputs)
    got = wrapper.predict(tiny_images / 255.0, verbose=0)
    got = next(iter(got.values())) if isinstance(got, dict) else got
    np.testing.assert_allclose(got, tiny_logits, atol=_tolerance(tiny_logits, 1e-5))


# -- TFLite and ONNX ---------------------------------------------------------------------------

@pytest.mark.parametrize("quantization,tolerance", [("float32", 1e-4), ("float16", None)])
def test_tflite_float(tiny_model, tiny_images, tiny_logits, tmp_path, quantization, tolerance):
    path = ex.export_tflite(tiny_model, tmp_path / "m.tflite", quantization=quantization)
    got = ex.tflite_predict(path, tiny_images)
    if tolerance is None:  # half-precision weights: close, not exact
        assert ex.top1_agreement(tiny_logits, got) == 1.0
    else:
        np.testing.assert_allclose(got, tiny_logits, atol=_tolerance(tiny_logits, tolerance))


@pytest.mark.slow
def test_tflite_dynamic_and_int8_on_real_photos(tiny_model, tmp_path):
    real = real_photos()
    batch = np.stack([preprocessing.preprocess_for_eval(p, SIZE).numpy() for p in real])
    reference = tiny_model.predict(batch, verbose=0)
    dynamic = ex.tflite_predict(ex.export_tflite(tiny_model, tmp_path / "d.tflite",
                                                 quantization="dynamic"), batch)
    int8_path = ex.export_tflite(tiny_model, tmp_path / "q.tflite", quantization="int8",
                                 representative_images=real)
    interpreter = tf.lite.Interpreter(model_path=int8_path)
    assert interpreter.get_input_details()[0]["dtype"] == np.uint8
    int8 = ex.tflite_predict(int8_path, batch)
    print(f"top-1 agreement with float on {len(real)} photos: dynamic "
          f"{ex.top1_agreement(reference, dynamic):.2f}, int8 {ex.top1_agreement(reference, int8):.2f}")
    assert ex.top1_agreement(reference, dynamic) >= 0.5
    assert np.isfinite(int8).all()


KERAS_SOURCE_SETTINGS = EvalPreprocessing(SIZE, crop_fraction=0.875, resize_method="bilinear")
KERAS_SOURCE_LABELS = [f"class-{i}" for i in range(CLASSES)]


@pytest.fixture(scope="module")
def onnx_export(tiny_model, tmp_path_factory):
    """The tiny model through the dispatcher to ONNX with its own evaluation settings and labels
    (a Keras model source): the path of model.onnx. One export for the tests that read it:
    tf2onnx converts in a process of its own, ~10 s of CPU each time."""
    return ex.export(tiny_model, "onnx", tmp_path_factory.mktemp("onnx") / "onnx",
                     eval_preprocessing=KERAS_SOURCE_SETTINGS, labels=KERAS_SOURCE_LABELS)


def test_onnx_matches_keras(onnx_export, tiny_images, tiny_logits):
    onnxruntime = pytest.importorskip("onnxruntime")
    del onnxruntime
    np.testing.assert_allclose(ex.onnx_predict(onnx_export, tiny_images), tiny_logits,
                               atol=_tolerance(tiny_logits, 1e-4))


# -- bad input, atomic writes, sources ---------------------------------------------------------

def test_bad_arguments_give_clear_errors(tiny_model, tmp_path):
    with pytest.raises(ValueError, match="unknown export format 'pb'"):
        ex.export(tiny_model, "pb", tmp_path / "x")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ex.export("efficientnet-b0", "onnx", tmp_path / "x", weights=str(tmp_path / "missing.weights.h5"))
    with pytest.raises(ValueError, match="needs weights|no weights"):
        ex.load_source("efficientnet-b0")
    with pytest.raises(ValueError, match="quantization"):
        ex.export_tflite(tiny_model, tmp_path / "m.tflite", quantization="int4")
    with pytest.raises(ValueError, match="representative_images"):
        ex.export_tflite(tiny_model, tmp_path / "m.tflite", quantization="int8")
    with pytest.raises(FileNotFoundError, match="run.json"):  # run.json marks a training run
        ex.load_source(model_dir=str(tmp_path))
    (tmp_path / "taken").mkdir()
    with pytest.raises(FileExistsError, match="overwrite"):
        ex.export(tiny_model, "onnx", tmp_path / "taken")
    with pytest.raises(ValueError, match="inside the source"):
        ex.check_output(str(tmp_path / "run" / "export_onnx"), True, [str(tmp_path / "run")])
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".")]  # no staging left behind


def test_atomic_overwrite_replaces_and_failure_keeps_the_old(tmp_path):
    target = tmp_path / "out"
    with ex.staged_directory(str(target), overwrite=False) as staging:
        assert os.path.dirname(staging) == str(tmp_path)  # beside the output, not nested
        open(os.path.join(staging, "a"), "w").close()
    with pytest.raises(RuntimeError):
        with ex.staged_directory(str(target), overwrite=True) as staging:
            raise RuntimeError("converter crashed")
    assert os.listdir(target) == ["a"]
    with ex.staged_directory(str(target), overwrite=True) as staging:
        open(os.path.join(staging, "b"), "w").close()
    assert os.listdir(target) == ["b"]
    assert sorted(os.listdir(tmp_path)) == ["out"]


DIGIT_NAMES = tuple(f"digit-{name}" for name in ("zero", "one", "two", "three", "four", "five",
                                                   "six", "seven", "eight", "nine"))


def _write_run(run, *, final_model: bool):
    """A training run directory as ``keras_effnet.training`` writes it: config.yaml, run.json,
    labels.txt, then ``export/model.keras`` (logits head) or only a checkpoint with its EMA."""
    from keras_effnet import config as config_lib, data  # noqa: PLC0415
    from keras_effnet.run_dir import RunDirectory, RunMetadata  # noqa: PLC0415
    from keras_effnet.training import run_files, task  # noqa: PLC0415

    config = config_lib.load_config(overrides=[f"runtime.model_dir={run}", "model.phi=-8",
                                               "data.image_size=32"],
                                    base=config_lib.demo_config())
    spec = config_lib.resolve_spec(config.model)
    directory = RunDirectory(run)
    metadata = RunMetadata(spec=spec, class_names=DIGIT_NAMES,
                           eval_preprocessing=data.eval_preprocessing_for("digits", 32,
                                                                          spec.normalization),
                           weight_source={"kind": "none"}, dataset={"source": "digits"}, ema=True)
    run_files.write_run_start(directory, config, metadata)
    keras.utils.set_random_seed(0)
    net = task.build_network(config.model, spec, len(DIGIT_NAMES), 32, spec.normalization,
                             for_training=not final_model)
    if final_model:
        run_files.write_final_model(directory, net)
    else:
        ema = task.make_ema(net, config)
        step = tf.Variable(7, dtype=tf.int64, trainable=False, name="global_step")
        tf.train.Checkpoint(model=net, step=step, ema=ema).save(str(run / "ckpt"))
    return net


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "demo"
    return run, _write_run(run, final_model=True)


def test_run_directory_source_reads_only_the_run(demo_run):
    run, net = demo_run
    source = ex.load_source(model_dir=str(run))
    assert list(source.labels) == list(DIGIT_NAMES)  # labels.txt, not the data, not "0", "1" ...
    assert source.eval_preprocessing.crop_fraction == 1.0 and source.weight_source["ema"]
    assert source.model.get_layer("predictions").get_config()["activation"] == "linear"
    x = np.random.RandomState(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(source.model.predict(x, verbose=0), net.predict(x, verbose=0),
                               atol=1e-5)


def test_a_run_with_only_a_checkpoint_exports(tmp_path):
    run = tmp_path / "ckpt_only"
    _write_run(run, final_model=False)
    assert not (run / "export").exists()
    out = ex.export(None, "saved_model", tmp_path / "serving", model_dir=str(run))
    metadata = ex.read_metadata(out)
    assert metadata["labels"] == list(DIGIT_NAMES) and metadata["weight_source"]["ema"]
    loaded = tf.saved_model.load(out)
    got = loaded.signatures["uint8_images"](images=tf.zeros([1, 40, 40, 3], tf.uint8))
    assert got["top_k_labels"][0, 0].numpy().decode() in DIGIT_NAMES


def test_int8_calibration_from_a_run_without_data_names_the_fix(demo_run, tmp_path):
    run = tmp_path / "moved"
    shutil.copytree(demo_run[0], run)
    source = ex.load_source(model_dir=str(run))
    (run / "config.yaml").unlink()  # the run no longer says where its data was
    with pytest.raises(FileNotFoundError, match="--representative_data"):
        ex.export(source, "tflite", tmp_path / "int8", quantization="int8")


def test_a_softmax_head_is_exported_as_logits_and_other_heads_are_refused(
        tiny_model, tiny_images, tiny_logits, tmp_path):
    keras.utils.set_random_seed(0)
    softmax = build_model(compound_spec(-8), input_shape=(SIZE, SIZE, 3), classes=CLASSES)
    softmax.set_weights(tiny_model.get_weights())
    path = ex.export_tflite(softmax, tmp_path / "m.tflite")
    np.testing.assert_allclose(ex.tflite_predict(path, tiny_images), tiny_logits,
                               atol=_tolerance(tiny_logits, 1e-4))
    sigmoid = build_model(compound_spec(-8), input_shape=(SIZE, SIZE, 3), classes=CLASSES,
                          classifier_activation="sigmoid")
    with pytest.raises(ValueError, match="classifier_activation=None"):
        ex.export_tflite(sigmoid, tmp_path / "s.tflite")


def test_a_keras_model_source_carries_its_settings_and_labels(tiny_model, onnx_export, tmp_path):
    settings, names = KERAS_SOURCE_SETTINGS, KERAS_SOURCE_LABELS
    metadata = ex.read_metadata(onnx_export)
    assert EvalPreprocessing.from_dict(metadata["preprocessing"]) == settings
    assert metadata["labels"] == names and metadata["normalization"]["inside_model"]
    with pytest.raises(ValueError, match="3 labels"):
        ex.export(tiny_model, "onnx", tmp_path / "bad", labels=names[:3])


HELP_COMMANDS = (("tools/export.py",), ("-m", "keras_effnet.cli.export"))


@pytest.fixture(scope="module")
def help_results():
    """``--help`` of the tools/ shim and of ``python -m``, run together (helpers.run_together)."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    results = run_together([[sys.executable, *command, "--help"] for command in HELP_COMMANDS],
                           env=env, cwd=ROOT)
    return dict(zip(HELP_COMMANDS, results))


@pytest.mark.parametrize("command", HELP_COMMANDS)
def test_help_lists_the_export_flags(help_results, command):
    result = help_results[command]
    assert result.returncode in (0, 1), result.stderr[-2000:]  # absl's --help exits 1
    for flag in ("--model_dir", "--format", "--quantization", "--representative_data", "--top_k"):
        assert flag in result.stdout, (flag, result.stdout[-2000:])


@pytest.mark.slow
def test_cli_exports_a_training_run_and_a_weight_file(demo_run, tmp_path, capsys):
    run, net = demo_run
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    tool = os.path.join(ROOT, "tools", "export.py")
    out = tmp_path / "onnx"
    result = subprocess.run([sys.executable, tool, "--model_dir", str(run), "--format", "onnx",
                             "--output", str(out)], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    metadata = json.loads((out / "metadata.json").read_text())
    assert metadata["weight_source"]["kind"] == "model_dir" and metadata["weight_source"]["ema"]
    assert metadata["resolution"] == 32 and metadata["preprocessing"]["crop_fraction"] == 1.0
    assert metadata["labels"] == list(DIGIT_NAMES)
    x = np.random.RandomState(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    logits = ex.onnx_predict(out / "model.onnx", x)  # the run's model has a logits head
    np.testing.assert_allclose(logits, net.predict(x, verbose=0), atol=1e-5)


    # The refusals go through the same main, flags and exit statuses in this process
    # (helpers.run_cli): a subprocess each spent ~8 s of CPU importing TensorFlow to refuse.
    def export_cli(*argv):
        capsys.readouterr()
        return run_cli("export", argv), capsys.readouterr().err

    returncode, stderr = export_cli("--model_dir", str(run), "--format", "onnx",
                                    "--output", str(out))
    assert returncode == 1 and "--overwrite" in stderr
    returncode, stderr = export_cli("--model_dir", str(run), "--format", "tflite",
                                    "--output", str(run / "tflite"))
    assert returncode == 1 and "inside the source" in stderr
    returncode, stderr = export_cli("--model", "b0", "--weights", str(tmp_path / "no.h5"),
                                    "--format", "tflite", "--output", str(tmp_path / "t"))
    assert returncode == 1 and "does not exist" in stderr
    returncode, stderr = export_cli("--model_dir", str(run), "--format", "pb",
                                    "--output", str(tmp_path / "t"))
    assert returncode != 0 and "format" in stderr

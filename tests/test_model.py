"""The builder: published parameter counts, keras.applications parity, saving, precision, features."""

import functools
import re

import numpy as np
import keras
import pytest

import keras_effnet
from keras_effnet.layers import IMAGENET_MEAN_RGB, IMAGENET_STDDEV_RGB, StochasticDepth
from keras_effnet.plan import block_plan
from keras_effnet.scaling import ModelSpec
from helpers import randomized_batch_norm

# keras.applications parameter counts (with top, without top): model.summary() of
# keras/src/applications/efficientnet.py's EfficientNetB0..B7 (Keras 3).
KERAS_PARAMS = {
    "b0": (5_330_571, 4_049_571), "b1": (7_856_239, 6_575_239),
    "b2": (9_177_569, 7_768_569), "b3": (12_320_535, 10_783_535),
    "b4": (19_466_823, 17_673_823), "b5": (30_562_527, 28_513_527),
    "b6": (43_265_143, 40_960_143), "b7": (66_658_687, 64_097_687),
}
# Other members, with top, in millions as published (rounded to 0.1M). The B8 figure counts all
# weights like keras.applications; the Lite figures (tensorflow/tpu lite README) count trainable
# weights only, i.e. without the batch-norm moving statistics.
OTHER_PARAMS = {"b8": 87.8, "lite0": 4.7, "lite1": 5.4, "lite2": 6.1, "lite3": 8.2, "lite4": 13.0,
                "l2": 480.0}
# Half a unit of the last published digit ("480M" for L2, "87.8M" for B8 ...).
PUBLISHED_PRECISION = {"l2": 5.0}


@functools.lru_cache(maxsize=None)
def parity_model(variant: str) -> keras.Model:
    """Our ``variant`` with its top at 64 px, logits: built once for the parameter count and the
    keras.applications parity (B7 takes ~10 s of CPU to build)."""
    return keras_effnet.build_model(variant, input_shape=(64, 64, 3), classifier_activation=None)


@pytest.fixture(scope="module", autouse=True)
def _free_parity_models():
    yield
    parity_model.cache_clear()


@pytest.mark.parametrize("variant", list(KERAS_PARAMS))
def test_exact_parameter_counts(variant):
    with_top = parity_model(variant)  # the count does not depend on the input size
    without_top = keras_effnet.build_model(variant, include_top=False)
    assert (with_top.count_params(), without_top.count_params()) == KERAS_PARAMS[variant]


@pytest.mark.parametrize("variant", [pytest.param(v, marks=pytest.mark.slow) if v == "l2" else v
                                     for v in OTHER_PARAMS])
def test_other_members_build_and_run(variant):
    model = keras_effnet.build_model(variant, input_shape=(32, 32, 3))
    if variant.startswith("lite"):
        count = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    else:
        count = model.count_params()
    assert abs(count / 1e6 - OTHER_PARAMS[variant]) <= PUBLISHED_PRECISION.get(variant, 0.05)
    out = model(np.zeros((1, 32, 32, 3), "float32"))
    assert out.shape == (1, 1000)


def test_public_constructors_have_keras_signature():
    model = keras_effnet.EfficientNetB1(include_top=False, weights=None, input_tensor=None,
                                        input_shape=(64, 64, 3), pooling="max", classes=10,
                                        classifier_activation=None, name="backbone")
    assert model.name == "backbone" and model.output_shape == (None, 1280)
    assert keras_effnet.EfficientNetB0.__name__ == "EfficientNetB0"
    assert keras_effnet.EfficientNetLite2().name == "efficientnetlite2"
    assert keras_effnet.EfficientNetB0().input_shape == (None, 224, 224, 3)


PARITY = [pytest.param(v, marks=pytest.mark.slow) if v in ("b5", "b6", "b7") else v
          for v in KERAS_PARAMS]


def logits(model, x):
    """``model``'s inference outputs for one small batch, as numpy. An eager call: ``predict``
    first traces the whole graph (about 2 s of CPU for B3 at 64 px, 4x the call itself)."""
    return keras.ops.convert_to_numpy(model(x, training=False))


@pytest.mark.parametrize("variant", PARITY)
def test_interchangeable_with_keras_applications(variant):
    """Same layer names, same weight order and shapes, same logits given the same weights."""
    reference = getattr(keras.applications, f"EfficientNet{variant.upper()}")(
        weights=None, input_shape=(64, 64, 3), classifier_activation=None)
    ours = parity_model(variant)
    # keras.applications' normalisation layer is auto-named (normalization_1 ... in one session).
    def paths(model):
        return [re.sub(r"^normalization_\d+/", "normalization/", w.path) for w in model.weights]

    assert paths(ours) == paths(reference)
    assert [w.shape for w in ours.weights] == [w.shape for w in reference.weights]

    values = randomized_batch_norm(reference)
    reference.set_weights(values)
    # keras.applications without ImageNet weights normalises with mean 0 / variance 1;
    # give both models the real ImageNet statistics.
    values[0] = np.array(IMAGENET_MEAN_RGB, "float32")
    values[1] = np.square(IMAGENET_STDDEV_RGB).astype("float32")
    reference.set_weights(values)
    # Keras' Normalization reads adapted statistics only in finalize_state().
    next(layer for layer in reference.layers
         if isinstance(layer, keras.layers.Normalization)).finalize_state()
    ours.set_weights(values)
    x = np.random.default_rng(1).uniform(0, 255, (2, 64, 64, 3)).astype("float32")
    np.testing.assert_allclose(logits(ours, x), logits(reference, x), atol=1e-4)


def test_odd_input_sizes_use_tensorflow_same_padding():
    model = keras_effnet.build_model("b0", include_top=False, input_shape=(None, None, 3))
    assert model(np.zeros((1, 65, 97, 3), "float32")).shape == (1, 3, 4, 1280)


def test_legacy_keras_applications_h5_loads_with_std_quirk(tmp_path):
    """A weight file written like keras.applications' own (std in the variance slot)."""
    tf_keras = pytest.importorskip("tf_keras")
    source = tf_keras.applications.EfficientNetB0(weights=None, input_shape=(64, 64, 3),
                                                  classifier_activation=None)
    values = [np.asarray(v) for v in randomized_batch_norm(keras_effnet.build_model(
        "b0", input_shape=(64, 64, 3)))]
    values[0] = np.array(IMAGENET_MEAN_RGB, "float32")
    values[1] = np.array(IMAGENET_STDDEV_RGB, "float32")      # the published files' quirk
    source.set_weights(values)
    path = str(tmp_path / "efficientnetb0.h5")
    source.save_weights(path)

    ours = keras_effnet.EfficientNetB0(input_shape=(64, 64, 3), classifier_activation=None)
    ours.load_weights(path)
    np.testing.assert_allclose(ours.get_layer("normalization").variance.numpy(),
                               np.square(IMAGENET_STDDEV_RGB), rtol=1e-6)
    # The reference computation with the correct variance.
    values[1] = np.square(IMAGENET_STDDEV_RGB).astype("float32")
    source.set_weights(values)
    source.get_layer("normalization").finalize_state()
    x = np.random.default_rng(2).uniform(0, 255, (2, 64, 64, 3)).astype("float32")
    np.testing.assert_allclose(logits(ours, x), source(x, training=False).numpy(), atol=1e-4)


def test_keras_file_round_trip_is_bit_exact(tmp_path):
    model = keras_effnet.build_model("lite0", input_shape=(64, 64, 3), classes=7)
    model.set_weights(randomized_batch_norm(model))
    path = str(tmp_path / "m.keras")
    model.save(path)
    restored = keras.saving.load_model(path, safe_mode=True)
    x = np.random.default_rng(3).uniform(0, 255, (2, 64, 64, 3)).astype("float32")
    np.testing.assert_array_equal(logits(restored, x), logits(model, x))
    assert any(isinstance(layer, StochasticDepth) for layer in restored.layers)


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_logits_are_float32(policy):
    keras.config.set_dtype_policy(policy)
    model = keras_effnet.build_model("b0", input_shape=(64, 64, 3), classifier_activation=None)
    assert model.get_layer("stem_conv").compute_dtype == policy.split("_")[1]
    out = model(np.random.default_rng(4).uniform(0, 255, (2, 64, 64, 3)).astype("float32"))
    assert out.dtype == "float32"
    assert np.all(np.isfinite(keras.ops.convert_to_numpy(out)))


def test_jit_compile_matches_eager():
    # XLA compiles a full training step for minutes on CPU; inference shows the graph compiles.
    spec = ModelSpec("tiny", width=0.25, depth=0.25, resolution=32, dropout=0.1)
    model = keras_effnet.build_model(spec, classes=3, classifier_activation=None)
    model.compile(jit_compile=True)
    x = np.random.default_rng(5).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(model.predict(x, verbose=0), model(x), atol=1e-4)


def test_stochastic_depth_follows_scaled_block_count():
    for variant, blocks in (("b0", 16), ("b7", 55)):
        model = keras_effnet.build_model(variant, include_top=False, input_shape=(32, 32, 3))
        prefixes = [block.prefix for block in block_plan(variant)]
        assert len(prefixes) == blocks
        for index, prefix in enumerate(prefixes):
            try:
                layer = model.get_layer(f"{prefix}drop")
            except ValueError:
                continue
            assert layer.rate == pytest.approx(0.2 * index / blocks)
        assert model.get_layer(f"{prefixes[-2]}drop").rate == pytest.approx(0.2 * (blocks - 2) / blocks)


def test_custom_rates_and_no_dropout():
    model = keras_effnet.build_model("b0", input_shape=(32, 32, 3), stochastic_depth_rate=0.0,
                                     dropout_rate=0.0)
    assert not any(isinstance(layer, (StochasticDepth, keras.layers.Dropout))
                   for layer in model.layers)


@pytest.mark.parametrize("variant, channels", [
    ("b0", [16, 24, 40, 112, 320]), ("b3", [24, 32, 48, 136, 384]),
    ("lite0", [16, 24, 40, 112, 320])])
def test_feature_extractor_endpoints(variant, channels):
    info = keras_effnet.feature_info(variant)
    assert [i.stride for i in info] == [2, 4, 8, 16, 32]
    assert [i.channels for i in info] == channels
    features = keras_effnet.feature_extractor(variant)
    outputs = features(np.zeros((1, 96, 160, 3), "float32"))
    for item in info:
        assert tuple(outputs[item.name].shape) == (1, 96 // item.stride, 160 // item.stride,
                                                    item.channels)


def test_include_preprocessing_false_drops_normalisation():
    model = keras_effnet.build_model("b0", include_preprocessing=False, input_shape=(32, 32, 3))
    assert model.count_params() == KERAS_PARAMS["b0"][0] - 7
    with pytest.raises(ValueError):
        model.get_layer("normalization")
    # Without normalisation or weights, other channel counts are allowed.
    gray = keras_effnet.build_model("b0", include_preprocessing=False, include_top=False,
                                    input_shape=(32, 32, 1))
    assert gray.get_layer("stem_conv").kernel.shape == (3, 3, 1, 32)


def test_input_tensor():
    tensor = keras.Input((48, 48, 3))
    model = keras_effnet.EfficientNetB0(include_top=False, input_tensor=tensor, pooling="avg")
    assert model.inputs[0] is tensor and model.output_shape == (None, 1280)


@pytest.mark.parametrize("kwargs, message", [
    (dict(input_shape=(16, 16, 3)), "smaller than 32"),
    (dict(input_shape=(64, 64, 1)), "1 channels"),
    (dict(input_shape=(64, 64)), r"\(height, width, channels\)"),
    (dict(include_top=False, pooling="sum"), "pooling must be None, 'avg' or 'max'"),
    (dict(classes=0), "classes must be a positive integer"),
    (dict(dropout_rate=1.0), "dropout_rate"),
    (dict(stochastic_depth_rate=-0.1), "stochastic_depth_rate"),
])
def test_bad_arguments_raise_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        keras_effnet.build_model("b0", **kwargs)


def test_unknown_variant():
    with pytest.raises(ValueError, match="unknown EfficientNet variant"):
        keras_effnet.build_model("efficientnet-b12")


def test_build_model_loads_a_weights_file(tmp_path):
    source = keras_effnet.build_model("lite0", input_shape=(64, 64, 3), classes=10)
    source.set_weights(randomized_batch_norm(source, seed=5))
    path = str(tmp_path / "lite0.weights.h5")
    source.save_weights(path)
    loaded = keras_effnet.EfficientNetLite0(weights=path, input_shape=(64, 64, 3), classes=10)
    for ours, theirs in zip(loaded.weights, source.weights):
        np.testing.assert_array_equal(ours.numpy(), theirs.numpy())
    with pytest.raises(ValueError, match="1 channels"):
        keras_effnet.build_model("lite0", weights=path, include_preprocessing=False,
                                 input_shape=(64, 64, 1), classes=10)
    with pytest.raises(FileNotFoundError, match="missing.weights.h5"):
        keras_effnet.build_model("lite0", weights=str(tmp_path / "missing.weights.h5"))


def test_weight_set_decides_the_normalisation(monkeypatch):
    """AdvProp weights expect [-1, 1] inputs: the model is built with that normalisation."""
    loaded = []
    monkeypatch.setattr(keras_effnet.weights, "load_weights_into",
                        lambda model, weights, spec: loaded.append((model.name, weights)))
    model = keras_effnet.build_model("b0", weights="advprop", include_top=False,
                                     input_shape=(32, 32, 3))
    assert loaded == [("efficientnetb0", "advprop")]
    np.testing.assert_allclose(model.get_layer("normalization").mean.numpy(), [0.5] * 3)
    plain = keras_effnet.model.EfficientNet("b0", include_top=False, input_shape=(32, 32, 3))
    np.testing.assert_allclose(plain.get_layer("normalization").mean.numpy(), IMAGENET_MEAN_RGB)
    with pytest.raises(ValueError, match="unknown normalization 'zca'"):
        keras_effnet.model.EfficientNet("b0", normalization="zca")


def test_in_channels_adapts_the_normalisation_statistics():
    gray = keras_effnet.build_model("b0", input_shape=(32, 32, 1), in_channels=1)
    normalization = gray.get_layer("normalization")
    np.testing.assert_allclose(normalization.mean.numpy(), [np.mean((0.485, 0.456, 0.406))],
                               rtol=1e-6)
    assert gray.get_layer("stem_conv").kernel.shape == (3, 3, 1, 32)
    four = keras_effnet.build_model("lite0", include_top=False, in_channels=4)
    assert four.input_shape == (None, None, None, 4)
    with pytest.raises(ValueError, match="in_channels=4"):
        keras_effnet.build_model("b0", input_shape=(32, 32, 3), in_channels=4)


def test_classifier_initializer():
    model = keras_effnet.build_model("b0", input_shape=(32, 32, 3), classes=3,
                                     classifier_initializer="zeros")
    assert not np.any(model.get_layer("predictions").kernel.numpy())

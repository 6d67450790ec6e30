"""The inference-only transform: batch norm folding, dropout removal, exactness, saving."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from helpers import randomized_batch_norm
from keras_effnet.applications import build_model, feature_extractor
from keras_effnet.deploy import deploy, fold_batch_norm
from keras_effnet.layers import ImageNormalization, StochasticDepth

SIZE = 64


def _images(batch=2, size=SIZE, seed=1):
    return np.random.default_rng(seed).uniform(0, 255, (batch, size, size, 3)).astype("float32")


@pytest.fixture(scope="module", params=["efficientnet-b0", "efficientnet-lite0"])
def models(request):
    model = build_model(request.param, input_shape=(SIZE, SIZE, 3), classifier_activation=None)
    model.set_weights(randomized_batch_norm(model))
    return model, deploy(model)


def test_outputs_agree_within_1e4(models):
    model, deployed = models
    images = _images()
    expected = keras.ops.convert_to_numpy(model(images, training=False))
    got = keras.ops.convert_to_numpy(deployed(images))
    assert np.abs(expected).max() > 0.1  # non-trivial logits
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)


def test_batch_norm_and_dropout_removed(models):
    model, deployed = models
    kinds = [type(layer) for layer in deployed.layers]
    assert keras.layers.BatchNormalization not in kinds
    assert keras.layers.Dropout not in kinds and StochasticDepth not in kinds
    names = {layer.name for layer in deployed.layers}
    assert {"stem_conv", "block1a_dwconv", "block1a_project_conv", "top_conv",
            "predictions", "normalization"} <= names
    assert deployed.get_layer("stem_conv").use_bias
    # Only batch norm and dropout layers are gone; the weights shrink by their count.
    removed = {layer.name for layer in model.layers} - names
    assert all(name.endswith(("_bn", "_drop", "top_dropout")) for name in removed)
    assert deployed.count_params() < model.count_params()


def test_swish_becomes_sigmoid_and_multiply(models):
    """Each swish Activation is rewritten as x * sigmoid(x) in two standard layers (so grappler
    fuses it into the convolution before it); names and numbers are kept."""
    model, deployed = models
    swish = [layer.name for layer in model.layers if isinstance(layer, keras.layers.Activation)
             and layer.get_config()["activation"] in ("swish", "silu")]
    for name in swish:
        assert isinstance(deployed.get_layer(name), keras.layers.Multiply)
        assert deployed.get_layer(f"{name}_sigmoid").get_config()["activation"] == "sigmoid"
    assert not any(isinstance(layer, keras.layers.Activation)
                   and layer.get_config()["activation"] in ("swish", "silu")
                   for layer in deployed.layers)
    if model.name.startswith("efficientnetb"):
        assert "stem_activation" in swish and "block1a_activation" in swish


def test_shares_no_variables(models):
    model, deployed = models
    original = {id(v) for v in model.weights}
    assert not any(id(v) in original for v in deployed.weights)


def test_saves_and_loads_with_safe_mode(models, tmp_path):
    _, deployed = models
    path = tmp_path / "deployed.keras"
    deployed.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    images = _images(batch=1)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(loaded(images)),
                                  keras.ops.convert_to_numpy(deployed(images)))


def test_feature_extractor_dict_outputs():
    model = feature_extractor("efficientnet-b0", input_shape=(SIZE, SIZE, 3))
    model.set_weights(randomized_batch_norm(model))
    deployed = deploy(model)
    images = _images(batch=1)
    expected, got = model(images, training=False), deployed(images)
    assert set(got) == set(expected)
    for key in expected:
        np.testing.assert_allclose(keras.ops.convert_to_numpy(got[key]),
                                   keras.ops.convert_to_numpy(expected[key]), atol=1e-4)


@pytest.mark.parametrize("depthwise", [False, True])
def test_fold_batch_norm_matches_reference(depthwise):
    rng = np.random.default_rng(0)
    channels, multiplier = 4, 2
    if depthwise:
        layer = keras.layers.DepthwiseConv2D(3, depth_multiplier=multiplier, padding="same",
                                             use_bias=True)
        out = channels * multiplier
    else:
        layer = keras.layers.Conv2D(5, 3, padding="same", use_bias=True)
        out = 5
    norm = keras.layers.BatchNormalization(epsilon=1e-3)
    inputs = keras.Input((8, 8, channels))
    model = keras.Model(inputs, norm(layer(inputs)))
    layer.set_weights([rng.normal(size=layer.kernel.shape), rng.normal(size=out)])
    norm.set_weights([rng.uniform(0.5, 1.5, out), rng.normal(size=out),
                      rng.normal(size=out), rng.uniform(0.2, 3.0, out)])
    kernel, bias = fold_batch_norm(*layer.get_weights(), *norm.get_weights(), 1e-3,
                                   depthwise=depthwise)
    assert kernel.shape == tuple(layer.kernel.shape) and bias.shape == (out,)
    x = rng.normal(size=(2, 8, 8, channels)).astype("float32")
    deployed = deploy(model)
    assert len(deployed.layers) == 2
    np.testing.assert_allclose(keras.ops.convert_to_numpy(deployed(x)),
                               keras.ops.convert_to_numpy(model(x, training=False)), atol=1e-5)
    np.testing.assert_allclose(deployed.layers[1].get_weights()[0], kernel)


def test_conv_with_two_consumers_is_not_folded():
    inputs = keras.Input((8, 8, 3))
    conv = keras.layers.Conv2D(4, 1, use_bias=False, name="conv")(inputs)
    norm = keras.layers.BatchNormalization(name="bn")(conv)
    model = keras.Model(inputs, keras.layers.Add()([conv, norm]))
    deployed = deploy(model)
    assert "bn" in {layer.name for layer in deployed.layers}


def test_conv_that_is_also_an_output_is_not_folded():
    inputs = keras.Input((8, 8, 3))
    conv = keras.layers.Conv2D(4, 1, use_bias=False, name="conv")(inputs)
    norm = keras.layers.BatchNormalization(name="bn")(conv)
    deployed = deploy(keras.Model(inputs, [conv, norm]))
    assert "bn" in {layer.name for layer in deployed.layers}


def test_shared_conv_is_not_folded():
    inputs = [keras.Input((8, 8, 3)), keras.Input((8, 8, 3))]
    shared = keras.layers.Conv2D(4, 1, use_bias=False, name="conv")
    norm = keras.layers.BatchNormalization(name="bn")
    model = keras.Model(inputs, [norm(shared(inputs[0])), shared(inputs[1])])
    rng = np.random.default_rng(0)
    norm.set_weights([rng.uniform(0.5, 1.5, 4), rng.normal(size=4), rng.normal(size=4),
                      rng.uniform(0.5, 2.0, 4)])
    deployed = deploy(model)
    assert "bn" in {layer.name for layer in deployed.layers}
    x = [rng.normal(size=(1, 8, 8, 3)).astype("float32") for _ in inputs]
    for got, expected in zip(deployed(x), model(x, training=False)):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(got),
                                   keras.ops.convert_to_numpy(expected), atol=1e-5)


def test_folding_normalization_into_stem_is_not_exact():
    """Why deploy() keeps ImageNormalization: 'same' padding pads normalised zeros.

    Folding x * s + o into the following conv gives the same interior but wrong borders,
    because padding then adds zeros in raw-pixel space instead of the channel mean.
    """
    rng = np.random.default_rng(0)
    inputs = keras.Input((16, 16, 3))
    normalised = ImageNormalization()(inputs)
    conv = keras.layers.Conv2D(8, 3, strides=2, padding="same", use_bias=False)
    model = keras.Model(inputs, conv(normalised))
    kernel = conv.get_weights()[0]
    scale, offset = (keras.ops.convert_to_numpy(t)
                     for t in model.layers[1].scale_and_offset())
    folded = keras.layers.Conv2D(8, 3, strides=2, padding="same")
    folded_model = keras.Model(inputs, folded(inputs))
    folded.set_weights([kernel * scale[None, None, :, None],
                        np.einsum("hwio,i->o", kernel, offset)])
    x = rng.uniform(0, 255, (1, 16, 16, 3)).astype("float32")
    error = np.abs(keras.ops.convert_to_numpy(model(x)) -
                   keras.ops.convert_to_numpy(folded_model(x)))
    assert error[:, :-1, :-1].max() < 1e-4  # interior: exact
    assert error.max() > 1e-2  # bottom/right border (TF pads 0 top/left, 1 bottom/right)


def test_rejects_subclassed_models():
    class Tiny(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(ValueError, match="functional"):
        deploy(Tiny())

"""Fine-tuning: new heads, freezing with batch norm in inference mode, layer-wise lr decay,
adapted stems (keras_effnet.finetune and build_model's new_head / in_channels)."""

import math

import keras
import numpy as np
import pytest

import keras_effnet
from keras_effnet import finetune
from helpers import randomized_batch_norm


@pytest.fixture(scope="module")
def lite0_file(tmp_path_factory):
    source = keras_effnet.build_model("lite0", input_shape=(64, 64, 3))
    source.set_weights(randomized_batch_norm(source, seed=3))
    path = str(tmp_path_factory.mktemp("weights") / "lite0.weights.h5")
    source.save_weights(path)
    return source, path


def test_new_head_loads_the_backbone_and_starts_at_ln_classes(lite0_file):
    source, path = lite0_file
    model = keras_effnet.EfficientNetLite0(weights=path, input_shape=(64, 64, 3), classes=4,
                                           new_head=True, classifier_activation=None)
    for layer in source.layers:
        if layer.name != "predictions" and layer.get_weights():
            for ours, theirs in zip(model.get_layer(layer.name).get_weights(), layer.get_weights()):
                np.testing.assert_array_equal(ours, theirs)
    assert model.get_layer("predictions").units == 4
    images = np.random.default_rng(0).uniform(0, 255, (4, 64, 64, 3)).astype("float32")
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(
        np.arange(4), model(images, training=False))
    assert float(loss) == pytest.approx(math.log(4), abs=1e-5)


def test_other_classes_without_new_head_say_what_to_do(lite0_file):
    _, path = lite0_file
    with pytest.raises(ValueError, match="new_head=True"):
        keras_effnet.EfficientNetLite0(weights=path, input_shape=(64, 64, 3), classes=4)
    with pytest.raises(ValueError, match="pass new_head=True to load the backbone"):
        keras_effnet.EfficientNetLite0(weights="imagenet", classes=4)
    with pytest.raises(ValueError, match="include_top=False"):
        keras_effnet.EfficientNetLite0(weights=path, include_top=False, new_head=True)


def test_freeze_up_to_a_stage_keeps_batch_norm_in_inference_mode():
    # no stochastic depth: drop-path (like dropout) still runs in frozen layers under training
    model = keras_effnet.build_model("b0", input_shape=(32, 32, 3), classes=3,
                                     classifier_activation=None, stochastic_depth_rate=0.0)
    model.set_weights(randomized_batch_norm(model, seed=1))
    frozen = finetune.freeze(model, up_to="block5")
    assert "stem_conv" in frozen and "block5c_project_bn" in frozen
    assert "block6a_expand_conv" not in frozen and "predictions" not in frozen
    assert not model.get_layer("block5a_bn").trainable and model.get_layer("block6a_bn").trainable
    stats = model.get_layer("block2a_bn").moving_mean.numpy().copy()
    images = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    model.compile(optimizer=keras.optimizers.SGD(0.1),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    frozen_kernel = model.get_layer("block3a_project_conv").kernel.numpy().copy()
    model.fit(images, np.array([0, 1, 2, 0]), epochs=1, verbose=0)
    np.testing.assert_array_equal(model.get_layer("block2a_bn").moving_mean.numpy(), stats)
    np.testing.assert_array_equal(model.get_layer("block3a_project_conv").kernel.numpy(),
                                  frozen_kernel)
    # frozen layers compute as in inference: block5's output is the same with training=True
    probe = keras.Model(model.input, model.get_layer("block5c_add").output)
    np.testing.assert_allclose(probe(images, training=True), probe(images, training=False),
                               rtol=1e-5, atol=1e-5)
    whole = finetune.freeze(model)
    assert "top_bn" in whole and "predictions" not in whole
    assert [w.path for w in model.trainable_weights] == ["predictions/kernel", "predictions/bias"]
    with pytest.raises(ValueError, match="block9"):
        finetune.freeze(model, up_to="block9")
    finetune.unfreeze(model)
    assert all(layer.trainable for layer in model.layers)


def test_layer_decay_multipliers_and_optimizer():
    model = keras_effnet.build_model("b0", input_shape=(32, 32, 3), classes=3)
    multipliers = finetune.layer_decay_multipliers(model, decay=0.5)
    groups = finetune.depth_groups(model)
    last = max(groups.values())
    assert multipliers["predictions/kernel"] == 1.0
    assert multipliers["top_conv/kernel"] == 0.5
    assert multipliers["stem_conv/kernel"] == 0.5 ** last
    assert groups["block1a_dwconv"] == 1 and last == 16 + 2  # 16 blocks, top, classifier
    with pytest.raises(ValueError, match="decay"):
        finetune.layer_decay_multipliers(model, decay=0.0)

    a, b = keras.Variable(np.ones(2, "float32"), name="a"), keras.Variable(
        np.ones(2, "float32"), name="b")
    optimizer = finetune.scale_learning_rates(keras.optimizers.SGD(1.0), {a.path: 0.5, b.path: 0.0})
    optimizer.apply([np.ones(2, "float32"), np.ones(2, "float32")], [a, b])
    np.testing.assert_allclose(a.numpy(), [0.5, 0.5])
    np.testing.assert_allclose(b.numpy(), [1.0, 1.0])


def test_adapt_stem_kernel_as_timm():
    kernel = np.random.default_rng(0).normal(size=(3, 3, 3, 8)).astype("float32")
    np.testing.assert_allclose(finetune.adapt_stem_kernel(kernel, 1), kernel.sum(2, keepdims=True))
    four = finetune.adapt_stem_kernel(kernel, 4)
    np.testing.assert_allclose(four[:, :, :3], kernel * 0.75)
    np.testing.assert_allclose(four[:, :, 3], kernel[:, :, 0] * 0.75)
    assert finetune.adapt_stem_kernel(kernel, 3) is kernel
    with pytest.raises(ValueError, match="RGB kernel"):
        finetune.adapt_stem_kernel(kernel[:, :, :1], 2)


@pytest.mark.parametrize("channels", [1, 4])
def test_in_channels_adapts_the_pretrained_stem(lite0_file, channels):
    source, path = lite0_file
    model = keras_effnet.EfficientNetLite0(weights=path, input_shape=(64, 64, channels),
                                           in_channels=channels)
    np.testing.assert_allclose(model.get_layer("stem_conv").kernel.numpy(),
                               finetune.adapt_stem_kernel(source.get_layer("stem_conv").kernel.numpy(),
                                                          channels), rtol=1e-6)
    np.testing.assert_array_equal(model.get_layer("top_bn").moving_mean.numpy(),
                                  source.get_layer("top_bn").moving_mean.numpy())
    # a gray image as 1 channel (or RGB + a copy of R as 4) gives the RGB model's logits
    gray = np.random.default_rng(1).uniform(0, 255, (2, 64, 64, 1)).astype("float32")
    rgb = np.repeat(gray, 3, axis=-1)
    inputs = gray if channels == 1 else np.concatenate([rgb, rgb[..., :1]], axis=-1)
    # (exact because Lite's normalisation is the same for every channel)
    np.testing.assert_allclose(model(inputs), source(rgb), rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="in_channels=1"):
        keras_effnet.EfficientNetLite0(weights=path, input_shape=(64, 64, 1))

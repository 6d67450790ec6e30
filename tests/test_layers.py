import numpy as np
import keras
import pytest

from keras_effnet.layers import (IMAGENET_MEAN_RGB, IMAGENET_STDDEV_RGB, ImageNormalization,
                                 StochasticDepth)


def test_image_normalization_matches_mean_std():
    layer = ImageNormalization()
    x = np.random.default_rng(0).uniform(0, 255, (2, 4, 4, 3)).astype("float32")
    expected = (x / 255.0 - np.array(IMAGENET_MEAN_RGB)) / np.array(IMAGENET_STDDEV_RGB)
    np.testing.assert_allclose(layer(x), expected, atol=1e-5)
    assert [w.name for w in layer.weights] == ["mean", "variance", "count"]


def test_lite_normalization_is_minus_127_over_128():
    layer = ImageNormalization((127 / 255,) * 3, (128 / 255,) * 3)
    x = np.array([[[[0.0, 127.0, 255.0]]]], dtype="float32")
    np.testing.assert_allclose(layer(x), (x - 127.0) / 128.0, atol=1e-6)


def test_finalize_state_repairs_std_stored_as_variance():
    layer = ImageNormalization()
    layer.build((None, 8, 8, 3))
    layer.variance.assign(np.array(IMAGENET_STDDEV_RGB, "float32"))  # as keras.applications files
    layer.finalize_state()
    np.testing.assert_allclose(layer.variance.numpy(), np.square(IMAGENET_STDDEV_RGB), rtol=1e-6)
    layer.finalize_state()  # already a variance: left alone
    np.testing.assert_allclose(layer.variance.numpy(), np.square(IMAGENET_STDDEV_RGB), rtol=1e-6)


def test_normalization_rejects_wrong_channels():
    with pytest.raises(ValueError, match="3 channel statistics but the input has 1"):
        ImageNormalization()(np.zeros((1, 4, 4, 1), "float32"))


def test_stochastic_depth_is_identity_at_inference():
    x = np.random.default_rng(1).normal(size=(8, 3, 3, 4)).astype("float32")
    layer = StochasticDepth(0.5)
    np.testing.assert_array_equal(layer(x, training=False), x)
    np.testing.assert_array_equal(layer(x), x)


def test_stochastic_depth_drops_whole_samples_and_rescales():
    layer = StochasticDepth(0.25, seed=3)
    x = np.ones((4000, 2, 2, 3), "float32")
    y = keras.ops.convert_to_numpy(layer(x, training=True))
    per_sample = y.reshape(4000, -1)
    # Each sample is either dropped entirely or kept and scaled by 1 / (1 - rate).
    dropped = per_sample[:, 0] == 0
    np.testing.assert_allclose(per_sample[~dropped], 1 / 0.75, rtol=1e-6)
    np.testing.assert_array_equal(per_sample[dropped], 0.0)
    kept = (per_sample[:, 0] > 0).mean()
    assert abs(kept - 0.75) < 0.03          # binomial sd ~ 0.007
    assert abs(y.mean() - 1.0) < 0.05       # expectation preserved


def test_stochastic_depth_rejects_bad_rate():
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        StochasticDepth(1.0)


def test_fused_batch_norm_matches_keras_batch_norm():
    from keras_effnet.layers import BatchNormalization

    x = np.random.default_rng(2).normal(3.0, 2.0, (8, 5, 5, 6)).astype("float32")
    ours = BatchNormalization(momentum=0.9, epsilon=1e-3)
    reference = keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-3)
    ours.build(x.shape)
    reference.build(x.shape)
    gamma = np.linspace(0.5, 1.5, 6).astype("float32")
    for layer in (ours, reference):
        layer.gamma.assign(gamma)
        layer.beta.assign(-gamma)
    np.testing.assert_allclose(ours(x, training=True), reference(x, training=True), atol=1e-5)
    np.testing.assert_allclose(ours.moving_mean.numpy(), reference.moving_mean.numpy(), atol=1e-6)
    np.testing.assert_allclose(ours.moving_variance.numpy(), reference.moving_variance.numpy(),
                               atol=1e-5)
    # Inference is Keras' own code; only the float rounding of the statistics differs.
    np.testing.assert_allclose(ours(x, training=False), reference(x, training=False), atol=1e-5)
    assert not np.allclose(ours.moving_mean.numpy(), 0.0)  # statistics did update

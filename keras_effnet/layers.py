"""Keras layers that hold state or behave differently in training.

All three are registered with Keras, so models that use them save to ``.keras`` and load back
with ``safe_mode=True`` and no ``custom_objects`` once ``keras_effnet`` is imported. They run on
every Keras backend (TensorFlow, JAX, PyTorch); only ``BatchNormalization``'s fused training path
is TensorFlow's, and it imports TensorFlow only when that backend runs it.
"""

from __future__ import annotations

import numpy as np
import keras
from keras import ops

PACKAGE = "keras_effnet"

# ImageNet statistics of RGB images scaled to [0, 1].
IMAGENET_MEAN_RGB = (0.485, 0.456, 0.406)
IMAGENET_STDDEV_RGB = (0.229, 0.224, 0.225)

# Input normalisations, as (mean, stddev) of images scaled to [0, 1]:
# output = (x / 255 - mean) / stddev for inputs x in [0, 255].
NORMALIZATIONS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "imagenet": (IMAGENET_MEAN_RGB, IMAGENET_STDDEV_RGB),
    # EfficientNet-Lite: (x - 127) / 128 (tensorflow/tpu efficientnet_lite_builder.py).
    "lite": ((127.0 / 255,) * 3, (128.0 / 255,) * 3),
    # Inception-style [-1, 1], used by the AdvProp checkpoints: x / 127.5 - 1.
    "inception": ((0.5,) * 3, (0.5,) * 3),
}


def channel_statistics(values: tuple[float, ...], channels: int) -> tuple[float, ...]:
    """RGB normalisation statistics for ``channels`` inputs, matching how
    ``keras_effnet.finetune.adapt_stem_kernel`` adapts the stem (timm's ``adapt_input_conv``):
    their mean for one channel, the RGB values repeated cyclically for more."""
    values = tuple(float(v) for v in values)
    if channels == len(values):
        return values
    if channels == 1:
        return (sum(values) / len(values),)
    return tuple(values[i % len(values)] for i in range(channels))


@keras.saving.register_keras_serializable(package=PACKAGE)
class ImageNormalization(keras.layers.Layer):
    """Maps RGB images in [0, 255] to normalised inputs in one fused multiply-add.

    ``output = x * (1 / (255 * sqrt(variance))) - mean / sqrt(variance)``, per channel.

    The weights ``mean`` (3,), ``variance`` (3,) and ``count`` () have the names, shapes and
    order of ``keras.layers.Normalization``'s, so weight files of keras.applications
    EfficientNets (which start with such a layer) load by order. Those files store the
    standard deviation where the variance belongs (tensorflow/tensorflow#49930);
    ``finalize_state`` (which Keras calls after loading legacy ``.h5`` weights) recognises the
    ImageNet standard deviation in the variance slot and squares it.

    The builder gives this layer a float32 policy under mixed precision, so raw pixel values
    are never rounded to half precision; the next convolution casts its output.
    """

    def __init__(self, mean: tuple[float, ...] = IMAGENET_MEAN_RGB,
                 stddev: tuple[float, ...] = IMAGENET_STDDEV_RGB, **kwargs):
        super().__init__(**kwargs)
        if len(mean) != len(stddev):
            raise ValueError(f"mean and stddev need one value per channel, got {mean}, {stddev}")
        if any(s <= 0 for s in stddev):
            raise ValueError(f"stddev values must be positive, got {stddev}")
        self.initial_mean = tuple(float(m) for m in mean)
        self.initial_stddev = tuple(float(s) for s in stddev)

    def build(self, input_shape):
        channels = input_shape[-1]
        if channels != len(self.initial_mean):
            raise ValueError(
                f"ImageNormalization has {len(self.initial_mean)} channel statistics but the "
                f"input has {channels} channels; feed RGB images [batch, height, width, 3]")
        self.mean = self.add_weight(
            name="mean", shape=(channels,), trainable=False, dtype="float32",
            initializer=keras.initializers.Constant(self.initial_mean))
        self.variance = self.add_weight(
            name="variance", shape=(channels,), trainable=False, dtype="float32",
            initializer=keras.initializers.Constant(np.square(self.initial_stddev)))
        self.count = self.add_weight(
            name="count", shape=(), trainable=False, dtype="int64", initializer="zeros")

    def finalize_state(self) -> None:
        """Repair the std-in-variance quirk of keras.applications weight files."""
        variance = np.asarray(self.variance.numpy(), dtype=np.float64)
        if variance.shape == (3,) and np.allclose(variance, IMAGENET_STDDEV_RGB, atol=1e-4):
            self.variance.assign(np.square(variance).astype("float32"))

    def scale_and_offset(self):
        """Per-channel (scale, offset) with ``output = x * scale + offset``."""
        inverse_std = ops.rsqrt(self.variance)
        return inverse_std / 255.0, -self.mean * inverse_std

    def call(self, inputs):
        scale, offset = self.scale_and_offset()
        outputs = ops.cast(inputs, "float32") * scale + offset
        return ops.cast(outputs, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(mean=list(self.initial_mean), stddev=list(self.initial_stddev))
        return config


@keras.saving.register_keras_serializable(package=PACKAGE)
class StochasticDepth(keras.layers.Layer):
    """Drops a residual branch for whole samples during training ("drop connect").

    In training each sample's branch is kept with probability ``1 - rate`` and scaled by
    ``1 / (1 - rate)``; at inference the layer is the identity (Huang et al. 2016; the
    EfficientNet code's ``drop_connect``). Input: [batch, ...]; output: same shape.
    """

    def __init__(self, rate: float, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"stochastic depth rate must be in [0, 1), got {rate}")
        self.rate = float(rate)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs, training=None):
        if not training or self.rate == 0.0:
            return inputs
        keep = 1.0 - self.rate
        shape = (ops.shape(inputs)[0],) + (1,) * (len(inputs.shape) - 1)
        noise = keras.random.uniform(shape, seed=self.seed_generator, dtype=inputs.dtype)
        mask = ops.floor(noise + ops.cast(keep, inputs.dtype))
        return inputs * (mask / ops.cast(keep, inputs.dtype))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(rate=self.rate, seed=self.seed)
        return config


@keras.saving.register_keras_serializable(package=PACKAGE)
class BatchNormalization(keras.layers.BatchNormalization):
    """``keras.layers.BatchNormalization`` that runs TensorFlow's fused kernel.

    Keras 3 computes batch norm with separate ops; on the TensorFlow backend
    ``FusedBatchNormV3`` gives the same numbers (within float rounding: 1.2e-7 relative at
    inference) and makes a B0 training step about 1.4x faster on CPU; at inference, with the
    moving statistics, TensorFlow fuses it into the convolution before it (B0 at batch 32 about
    1.3x faster; docs/performance.md, "TensorFlow path"). Weights and names are unchanged;
    other backends, masks, synchronised or renormalised BN use the Keras path.
    """

    def _can_fuse(self, inputs, mask) -> bool:
        return bool(mask is None and keras.backend.backend() == "tensorflow"
                    and len(inputs.shape) == 4 and self.axis in (-1, 3)
                    and not self.synchronized and not getattr(self, "renorm", False)
                    and self.scale and self.center)

    def call(self, inputs, training=None, mask=None):
        if not self._can_fuse(inputs, mask):
            return super().call(inputs, training=training, mask=mask)
        import tensorflow as tf  # noqa: PLC0415 (TensorFlow backend only)

        if not (training and self.trainable):  # Keras' rule: frozen BN runs in inference mode
            x = inputs if inputs.dtype == tf.float32 else tf.cast(inputs, tf.float32)
            y, _, _ = tf.compat.v1.nn.fused_batch_norm(
                x, self.gamma, self.beta, mean=self.moving_mean, variance=self.moving_variance,
                epsilon=self.epsilon, is_training=False)
            return y if y.dtype == self.compute_dtype else tf.cast(y, self.compute_dtype)
        x = tf.cast(inputs, tf.float32)
        y, mean, variance = tf.compat.v1.nn.fused_batch_norm(
            x, self.gamma, self.beta, epsilon=self.epsilon, is_training=True)
        # The kernel returns the unbiased batch variance; Keras tracks the biased one.
        count = tf.cast(tf.size(x) // tf.shape(x)[-1], tf.float32)
        variance = variance * (count - 1.0) / tf.maximum(count, 1.0)
        momentum = self.momentum
        self.moving_mean.assign(self.moving_mean * momentum + mean * (1.0 - momentum))
        self.moving_variance.assign(
            self.moving_variance * momentum + variance * (1.0 - momentum))
        return tf.cast(y, self.compute_dtype)

"""AutoAugment, RandAugment, MixUp and CutMix in TensorFlow 2 ops.

Every image op takes and returns a uint8 tensor [H, W, 3] and runs inside
`tf.data.Dataset.map` (graph mode, no Python side effects, no tfa / tf.contrib).

Two op semantics (``SEMANTICS``), chosen per call with ``semantics=``:

- ``"original"`` (the default): what tensorflow/tpu
  ``models/official/efficientnet/autoaugment.py`` computed when it trained the published
  checkpoints. Posterize shifts a uint8 right and left by ``8 - bits`` (TensorFlow clamps a
  shift of 8 to 7, so 0 bits is ``x & 128``); Solarize compares against the threshold
  converted to uint8 (256 wraps to 0: every pixel is inverted); Contrast blends with
  ``min(num_pixels / 256, 255)`` truncated; Sharpness truncates the smoothed image; Color
  uses ``tf.image.rgb_to_grayscale``; AutoContrast scales in float32 and truncates.
- ``"pil"``: exact equivalents of PIL's ImageOps / ImageEnhance (the library the policies
  were searched with): 0-bit Posterize is black, Solarize at 256 is the identity, Contrast
  blends with the rounded mean of PIL's integer luma, Sharpness rounds.

docs/fidelity.md lists every difference with its measured size.

Randomness is stateless: every random function takes a `seed` (int32/int64
tensor of shape [2]); pass None to draw one from the global generator.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import tensorflow as tf

# The ops have no tensor-dependent Python control flow; skipping AutoGraph's conversion
# of every call makes tracing a policy (50 ops in 25 branches) several times faster.
_no_autograph = tf.autograph.experimental.do_not_convert

_MAX_LEVEL = 10.0
FILL_VALUE = 128  # grey fill for pixels uncovered by geometric ops (reference: 128)
SEMANTICS = ("original", "pil")
DEFAULT_SEMANTICS = "original"


def check_semantics(semantics: str) -> str:
    """``semantics`` if it is one of ``SEMANTICS``; a ValueError naming it otherwise."""
    if semantics not in SEMANTICS:
        raise ValueError(f"semantics must be one of {', '.join(SEMANTICS)}, got {semantics!r}; "
                         "'original' reproduces tensorflow/tpu autoaugment.py, 'pil' follows PIL.")
    return semantics


# ---------------------------------------------------------------------------
# seeds


@_no_autograph
def _as_seed(seed) -> tf.Tensor:
    """A stateless-op seed (int64 [2]); None draws one from the global RNG."""
    if seed is None:
        return tf.random.uniform([2], maxval=2**31 - 1, dtype=tf.int64)
    if isinstance(seed, int):
        return tf.constant([seed, 0], tf.int64)
    return tf.cast(seed, tf.int64)


@_no_autograph
def _split(seed, num: int) -> list[tf.Tensor]:
    seeds = tf.random.experimental.stateless_split(_as_seed(seed), num=num)
    return [seeds[i] for i in range(num)]


@_no_autograph
def _uniform(seed, minval=0.0, maxval=1.0) -> tf.Tensor:
    return tf.random.stateless_uniform([], seed=seed, minval=minval, maxval=maxval)


@_no_autograph
def _clip_0_255(values: tf.Tensor) -> tf.Tensor:
    """``tf.clip_by_value(values, 0, 255)`` in one pass: the ClipByValue kernel (min, then max)
    instead of Minimum + Maximum, the same values; ~0.05 ms less per 224 px image."""
    zero, top = tf.constant(0, values.dtype), tf.constant(255, values.dtype)
    return tf.raw_ops.ClipByValue(t=values, clip_value_min=zero, clip_value_max=top)


@_no_autograph
def to_uint8(image: tf.Tensor, semantics: str = DEFAULT_SEMANTICS) -> tf.Tensor:
    """Float pixels -> uint8 for the ops: clipped, then truncated as the original's ``tf.cast``
    ("original") or rounded ("pil", as a PIL pipeline's uint8 resize)."""
    image = _clip_0_255(tf.cast(image, tf.float32))
    if check_semantics(semantics) == "pil":
        image = tf.round(image)
    return tf.cast(image, tf.uint8)


# ---------------------------------------------------------------------------
# pixel ops


@_no_autograph
def _lut_indices(image: tf.Tensor) -> tf.Tensor:
    """Flat int32 indices into a per-channel table [3 * 256]: value + 256 * channel.

    The channel offsets are tiled to full length rather than broadcast: TF's broadcasting
    add over the last axis is ~8x slower than a plain elementwise add (0.9 vs 0.1 ms at 224 px).
    """
    offsets = tf.tile(tf.constant([0, 256, 512], tf.int32), [tf.size(image) // 3])
    return tf.cast(tf.reshape(image, [-1]), tf.int32) + offsets


@_no_autograph
def _apply_lut(image: tf.Tensor, lut: tf.Tensor, indices: tf.Tensor | None = None) -> tf.Tensor:
    """Maps uint8 values through a lookup table: lut [256] or per channel [3, 256].

    `indices`: `_lut_indices(image)` when the caller already has them (per-channel tables).
    """
    lut = tf.cast(tf.clip_by_value(lut, 0, 255), tf.uint8)
    if lut.shape.rank == 2:
        indices = _lut_indices(image) if indices is None else indices
        lut = tf.reshape(lut, [-1])
    else:
        indices = tf.reshape(tf.cast(image, tf.int32), [-1])
    # gather_nd, not gather: for one-element slices TF's GatherNd copies in a loop where
    # GatherV2 calls memcpy per element; 0.6 instead of 0.9 ms for a 224 px image, same values.
    return tf.reshape(tf.gather_nd(lut, indices[:, None]), tf.shape(image))


@_no_autograph
def identity(image: tf.Tensor) -> tf.Tensor:
    return tf.convert_to_tensor(image)


@_no_autograph
def invert(image: tf.Tensor) -> tf.Tensor:
    """PIL ImageOps.invert."""
    return 255 - tf.convert_to_tensor(image)


@_no_autograph
def posterize(image: tf.Tensor, bits, semantics: str = DEFAULT_SEMANTICS) -> tf.Tensor:
    """Keep the `bits` most significant bits of every value.

    "original": ``left_shift(right_shift(x, 8 - bits), 8 - bits)`` on uint8, the shift
    converted to uint8 as TensorFlow converts the original's Python int (wrapping: -1 is 255)
    and clamped to 7 by TensorFlow's shift kernels. So 0 and 1 bits give ``x & 128`` (never
    black), 8 bits the image, and 9 or more bits (RandAugment M >= 22.5) ``x & 128`` again.
    "pil": PIL ImageOps.posterize, mask ``256 - 2 ** (8 - bits)``: 0 bits is black.
    """
    image = tf.convert_to_tensor(image)
    if check_semantics(semantics) == "original":
        shift = tf.cast(8 - tf.cast(bits, tf.int32), tf.uint8)  # wraps like the uint8 conversion
        return tf.bitwise.left_shift(tf.bitwise.right_shift(image, shift), shift)
    shift = 8 - tf.cast(bits, tf.int32)
    mask = tf.cast(256 - tf.bitwise.left_shift(1, shift), tf.uint8)
    return tf.bitwise.bitwise_and(image, mask)


# Pixel selections below are bit arithmetic on uint8 (x ^ 255 == 255 - x; a 0/255 mask picks
# between two images), not tf.where: TF's Select on uint8 images costs ~1.2 ms at 224 px,
# the arithmetic ~0.2 ms, with identical results.


@_no_autograph
def _mask(condition: tf.Tensor, enabled=True) -> tf.Tensor:
    """uint8 255 where `condition` (and the scalar `enabled`) holds, else 0."""
    return tf.cast(condition, tf.uint8) * tf.where(enabled, tf.constant(255, tf.uint8),
                                                     tf.constant(0, tf.uint8))


@_no_autograph
def _select(mask: tf.Tensor, if_set: tf.Tensor, otherwise: tf.Tensor) -> tf.Tensor:
    """`if_set` where the uint8 `mask` is 255, `otherwise` where it is 0."""
    return tf.bitwise.bitwise_xor(otherwise, tf.bitwise.bitwise_and(
        mask, tf.bitwise.bitwise_xor(otherwise, if_set)))


@_no_autograph
def solarize(image: tf.Tensor, threshold=128, semantics: str = DEFAULT_SEMANTICS) -> tf.Tensor:
    """Invert values >= threshold.

    "original": ``where(image < threshold, image, 255 - image)`` with the integer threshold
    converted to uint8, which wraps modulo 256 (TensorFlow does so today, eager and traced):
    threshold 256 (level 10) inverts every pixel, 300 acts as 44.
    "pil": PIL ImageOps.solarize, thresholds clamped to 0..256: 256 is the identity.
    """
    image = tf.convert_to_tensor(image)
    threshold = tf.cast(threshold, tf.int32)
    if check_semantics(semantics) == "original":
        wrapped = tf.cast(threshold, tf.uint8)  # int32 -> uint8 keeps the low 8 bits
        return tf.bitwise.bitwise_xor(image, _mask(image >= wrapped))
    clipped = tf.cast(tf.clip_by_value(threshold, 0, 255), tf.uint8)
    return tf.bitwise.bitwise_xor(image, _mask(image >= clipped, threshold <= 255))


@_no_autograph
def solarize_add(image: tf.Tensor, addition=0, threshold=128) -> tf.Tensor:
    """Add `addition` (clipped to 0..255) to values below `threshold`."""
    image = tf.convert_to_tensor(image)
    addition = tf.cast(addition, tf.int32)
    threshold = tf.cast(threshold, tf.int32)
    # Saturating uint8 add: min(max(x, n), 255 - p) + p - n with p = max(a, 0), n = max(-a, 0).
    plus = tf.cast(tf.clip_by_value(addition, 0, 255), tf.uint8)
    minus = tf.cast(tf.clip_by_value(-addition, 0, 255), tf.uint8)
    added = tf.minimum(tf.maximum(image, minus), 255 - plus) + plus - minus
    below = image <= tf.cast(tf.clip_by_value(threshold - 1, 0, 255), tf.uint8)  # x < threshold
    return _select(_mask(below, threshold >= 1), added, image)


@_no_autograph
def autocontrast(image: tf.Tensor, semantics: str = DEFAULT_SEMANTICS) -> tf.Tensor:
    """Stretch each channel to 0..255 (PIL ImageOps.autocontrast, cutoff 0).

    "original" computes ``x * scale + offset`` in float32 and truncates; "pil" in float64 as
    PIL's Python lookup table does. Constant channels are left as they are.
    """
    image = tf.convert_to_tensor(image)
    pixels = tf.reshape(image, [-1, 3])
    dtype = tf.float32 if check_semantics(semantics) == "original" else tf.float64
    lo = tf.cast(tf.reduce_min(pixels, axis=0), dtype)  # [3]
    hi = tf.cast(tf.reduce_max(pixels, axis=0), dtype)
    scale = tf.where(hi > lo, 255.0 / tf.maximum(hi - lo, 1.0), 1.0)
    offset = tf.where(hi > lo, -lo * scale, 0.0)
    levels = tf.range(256, dtype=dtype)
    # Elementwise as the original's per-pixel expression, so every value rounds the same.
    lut = tf.floor(levels[None, :] * scale[:, None] + offset[:, None])  # [3, 256]
    return _apply_lut(image, tf.cast(lut, tf.int32))


@_no_autograph
def _channel_histograms(indices: tf.Tensor) -> tf.Tensor:
    """Histograms of the three channels, int32 [3, 256], from `_lut_indices(image)`."""
    counts = tf.math.bincount(indices, minlength=768, maxlength=768)
    return tf.reshape(counts, [3, 256])


@_no_autograph
def equalize(image: tf.Tensor) -> tf.Tensor:
    """PIL ImageOps.equalize, per channel."""
    image = tf.convert_to_tensor(image)
    indices = _lut_indices(image)  # shared by the histogram and the lookup
    hist = _channel_histograms(indices)  # [3, 256]
    # The count in the highest non-empty bin is left out of the step (as PIL does).
    nonzero = hist > 0
    last_index = 255 - tf.argmax(tf.reverse(tf.cast(nonzero, tf.int32), [1]), axis=1, output_type=tf.int32)
    last_count = tf.gather(hist, last_index, batch_dims=1)
    step = (tf.reduce_sum(hist, axis=1) - last_count) // 255  # [3]
    safe_step = tf.maximum(step, 1)[:, None]
    exclusive_cumsum = tf.cumsum(hist, axis=1, exclusive=True)
    lut = (exclusive_cumsum + safe_step // 2) // safe_step
    lut = tf.where(step[:, None] > 0, lut, tf.range(256)[None, :])
    return _apply_lut(image, lut, indices)


# ---------------------------------------------------------------------------
# enhance ops: blend with a degenerate image (PIL ImageEnhance)


@_no_autograph
def blend(image1: tf.Tensor, image2: tf.Tensor, factor) -> tf.Tensor:
    """image1 + factor * (image2 - image1), truncated to uint8 (PIL Image.blend)."""
    image1 = tf.cast(image1, tf.float32)
    image2 = tf.cast(image2, tf.float32)
    factor = tf.cast(factor, tf.float32)
    mixed = image1 + factor * (image2 - image1)
    return tf.cast(_clip_0_255(mixed), tf.uint8)


@_no_autograph
def _grayscale(image: tf.Tensor) -> tf.Tensor:
    """PIL's convert("L") in its fixed-point form (ITU-R 601-2 luma), int32 [H, W, 1]."""
    rgb = tf.cast(image, tf.int32)
    luma = rgb[..., 0] * 19595 + rgb[..., 1] * 38470 + rgb[..., 2] * 7471 + 0x8000
    return tf.bitwise.right_shift(luma, 16)[..., None]


@_no_autograph
def color(image: tf.Tensor, factor, semantics: str = DEFAULT_SEMANTICS) -> tf.Tensor:
    """Saturation (PIL ImageEnhance.Color); factor 0 is grayscale, 1 the image.

    The grey image: ``tf.image.rgb_to_grayscale`` ("original") or PIL's integer luma ("pil").
    """
    image = tf.convert_to_tensor(image)
    if check_semantics(semantics) == "original":
        gray = tf.image.rgb_to_grayscale(image)
    else:
        gray = _grayscale(image)
    return blend(tf.tile(gray, [1, 1, 3]), image, factor)


@_no_autograph
def contrast(image: tf.Tensor, factor, semantics: str = DEFAULT_SEMANTICS) -> tf.Tensor:
    """Blend with a uniform grey image (PIL ImageEnhance.Contrast).

    "original": the grey level is the original's histogram "mean" ``num_pixels / 256``
    clipped to 255 and truncated (196 at 224 px, 255 from 256 x 256 on: B2..B7 sizes).
    "pil": the rounded mean of PIL's integer luma.
    """
    image = tf.convert_to_tensor(image)
    if check_semantics(semantics) == "original":
        num_pixels = tf.cast(tf.size(image) // 3, tf.float32)
        level = tf.cast(tf.clip_by_value(num_pixels / 256.0, 0.0, 255.0), tf.uint8)
        return blend(tf.cast(level, tf.float32), image, factor)  # a scalar degenerate image
    mean = tf.floor(tf.reduce_mean(tf.cast(_grayscale(image), tf.float64)) + 0.5)
    return blend(tf.cast(mean, tf.float32), image, factor)


@_no_autograph
def brightness(image: tf.Tensor, factor) -> tf.Tensor:
    """PIL ImageEnhance.Brightness: blend with black."""
    # blend(0, x, f) = 0 + f * (x - 0) = f * x exactly in float32.
    mixed = tf.cast(factor, tf.float32) * tf.cast(image, tf.float32)
    return tf.cast(_clip_0_255(mixed), tf.uint8)


@_no_autograph
def sharpness(image: tf.Tensor, factor, semantics: str = DEFAULT_SEMANTICS) -> tf.Tensor:
    """Blend with the SMOOTH-filtered image, border kept (PIL ImageEnhance.Sharpness).

    The filtered float image is truncated to uint8 ("original", as its ``tf.cast``) or
    rounded ("pil", as PIL's filter).
    """
    image = tf.convert_to_tensor(image)
    check_semantics(semantics)
    kernel = tf.constant([[1.0, 1.0, 1.0], [1.0, 5.0, 1.0], [1.0, 1.0, 1.0]]) / 13.0
    kernel = tf.tile(kernel[:, :, None, None], [1, 1, 3, 1])
    smooth = tf.nn.depthwise_conv2d(
        tf.cast(image, tf.float32)[None], kernel, strides=[1, 1, 1, 1], padding="VALID"
    )[0]
    if semantics == "pil":
        smooth = tf.round(smooth)
    smooth = tf.cast(_clip_0_255(smooth), tf.uint8)
    # PIL leaves the one-pixel border unfiltered: there the degenerate image is the image
    # itself and the blend is the identity, so only the interior is blended.
    inside = blend(smooth, image[1:-1, 1:-1], factor)
    middle = tf.concat([image[1:-1, :1], inside, image[1:-1, -1:]], axis=1)
    return tf.concat([image[:1], middle, image[-1:]], axis=0)


# ---------------------------------------------------------------------------
# geometric ops (nearest neighbour, uncovered pixels filled with `replace`)


@_no_autograph
def _transform(image: tf.Tensor, matrix: Sequence, replace=FILL_VALUE) -> tf.Tensor:
    """Projective transform; `matrix` maps output (x, y) to input coordinates.

    `matrix` is [a0, a1, a2, b0, b1, b2, c0, c1] as in tf.raw_ops.ImageProjectiveTransformV3.
    The kernel computes the source coordinates once per channel; here it runs once, on a
    one-channel int32 image of pixel numbers (1-based; 0 = uncovered), and the pixels are
    then gathered with all channels at once: ~0.3-0.6 ms instead of ~1.5 ms at 224 px. The
    kernel's own arithmetic and rounding pick the source pixel, so results are bit-identical.
    (Re-implementing the coordinate arithmetic in TF ops is not: Grappler may reassociate
    it in graph mode and move pixels on rounding ties.)
    """
    image = tf.convert_to_tensor(image)
    shape = tf.shape(image)
    transforms = tf.reshape(tf.cast(tf.stack(matrix), tf.float32), [1, 8])
    pixel_number = tf.reshape(tf.range(1, shape[0] * shape[1] + 1), [1, shape[0], shape[1], 1])
    source = tf.raw_ops.ImageProjectiveTransformV3(
        images=pixel_number,
        transforms=transforms,
        output_shape=shape[:2],
        fill_value=0.0,
        interpolation="NEAREST",
        fill_mode="CONSTANT",
    )
    pixels = tf.concat([tf.fill([1, shape[2]], tf.cast(replace, image.dtype)),  # number 0: fill
                        tf.reshape(image, [-1, shape[2]])], axis=0)
    return tf.reshape(tf.gather_nd(pixels, tf.reshape(source, [-1, 1])), shape)  # see _apply_lut


@_no_autograph
def rotate(image: tf.Tensor, degrees, replace=FILL_VALUE) -> tf.Tensor:
    """Rotate counter-clockwise by `degrees` about the centre (PIL Image.rotate)."""
    image = tf.convert_to_tensor(image)
    radians = tf.cast(degrees, tf.float32) * (math.pi / 180.0)
    height = tf.cast(tf.shape(image)[0], tf.float32)
    width = tf.cast(tf.shape(image)[1], tf.float32)
    cos, sin = tf.cos(radians), tf.sin(radians)
    x_offset = ((width - 1) - (cos * (width - 1) - sin * (height - 1))) / 2.0
    y_offset = ((height - 1) - (sin * (width - 1) + cos * (height - 1))) / 2.0
    return _transform(image, [cos, -sin, x_offset, sin, cos, y_offset, 0.0, 0.0], replace)


@_no_autograph
def shear_x(image: tf.Tensor, level, replace=FILL_VALUE) -> tf.Tensor:
    """Output (x, y) takes input (x + level * y, y) (PIL AFFINE (1, level, 0, 0, 1, 0))."""
    level = tf.cast(level, tf.float32)
    return _transform(image, [1.0, level, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0], replace)


@_no_autograph
def shear_y(image: tf.Tensor, level, replace=FILL_VALUE) -> tf.Tensor:
    """Output (x, y) takes input (x, level * x + y) (PIL AFFINE (1, 0, 0, level, 1, 0))."""
    level = tf.cast(level, tf.float32)
    return _transform(image, [1.0, 0.0, 0.0, level, 1.0, 0.0, 0.0, 0.0], replace)


@_no_autograph
def _translate(image: tf.Tensor, pixels: tf.Tensor, axis: int, replace) -> tf.Tensor:
    """Output index i takes input index i + pixels along `axis` (0: y, 1: x), fill elsewhere.

    An integral shift under NEAREST moves whole pixels: the kernel's ``round(i + pixels)`` is
    exact, so a crop and a pad give the same pixels (one thread, 224 px: 0.07 ms along y,
    0.18 ms along x, instead of ~0.7 ms).
    Other shifts (fractional, non-finite, beyond float32's integers) take the kernel.
    """
    image = tf.convert_to_tensor(image)
    size = tf.shape(image)[axis]
    integral = (tf.round(pixels) == pixels) & (tf.abs(pixels) < 2.0**24)

    def crop_and_pad():
        shift = tf.cast(tf.clip_by_value(pixels, -tf.cast(size, tf.float32), tf.cast(size, tf.float32)),
                        tf.int32)
        begin, end = tf.maximum(shift, 0), size + tf.minimum(shift, 0)
        kept = image[begin:end] if axis == 0 else image[:, begin:end]
        pad = tf.stack([tf.maximum(-shift, 0), tf.maximum(shift, 0)])
        paddings = tf.stack([pad, [0, 0], [0, 0]] if axis == 0 else [[0, 0], pad, [0, 0]])
        return tf.pad(kept, paddings, constant_values=tf.cast(replace, image.dtype))

    def kernel():
        offsets = [pixels, 0.0] if axis == 1 else [0.0, pixels]
        return _transform(image, [1.0, 0.0, offsets[0], 0.0, 1.0, offsets[1], 0.0, 0.0], replace)

    return tf.ensure_shape(tf.cond(integral, crop_and_pad, kernel), image.shape)


@_no_autograph
def translate_x(image: tf.Tensor, pixels, replace=FILL_VALUE) -> tf.Tensor:
    """Output (x, y) takes input (x + pixels, y): content moves left for pixels > 0."""
    return _translate(image, tf.cast(pixels, tf.float32), 1, replace)


@_no_autograph
def translate_y(image: tf.Tensor, pixels, replace=FILL_VALUE) -> tf.Tensor:
    """Output (x, y) takes input (x, y + pixels): content moves up for pixels > 0."""
    return _translate(image, tf.cast(pixels, tf.float32), 0, replace)


@_no_autograph
def cutout_at(image: tf.Tensor, center_y, center_x, pad_size, replace=FILL_VALUE) -> tf.Tensor:
    """Fill the square [cy - pad, cy + pad) x [cx - pad, cx + pad) (clipped) with `replace`."""
    image = tf.convert_to_tensor(image)
    shape = tf.shape(image)
    center_y, center_x, pad_size = (tf.cast(v, tf.int32) for v in (center_y, center_x, pad_size))
    top = tf.clip_by_value(center_y - pad_size, 0, shape[0])
    left = tf.clip_by_value(center_x - pad_size, 0, shape[1])
    bottom = tf.clip_by_value(center_y + pad_size, top, shape[0])
    right = tf.clip_by_value(center_x + pad_size, left, shape[1])
    fill = tf.fill([bottom - top, right - left, shape[2]], tf.cast(replace, image.dtype))
    # Writes the square in place of a full-image select (several times cheaper).
    return tf.raw_ops.TensorStridedSliceUpdate(
        input=image, begin=tf.stack([top, left, 0]), end=tf.stack([bottom, right, shape[2]]),
        strides=[1, 1, 1], value=fill)


@_no_autograph
def cutout(image: tf.Tensor, pad_size, replace=FILL_VALUE, seed=None) -> tf.Tensor:
    """Cutout (arXiv:1708.04552): a 2*pad_size square at a uniformly random centre."""
    image = tf.convert_to_tensor(image)
    seed_y, seed_x = _split(seed, 2)
    shape = tf.shape(image)
    cy = tf.random.stateless_uniform([], seed_y, maxval=shape[0], dtype=tf.int32)
    cx = tf.random.stateless_uniform([], seed_x, maxval=shape[1], dtype=tf.int32)
    return cutout_at(image, cy, cx, tf.cast(pad_size, tf.int32), replace)


# ---------------------------------------------------------------------------
# levels -> arguments (reference: level_to_arg)
#
# Table ops take `rand`, a list of 3 scalar uniform draws in [0, 1): rand[0] picks the
# sign of signed magnitudes (rotate, shear, translate: negated with probability 0.5,
# the reference's _randomly_negate_tensor), rand[1:] place the cutout. Drawing all
# random numbers of a policy at once keeps its graph small and fast to trace.


@_no_autograph
def _signed(value, rand) -> tf.Tensor:
    value = tf.cast(value, tf.float32)
    return tf.where(rand[0] < 0.5, -value, value)


def _enhance_factor(level: float) -> float:
    return (level / _MAX_LEVEL) * 1.8 + 0.1


@_no_autograph
def _cutout_random(image, pad_size, replace, rand):
    shape = tf.shape(image)
    cy = tf.cast(rand[1] * tf.cast(shape[0], tf.float32), tf.int32)
    cx = tf.cast(rand[2] * tf.cast(shape[1], tf.float32), tf.int32)
    return cutout_at(image, cy, cx, pad_size, replace)


def _semantics(hp) -> str:
    return hp.get("semantics", DEFAULT_SEMANTICS)


def _op_table() -> dict[str, Callable]:
    def geometric(fn, scale_key):
        def apply(image, level, rand, hp):
            scale = hp[scale_key] if isinstance(scale_key, str) else scale_key
            return fn(image, _signed(level / _MAX_LEVEL * scale, rand), hp["replace"])
        return apply

    return {
        "Identity": lambda image, level, rand, hp: identity(image),
        "AutoContrast": lambda image, level, rand, hp: autocontrast(image, _semantics(hp)),
        "Equalize": lambda image, level, rand, hp: equalize(image),
        "Invert": lambda image, level, rand, hp: invert(image),
        "Rotate": geometric(rotate, 30.0),
        "Posterize": lambda image, level, rand, hp: posterize(
            image, int(level / _MAX_LEVEL * 4), _semantics(hp)),
        # The AutoAugment paper's ImageNet policy maps levels to 4..8 bits.
        "PosterizeOriginal": lambda image, level, rand, hp: posterize(
            image, 4 + int(level / _MAX_LEVEL * 4), _semantics(hp)),
        "Solarize": lambda image, level, rand, hp: solarize(
            image, int(level / _MAX_LEVEL * 256), _semantics(hp)),
        "SolarizeAdd": lambda image, level, rand, hp: solarize_add(image, int(level / _MAX_LEVEL * 110)),
        "Color": lambda image, level, rand, hp: color(image, _enhance_factor(level), _semantics(hp)),
        "Contrast": lambda image, level, rand, hp: contrast(
            image, _enhance_factor(level), _semantics(hp)),
        "Brightness": lambda image, level, rand, hp: brightness(image, _enhance_factor(level)),
        "Sharpness": lambda image, level, rand, hp: sharpness(
            image, _enhance_factor(level), _semantics(hp)),
        "ShearX": geometric(shear_x, 0.3),
        "ShearY": geometric(shear_y, 0.3),
        "TranslateX": geometric(translate_x, "translate_const"),
        "TranslateY": geometric(translate_y, "translate_const"),
        "Cutout": lambda image, level, rand, hp: _cutout_random(
            image, int(level / _MAX_LEVEL * hp["cutout_const"]), hp["replace"], rand),
    }


OPS = {name: _no_autograph(fn) for name, fn in _op_table().items()}
"""Name -> fn(image_uint8, level (0..10; RandAugment may exceed 10), rand (3 scalars), hparams).

The level -> argument mapping is the original's ``level_to_arg``; ``hparams["semantics"]``
(default "original") selects the op semantics.
"""

# ---------------------------------------------------------------------------
# policies: lists of sub-policies, each a list of (op name, probability, level)

POLICIES: dict[str, list[list[tuple[str, float, int]]]] = {
    # EfficientNet's AutoAugment policy (tensorflow/tpu efficientnet/autoaugment.py policy_v0).
    "v0": [
        [("Equalize", 0.8, 1), ("ShearY", 0.8, 4)],
        [("Color", 0.4, 9), ("Equalize", 0.6, 3)],
        [("Color", 0.4, 1), ("Rotate", 0.6, 8)],
        [("Solarize", 0.8, 3), ("Equalize", 0.4, 7)],
        [("Solarize", 0.4, 2), ("Solarize", 0.6, 2)],
        [("Color", 0.2, 0), ("Equalize", 0.8, 8)],
        [("Equalize", 0.4, 8), ("SolarizeAdd", 0.8, 3)],
        [("ShearX", 0.2, 9), ("Rotate", 0.6, 8)],
        [("Color", 0.6, 1), ("Equalize", 1.0, 2)],
        [("Invert", 0.4, 9), ("Rotate", 0.6, 0)],
        [("Equalize", 1.0, 9), ("ShearY", 0.6, 3)],
        [("Color", 0.4, 7), ("Equalize", 0.6, 0)],
        [("Posterize", 0.4, 6), ("AutoContrast", 0.4, 7)],
        [("Solarize", 0.6, 8), ("Color", 0.6, 9)],
        [("Solarize", 0.2, 4), ("Rotate", 0.8, 9)],
        [("Rotate", 1.0, 7), ("TranslateY", 0.8, 9)],
        [("ShearX", 0.0, 0), ("Solarize", 0.8, 4)],
        [("ShearY", 0.8, 0), ("Color", 0.6, 4)],
        [("Color", 1.0, 0), ("Rotate", 0.6, 2)],
        [("Equalize", 0.8, 4), ("Equalize", 0.0, 8)],
        [("Equalize", 1.0, 4), ("AutoContrast", 0.6, 2)],
        [("ShearY", 0.4, 7), ("SolarizeAdd", 0.6, 7)],
        [("Posterize", 0.8, 2), ("Solarize", 0.6, 10)],
        [("Solarize", 0.6, 8), ("Equalize", 0.6, 1)],
        [("Color", 0.8, 6), ("Rotate", 0.4, 5)],
    ],
    # The ImageNet policy of the AutoAugment paper (arXiv:1805.09501, appendix table 9).
    "original": [
        [("PosterizeOriginal", 0.4, 8), ("Rotate", 0.6, 9)],
        [("Solarize", 0.6, 5), ("AutoContrast", 0.6, 5)],
        [("Equalize", 0.8, 8), ("Equalize", 0.6, 3)],
        [("PosterizeOriginal", 0.6, 7), ("PosterizeOriginal", 0.6, 6)],
        [("Equalize", 0.4, 7), ("Solarize", 0.2, 4)],
        [("Equalize", 0.4, 4), ("Rotate", 0.8, 8)],
        [("Solarize", 0.6, 3), ("Equalize", 0.6, 7)],
        [("PosterizeOriginal", 0.8, 5), ("Equalize", 1.0, 2)],
        [("Rotate", 0.2, 3), ("Solarize", 0.6, 8)],
        [("Equalize", 0.6, 8), ("PosterizeOriginal", 0.4, 6)],
        [("Rotate", 0.8, 8), ("Color", 0.4, 0)],
        [("Rotate", 0.4, 9), ("Equalize", 0.6, 2)],
        [("Equalize", 0.0, 7), ("Equalize", 0.8, 8)],
        [("Invert", 0.6, 4), ("Equalize", 1.0, 8)],
        [("Color", 0.6, 4), ("Contrast", 1.0, 8)],
        [("Rotate", 0.8, 8), ("Color", 1.0, 2)],
        [("Color", 0.8, 8), ("Solarize", 0.8, 7)],
        [("Sharpness", 0.4, 7), ("Invert", 0.6, 8)],
        [("ShearX", 0.6, 5), ("Equalize", 1.0, 9)],
        [("Color", 0.4, 0), ("Equalize", 0.6, 3)],
        [("Equalize", 0.4, 7), ("Solarize", 0.2, 4)],
        [("Solarize", 0.6, 5), ("AutoContrast", 0.6, 5)],
        [("Invert", 0.6, 4), ("Equalize", 1.0, 8)],
        [("Color", 0.6, 4), ("Contrast", 1.0, 8)],
        [("Equalize", 0.8, 8), ("Equalize", 0.6, 3)],
    ],
    # The reference's debugging policy.
    "test": [[("TranslateX", 1.0, 4), ("Equalize", 1.0, 10)]],
}

AUTOAUGMENT_HPARAMS = {"cutout_const": 100, "translate_const": 250, "replace": FILL_VALUE}
RANDAUGMENT_HPARAMS = {"cutout_const": 40, "translate_const": 100, "replace": FILL_VALUE}

# RandAugment's op list in the reference's order (Identity is not among them there).
RANDAUGMENT_OPS = (
    "AutoContrast", "Equalize", "Invert", "Rotate", "Posterize", "Solarize", "Color",
    "Contrast", "Brightness", "Sharpness", "ShearX", "ShearY", "TranslateX", "TranslateY",
    "Cutout", "SolarizeAdd",
)


def _check_ops(names) -> None:
    for name in names:
        if name not in OPS:
            raise ValueError(f"Unknown augmentation op {name!r}; choose from {sorted(OPS)}.")


@_no_autograph
def _apply_step(image, op_name: str, probability: float, level: float, rand, hparams) -> tf.Tensor:
    """One sub-policy step; rand: 4 scalar uniforms, rand[0] decides, rand[1:] feed the op."""
    if probability <= 0.0:
        return image
    if probability >= 1.0:
        return OPS[op_name](image, level, rand[1:], hparams)
    # The reference applies when floor(u + p) == 1, i.e. with probability p. tf.cond (not a
    # select) so that skipped ops cost nothing at run time.
    return tf.cond(rand[0] < probability, lambda: OPS[op_name](image, level, rand[1:], hparams),
                   lambda: image)


@_no_autograph
def apply_with_probability(image, op_name: str, probability: float, level: float, seed=None,
                           hparams: dict | None = None,
                           semantics: str = DEFAULT_SEMANTICS) -> tf.Tensor:
    """Apply one named op with `probability` (a Python float), as one sub-policy step."""
    _check_ops([op_name])
    rand = tf.unstack(tf.random.stateless_uniform([4], _as_seed(seed)))
    return _apply_step(tf.convert_to_tensor(image), op_name, probability, level, rand,
                       _with_semantics(hparams or AUTOAUGMENT_HPARAMS, semantics))


def _with_semantics(hparams: dict, semantics: str) -> dict:
    return {**hparams, "semantics": check_semantics(semantics)}


@_no_autograph
def autoaugment(image: tf.Tensor, policy: str | list = "v0", seed=None,
                hparams: dict | None = None, semantics: str = DEFAULT_SEMANTICS) -> tf.Tensor:
    """Apply one uniformly chosen sub-policy of an AutoAugment policy to a uint8 image.

    Args:
      image: uint8 [H, W, 3].
      policy: a name in `POLICIES` ("v0" as used by EfficientNet, "original" the paper's
        ImageNet policy, "test") or a list of sub-policies [[(op, prob, level), ...], ...].
      seed: int64 [2] for stateless randomness, or None.
      hparams: translate_const (pixels, 250), cutout_const (100), replace (fill, 128).
      semantics: "original" (tensorflow/tpu autoaugment.py) or "pil" (``SEMANTICS``).
    """
    if isinstance(policy, str):
        if policy not in POLICIES:
            raise ValueError(f"Unknown AutoAugment policy {policy!r}; choose from {sorted(POLICIES)}.")
        policy = POLICIES[policy]
    for sub_policy in policy:
        _check_ops(name for name, _, _ in sub_policy)
    hparams = _with_semantics(hparams or AUTOAUGMENT_HPARAMS, semantics)
    image = tf.convert_to_tensor(image)
    steps = max(len(sub_policy) for sub_policy in policy)
    rand = tf.unstack(tf.random.stateless_uniform([1 + 4 * steps], _as_seed(seed)))
    choice = tf.minimum(tf.cast(rand[0] * len(policy), tf.int32), len(policy) - 1)

    def make_branch(sub_policy):
        def branch():
            out = image
            for step, (name, prob, level) in enumerate(sub_policy):
                out = _apply_step(out, name, prob, level, rand[1 + 4 * step:5 + 4 * step], hparams)
            return out
        return branch

    out = tf.switch_case(choice, [make_branch(sp) for sp in policy])
    return tf.ensure_shape(out, image.shape)


@_no_autograph
def randaugment(image: tf.Tensor, num_layers: int = 2, magnitude: float = 10, seed=None,
                ops: Sequence[str] = RANDAUGMENT_OPS, hparams: dict | None = None,
                semantics: str = DEFAULT_SEMANTICS) -> tf.Tensor:
    """RandAugment (arXiv:1909.13719): `num_layers` uniformly chosen ops, each at `magnitude`.

    As in the reference, a chosen op is always applied (no per-op probability).
    `semantics`: "original" (tensorflow/tpu autoaugment.py) or "pil" (``SEMANTICS``).
    """
    _check_ops(ops)
    hparams = _with_semantics(hparams or RANDAUGMENT_HPARAMS, semantics)
    image = tf.convert_to_tensor(image)
    level = float(magnitude)
    rand = tf.unstack(tf.random.stateless_uniform([max(num_layers, 1) * 4], _as_seed(seed)))
    for layer in range(num_layers):
        choice = tf.minimum(tf.cast(rand[4 * layer] * len(ops), tf.int32), len(ops) - 1)
        current, layer_rand = image, rand[4 * layer + 1:4 * layer + 4]
        image = tf.switch_case(
            choice, [lambda name=name: OPS[name](current, level, layer_rand, hparams) for name in ops])
        image = tf.ensure_shape(image, current.shape)
    return image


# ---------------------------------------------------------------------------
# batch-level label mixing


@_no_autograph
def _sample_beta(alpha: float, seed, shape=()) -> tf.Tensor:
    seed_a, seed_b = _split(seed, 2)
    a = tf.random.stateless_gamma(shape, seed_a, alpha=alpha)
    b = tf.random.stateless_gamma(shape, seed_b, alpha=alpha)
    return a / tf.maximum(a + b, 1e-12)


@_no_autograph
def mixup(images: tf.Tensor, labels: tf.Tensor, alpha: float, seed=None):
    """MixUp (arXiv:1710.09412) of a batch with its reverse, as tensorflow/tpu
    ``efficientnet/imagenet_input.py``: one λ ~ Beta(α, α) per example, λ = max(λ, 1 - λ), so
    every example keeps at least half of itself.

    Args: images float32 [B, H, W, 3]; labels one-hot float32 [B, C].
    """
    images = tf.cast(images, tf.float32)
    labels = tf.cast(labels, tf.float32)
    lam = _sample_beta(alpha, _as_seed(seed), tf.shape(images)[:1])
    lam = tf.maximum(lam, 1.0 - lam)
    image_lam = tf.reshape(lam, [-1, 1, 1, 1])
    label_lam = lam[:, None]
    mixed_images = image_lam * images + (1.0 - image_lam) * tf.reverse(images, [0])
    mixed_labels = label_lam * labels + (1.0 - label_lam) * tf.reverse(labels, [0])
    return mixed_images, mixed_labels


@_no_autograph
def cutmix(images: tf.Tensor, labels: tf.Tensor, alpha: float, seed=None):
    """CutMix (arXiv:1905.04899): paste a box from the reversed batch; labels by area."""
    seed_lam, seed_y, seed_x = _split(seed, 3)
    lam = _sample_beta(alpha, seed_lam)
    images = tf.cast(images, tf.float32)
    labels = tf.cast(labels, tf.float32)
    height, width = tf.shape(images)[1], tf.shape(images)[2]
    ratio = tf.sqrt(1.0 - lam)
    cut_h = tf.cast(ratio * tf.cast(height, tf.float32), tf.int32)
    cut_w = tf.cast(ratio * tf.cast(width, tf.float32), tf.int32)
    cy = tf.random.stateless_uniform([], seed_y, maxval=height, dtype=tf.int32)
    cx = tf.random.stateless_uniform([], seed_x, maxval=width, dtype=tf.int32)
    y0, y1 = tf.maximum(cy - cut_h // 2, 0), tf.minimum(cy + cut_h // 2, height)
    x0, x1 = tf.maximum(cx - cut_w // 2, 0), tf.minimum(cx + cut_w // 2, width)
    rows = tf.range(height)[:, None]
    cols = tf.range(width)[None, :]
    box = (rows >= y0) & (rows < y1) & (cols >= x0) & (cols < x1)
    mixed_images = tf.where(box[None, :, :, None], tf.reverse(images, [0]), images)
    kept = 1.0 - tf.cast((y1 - y0) * (x1 - x0), tf.float32) / tf.cast(height * width, tf.float32)
    mixed_labels = kept * labels + (1.0 - kept) * tf.reverse(labels, [0])
    return mixed_images, mixed_labels


@_no_autograph
def mix_batch(images, labels, mixup_alpha: float = 0.0, cutmix_alpha: float = 0.0, seed=None):
    """MixUp and/or CutMix on a batch; with both, each batch gets one of them (50/50)."""
    if mixup_alpha <= 0 and cutmix_alpha <= 0:
        return images, labels
    if cutmix_alpha <= 0:
        return mixup(images, labels, mixup_alpha, seed)
    if mixup_alpha <= 0:
        return cutmix(images, labels, cutmix_alpha, seed)
    seed_choice, seed_mix = _split(seed, 2)
    return tf.cond(
        _uniform(seed_choice) < 0.5,
        lambda: mixup(images, labels, mixup_alpha, seed_mix),
        lambda: cutmix(images, labels, cutmix_alpha, seed_mix),
    )

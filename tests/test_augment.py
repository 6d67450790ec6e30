"""Each augmentation op against the original (tensorflow/tpu
models/official/efficientnet/autoaugment.py, the default semantics) and against PIL
(semantics="pil", the library the policies were searched with).

Original semantics are checked against the original's own TensorFlow expressions
(tf.bitwise shifts and tf.where on uint8 with Python int arguments, tf.image.rgb_to_grayscale,
tf.histogram_fixed_width, truncating tf.cast), written out below, and against facts.

PIL tolerances (semantics="pil"):
- exact: invert, posterize, solarize, solarize_add, autocontrast, equalize, brightness,
  color, contrast, translate (integer shifts).
- sharpness: |diff| <= 1 (PIL's SMOOTH filter rounding).
- rotate / shear (nearest neighbour): PIL samples at pixel centres with floor, TF rounds
  the transformed index, so pixels on sampling ties differ: <= 5 % of pixels. Shear
  follows the reference's index convention (output (x, y) <- input (x + level*y, y)),
  which is PIL's matrix with a half-pixel offset.
"""

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image, ImageEnhance, ImageOps

from keras_effnet import augment

FILL = (128, 128, 128)


def _image(seed=0, height=24, width=32):
    rng = np.random.RandomState(seed)
    # A smooth gradient plus noise: realistic histograms and non-trivial geometry.
    yy, xx = np.mgrid[0:height, 0:width]
    base = np.stack([xx * 255 / width, yy * 255 / height, (xx + yy) * 127 / (width + height)], -1)
    noisy = base * 0.7 + rng.randint(0, 80, size=base.shape)
    return np.clip(noisy, 0, 255).astype(np.uint8)


IMAGES = [_image(0), _image(1, 17, 23), (np.random.RandomState(2).rand(20, 20, 3) * 120 + 60).astype(np.uint8)]


def _pil(array):
    return Image.fromarray(array)


def _tf(fn, array, *args):
    return fn(tf.constant(array), *args).numpy()


@pytest.mark.parametrize("index", range(len(IMAGES)))
def test_exact_pixel_ops(index):
    array = IMAGES[index]
    pil = _pil(array)
    np.testing.assert_array_equal(_tf(augment.invert, array), np.asarray(ImageOps.invert(pil)))
    np.testing.assert_array_equal(_tf(augment.autocontrast, array, "pil"),
                                  np.asarray(ImageOps.autocontrast(pil)))
    np.testing.assert_array_equal(_tf(augment.equalize, array), np.asarray(ImageOps.equalize(pil)))
    for bits in (1, 2, 4, 6, 8):
        np.testing.assert_array_equal(_tf(augment.posterize, array, bits, "pil"),
                                      np.asarray(ImageOps.posterize(pil, bits)))
    # bits=0 (RandAugment/v0 level < 2.5): Pillow now rejects it; older Pillow's mask gives
    # zeros (the original gives x & 128: test_posterize_original).
    np.testing.assert_array_equal(_tf(augment.posterize, array, 0, "pil"), np.zeros_like(array))
    for threshold in (0, 26, 128, 204, 256):
        np.testing.assert_array_equal(_tf(augment.solarize, array, threshold, "pil"),
                                      np.asarray(ImageOps.solarize(pil, threshold)))
    for addition, threshold in ((33, 128), (110, 128), (-50, 200)):
        lut = [min(255, max(0, i + addition)) if i < threshold else i for i in range(256)]
        np.testing.assert_array_equal(_tf(augment.solarize_add, array, addition, threshold),
                                      np.asarray(pil.point(lut * 3)))


def test_equalize_and_autocontrast_constant_channel():
    array = np.full((8, 8, 3), 77, np.uint8)
    array[..., 1] = np.arange(64).reshape(8, 8)
    pil = _pil(array)
    np.testing.assert_array_equal(_tf(augment.equalize, array), np.asarray(ImageOps.equalize(pil)))
    np.testing.assert_array_equal(_tf(augment.autocontrast, array, "pil"),
                                  np.asarray(ImageOps.autocontrast(pil)))
    np.testing.assert_array_equal(_tf(augment.autocontrast, array), _original_autocontrast(array))


@pytest.mark.parametrize("factor", [0.1, 0.5, 1.0, 1.3, 1.9])
def test_enhance_ops(factor):
    for array in IMAGES:
        pil = _pil(array)
        for fn, enhancer, tol in (
            (augment.brightness, ImageEnhance.Brightness, 0),
            (augment.color, ImageEnhance.Color, 0),
            (augment.contrast, ImageEnhance.Contrast, 0),
            (augment.sharpness, ImageEnhance.Sharpness, 1),
        ):
            got = _tf(fn, array, factor, "pil").astype(int) if fn is not augment.brightness \
                else _tf(fn, array, factor).astype(int)
            want = np.asarray(enhancer(pil).enhance(factor)).astype(int)
            assert np.abs(got - want).max() <= tol, (fn.__name__, factor, np.abs(got - want).max())


def _mismatch(got, want):
    return np.mean(np.any(got != want, axis=-1))


@pytest.mark.parametrize("degrees", [-30.0, -12.0, 7.5, 27.0])
def test_rotate(degrees):
    for array in IMAGES:
        got = _tf(augment.rotate, array, degrees)
        want = np.asarray(_pil(array).rotate(degrees, resample=Image.NEAREST, fillcolor=FILL))
        assert _mismatch(got, want) <= 0.05


@pytest.mark.parametrize("level", [-0.29, -0.13, 0.12, 0.27])  # away from exact .5 ties
def test_shear(level):
    for array in IMAGES:
        pil = _pil(array)
        got_x = _tf(augment.shear_x, array, level)
        # PIL samples at pixel centres (x + 0.5, y + 0.5); the reference (and TF) at pixel
        # indices, so the PIL matrix gets the half-pixel offset -level / 2.
        want_x = np.asarray(pil.transform(pil.size, Image.AFFINE, (1, level, -level / 2, 0, 1, 0),
                                          resample=Image.NEAREST, fillcolor=FILL))
        got_y = _tf(augment.shear_y, array, level)
        want_y = np.asarray(pil.transform(pil.size, Image.AFFINE, (1, 0, 0, level, 1, -level / 2),
                                          resample=Image.NEAREST, fillcolor=FILL))
        assert _mismatch(got_x, want_x) <= 0.05
        assert _mismatch(got_y, want_y) <= 0.05


@pytest.mark.parametrize("pixels", [-40, -5, 0, 3, 11, 250])
def test_translate_exact(pixels):
    for array in IMAGES:
        pil = _pil(array)
        want_x = pil.transform(pil.size, Image.AFFINE, (1, 0, pixels, 0, 1, 0), resample=Image.NEAREST, fillcolor=FILL)
        want_y = pil.transform(pil.size, Image.AFFINE, (1, 0, 0, 0, 1, pixels), resample=Image.NEAREST, fillcolor=FILL)
        np.testing.assert_array_equal(_tf(augment.translate_x, array, pixels), np.asarray(want_x))
        np.testing.assert_array_equal(_tf(augment.translate_y, array, pixels), np.asarray(want_y))


def test_cutout():
    array = IMAGES[0]
    got = augment.cutout_at(tf.constant(array), 3, 30, 5).numpy()
    want = array.copy()
    want[0:8, 25:32] = 128
    np.testing.assert_array_equal(got, want)
    random_cut = augment.cutout(tf.constant(array), 4, seed=tf.constant([1, 2])).numpy()
    changed = np.any(random_cut != array, axis=-1)
    assert 0 < changed.sum() <= 64
    assert np.all(random_cut[changed] == 128)


def test_identity():
    np.testing.assert_array_equal(_tf(augment.identity, IMAGES[0]), IMAGES[0])


def test_every_op_keeps_shape_and_dtype():
    image = tf.constant(IMAGES[1])
    for name, fn in augment.OPS.items():
        out = fn(image, 7.0, [tf.constant(0.3), tf.constant(0.6), tf.constant(0.9)], augment.RANDAUGMENT_HPARAMS)
        assert out.dtype == tf.uint8 and out.shape == image.shape, name


def test_probability_of_application():
    """A (Invert, p=0.6) step applies in ~60% of 400 seeded trials (binomial 4-sigma band)."""
    image = tf.constant(IMAGES[0])
    inverted = 255 - IMAGES[0]
    trials, prob = 400, 0.6

    @tf.function
    def step(seed):
        return augment.apply_with_probability(image, "Invert", prob, 5, seed=seed)

    applied = sum(np.array_equal(step(tf.constant([7, i])).numpy(), inverted) for i in range(trials))
    sigma = np.sqrt(trials * prob * (1 - prob))
    assert abs(applied - trials * prob) <= 4 * sigma, applied


def test_policy_applies_sub_policies_with_their_probabilities():
    """Policy [[Invert 0.3, Solarize(level 10 = threshold 256 -> identity) 1.0]]: invert in ~30%."""
    image = tf.constant(IMAGES[0])
    policy = [[("Invert", 0.3, 0), ("Solarize", 1.0, 10)], [("Invert", 0.8, 0)]]

    @tf.function
    def run(seed):
        return augment.autoaugment(image, policy, seed=seed, semantics="pil")

    trials = 400
    inverted = sum(np.array_equal(run(tf.constant([1, i])).numpy(), 255 - IMAGES[0]) for i in range(trials))
    expected = trials * (0.5 * 0.3 + 0.5 * 0.8)
    sigma = np.sqrt(trials * 0.55 * 0.45)
    assert abs(inverted - expected) <= 4 * sigma, inverted


def test_policies_run_and_are_deterministic_with_seed():
    image = tf.constant(IMAGES[0])
    # v0 traced as in tf.data (slow to trace: 25 branches); "original" eagerly, where only
    # the chosen branch runs (cheap), over several seeds.
    for name, fn, seeds in (
        ("v0", tf.function(lambda seed: augment.autoaugment(image, "v0", seed=seed)), [[5, 6]]),
        ("original", lambda seed: augment.autoaugment(image, "original", seed=seed), [[i, 1] for i in range(8)]),
    ):
        for seed in seeds:
            first = fn(tf.constant(seed))
            np.testing.assert_array_equal(first.numpy(), fn(tf.constant(seed)).numpy())
            assert first.dtype == tf.uint8 and first.shape == image.shape, name
    with pytest.raises(ValueError, match="Unknown AutoAugment policy"):
        augment.autoaugment(image, "v9")


def test_randaugment_applies_ops():
    image = tf.constant(IMAGES[0])
    fn = tf.function(lambda seed: augment.randaugment(image, 2, 10, seed=seed))
    outs = [fn(tf.constant([9, i])).numpy() for i in range(20)]
    assert all(o.shape == IMAGES[0].shape for o in outs)
    assert sum(not np.array_equal(o, IMAGES[0]) for o in outs) >= 15


def test_mixup_and_cutmix_labels_sum_to_one():
    images = tf.random.uniform([4, 8, 8, 3], maxval=255.0)
    labels = tf.one_hot([0, 1, 2, 3], 5)
    for fn in (augment.mixup, augment.cutmix):
        mixed_images, mixed_labels = fn(images, labels, 0.4, seed=tf.constant([1, 1]))
        assert mixed_images.shape == images.shape
        np.testing.assert_allclose(mixed_labels.numpy().sum(-1), 1.0, atol=1e-6)
    # CutMix label weights equal the pasted area.
    mixed_images, mixed_labels = augment.cutmix(images, labels, 1.0, seed=tf.constant([3, 3]))
    pasted = np.mean(np.any(mixed_images.numpy()[0] != images.numpy()[0], axis=-1))
    np.testing.assert_allclose(mixed_labels.numpy()[0, 3], pasted, atol=1e-6)


def test_geometric_ops_match_projective_transform_kernel():
    """_transform gathers pixels through the kernel's own index map: bit-identical to running
    ImageProjectiveTransformV3 on the image, eagerly and traced (Grappler active)."""
    array = IMAGES[0]

    def kernel(image, matrix):
        return tf.raw_ops.ImageProjectiveTransformV3(
            images=image[None], transforms=tf.constant([matrix], tf.float32),
            output_shape=tf.shape(image)[:2], fill_value=128.0, interpolation="NEAREST",
            fill_mode="CONSTANT")[0]

    traced = tf.function(lambda image, matrix: augment._transform(image, tf.unstack(matrix)))
    rng = np.random.RandomState(3)
    for _ in range(20):
        angle = rng.uniform(-np.pi, np.pi)
        matrix = [np.cos(angle), -np.sin(angle), rng.uniform(-9, 9), np.sin(angle), np.cos(angle),
                  rng.uniform(-9, 9), 0.0, 0.0]
        want = kernel(tf.constant(array), matrix).numpy()
        np.testing.assert_array_equal(augment._transform(tf.constant(array), matrix).numpy(), want)
        np.testing.assert_array_equal(traced(tf.constant(array), tf.constant(matrix, tf.float32)).numpy(), want)


def test_solarize_ops_at_extreme_arguments():
    array = IMAGES[0].astype(int)
    for threshold in (-3, 0, 1, 255, 256, 300):
        want = np.where(array < threshold, array, 255 - array)
        np.testing.assert_array_equal(_tf(augment.solarize, IMAGES[0], threshold, "pil"), want)
        # The original: the threshold converted to uint8 (modulo 256).
        want = np.where(array < threshold % 256, array, 255 - array)
        np.testing.assert_array_equal(_tf(augment.solarize, IMAGES[0], threshold), want)
        for addition in (-300, -1, 0, 200, 300):
            want = np.where(array < threshold, np.clip(array + addition, 0, 255), array)
            np.testing.assert_array_equal(_tf(augment.solarize_add, IMAGES[0], addition, threshold), want)


# ---------------------------------------------------------------------------
# original semantics (tensorflow/tpu models/official/efficientnet/autoaugment.py)
#
# The expected values below are the original's TensorFlow expressions, run with TensorFlow's
# own conversion of Python int arguments to uint8 (which wraps modulo 256).


def _original_blend(image1, image2, factor):
    """The original's blend: float difference, truncating cast, clip only when extrapolating."""
    if factor == 0.0:
        return tf.convert_to_tensor(image1)
    if factor == 1.0:
        return tf.convert_to_tensor(image2)
    image1, image2 = tf.cast(image1, tf.float32), tf.cast(image2, tf.float32)
    temp = image1 + factor * (image2 - image1)
    if 0.0 < factor < 1.0:
        return tf.cast(temp, tf.uint8)
    return tf.cast(tf.clip_by_value(temp, 0.0, 255.0), tf.uint8)


def _original_autocontrast(array):
    channels = []
    for c in range(3):
        channel = tf.constant(array[..., c])
        lo = tf.cast(tf.reduce_min(channel), tf.float32)
        hi = tf.cast(tf.reduce_max(channel), tf.float32)
        if hi > lo:
            scale = 255.0 / (hi - lo)
            scaled = tf.cast(channel, tf.float32) * scale + (-lo * scale)
            channel = tf.cast(tf.clip_by_value(scaled, 0.0, 255.0), tf.uint8)
        channels.append(channel)
    return tf.stack(channels, 2).numpy()


def _original_sharpness(array, factor):
    image = tf.cast(tf.constant(array), tf.float32)[None]
    kernel = tf.tile(tf.constant([[1, 1, 1], [1, 5, 1], [1, 1, 1]], tf.float32, shape=[3, 3, 1, 1]) / 13.0,
                     [1, 1, 3, 1])
    smooth = tf.nn.depthwise_conv2d(image, kernel, [1, 1, 1, 1], padding="VALID")
    smooth = tf.cast(tf.clip_by_value(smooth, 0.0, 255.0), tf.uint8)[0]
    inside = tf.pad(tf.ones_like(smooth), [[1, 1], [1, 1], [0, 0]])
    degenerate = tf.where(tf.equal(inside, 1), tf.pad(smooth, [[1, 1], [1, 1], [0, 0]]), array)
    return _original_blend(degenerate, array, factor).numpy()


def _original_contrast(array, factor):
    gray = tf.cast(tf.image.rgb_to_grayscale(tf.constant(array)), tf.int32)
    hist = tf.histogram_fixed_width(gray, [0, 255], nbins=256)
    mean = tf.reduce_sum(tf.cast(hist, tf.float32)) / 256.0
    degenerate = tf.cast(tf.clip_by_value(tf.ones_like(gray, tf.float32) * mean, 0.0, 255.0), tf.uint8)
    return _original_blend(tf.image.grayscale_to_rgb(degenerate), array, factor).numpy()


def _original_color(array, factor):
    degenerate = tf.image.grayscale_to_rgb(tf.image.rgb_to_grayscale(tf.constant(array)))
    return _original_blend(degenerate, array, factor).numpy()


def test_posterize_original():
    """left_shift(right_shift(x, 8 - bits), 8 - bits) on uint8 with the Python int shift, for the
    bits of every level the tables reach (RandAugment up to M = 30: 12 bits, shift -4)."""
    array = IMAGES[0]
    image = tf.constant(array)
    for bits in range(13):
        want = tf.bitwise.left_shift(tf.bitwise.right_shift(image, 8 - bits), 8 - bits).numpy()
        np.testing.assert_array_equal(_tf(augment.posterize, array, bits), want, err_msg=str(bits))
    # Facts: TensorFlow clamps a uint8 shift of 8 to 7, so 0 bits is x & 128, never black.
    np.testing.assert_array_equal(_tf(augment.posterize, array, 0), array & 128)
    np.testing.assert_array_equal(_tf(augment.posterize, array, 8), array)
    np.testing.assert_array_equal(_tf(augment.posterize, array, 3), array & 0b11100000)


def test_solarize_original():
    """where(image < threshold, image, 255 - image) with the Python int threshold; TensorFlow
    converts 256 to uint8 0, so level 10 (threshold 256) inverts every pixel."""
    array = IMAGES[1]
    image = tf.constant(array)
    for threshold in (0, 26, 128, 255, 256, 300, 512, 716):
        want = tf.where(image < threshold, image, 255 - image).numpy()
        np.testing.assert_array_equal(_tf(augment.solarize, array, threshold), want, err_msg=str(threshold))
    np.testing.assert_array_equal(_tf(augment.solarize, array, 256), 255 - array)
    np.testing.assert_array_equal(_tf(augment.solarize, array, 716), np.where(array < 204, array, 255 - array))


@pytest.mark.parametrize("factor", [0.0, 0.1, 0.5, 1.0, 1.3, 1.9, 5.14])
def test_enhance_ops_original(factor):
    """Color, Contrast, Sharpness, Brightness as the original's expressions (exact)."""
    sizes = [(24, 32), (17, 23), (20, 20), (240, 240), (300, 300)]  # contrast grey 3, 1, 1, 225, 255
    rng = np.random.RandomState(5)
    arrays = IMAGES + [(rng.rand(h, w, 3) * 255).astype(np.uint8) for h, w in sizes[3:]]
    for array in arrays:
        np.testing.assert_array_equal(_tf(augment.color, array, factor), _original_color(array, factor))
        np.testing.assert_array_equal(_tf(augment.contrast, array, factor), _original_contrast(array, factor))
        np.testing.assert_array_equal(_tf(augment.sharpness, array, factor), _original_sharpness(array, factor))
        np.testing.assert_array_equal(_tf(augment.brightness, array, factor),
                                      _original_blend(tf.zeros_like(array), array, factor).numpy())
    # Fact: the contrast grey level is num_pixels / 256 truncated, 255 from 256 x 256 pixels on.
    flat = np.full((300, 300, 3), 10, np.uint8)
    np.testing.assert_array_equal(_tf(augment.contrast, flat, 0.0), np.full_like(flat, 255))
    flat = np.full((224, 224, 3), 10, np.uint8)
    np.testing.assert_array_equal(_tf(augment.contrast, flat, 0.0), np.full_like(flat, 196))


@pytest.mark.parametrize("index", range(len(IMAGES)))
def test_autocontrast_and_equalize_original(index):
    array = IMAGES[index]
    np.testing.assert_array_equal(_tf(augment.autocontrast, array), _original_autocontrast(array))
    traced = tf.function(augment.autocontrast)
    np.testing.assert_array_equal(traced(tf.constant(array)).numpy(), _original_autocontrast(array))
    # Equalize: the original's histogram, step and lookup table.
    channels = []
    for c in range(3):
        channel = tf.cast(tf.constant(array[..., c]), tf.int32)
        hist = tf.histogram_fixed_width(channel, [0, 255], nbins=256)
        nonzero = tf.reshape(tf.gather(hist, tf.where(tf.not_equal(hist, 0))), [-1])
        step = (tf.reduce_sum(nonzero) - nonzero[-1]) // 255
        if step == 0:
            channels.append(channel)
            continue
        lut = tf.clip_by_value(tf.concat([[0], ((tf.cumsum(hist) + step // 2) // step)[:-1]], 0), 0, 255)
        channels.append(tf.gather(lut, channel))
    want = tf.cast(tf.stack(channels, 2), tf.uint8).numpy()
    np.testing.assert_array_equal(_tf(augment.equalize, array), want)


def test_semantics_argument_is_checked():
    image = tf.constant(IMAGES[0])
    for call in (lambda: augment.posterize(image, 2, "PIL"),
                 lambda: augment.autoaugment(image, "v0", semantics="tf1"),
                 lambda: augment.randaugment(image, semantics="orig")):
        with pytest.raises(ValueError, match="semantics must be one of original, pil"):
            call()


def test_uint8_conversion():
    values = tf.constant([-3.0, 0.4, 0.6, 1.5, 254.7, 300.0])
    np.testing.assert_array_equal(augment.to_uint8(values).numpy(), [0, 0, 0, 1, 254, 255])
    np.testing.assert_array_equal(augment.to_uint8(values, "pil").numpy(), [0, 0, 1, 2, 255, 255])


def test_mixup_per_example_keeps_the_larger_share():
    """As tensorflow/tpu efficientnet/imagenet_input.py: one λ per example, λ >= 0.5."""
    images = tf.random.stateless_uniform([64, 2, 2, 3], [1, 2], maxval=255.0)
    labels = tf.one_hot(tf.range(64), 64)
    mixed_images, mixed_labels = augment.mixup(images, labels, 0.2, seed=tf.constant([4, 4]))
    own = np.diag(mixed_labels.numpy())
    assert own.min() >= 0.5 and np.std(own) > 0.01  # per example, never less than half
    lam = own[:, None, None, None]
    want = lam * images.numpy() + (1 - lam) * images.numpy()[::-1]
    np.testing.assert_allclose(mixed_images.numpy(), want, rtol=1e-5, atol=1e-3)


# ---------------------------------------------------------------------------
# policy tables, entry by entry


# tensorflow/tpu models/official/efficientnet/autoaugment.py, policy_v0 and policy_vtest.
PUBLISHED_V0 = [
    [("Equalize", 0.8, 1), ("ShearY", 0.8, 4)], [("Color", 0.4, 9), ("Equalize", 0.6, 3)],
    [("Color", 0.4, 1), ("Rotate", 0.6, 8)], [("Solarize", 0.8, 3), ("Equalize", 0.4, 7)],
    [("Solarize", 0.4, 2), ("Solarize", 0.6, 2)], [("Color", 0.2, 0), ("Equalize", 0.8, 8)],
    [("Equalize", 0.4, 8), ("SolarizeAdd", 0.8, 3)], [("ShearX", 0.2, 9), ("Rotate", 0.6, 8)],
    [("Color", 0.6, 1), ("Equalize", 1.0, 2)], [("Invert", 0.4, 9), ("Rotate", 0.6, 0)],
    [("Equalize", 1.0, 9), ("ShearY", 0.6, 3)], [("Color", 0.4, 7), ("Equalize", 0.6, 0)],
    [("Posterize", 0.4, 6), ("AutoContrast", 0.4, 7)], [("Solarize", 0.6, 8), ("Color", 0.6, 9)],
    [("Solarize", 0.2, 4), ("Rotate", 0.8, 9)], [("Rotate", 1.0, 7), ("TranslateY", 0.8, 9)],
    [("ShearX", 0.0, 0), ("Solarize", 0.8, 4)], [("ShearY", 0.8, 0), ("Color", 0.6, 4)],
    [("Color", 1.0, 0), ("Rotate", 0.6, 2)], [("Equalize", 0.8, 4), ("Equalize", 0.0, 8)],
    [("Equalize", 1.0, 4), ("AutoContrast", 0.6, 2)], [("ShearY", 0.4, 7), ("SolarizeAdd", 0.6, 7)],
    [("Posterize", 0.8, 2), ("Solarize", 0.6, 10)], [("Solarize", 0.6, 8), ("Equalize", 0.6, 1)],
    [("Color", 0.8, 6), ("Rotate", 0.4, 5)],
]
PUBLISHED_TEST = [[("TranslateX", 1.0, 4), ("Equalize", 1.0, 10)]]
# The AutoAugment paper's ImageNet policy (arXiv:1805.09501, appendix); posterize on 4..8 bits.
PAPER_IMAGENET = [
    [("PosterizeOriginal", 0.4, 8), ("Rotate", 0.6, 9)], [("Solarize", 0.6, 5), ("AutoContrast", 0.6, 5)],
    [("Equalize", 0.8, 8), ("Equalize", 0.6, 3)],
    [("PosterizeOriginal", 0.6, 7), ("PosterizeOriginal", 0.6, 6)],
    [("Equalize", 0.4, 7), ("Solarize", 0.2, 4)], [("Equalize", 0.4, 4), ("Rotate", 0.8, 8)],
    [("Solarize", 0.6, 3), ("Equalize", 0.6, 7)], [("PosterizeOriginal", 0.8, 5), ("Equalize", 1.0, 2)],
    [("Rotate", 0.2, 3), ("Solarize", 0.6, 8)], [("Equalize", 0.6, 8), ("PosterizeOriginal", 0.4, 6)],
    [("Rotate", 0.8, 8), ("Color", 0.4, 0)], [("Rotate", 0.4, 9), ("Equalize", 0.6, 2)],
    [("Equalize", 0.0, 7), ("Equalize", 0.8, 8)], [("Invert", 0.6, 4), ("Equalize", 1.0, 8)],
    [("Color", 0.6, 4), ("Contrast", 1.0, 8)], [("Rotate", 0.8, 8), ("Color", 1.0, 2)],
    [("Color", 0.8, 8), ("Solarize", 0.8, 7)], [("Sharpness", 0.4, 7), ("Invert", 0.6, 8)],
    [("ShearX", 0.6, 5), ("Equalize", 1.0, 9)], [("Color", 0.4, 0), ("Equalize", 0.6, 3)],
    [("Equalize", 0.4, 7), ("Solarize", 0.2, 4)], [("Solarize", 0.6, 5), ("AutoContrast", 0.6, 5)],
    [("Invert", 0.6, 4), ("Equalize", 1.0, 8)], [("Color", 0.6, 4), ("Contrast", 1.0, 8)],
    [("Equalize", 0.8, 8), ("Equalize", 0.6, 3)],
]
# distort_image_with_randaugment's available_ops, in its order.
PUBLISHED_RANDAUGMENT_OPS = [
    "AutoContrast", "Equalize", "Invert", "Rotate", "Posterize", "Solarize", "Color", "Contrast",
    "Brightness", "Sharpness", "ShearX", "ShearY", "TranslateX", "TranslateY", "Cutout", "SolarizeAdd"]


def test_policy_tables_match_the_published_ones():
    for name, published in (("v0", PUBLISHED_V0), ("test", PUBLISHED_TEST), ("original", PAPER_IMAGENET)):
        ours = augment.POLICIES[name]
        assert len(ours) == len(published), name
        for index, (mine, theirs) in enumerate(zip(ours, published)):
            assert [tuple(step) for step in mine] == theirs, (name, index)
    assert list(augment.RANDAUGMENT_OPS) == PUBLISHED_RANDAUGMENT_OPS
    assert (augment.AUTOAUGMENT_HPARAMS["cutout_const"], augment.AUTOAUGMENT_HPARAMS["translate_const"]) == (100, 250)
    assert (augment.RANDAUGMENT_HPARAMS["cutout_const"], augment.RANDAUGMENT_HPARAMS["translate_const"]) == (40, 100)
    assert augment.AUTOAUGMENT_HPARAMS["replace"] == augment.RANDAUGMENT_HPARAMS["replace"] == 128


def _published_arg(name, level, hp):
    """The original's level_to_arg (magnitudes before the random sign)."""
    enhance = (level / 10.0) * 1.8 + 0.1
    return {
        "Posterize": int((level / 10.0) * 4), "PosterizeOriginal": 4 + int((level / 10.0) * 4),
        "Solarize": int((level / 10.0) * 256), "SolarizeAdd": int((level / 10.0) * 110),
        "Color": enhance, "Contrast": enhance, "Brightness": enhance, "Sharpness": enhance,
        "Rotate": (level / 10.0) * 30.0, "ShearX": (level / 10.0) * 0.3, "ShearY": (level / 10.0) * 0.3,
        "TranslateX": (level / 10.0) * float(hp["translate_const"]),
        "TranslateY": (level / 10.0) * float(hp["translate_const"]),
        "Cutout": int((level / 10.0) * hp["cutout_const"]),
    }.get(name)


@pytest.mark.parametrize("semantics", augment.SEMANTICS)
def test_level_to_argument_mapping(semantics):
    """Every op of the tables at levels 0..28 equals the op called with the published argument."""
    array = IMAGES[0]
    image = tf.constant(array)
    hp = {**augment.RANDAUGMENT_HPARAMS, "semantics": semantics}
    direct = {
        "AutoContrast": lambda arg: augment.autocontrast(image, semantics),
        "Equalize": lambda arg: augment.equalize(image), "Invert": lambda arg: augment.invert(image),
        "Posterize": lambda arg: augment.posterize(image, arg, semantics),
        "PosterizeOriginal": lambda arg: augment.posterize(image, arg, semantics),
        "Solarize": lambda arg: augment.solarize(image, arg, semantics),
        "SolarizeAdd": lambda arg: augment.solarize_add(image, arg),
        "Color": lambda arg: augment.color(image, arg, semantics),
        "Contrast": lambda arg: augment.contrast(image, arg, semantics),
        "Brightness": lambda arg: augment.brightness(image, arg),
        "Sharpness": lambda arg: augment.sharpness(image, arg, semantics),
        "Rotate": lambda arg: augment.rotate(image, arg), "ShearX": lambda arg: augment.shear_x(image, arg),
        "ShearY": lambda arg: augment.shear_y(image, arg),
        "TranslateX": lambda arg: augment.translate_x(image, arg),
        "TranslateY": lambda arg: augment.translate_y(image, arg),
        "Cutout": lambda arg: augment.cutout_at(image, int(0.25 * 24), int(0.75 * 32), arg),
    }
    assert set(direct) | {"Identity"} == set(augment.OPS)
    for name, call in direct.items():
        for level in (0, 1, 3, 6, 10, 15, 28):
            arg = _published_arg(name, level, hp)
            for sign, first in ((1, 0.9), (-1, 0.1)):  # rand[0] < 0.5 negates signed magnitudes
                rand = [tf.constant(first), tf.constant(0.25), tf.constant(0.75)]
                got = augment.OPS[name](image, float(level), rand, hp).numpy()
                signed = name in ("Rotate", "ShearX", "ShearY", "TranslateX", "TranslateY")
                want = call(sign * arg if signed else arg).numpy()
                np.testing.assert_array_equal(got, want, err_msg=f"{name} level {level}")


def test_integral_translate_equals_the_kernel():
    """The crop-and-pad path of integral shifts gives the projective kernel's pixels, bit for bit
    (both signs, both axes, beyond the image, eager and traced), and fractional shifts still
    take the kernel."""
    rng = np.random.RandomState(7)
    shifts = [0.0, -0.0, 1.0, -1.0, 2.5, -2.5, 0.4999, 16.0, -17.0, 19.0, -20.0, 23.0, 31.0,
              -32.0, 33.0, 40.0, -40.0, 250.0, -250.0, 1e6, -1e6, 2.0**24, 3e9]
    shifts += list(rng.randint(-45, 46, size=12).astype(float)) + list(rng.uniform(-40, 40, size=6))

    def kernel(image, pixels, axis, replace):
        offsets = [pixels, 0.0] if axis == 1 else [0.0, pixels]
        return augment._transform(image, [1.0, 0.0, offsets[0], 0.0, 1.0, offsets[1], 0.0, 0.0],
                                  replace)

    traced = tf.function(lambda image, pixels, axis, replace: augment._translate(
        image, pixels, axis, replace))
    for index, array in enumerate(IMAGES + [rng.randint(0, 256, size=(224, 224, 3)).astype(np.uint8)]):
        image = tf.constant(array)
        for pixels in shifts:
            pixels = tf.constant(pixels, tf.float32)
            for axis in (0, 1):
                replace = 128 if index % 2 else 7
                want = kernel(image, pixels, axis, replace).numpy()
                np.testing.assert_array_equal(augment._translate(image, pixels, axis, replace), want)
                np.testing.assert_array_equal(traced(image, pixels, axis, replace), want)

"""Each augmentation op against PIL (the library the policies were defined with).

Tolerances:
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
    np.testing.assert_array_equal(_tf(augment.autocontrast, array), np.asarray(ImageOps.autocontrast(pil)))
    np.testing.assert_array_equal(_tf(augment.equalize, array), np.asarray(ImageOps.equalize(pil)))
    for bits in (1, 2, 4, 6, 8):
        np.testing.assert_array_equal(_tf(augment.posterize, array, bits), np.asarray(ImageOps.posterize(pil, bits)))
    # bits=0 (RandAugment/v0 level < 2.5): Pillow now rejects it; older Pillow and the
    # reference's shift by 8 give zeros.
    np.testing.assert_array_equal(_tf(augment.posterize, array, 0), np.zeros_like(array))
    for threshold in (0, 26, 128, 204, 256):
        np.testing.assert_array_equal(_tf(augment.solarize, array, threshold),
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
    np.testing.assert_array_equal(_tf(augment.autocontrast, array), np.asarray(ImageOps.autocontrast(pil)))


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
            got = _tf(fn, array, factor).astype(int)
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
        return augment.autoaugment(image, policy, seed=seed)

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
        np.testing.assert_array_equal(_tf(augment.solarize, IMAGES[0], threshold), want)
        for addition in (-300, -1, 0, 200, 300):
            want = np.where(array < threshold, np.clip(array + addition, 0, 255), array)
            np.testing.assert_array_equal(_tf(augment.solarize_add, IMAGES[0], addition, threshold), want)

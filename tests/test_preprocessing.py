"""keras_effnet.preprocessing: decoding, completeness checks, train / eval crops."""

import io

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from keras_effnet import preprocessing


def _photo(height=48, width=64, seed=0):
    rng = np.random.RandomState(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    base = np.stack([xx * 4, yy * 5, (xx + yy) * 2], -1) % 256
    return np.clip(base + rng.randint(0, 30, base.shape), 0, 255).astype(np.uint8)


def _encode(array, fmt, mode=None, **kwargs):
    image = Image.fromarray(array)
    if mode:
        image = image.convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


PHOTO = _photo()


def _assert_close_jpeg(got, want):
    diff = np.abs(got.numpy() - want.numpy())
    assert diff.max() <= 8 and diff.mean() <= 0.5, (diff.max(), diff.mean())


@pytest.mark.parametrize("fmt,mode,tol", [
    ("PNG", None, 0), ("PNG", "L", 0), ("PNG", "RGBA", 0), ("BMP", None, 0), ("GIF", None, 0),
    ("JPEG", None, 4), ("JPEG", "L", 4), ("JPEG", "CMYK", 4),  # libjpeg versions differ
])
def test_decode_image_formats(fmt, mode, tol):
    data = _encode(PHOTO, fmt, mode)
    want = np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).astype(int)
    got = preprocessing.decode_image(tf.constant(data)).numpy()
    assert got.shape == want.shape and got.dtype == np.uint8
    assert np.abs(got.astype(int) - want).max() <= tol
    assert bool(preprocessing.looks_complete(tf.constant(data)))


def test_decode_animated_gif_takes_first_frame():
    frames = [Image.fromarray(np.full((10, 12, 3), v, np.uint8)) for v in (10, 200)]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:])
    got = preprocessing.decode_image(tf.constant(buffer.getvalue())).numpy()
    assert got.shape == (10, 12, 3)
    assert abs(int(got.mean()) - 10) <= 1


@pytest.mark.parametrize("data", [
    b"", b"not an image at all", _encode(PHOTO, "JPEG")[:300], _encode(PHOTO, "PNG")[:200],
    _encode(PHOTO, "GIF")[:100], _encode(PHOTO, "BMP")[:500],
])
def test_incomplete_files_are_detected(data):
    assert not bool(preprocessing.looks_complete(tf.constant(data)))


def test_eval_crop_window_matches_reference_formula():
    # S / (S + 32) of the short side, offsets rounded up: int(32/64 * 48) = 24.
    window = preprocessing.center_crop_window(tf.constant([48, 64]), 32).numpy()
    np.testing.assert_array_equal(window, [12, 20, 24, 24])
    window = preprocessing.center_crop_window(tf.constant([48, 64]), 32, crop_fraction=0.875).numpy()
    np.testing.assert_array_equal(window, [3, 11, 42, 42])
    with pytest.raises(ValueError, match="crop_fraction"):
        preprocessing.center_crop_window(tf.constant([48, 64]), 32, crop_fraction=1.5)


def test_eval_bytes_and_tensor_agree_and_match_manual_crop():
    # The default: the original's TF1 resize_bicubic, not clipped.
    want = tf.compat.v1.image.resize_bicubic(PHOTO[None, 12:36, 20:44], [32, 32])[0].numpy()
    edges = np.kron(np.indices((6, 6)).sum(0) % 2 * 255, np.ones((4, 4)))[..., None].repeat(3, -1)
    overshoot = preprocessing.preprocess_for_eval(tf.constant(edges.astype(np.uint8)), 32).numpy()
    assert overshoot.min() < -10 and overshoot.max() > 265  # bicubic overshoots; nothing clips it
    for image in (tf.constant(PHOTO), tf.constant(_encode(PHOTO, "PNG"))):
        np.testing.assert_array_equal(preprocessing.preprocess_for_eval(image, 32).numpy(), want)
    # tf.image.resize methods are clipped.
    want = tf.image.resize(PHOTO[12:36, 20:44], [32, 32], method="bicubic")
    want = np.clip(want.numpy(), 0, 255)
    from_tensor = preprocessing.preprocess_for_eval(tf.constant(PHOTO), 32, resize_method="bicubic").numpy()
    from_png = preprocessing.preprocess_for_eval(tf.constant(_encode(PHOTO, "PNG")),
                                                 preprocessing.EvalPreprocessing(32, resize_method="bicubic"))
    np.testing.assert_allclose(from_tensor, want, atol=1e-3)
    np.testing.assert_allclose(from_png.numpy(), want, atol=1e-3)
    # Fused JPEG decode-and-crop equals decoding then cropping, up to chroma upsampling
    # at the crop's edges (libjpeg decodes whole MCUs around the window).
    jpeg = _encode(PHOTO, "JPEG", quality=95)
    decoded = preprocessing.decode_image(tf.constant(jpeg))
    _assert_close_jpeg(preprocessing.preprocess_for_eval(tf.constant(jpeg), 32),
                       preprocessing.preprocess_for_eval(decoded, 32))
    assert from_tensor.dtype == np.float32 and from_tensor.min() >= 0 and from_tensor.max() <= 255
    with pytest.raises(ValueError, match="resize_method must be one of bicubic_tf1, bicubic"):
        preprocessing.preprocess_for_eval(tf.constant(PHOTO), 32, resize_method="bicubik")


def test_resize_methods_and_defaults():
    """"bicubic_tf1" (the default for training, evaluation and EvalPreprocessing) is
    tf.compat.v1.image.resize_bicubic on the legacy grid, single images and batches."""
    assert preprocessing.RESIZE_METHODS[0] == preprocessing.DEFAULT_RESIZE_METHOD == "bicubic_tf1"
    assert preprocessing.EvalPreprocessing(224).resize_method == "bicubic_tf1"
    batch = tf.constant(np.stack([PHOTO, PHOTO[::-1]]))
    for size in (7, 32, 100):
        want = tf.compat.v1.image.resize_bicubic(batch, [size, size], align_corners=False,
                                                 half_pixel_centers=False).numpy()
        np.testing.assert_array_equal(preprocessing.resize(batch, size).numpy(), want)
        np.testing.assert_array_equal(preprocessing.resize(batch[1], size).numpy(), want[1])
        np.testing.assert_array_equal(preprocessing.resize(tf.cast(batch, tf.float32), size).numpy(), want)
    # A different kernel from tf.image.resize's bicubic (half-pixel centres, a = -0.5).
    other = preprocessing.resize(batch, 32, "bicubic").numpy()
    assert np.abs(other - preprocessing.resize(batch, 32).numpy()).mean() > 0.5
    assert other.min() >= 0 and other.max() <= 255


def test_eval_crop_size_is_computed_in_float32_like_the_original():
    """size = tf.cast(float32(S / (S + 32)) * float32(short side), int32)."""
    for size in (224, 240, 260, 300, 380, 456, 528, 600):
        for short in (1, 33, 333, 375, 500, 512, 1023, 2000):
            fraction = np.float32(size / (size + 32))
            want = max(int(fraction * np.float32(short)), 1)
            got = preprocessing.center_crop_window(tf.constant([short, short + 7]), size).numpy()
            assert got[2] == got[3] == want, (size, short)
            assert got[0] == (short - want + 1) // 2 and got[1] == (short + 7 - want + 1) // 2


def test_train_output_and_reproducibility():
    jpeg = tf.constant(_encode(PHOTO, "JPEG", quality=95))
    decoded = preprocessing.decode_image(jpeg)
    seed = tf.constant([3, 4], tf.int64)
    for augment, resize_method, semantics in ((None, "bicubic", "original"),
                                              ("autoaugment", "bicubic_tf1", "original"),
                                              ("randaugment", "bicubic_tf1", "original"),
                                              ("autoaugment", "bicubic_tf1", "pil")):
        kwargs = dict(augment=augment, seed=seed, resize_method=resize_method, semantics=semantics)
        out = preprocessing.preprocess_for_train(jpeg, 40, **kwargs)
        again = preprocessing.preprocess_for_train(jpeg, 40, **kwargs)
        assert out.shape == (40, 40, 3) and out.dtype == tf.float32
        # Clipped: tf.image.resize methods, and every augmented image (it went through uint8).
        assert 0.0 <= float(tf.reduce_min(out)) and float(tf.reduce_max(out)) <= 255.0
        np.testing.assert_array_equal(out.numpy(), again.numpy())
    # Without augmentation the output is the original's resize of the crop, not clipped (the
    # whole-image window counts as a failed sample: the centre-crop fallback is used).
    edges = np.kron(np.indices((12, 16)).sum(0) % 2 * 255, np.ones((4, 4)))[..., None].repeat(3, -1)
    edges = tf.constant(edges.astype(np.uint8))
    plain = preprocessing.preprocess_for_train(edges, 40, seed=seed, flip=False, area_range=(1.0, 1.0)).numpy()
    oy, ox, h, w = preprocessing.center_crop_window(tf.constant([48, 64]), 40).numpy()
    np.testing.assert_array_equal(plain, preprocessing.resize(edges[oy:oy + h, ox:ox + w], 40).numpy())
    assert plain.min() < 0 and plain.max() > 255
    with pytest.raises(ValueError, match="semantics"):
        preprocessing.preprocess_for_train(jpeg, 40, augment="autoaugment", semantics="PIL")
    # Same seed, bytes (fused crop) or decoded tensor: the same crop.
    _assert_close_jpeg(preprocessing.preprocess_for_train(jpeg, 40, seed=seed),
                       preprocessing.preprocess_for_train(decoded, 40, seed=seed))
    different = preprocessing.preprocess_for_train(jpeg, 40, seed=tf.constant([5, 6], tf.int64))
    assert not np.array_equal(different.numpy(), preprocessing.preprocess_for_train(jpeg, 40, seed=seed).numpy())
    with pytest.raises(ValueError, match="augment"):
        preprocessing.preprocess_for_train(jpeg, 40, augment="autoaugmnet")


def test_random_crop_statistics():
    """Crops cover 8%..100% of the area with aspect 3/4..4/3 (or the centre fallback)."""
    shape = tf.constant([48, 64])
    areas = []
    for i in range(60):
        oy, ox, h, w = preprocessing.random_crop_window(shape, tf.constant([1, i], tf.int64),
                                                        fallback_image_size=32).numpy()
        assert 0 <= oy and oy + h <= 48 and 0 <= ox and ox + w <= 64
        areas.append(h * w / (48 * 64))
    assert min(areas) >= 0.05 and max(areas) <= 1.0 and np.std(areas) > 0.05


def test_images_smaller_than_the_crop_and_odd_inputs():
    tiny = np.full((5, 3, 3), 200, np.uint8)
    for image in (tiny, tf.constant(_encode(tiny, "PNG")), tiny[..., :1], np.dstack([tiny, tiny[..., :1]])):
        train = preprocessing.preprocess_for_train(image, 24, seed=tf.constant([1, 1], tf.int64))
        evaluated = preprocessing.preprocess_for_eval(image, 24)
        assert train.shape == evaluated.shape == (24, 24, 3)
        np.testing.assert_allclose(evaluated.numpy(), 200.0, atol=1e-3)


def test_batch_eval_in_tf_function():
    pngs = tf.constant([_encode(_photo(30 + 7 * i, 40, i), "PNG") for i in range(3)])
    batch = tf.constant(np.stack([_photo(48, 64, i) for i in range(3)]))
    fn = tf.function(lambda x: preprocessing.preprocess_batch_for_eval(x, 32))
    from_bytes = fn(pngs).numpy()
    from_pixels = fn(batch).numpy()
    assert from_bytes.shape == from_pixels.shape == (3, 32, 32, 3)
    for i in range(3):
        np.testing.assert_allclose(from_pixels[i], preprocessing.preprocess_for_eval(batch[i], 32).numpy(),
                                   atol=1e-3)
        single = preprocessing.preprocess_for_eval(tf.constant(_encode(_photo(30 + 7 * i, 40, i), "PNG")), 32)
        np.testing.assert_allclose(from_bytes[i], single.numpy(), atol=1e-3)
    gray = preprocessing.preprocess_batch_for_eval(tf.constant(np.zeros((2, 20, 20, 1), np.uint8)), 16)
    assert gray.shape == (2, 16, 16, 3)

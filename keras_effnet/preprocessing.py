"""THE preprocessing path of keras-effnet: decode, training crop, evaluation crop.

Used by the input pipeline (`keras_effnet.data`), training, evaluation, export and
prediction, so they cannot disagree (docs/DESIGN.md; docs/fidelity.md compares it with
tensorflow/tpu ``models/official/efficientnet/preprocessing.py``, "the original").

- Images leave this module as float32 [S, S, 3] RGB on the 0..255 scale. Normalisation
  (mean/std per weight set) lives inside the model, not here.
- Training: random crop with `sample_distorted_bounding_box` (object covered 0.1,
  aspect 3/4..4/3, area 0.08..1, 10 attempts; falls back to the evaluation centre
  crop), fused decode-and-crop for JPEG bytes, resize to S, random horizontal flip,
  then (with augmentation) clip and truncate to uint8 and AutoAugment / RandAugment.
- Evaluation: centre crop of S / (S + crop_padding) of the short side (the published
  checkpoints; `crop_fraction=0.875` for newer recipes, 1.0 for tiny images), resize.
- Resize: by default the original's TF1 ``resize_bicubic`` ("bicubic_tf1", not clipped: it
  may overshoot 0..255 a little); the ``tf.image.resize`` methods clip to [0, 255].

All functions are pure TensorFlow: they run in `tf.data.Dataset.map` and `tf.function`.
"""

from __future__ import annotations

from typing import Sequence

import tensorflow as tf

from keras_effnet import augment as augment_lib
from keras_effnet.eval_preprocessing import (  # noqa: F401 (re-exported: the one settings type)
    CROP_PADDING,
    DEFAULT_RESIZE_METHOD,
    NORMALIZATION_NAMES,
    RESIZE_METHODS,
    EvalPreprocessing,
    check_resize_method,
)

# No tensor-dependent Python control flow here: skip AutoGraph conversion (faster tracing).
_no_autograph = tf.autograph.experimental.do_not_convert

AUGMENTATIONS = (None, "autoaugment", "randaugment")


# --------------------------------------------------------------------------- decoding


@_no_autograph
def is_jpeg(image_bytes: tf.Tensor) -> tf.Tensor:
    """True if the bytes start with the JPEG start-of-image marker."""
    return tf.equal(tf.strings.substr(image_bytes, 0, 2), b"\xff\xd8")


@_no_autograph
def _head(image_bytes: tf.Tensor, n: int) -> tf.Tensor:
    """The first `n` bytes as a string of exactly `n` bytes (zero-padded for short inputs)."""
    padded = tf.strings.join([tf.strings.substr(image_bytes, 0, n), b"\0" * n])
    return tf.strings.substr(padded, 0, n)


@_no_autograph
def _tail(image_bytes: tf.Tensor, n: int) -> tf.Tensor:
    """The last `n` bytes as uint8 [n] (zero-padded in front for short inputs)."""
    length = tf.strings.length(image_bytes)
    end = tf.strings.substr(image_bytes, tf.maximum(length - n, 0), n)
    padded = tf.strings.join([b"\0" * n, end])
    return tf.reshape(tf.io.decode_raw(tf.strings.substr(padded, tf.strings.length(padded) - n, n),
                                       tf.uint8), [n])


@_no_autograph
def _contains(window: tf.Tensor, marker: bytes) -> tf.Tensor:
    """True if the uint8 vector `window` contains the byte sequence `marker`."""
    n = len(marker)
    length = window.shape[0]
    hits = [tf.equal(window[i:length - n + 1 + i], byte) for i, byte in enumerate(marker)]
    return tf.reduce_any(tf.reduce_all(tf.stack(hits), axis=0))


@_no_autograph
def looks_complete(image_bytes: tf.Tensor) -> tf.Tensor:
    """Cheap, non-throwing check that encoded bytes are a whole JPEG/PNG/GIF/BMP file.

    Checks the format signature and the end-of-file marker (JPEG EOI within the last 64
    bytes, PNG IEND, GIF trailer) or, for BMP, the file size in the header. Catches
    empty, foreign and truncated files before the decoder can fail on them. Bool scalar.
    """
    image_bytes = tf.convert_to_tensor(image_bytes)
    length = tf.strings.length(image_bytes)
    # Two small reads (the first 8 and the last 64 bytes); the shorter PNG and GIF end
    # markers lie in the last 64. No copy of the whole file: ~0.1 ms less per image.
    head_bytes, tail = _head(image_bytes, 8), _tail(image_bytes, 64)
    head = tf.reshape(tf.io.decode_raw(head_bytes, tf.uint8), [8])
    jpeg_ok = (head[0] == 0xFF) & (head[1] == 0xD8) & _contains(tail, b"\xff\xd9")
    png_ok = _contains(head, b"\x89PNG\r\n\x1a\n") & _contains(tail[-12:], b"IEND")
    gif_ok = _contains(head[:4], b"GIF8") & _contains(tail[-4:], b";")
    bmp_size = tf.io.decode_raw(tf.strings.substr(head_bytes, 2, 4), tf.int32, little_endian=True)[0]
    bmp_ok = (head[0] == ord("B")) & (head[1] == ord("M")) & (bmp_size <= length) & (length > 26)
    return (length > 8) & (jpeg_ok | png_ok | gif_ok | bmp_ok)


@_no_autograph
def decode_image(image_bytes: tf.Tensor) -> tf.Tensor:
    """Decode JPEG / PNG / GIF (first frame) / BMP bytes to uint8 [H, W, 3] RGB.

    Grayscale is replicated to three channels, alpha is dropped (RGBA -> RGB), 16-bit
    PNG is scaled to 8 bits. CMYK (and YCCK) JPEGs are converted to RGB by libjpeg
    inside TensorFlow's decoder (within ±2 of PIL's conversion).
    """
    image = tf.io.decode_image(image_bytes, channels=3, dtype=tf.uint8, expand_animations=False)
    return tf.ensure_shape(image, [None, None, 3])


@_no_autograph
def _to_rgb_uint8(image: tf.Tensor) -> tf.Tensor:
    """uint8 [H, W, 3] from a decoded image tensor with 1, 3 or 4 channels."""
    image = tf.convert_to_tensor(image)
    if image.dtype != tf.uint8:
        image = tf.cast(tf.clip_by_value(tf.round(tf.cast(image, tf.float32)), 0.0, 255.0), tf.uint8)
    channels = image.shape[-1]
    if channels == 1:
        image = tf.tile(image, [1, 1, 3])
    elif channels == 4:
        image = image[..., :3]
    elif channels is None:
        image = tf.cond(tf.shape(image)[-1] == 1, lambda: tf.tile(image, [1, 1, 3]), lambda: image[..., :3])
    return tf.ensure_shape(image, [None, None, 3])


@_no_autograph
def image_shape(image) -> tf.Tensor:
    """[height, width] (int32) of encoded bytes (JPEG without decoding) or of a tensor."""
    image = tf.convert_to_tensor(image)
    if image.dtype == tf.string:
        return tf.cond(is_jpeg(image), lambda: tf.io.extract_jpeg_shape(image)[:2],
                       lambda: tf.shape(decode_image(image))[:2])
    return tf.shape(image)[:2]


# --------------------------------------------------------------------------- crop windows


@_no_autograph
def center_crop_window(shape: tf.Tensor, image_size: int, crop_fraction: float | None = None,
                       crop_padding: int = CROP_PADDING) -> tf.Tensor:
    """[offset_y, offset_x, size, size] of the evaluation centre crop (int32).

    size = int(S / (S + crop_padding) * min(H, W)), or int(crop_fraction * min(H, W)),
    multiplied in float32 and truncated as the original (tensorflow/tpu ``preprocessing.py``).
    """
    shape = tf.cast(shape, tf.int32)
    height, width = shape[0], shape[1]
    if crop_fraction is None:
        crop_fraction = image_size / (image_size + crop_padding)
    if not 0.0 < crop_fraction <= 1.0:
        raise ValueError(f"crop_fraction must be in (0, 1], got {crop_fraction}.")
    short_side = tf.cast(tf.minimum(height, width), tf.float32)
    size = tf.maximum(tf.cast(tf.constant(crop_fraction, tf.float32) * short_side, tf.int32), 1)
    offset_y = ((height - size) + 1) // 2
    offset_x = ((width - size) + 1) // 2
    return tf.stack([offset_y, offset_x, size, size])


@_no_autograph
def random_crop_window(shape: tf.Tensor, seed, area_range: Sequence[float] = (0.08, 1.0),
                       aspect_ratio_range: Sequence[float] = (3 / 4, 4 / 3),
                       min_object_covered: float = 0.1, max_attempts: int = 10,
                       fallback_image_size: int = 224) -> tf.Tensor:
    """[offset_y, offset_x, height, width] of the Inception-style random crop (int32).

    When no window is found within `max_attempts`, the centre crop for
    `fallback_image_size` is used (as in the reference).
    """
    shape = tf.cast(shape, tf.int32)
    full_box = tf.constant([0.0, 0.0, 1.0, 1.0], tf.float32, shape=[1, 1, 4])
    begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.concat([shape[:2], [3]], 0), bounding_boxes=full_box, seed=seed,
        min_object_covered=min_object_covered, aspect_ratio_range=aspect_ratio_range,
        area_range=area_range, max_attempts=max_attempts, use_image_if_no_bounding_boxes=True)
    window = tf.stack([begin[0], begin[1], size[0], size[1]])
    failed = tf.reduce_all(tf.equal(size[:2], shape[:2]))
    return tf.cond(failed, lambda: center_crop_window(shape, fallback_image_size), lambda: window)


@_no_autograph
def _decode_and_crop(image, window: tf.Tensor) -> tf.Tensor:
    """Crop `window` out of encoded bytes (fused for JPEG) or a decoded tensor -> uint8 RGB."""
    image = tf.convert_to_tensor(image)
    if image.dtype == tf.string:
        def fused():
            return tf.io.decode_and_crop_jpeg(image, window, channels=3)

        def generic():
            decoded = decode_image(image)
            return decoded[window[0]:window[0] + window[2], window[1]:window[1] + window[3]]

        cropped = tf.cond(is_jpeg(image), fused, generic)
        return tf.ensure_shape(cropped, [None, None, 3])
    image = _to_rgb_uint8(image)
    return image[window[0]:window[0] + window[2], window[1]:window[1] + window[3]]


@_no_autograph
def resize(images: tf.Tensor, image_size: int, method: str = DEFAULT_RESIZE_METHOD) -> tf.Tensor:
    """Resize [H, W, C] or [B, H, W, C] images to S x S -> float32.

    "bicubic_tf1" is ``tf.compat.v1.image.resize_bicubic`` (legacy grid: align_corners and
    half_pixel_centers False; Keys a = -0.75), the original's, not clipped (as the original);
    the ``tf.image.resize`` methods clip to [0, 255] (bicubic overshoots).
    """
    images = tf.convert_to_tensor(images)
    if check_resize_method(method) == "bicubic_tf1":
        batched = images if images.shape.rank == 4 else images[None]
        # The kernel of tf.compat.v1.image.resize_bicubic, without its deprecation warning.
        resized = tf.raw_ops.ResizeBicubic(images=batched, size=[image_size, image_size],
                                           align_corners=False, half_pixel_centers=False)
        return resized if images.shape.rank == 4 else resized[0]
    resized = tf.image.resize(images, [image_size, image_size], method=method)
    return tf.clip_by_value(tf.cast(resized, tf.float32), 0.0, 255.0)



# --------------------------------------------------------------------------- entry points


@_no_autograph
def preprocess_for_train(image, image_size: int, augment: str | None = None,
                         randaugment_layers: int = 2, randaugment_magnitude: float = 10,
                         seed=None, *, autoaugment_policy: str = "v0",
                         area_range: Sequence[float] = (0.08, 1.0),
                         aspect_ratio_range: Sequence[float] = (3 / 4, 4 / 3),
                         min_object_covered: float = 0.1, flip: bool = True,
                         resize_method: str = DEFAULT_RESIZE_METHOD,
                         semantics: str = augment_lib.DEFAULT_SEMANTICS,
                         as_uint8: bool = False) -> tf.Tensor:
    """Training preprocessing of one image -> float32 [S, S, 3] on the 0..255 scale.

    Without augmentation the "bicubic_tf1" output is not clipped (as the original's);
    with it, the image passes through uint8 and lies in [0, 255].

    Args:
      image: encoded bytes (scalar tf.string; JPEG is decoded and cropped in one fused
        op) or an image tensor [H, W, C] (uint8 or float in [0, 255], C in 1, 3, 4).
      image_size: output side S in pixels.
      augment: None, "autoaugment" (policy `autoaugment_policy`, default "v0") or
        "randaugment" (`randaugment_layers` N, `randaugment_magnitude` M).
      seed: int64 [2] tensor (or int) for reproducible stateless randomness; None draws
        from the global generator.
      area_range, aspect_ratio_range, min_object_covered: the random crop (fraction of
        the image area, width/height). Use a larger minimum area for tiny images.
      resize_method: one of ``RESIZE_METHODS`` (default the original's "bicubic_tf1").
      semantics: augmentation op semantics and uint8 conversion, "original" (truncation,
        tensorflow/tpu autoaugment.py) or "pil" (rounding, PIL ops); see ``augment``.
      as_uint8: with augmentation, return the augmented uint8 pixels themselves (the float32
        output is exactly their cast), so that a pipeline batches a quarter of the bytes and
        casts whole batches (``data.make_dataset`` does).
    """
    if augment not in AUGMENTATIONS:
        raise ValueError(f"augment must be one of {AUGMENTATIONS}, got {augment!r}.")
    if as_uint8 and augment is None:
        raise ValueError("as_uint8=True needs augmentation: without it the output is the "
                         "unclipped float resize (as the original's), not uint8 pixels.")
    check_resize_method(resize_method)
    augment_lib.check_semantics(semantics)
    seed_crop, seed_flip, seed_augment = augment_lib._split(seed, 3)
    window = random_crop_window(image_shape(image), seed_crop, area_range, aspect_ratio_range,
                                min_object_covered, fallback_image_size=image_size)
    cropped = _decode_and_crop(image, window)
    resized = resize(cropped, image_size, resize_method)
    if augment is None:
        if flip:
            resized = tf.image.stateless_random_flip_left_right(resized, seed_flip)
    else:
        pixels = augment_lib.to_uint8(resized, semantics)
        if flip:  # on uint8 (a quarter of the bytes); the conversion is per pixel, so the same
            pixels = tf.image.stateless_random_flip_left_right(pixels, seed_flip)
        if augment == "autoaugment":
            pixels = augment_lib.autoaugment(pixels, autoaugment_policy, seed=seed_augment,
                                             semantics=semantics)
        else:
            pixels = augment_lib.randaugment(pixels, randaugment_layers, randaugment_magnitude,
                                             seed=seed_augment, semantics=semantics)
        resized = pixels if as_uint8 else tf.cast(pixels, tf.float32)
    return tf.ensure_shape(resized, [image_size, image_size, 3])


def as_eval_preprocessing(settings: "EvalPreprocessing | int", crop_fraction: float | None = None,
                          crop_padding: int = CROP_PADDING,
                          resize_method: str = DEFAULT_RESIZE_METHOD) -> EvalPreprocessing:
    """``settings`` itself, or an ``EvalPreprocessing`` for image side ``settings`` and the rest."""
    if isinstance(settings, EvalPreprocessing):
        return settings
    return EvalPreprocessing(int(settings), crop_fraction, crop_padding, resize_method)


@_no_autograph
def preprocess_for_eval(image, image_size: "EvalPreprocessing | int",
                        crop_fraction: float | None = None, crop_padding: int = CROP_PADDING,
                        resize_method: str = DEFAULT_RESIZE_METHOD) -> tf.Tensor:
    """Evaluation / inference preprocessing of one image -> float32 [S, S, 3], 0..255 scale.

    ``image_size`` is an ``EvalPreprocessing`` (the usual form: a weight set's, a run's or an
    export's settings) or the side S with the crop and resize given by the other arguments.
    Centre crop of S / (S + crop_padding) of the short side (default padding 32, as the
    published checkpoints were evaluated), or ``crop_fraction`` of it when given (0.875 for
    newer recipes, 1.0 to keep the whole short side), then the resize ("bicubic_tf1", the
    original's, is not clipped). ``image``: bytes or a tensor, as in ``preprocess_for_train``.
    """
    settings = as_eval_preprocessing(image_size, crop_fraction, crop_padding, resize_method)
    size = settings.resolution
    window = center_crop_window(image_shape(image), size, settings.crop_fraction,
                                settings.crop_padding)
    cropped = _decode_and_crop(image, window)
    return tf.ensure_shape(resize(cropped, size, settings.resize_method), [size, size, 3])


@_no_autograph
def preprocess_batch_for_eval(images, image_size: "EvalPreprocessing | int",
                              crop_fraction: float | None = None,
                              crop_padding: int = CROP_PADDING,
                              resize_method: str = DEFAULT_RESIZE_METHOD) -> tf.Tensor:
    """``preprocess_for_eval`` on a batch -> float32 [B, S, S, 3]; usable in tf.function.

    Args:
      images: tf.string [B] of encoded images (each may have its own size), or an image
        batch [B, H, W, C] (uint8 or float in [0, 255], C in 1, 3, 4), any H and W.
      image_size: an ``EvalPreprocessing``, or the side S with the other arguments.
    """
    settings = as_eval_preprocessing(image_size, crop_fraction, crop_padding, resize_method)
    size = settings.resolution
    images = tf.convert_to_tensor(images)
    if images.dtype == tf.string:
        return tf.map_fn(lambda one: preprocess_for_eval(one, settings), images,
                         fn_output_signature=tf.TensorSpec([size, size, 3], tf.float32))
    if images.shape.rank != 4:
        raise ValueError(f"Expected a batch [B, H, W, C] or encoded strings [B], got shape {images.shape}.")
    channels = images.shape[-1]
    if channels == 1:
        images = tf.tile(images, [1, 1, 1, 3])
    elif channels == 4:
        images = images[..., :3]
    window = center_crop_window(tf.shape(images)[1:3], size, settings.crop_fraction,
                                settings.crop_padding)
    cropped = images[:, window[0]:window[0] + window[2], window[1]:window[1] + window[3], :]
    cropped = cropped if cropped.dtype in (tf.uint8, tf.float32) else tf.cast(cropped, tf.float32)
    return resize(cropped, size, settings.resize_method)

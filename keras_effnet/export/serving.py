"""Serving SavedModel: TF Serving signatures that run THE evaluation preprocessing.

Every signature returns ``logits``, ``probabilities`` [B, C], ``top_k_classes`` int32 [B, k],
``top_k_scores`` [B, k] and ``top_k_labels`` string [B, k]:

- ``serving_default``: float32 [B, H, W, 3] RGB in [0, 255], any H, W;
- ``uint8_images``: uint8 [B, H, W, 3], any H, W;
- ``encoded_images``: tf.string [B] of JPEG / PNG / GIF / BMP bytes, each of its own size;
- ``preprocessed_images``: float32 [B, S, S, 3] in [0, 255], already preprocessed.

The first three call ``keras_effnet.preprocessing.preprocess_batch_for_eval(images, settings)``
with the source's ``EvalPreprocessing``: the function training and evaluation use.

The network inside is the deploy graph (``keras_effnet.deploy.deploy``: batch norm folded into
the convolutions, dropout removed): a serving model is never trained, and the folded graph is
1.3-1.5x faster in TensorFlow (docs/performance.md) with outputs within 1e-4 of the model's.
The Hub modules stay on the trainable graph (``hub``).

Inputs are checked before anything is decoded or resized (a signature cannot catch an
exception). A bad input fails with one ``InvalidArgumentError`` whose text is
``assertion failed: [<signature> ...]``: what is wrong, the first bad entry by index, the fix
and how many entries of the batch were refused. The checks:

- the rank (one [H, W, 3] image needs a batch axis), 3 channels, the preprocessed size, and at
  least one pixel each way;
- ``encoded_images``: each entry is a whole JPEG / PNG / GIF / BMP file
  (``preprocessing.looks_complete``: its signature and its end marker), so an empty string,
  another format or a truncated file is named by index (TF's fused JPEG decode-and-crop decodes
  a truncated JPEG without an error, the missing rows grey). Not caught: a file damaged in the
  middle with both ends intact (the decoder then fails without an index, or decodes what it
  can). Refused although readable: a JPEG with more than 64 bytes after its end marker (phones'
  motion photos append a video);
- the float signatures: every image finite and on the [0, 255] scale. Refused, naming the
  conversion: [0, 1] (all values in [0, 1], one of them fractional: on the [0, 255] scale such
  an image is black; an all-zero image is accepted), [-1, 1], mean/std normalised (negative
  values, none above 3), values below 0 or above 255 (``preprocessed_images``: beyond the
  resize's own overshoot, ``PREPROCESSED_RANGE``, so mean-subtracted images are caught there
  only below -113.56).

An empty batch (B = 0) returns empty outputs ([0, C], [0, k]): zero images, zero answers.
"""

from __future__ import annotations

import logging
import os
from typing import Callable, Iterable, Sequence

import keras
import tensorflow as tf

from keras_effnet import preprocessing
from keras_effnet.deploy import deploy
from keras_effnet.export.graph import default_eval_preprocessing, export_view, has_classifier
from keras_effnet.export.metadata import METADATA_FILE, write_metadata
from keras_effnet.export.staging import staged_directory
from keras_effnet.preprocessing import EvalPreprocessing

logger = logging.getLogger(__name__)

DEFAULT_TOP_K = 5
SIGNATURES = ("serving_default", "uint8_images", "encoded_images", "preprocessed_images")

# What a float signature accepts, as (low, high) beyond which an image is on another scale:
# raw images [0, 255] up to float rounding; preprocessed ones what the eval resize makes of
# [0, 255] pixels. "bicubic_tf1" (Keys a = -0.75, not clipped) overshoots most at half-pixel
# offsets, where its positive weights sum to 1.1875 and its negative ones to -0.1875: in 2-D
# the output lies in 255 * [-2 * 1.1875 * 0.1875, 1.1875**2 + 0.1875**2] = [-113.55, 368.55]
# (0, 255, 255, 0 ... rows and columns upsampled 2x reach both ends). The tf.image.resize
# methods clip to [0, 255].
RAW_RANGE = (-0.5, 255.5)
PREPROCESSED_RANGE = {"bicubic_tf1": (-113.56, 368.56)}
# Negative values with no value above this are a signed convention: [-1, 1], or mean/std
# normalised (ImageNet mean/std maps [0, 255] to [-2.12, 2.64]).
SIGNED_MAXIMUM = 3.0
_SEE_INSIDE = "pass the RGB values themselves (the model normalises inside)"


def _at(values: tf.Tensor, index: tf.Tensor, pad) -> tf.Tensor:
    """``values[index]``, or ``pad`` for the index one past the end (when no entry failed)."""
    return tf.concat([values, tf.constant([pad], values.dtype)], 0)[index]


def _text(value: tf.Tensor) -> tf.Tensor:
    return tf.strings.as_string(value, shortest=True) if value.dtype.is_floating else (
        tf.strings.as_string(value))


def _shape_text(tensor: tf.Tensor) -> tf.Tensor:
    """"[2, 32, 32, 3]": the run-time shape of ``tensor``, for messages."""
    listed = tf.strings.reduce_join(_text(tf.shape(tensor)), separator=", ")
    return tf.strings.join(["[", listed, "]"])


def _assert_each(ok: tf.Tensor, describe: Callable[[tf.Tensor], tf.Tensor], prefix: str,
                 entries: str) -> tf.Operation:
    """Assert that every entry of the bool vector ``ok`` [B] holds; the message names the
    first that does not: ``<prefix><entries>[i] <describe(i)> (n of B refused)``."""
    first = tf.argmin(tf.concat([tf.cast(ok, tf.int32), [0]], 0), output_type=tf.int32)
    refused = tf.reduce_sum(tf.cast(tf.logical_not(ok), tf.int32))
    message = tf.strings.join([f"{prefix}{entries}[", _text(first), "] ", describe(first),
                               " (", _text(refused), " of ", _text(tf.size(ok)), " refused)"])
    return tf.debugging.Assert(tf.reduce_all(ok), [message])


def _after(checks: Sequence[tf.Operation], tensor: tf.Tensor) -> tf.Tensor:
    with tf.control_dependencies(checks):
        return tf.identity(tensor)


def _rank_checked(tensor: tf.Tensor, rank: int, message: str, hint: str = "") -> tf.Tensor:
    """``tensor`` once its rank is ``rank``. Signatures do not enforce shapes when called, and
    ``tf.rank`` is folded to the signature's rank, so the dimensions are counted at run time."""
    actual = tf.math.count_nonzero(tf.shape(tensor) >= 0, dtype=tf.int32)
    hint = tf.where(tf.equal(actual, rank - 1), hint, "")
    check = tf.debugging.Assert(tf.equal(actual, rank), [
        tf.strings.join([message, ", got shape ", _shape_text(tensor), hint])])
    return _after([check], tensor)


def _checked_images(images: tf.Tensor, name: str, size: int | None = None) -> tf.Tensor:
    """``images`` once it is [B, H, W, 3] with H, W >= 1 (H = W = ``size`` when given)."""
    expected = f"[batch, {size or 'height'}, {size or 'width'}, 3]"
    images = _rank_checked(images, 4, f"{name}: images must be a batch {expected}",
                           "; add a batch axis for one image (images[None])")
    shape, shown = tf.shape(images), _shape_text(images)
    checks = [tf.debugging.Assert(tf.equal(shape[-1], 3), [tf.strings.join([
        f"{name}: images must be RGB {expected}, got shape ", shown,
        "; convert grayscale/RGBA first"])])]
    if size is not None:
        checks.append(tf.debugging.Assert(tf.reduce_all(tf.equal(shape[1:3], size)), [
            tf.strings.join([f"{name}: images must be {expected} (already preprocessed), got "
                             "shape ", shown, "; use serving_default or uint8_images for "
                             "images of other sizes"])]))
    else:
        pixels = tf.logical_or(tf.equal(shape[0], 0), tf.reduce_all(shape[1:3] > 0))
        checks.append(tf.debugging.Assert(pixels, [tf.strings.join([
            f"{name}: images are ", _text(shape[1]), " x ", _text(shape[2]), " pixels (shape ",
            shown, "); every image needs at least one pixel each way"])]))
    return _after(checks, images)


def _checked_scale(images: tf.Tensor, name: str, low: float, high: float,
                   shown: tuple[str, str] = ("0", "255")) -> tf.Tensor:
    """``images`` (float [B, H, W, 3]) once each image is finite and on the [0, 255] scale:
    within [``low``, ``high``] (written ``shown`` in messages), the range that scale takes
    through the signature's resize.

    The other conventions are told apart by the same range mapped onto them (the resize is
    linear, its weights sum to one). Three reductions per image (min, max, sum), plus a test
    for fractions only when an image is dim enough to be [0, 1]: 50 ms for 8 x 480 x 640 float
    images on two busy cores, where the eval preprocessing takes 30 ms; small next to the
    network.
    """
    axes = [1, 2, 3]
    least = tf.reduce_min(images, axis=axes)
    most = tf.reduce_max(images, axis=axes)
    # A NaN anywhere makes the sum NaN (IEEE); an infinity is the minimum or the maximum.
    finite = (tf.math.is_finite(least) & tf.math.is_finite(most)
              & tf.logical_not(tf.math.is_nan(tf.reduce_sum(images, axis=axes))))
    unit_low, unit_high = low / 255, high / 255
    dim = most <= unit_high
    fractional = tf.cond(
        tf.reduce_any(dim),
        lambda: tf.reduce_any(tf.not_equal(images, tf.floor(images)), axis=axes),
        lambda: tf.zeros_like(dim))
    signed = (least < 0) & (most <= SIGNED_MAXIMUM * unit_high)
    # (refused when, what, fix), in the order they are told apart.
    problems = (
        (~finite, "holds NaN or infinity", "send finite values"),
        ((least >= unit_low) & dim & fractional, "looks like [0, 1]", "multiply by 255"),
        (signed & (least >= 2 * unit_low - 1) & (most <= 2 * unit_high - 1),
         "looks like [-1, 1]", "pass (x + 1) * 127.5"),
        (signed, "looks mean/std normalised", _SEE_INSIDE),
        (least < low, f"has values below {shown[0]}", f"mean-subtracted? {_SEE_INSIDE}"),
        (most > high, f"has values above {shown[1]}", "16-bit? divide by 257"),
    )
    code = tf.zeros_like(least, tf.int32)  # 0: fine, else 1 + the first problem that applies
    for number, (refused, _, _) in reversed(list(enumerate(problems, 1))):
        code = tf.where(refused, number, code)
    whats = tf.constant([""] + [what for _, what, _ in problems])
    fixes = tf.constant([""] + [fix for _, _, fix in problems])

    def describe(i):
        problem = _at(code, i, 0)
        values = tf.strings.join([" (min ", _text(_at(least, i, 0.0)), ", max ",
                                  _text(_at(most, i, 0.0)), ")"])
        return tf.strings.join([tf.gather(whats, problem), tf.where(problem > 1, values, ""),
                                ": ", tf.gather(fixes, problem)])

    check = _assert_each(tf.equal(code, 0), describe, f"{name} expects RGB in [0, 255]; ",
                         "images")
    return _after([check], images)


def _encoded_problem(one: tf.Tensor) -> tf.Tensor:
    """What is wrong with encoded bytes that ``preprocessing.looks_complete`` refused."""
    def starts(magic: bytes):
        return tf.equal(tf.strings.substr(one, 0, len(magic)), magic)

    length = _text(tf.strings.length(one))
    # (signature, format, what the file lacks)
    formats = ((b"BM", "a BMP", "fewer than its header says"),
               (b"GIF8", "a GIF", "no trailer byte"),
               (b"\x89PNG\r\n\x1a\n", "a PNG", "no IEND chunk"),
               (b"\xff\xd8", "a JPEG", "no end-of-image marker"))
    problem = tf.strings.join(["is not a JPEG, PNG, GIF or BMP file (", length, " bytes): "
                               "send JPEG, PNG, GIF or BMP bytes"])
    for magic, kind, why in formats:
        truncated = tf.strings.join([f"is {kind} cut short (", length, f" bytes, {why}): "
                                     "send the whole file"])
        problem = tf.where(starts(magic), truncated, problem)
    return tf.where(tf.equal(tf.strings.length(one), 0),
                    "is empty: send the bytes of each image file", problem)


def _checked_encoded(image_bytes: tf.Tensor, name: str) -> tf.Tensor:
    """``image_bytes`` once it is [B] of whole JPEG / PNG / GIF / BMP files."""
    image_bytes = _rank_checked(image_bytes, 1, f"{name}: image_bytes must be a batch [batch] "
                                "of encoded images", "; pass a list of one for one image")
    complete = tf.map_fn(preprocessing.looks_complete, image_bytes,
                         fn_output_signature=tf.TensorSpec([], tf.bool))
    check = _assert_each(complete, lambda i: _encoded_problem(_at(image_bytes, i, b"")),
                         f"{name}: ", "image_bytes")
    return _after([check], image_bytes)


class ServingModule(tf.Module):
    """The trackable root of a serving SavedModel: the model's variables and the signatures."""

    def __init__(self, model: keras.Model, settings: EvalPreprocessing, labels: Sequence[str],
                 top_k: int):
        super().__init__(name="serving")
        self.model_variables = [variable.value for variable in model.variables]
        size = settings.resolution
        classes = len(labels)
        label_table = tf.constant(list(labels), dtype=tf.string)
        top_k = max(1, min(int(top_k), classes))
        low, high = PREPROCESSED_RANGE.get(settings.resize_method, RAW_RANGE)
        shown = ((f"{low:g}", f"{high:g}") if settings.resize_method in PREPROCESSED_RANGE
                 else ("0", "255"))

        # One trace of the network, shared by every signature (tracing dominates export time).
        @tf.function(input_signature=[tf.TensorSpec([None, size, size, 3], tf.float32,
                                                    name="images")])
        def classify(images):
            logits = tf.cast(model(images, training=False), tf.float32)
            probabilities = tf.nn.softmax(logits, axis=-1)
            scores, indices = tf.math.top_k(probabilities, k=top_k)
            return {"logits": logits, "probabilities": probabilities,
                    "top_k_classes": tf.cast(indices, tf.int32), "top_k_scores": scores,
                    "top_k_labels": tf.gather(label_table, indices)}

        def nothing():
            """The outputs for an empty batch (TF's depthwise convolution refuses zero images)."""
            return {"logits": tf.zeros([0, classes]), "probabilities": tf.zeros([0, classes]),
                    "top_k_classes": tf.zeros([0, top_k], tf.int32),
                    "top_k_scores": tf.zeros([0, top_k]),
                    "top_k_labels": tf.fill([0, top_k], tf.constant("", tf.string))}

        def served(inputs, prepare=lambda images: images):
            """``classify(prepare(inputs))``, or empty outputs for an empty batch."""
            return tf.cond(tf.shape(inputs)[0] > 0, lambda: classify(prepare(inputs)), nothing)

        def prepared(images):
            return preprocessing.preprocess_batch_for_eval(images, settings)

        any_size = [None, None, None, 3]

        @tf.function(input_signature=[tf.TensorSpec(any_size, tf.float32, name="images")])
        def float_images(images):
            """float32 [B, H, W, 3] RGB in [0, 255], any size: eval crop + resize inside."""
            images = _checked_images(images, "serving_default")
            return served(_checked_scale(images, "serving_default", *RAW_RANGE), prepared)

        @tf.function(input_signature=[tf.TensorSpec(any_size, tf.uint8, name="images")])
        def uint8_images(images):
            """uint8 [B, H, W, 3] RGB, any size: eval crop + resize inside."""
            return served(_checked_images(images, "uint8_images"), prepared)

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])
        def encoded_images(image_bytes):
            """tf.string [B] of encoded JPEG / PNG / GIF / BMP images, each of its own size."""
            return served(_checked_encoded(image_bytes, "encoded_images"), prepared)

        @tf.function(input_signature=[tf.TensorSpec([None, size, size, 3], tf.float32,
                                                    name="images")])
        def preprocessed_images(images):
            """float32 [B, S, S, 3] in [0, 255], already preprocessed: straight into the model."""
            images = _checked_images(images, "preprocessed_images", size)
            return served(_checked_scale(images, "preprocessed_images", low, high, shown))

        self.serving_default = float_images
        self.uint8_images = uint8_images
        self.encoded_images = encoded_images
        self.preprocessed_images = preprocessed_images

    def signatures(self) -> dict:
        """The concrete functions ``tf.saved_model.save`` exposes, by signature name."""
        return {name: getattr(self, name).get_concrete_function() for name in SIGNATURES}


def serving_module(model: keras.Model, settings: EvalPreprocessing,
                   labels: Sequence[str] | None = None,
                   top_k: int = DEFAULT_TOP_K) -> ServingModule:
    """The serving root for ``model`` (a classifier; a softmax head is served as logits), running
    its deploy graph (batch norm folded; a subclassed model, which has no graph, runs as is).

    Raises:
        ValueError: no classifier, or labels that do not match it.
    """
    model = export_view(model)
    if not has_classifier(model) and len(model.output_shape) != 2:
        raise ValueError("a serving model needs a classifier (include_top=True)")
    classes = int(model.output_shape[-1])
    labels = list(labels) if labels else [str(i) for i in range(classes)]
    if len(labels) != classes:
        raise ValueError(f"{len(labels)} labels for a model with {classes} classes")
    try:
        model = deploy(model)
    except ValueError as error:  # a subclassed model: no graph to fold
        logger.info("serving %r as built: %s", model.name, error)
    return ServingModule(model, settings, labels, top_k)


def export_saved_model(model: keras.Model, output_dir: str | os.PathLike, *,
                       eval_preprocessing: EvalPreprocessing | None = None,
                       labels: Sequence[str] | None = None, top_k: int = DEFAULT_TOP_K,
                       metadata: dict | None = None, overwrite: bool = False,
                       protected: Iterable[str] = ()) -> str:
    """Write a serving SavedModel to ``output_dir`` (atomically); returns its path.

    ``eval_preprocessing`` defaults to the model's input size with the original crop rule.
    ``metadata`` (if given) is written to ``metadata.json`` inside.
    """
    if eval_preprocessing is None:
        eval_preprocessing = default_eval_preprocessing(model)
    root = serving_module(model, eval_preprocessing, labels, top_k)
    with staged_directory(output_dir, overwrite, protected) as target:
        tf.saved_model.save(root, target, signatures=root.signatures())
        if metadata is not None:
            write_metadata(os.path.join(target, METADATA_FILE), metadata)
    return os.path.abspath(output_dir)

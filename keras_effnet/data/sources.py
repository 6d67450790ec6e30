"""Data sources: parse ``"tfds:<name>"`` / ``"folder:<path>"`` / ``"tfrecord:<glob>"`` / ``"digits"``,
list their files or records, and describe them (:func:`dataset_info`).

Per-source settings that differ from the ImageNet recipe live here and only here
(:data:`DIGITS_DEFAULTS`, read through :func:`eval_preprocessing_for` and :func:`train_defaults_for`).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import zlib

import tensorflow as tf
from google.protobuf.message import DecodeError

from keras_effnet import preprocessing
from keras_effnet.data.tfds_source import DIGITS_BUILDER, check_tfds_split, tfds_builder

logger = logging.getLogger(__name__)

AUTOTUNE = tf.data.AUTOTUNE
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".bmp")
VALIDATION_NAMES = ("validation", "val", "valid")
SOURCE_KINDS = ("tfds", "folder", "tfrecord")
DIGITS_SOURCE = "digits"
# Per-source defaults that differ from the ImageNet recipe (tiny 32x32 digit images:
# keep the whole image at evaluation, crop mildly, never mirror digits).
DIGITS_DEFAULTS = {"crop_fraction": 1.0, "area_range": (0.5, 1.0), "flip": False}
# The ImageNet training crop and mirroring (tensorflow/tpu models/official/efficientnet/preprocessing.py).
IMAGENET_TRAIN_DEFAULTS = {"area_range": (0.08, 1.0), "flip": True}


def eval_preprocessing_for(source: str, resolution: int,
                           normalization: str = "imagenet") -> preprocessing.EvalPreprocessing:
    """The evaluation preprocessing the input pipeline applies for ``source`` at ``resolution``.

    The original crop rule for real photos; the whole image for the tiny digits.
    """
    crop_fraction = DIGITS_DEFAULTS["crop_fraction"] if source == DIGITS_SOURCE else None
    return preprocessing.EvalPreprocessing(int(resolution), crop_fraction=crop_fraction,
                                           normalization=normalization)


def train_defaults_for(source: str) -> dict:
    """Training crop ``area_range`` and ``flip`` for ``source`` (ImageNet's, or the digits')."""
    if source == DIGITS_SOURCE:
        return {"area_range": DIGITS_DEFAULTS["area_range"], "flip": DIGITS_DEFAULTS["flip"]}
    return dict(IMAGENET_TRAIN_DEFAULTS)


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What a source/split holds. `num_examples` is None when unknown without a full scan."""

    source: str
    split: str
    num_classes: int
    num_examples: int | None
    class_names: tuple[str, ...]


def is_source(value: str) -> bool:
    """Whether ``value`` has the form of a data source (``digits`` or ``<kind>:<argument>``)."""
    kind, sep, arg = value.partition(":")
    return value == DIGITS_SOURCE or bool(sep and arg and kind in SOURCE_KINDS)


def parse_source(source: str) -> tuple[str, str]:
    """``(kind, argument)`` of a source string; ``"digits"`` is ``("tfds", "effnet_digits")``."""
    if source == DIGITS_SOURCE:
        return "tfds", DIGITS_BUILDER
    kind, sep, arg = source.partition(":")
    if not sep or kind not in SOURCE_KINDS or not arg:
        raise ValueError(
            f"Unknown data source {source!r}: use 'tfds:<name>', 'folder:<path>', "
            "'tfrecord:<glob>' or 'digits'."
        )
    return kind, arg


# ---------------------------------------------------------------------------
# image folders


def _folder_split_root(path: str, split: str) -> tuple[str, str | None]:
    """(class-folder root, None) for explicit split folders, else (path, split) to hash-split."""
    if not tf.io.gfile.isdir(path):
        raise FileNotFoundError(f"Image folder {path!r} does not exist (source 'folder:{path}').")
    names = [n.rstrip("/") for n in tf.io.gfile.listdir(path)]
    split_dirs = {n: n for n in names if tf.io.gfile.isdir(os.path.join(path, n))}
    has_train = "train" in split_dirs
    validation_dir = next((n for n in VALIDATION_NAMES if n in split_dirs), None)
    if has_train or validation_dir:
        wanted = validation_dir if split in VALIDATION_NAMES else split
        if wanted is None or wanted not in split_dirs:
            raise FileNotFoundError(
                f"Split {split!r} not found under {path!r}: found split folders "
                f"{sorted(n for n in split_dirs if n in ('train', 'test') + VALIDATION_NAMES)}."
            )
        return os.path.join(path, wanted), None
    return path, split


def _has_split_dirs(path: str) -> bool:
    return any(tf.io.gfile.isdir(os.path.join(path, n)) for n in ("train",) + VALIDATION_NAMES)


def folder_class_names(path: str) -> list[str]:
    """Sorted class-folder names of an image-folder source (of its train split when it has one)."""
    if not tf.io.gfile.isdir(path):
        raise FileNotFoundError(f"Image folder {path!r} does not exist (source 'folder:{path}').")
    root, _ = _folder_split_root(path, "train") if _has_split_dirs(path) else (path, None)
    names = sorted(n.rstrip("/") for n in tf.io.gfile.listdir(root)
                   if not n.startswith(".") and tf.io.gfile.isdir(os.path.join(root, n)))
    if not names:
        raise ValueError(f"No class subfolders in {root!r}: expected one folder of images per class.")
    return names


def _image_files(class_dir: str, root: str, seen: set[str]) -> list[str]:
    """Image files under ``class_dir``, each real file once (``seen``: real paths so far).

    Local trees are walked following symbolic links, but a link back to a folder being walked
    (``ln -s .. a/up``) is a loop and refused with its path: followed, it multiplied 40 files into
    16,262 mislabelled examples (issue 13, item 5). So is a link into ``root`` outside
    ``class_dir`` (another class's images under this label).
    """
    if "://" in class_dir:  # gs:// and other remote file systems have no symlinks
        found = []
        for directory, _, filenames in tf.io.gfile.walk(class_dir):
            found.extend(os.path.join(directory, f) for f in filenames
                         if f.lower().endswith(IMAGE_EXTENSIONS) and not f.startswith("."))
        return found
    found = []
    root_real, class_real = os.path.realpath(root), os.path.realpath(class_dir)

    def elsewhere_in_dataset(real: str) -> bool:
        inside = real == root_real or real.startswith(root_real + os.sep)
        return inside and real != class_real and not real.startswith(class_real + os.sep)

    stack = [(class_dir, (class_real,))]
    while stack:
        directory, ancestors = stack.pop()
        try:
            entries = sorted(os.scandir(directory), key=lambda entry: entry.name)
        except OSError as error:
            raise ValueError(f"cannot list {directory!r} ({error.strerror}); fix its "
                             "permissions or remove it") from None
        for entry in entries:
            if entry.name.startswith("."):
                continue
            real = os.path.realpath(entry.path)
            if entry.is_dir():
                if real in ancestors or elsewhere_in_dataset(real):
                    raise ValueError(f"symbolic link loop in the image folder: {entry.path!r} "
                                     f"points to {real!r} (a folder that contains it, or another "
                                     "class); remove the link")
                stack.append((entry.path, ancestors + (real,)))
            elif entry.is_file() and entry.name.lower().endswith(IMAGE_EXTENSIONS):
                if real in seen:
                    logger.warning("%s is the same file as one listed already; counted once",
                                   entry.path)
                    continue
                seen.add(real)
                found.append(entry.path)
    return found


def list_folder(path: str, split: str, validation_fraction: float) -> tuple[list[str], list[int], list[str]]:
    """(file paths, labels, class names) of one split of a class-folder tree.

    Without ``train``/``validation`` folders, a file is in "validation" when a CRC of its path falls
    in ``validation_fraction`` (stable, seed-free).
    """
    class_names = folder_class_names(path)
    root, hash_split = _folder_split_root(path, split)
    files, labels = [], []
    seen: set[str] = set()
    for label, name in enumerate(class_names):
        class_dir = os.path.join(root, name)
        if not tf.io.gfile.isdir(class_dir):
            logger.warning("class folder %r is missing from split %r", class_dir, split)
            continue
        found = sorted(_image_files(class_dir, root, seen))
        if hash_split is not None:
            in_validation = [
                (zlib.crc32(os.path.relpath(f, root).encode()) % 10_000) < validation_fraction * 10_000
                for f in found
            ]
            want_validation = hash_split in VALIDATION_NAMES
            found = [f for f, v in zip(found, in_validation) if v == want_validation]
        if not found:
            message = (f"Class folder {class_dir!r} has no {'/'.join(IMAGE_EXTENSIONS)} images"
                       f"{' in split ' + repr(split) if hash_split else ''}: add images or remove the folder.")
            if split == "train" or (hash_split is None and split not in VALIDATION_NAMES and split != "test"):
                raise ValueError(message)
            logger.warning(message)
            continue
        files.extend(found)
        labels.extend([label] * len(found))
    if not files:
        raise ValueError(f"No images for split {split!r} under {root!r}.")
    return files, labels, class_names


# ---------------------------------------------------------------------------
# ImageNet-format TFRecords


TFRECORD_FEATURES = {
    "image/encoded": tf.io.FixedLenFeature([], tf.string, default_value=""),
    "image/class/label": tf.io.FixedLenFeature([], tf.int64, default_value=-1),
}


def tfrecord_files(pattern: str, split: str) -> list[str]:
    """Sorted files matching ``pattern`` with ``{split}`` replaced; refuses none or all empty."""
    pattern = pattern.replace("{split}", split)
    files = sorted(tf.io.gfile.glob(pattern))
    if not files:
        raise FileNotFoundError(f"No TFRecord files match {pattern!r} (source 'tfrecord:<glob>').")
    if all(tf.io.gfile.stat(f).length == 0 for f in files):
        raise ValueError(f"All TFRecord files matching {pattern!r} are empty.")
    return files


_FEATURE_KINDS = {"image/encoded": "bytes_list", "image/class/label": "int64_list"}


def _describe(feature: tf.train.Feature) -> str:
    """How many values of which kind a tf.train.Feature holds, e.g. "1 of bytes_list"."""
    kind = feature.WhichOneof("kind")
    return f"{len(getattr(feature, kind).value) if kind else 0} of {kind}"


def check_tfrecords(files: list[str], source: str) -> None:
    """Refuse files whose first record is not an ImageNet-format tf.train.Example, naming the file.

    Reads one record of the first and of the last file (sorted), so a glob that matches other
    files, or records written with other feature names, fail here with the file and the fix
    instead of being dropped one by one by the pipeline (which then yields no batch at all).
    """
    expected = ("ImageNet-format tf.train.Example records: image/encoded (1 of bytes_list), "
                "image/class/label (1 of int64_list)")
    for path in dict.fromkeys([files[0], files[-1]]):
        try:
            with tf.init_scope():  # eagerly, also when the dataset is built inside a tf.function
                first = next(iter(tf.data.TFRecordDataset(path).take(1)), None)
                first = None if first is None else first.numpy()
        except tf.errors.OpError as error:  # DataLossError: not TFRecord framing (or compressed)
            message = getattr(error, "message", str(error)).strip().splitlines()[0]
            message = re.sub(r"\s*\[Op:.*$", "", re.sub(r"\{\{.*?\}\}\s*", "", message))
            raise ValueError(f"{path!r} holds no readable TFRecords of tf.train.Example "
                             f"({type(error).__name__}: {message}); source {source!r} needs "
                             f"uncompressed TFRecord files of {expected}: make the glob match only "
                             "those") from None
        if first is None:  # an empty file: nothing to check
            continue
        example = tf.train.Example()
        try:
            example.ParseFromString(first)
        except DecodeError:
            raise ValueError(f"the first record of {path!r} is not a tf.train.Example; source "
                             f"{source!r} reads {expected}") from None
        features = example.features.feature
        wrong = [name for name, kind in _FEATURE_KINDS.items()
                 if name not in features or _describe(features[name]) != f"1 of {kind}"]
        if wrong:
            found = ", ".join(f"{name} ({_describe(features[name])})" for name in sorted(features))
            raise ValueError(f"the first record of {path!r} has no {' and no '.join(wrong)} feature "
                             f"as expected (it has: {found or 'no features'}); source {source!r} "
                             f"reads {expected}: write the records with those features")


def parse_tfrecord(record: tf.Tensor, label_offset: int):
    """(encoded image, int32 label + ``label_offset``, name for logs) of one serialized Example."""
    parsed = tf.io.parse_single_example(record, TFRECORD_FEATURES)
    label = tf.cast(parsed["image/class/label"] + label_offset, tf.int32)
    return parsed["image/encoded"], label, tf.constant("tfrecord")


def _tfrecord_info(source: str, pattern: str, split: str, label_offset: int) -> DatasetInfo:
    files = tfrecord_files(pattern, split)
    label_feature = {"image/class/label": TFRECORD_FEATURES["image/class/label"]}
    labels = tf.data.TFRecordDataset(files).map(
        lambda r: tf.io.parse_single_example(r, label_feature)["image/class/label"],
        num_parallel_calls=AUTOTUNE)
    missing_label = TFRECORD_FEATURES["image/class/label"].default_value
    try:
        count, low, high, unlabelled = labels.reduce(
            (tf.constant(0, tf.int64), tf.constant(2**62, tf.int64),
             tf.constant(-(2**62), tf.int64), tf.constant(0, tf.int64)),
            lambda state, label: (state[0] + 1, tf.minimum(state[1], label),
                                  tf.maximum(state[2], label),
                                  state[3] + tf.cast(label == missing_label, tf.int64)))
    except tf.errors.OpError as error:  # DataLossError: not TFRecord framing; parse errors
        message = getattr(error, "message", str(error)).strip().splitlines()[0]
        raise ValueError(f"TFRecord files matching {pattern!r} are not readable TFRecords of "
                         f"tf.train.Example ({type(error).__name__}: {message}); check the files "
                         "(ImageNet-format records: image/encoded, image/class/label)") from None
    if int(unlabelled):
        raise ValueError(f"{int(unlabelled)} of {int(count)} records in TFRecord files matching "
                         f"{pattern!r} have no image/class/label feature; every record needs its "
                         "integer label")
    count, low, high = int(count), int(low) + label_offset, int(high) + label_offset
    if count == 0:
        raise ValueError(f"TFRecord files {files[:3]}... hold no records.")
    if low < 0:
        raise ValueError(f"TFRecord labels go down to {low} after label_offset={label_offset}: "
                         "labels must be >= 0 (ImageNet TFRecords are 1-based: label_offset=-1).")
    num_classes = high + 1
    return DatasetInfo(source, split, num_classes, count, tuple(str(i) for i in range(num_classes)))


def dataset_info(source: str, split: str, data_dir: str | None = None, *, label_offset: int = 0,
                 validation_fraction: float = 0.1, download: bool = True,
                 manual_dir: str | None = None, label_key: str = "label") -> DatasetInfo:
    """Classes and size of a source/split (see ``make_dataset`` for the source forms).

    For "tfrecord:" sources this scans the records' labels (reads every file once);
    class names there are "0", "1", ... .
    """
    kind, arg = parse_source(source)
    if kind == "tfds":
        builder = tfds_builder(arg, data_dir, download, manual_dir)
        check_tfds_split(builder, arg, split)
        feature = builder.info.features[label_key]
        names = tuple(feature.names) if getattr(feature, "names", None) else tuple(
            str(i) for i in range(feature.num_classes))
        return DatasetInfo(source, split, feature.num_classes, builder.info.splits[split].num_examples, names)
    if kind == "folder":
        files, _, names = list_folder(arg, split, validation_fraction)
        return DatasetInfo(source, split, len(names), len(files), tuple(names))
    return _tfrecord_info(source, arg, split, label_offset)

"""tf.data input pipelines: TFDS datasets, image folders, ImageNet TFRecords, embedded digits.

`make_dataset(source, split, ...)` yields `(images, labels)`:
- images: float32 [B, S, S, 3], RGB in [0, 255] (normalisation is inside the model);
- labels: int32 [B]; with MixUp / CutMix (`mixup_alpha` / `cutmix_alpha` > 0) they are
  one-hot float32 [B, num_classes] mixed like the images.

Sources:
- ``"tfds:<name>"``: any TFDS image-classification dataset ("tfds:cifar10",
  "tfds:imagenet2012" with `manual_dir` holding the ImageNet tars).
- ``"folder:<path>"``: one subfolder per class. If `<path>/train` and
  `<path>/validation` (or `val`) exist they are the splits; otherwise each file goes to
  "validation" when a hash of its path falls in `validation_fraction` (stable, seed-free).
- ``"tfrecord:<glob>"``: ImageNet-format records (`image/encoded`, `image/class/label`);
  `{split}` in the glob is replaced by the split name. The original ImageNet TFRecords
  use labels 1..1000: pass `label_offset=-1`.
- ``"digits"``: the embedded dataset (`keras_effnet.digits_dataset`, built offline).

Distribution: with `input_context` (from `strategy.distribute_datasets_from_function`)
the data is sharded across input pipelines and `batch_size` is the PER-REPLICA batch.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
import zlib
from typing import Sequence

import tensorflow as tf

from keras_effnet import preprocessing

logger = logging.getLogger("keras_effnet.data")

AUTOTUNE = tf.data.AUTOTUNE
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".bmp")
VALIDATION_NAMES = ("validation", "val", "valid")
DIGITS_BUILDER = "effnet_digits"
# Per-source defaults that differ from the ImageNet recipe (tiny 32x32 digit images:
# keep the whole image at evaluation, crop mildly, never mirror digits).
DIGITS_DEFAULTS = {"crop_fraction": 1.0, "area_range": (0.5, 1.0), "flip": False}


def eval_preprocessing_for(source: str, resolution: int,
                           normalization: str = "imagenet") -> preprocessing.EvalPreprocessing:
    """The evaluation preprocessing the input pipeline applies for ``source`` at ``resolution``.

    The original crop rule for real photos; the whole image for the tiny digits.
    """
    crop_fraction = DIGITS_DEFAULTS["crop_fraction"] if source == "digits" else None
    return preprocessing.EvalPreprocessing(int(resolution), crop_fraction=crop_fraction,
                                           normalization=normalization)


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What a source/split holds. `num_examples` is None when unknown without a full scan."""

    source: str
    split: str
    num_classes: int
    num_examples: int | None
    class_names: tuple[str, ...]


class InputStats:
    """Counters of an input pipeline, readable while it runs.

    - `skipped`: images dropped because they are empty, truncated or not JPEG/PNG/GIF/BMP
      (exact). Each is also logged to stderr with its file name and the running count.
    - `decode_errors`: images the decoder still rejected (e.g. corrupt data inside a
      complete file), dropped by tf.data's ignore_errors (which logs each). Exact once
      the iterator has passed those elements; while running it may also include images
      that are still in flight in the parallel map (at most a few batches).
    """

    def __init__(self):
        with tf.init_scope():
            self._skipped = tf.Variable(0, dtype=tf.int64, trainable=False, name="input_skipped")
            self._attempted = tf.Variable(0, dtype=tf.int64, trainable=False, name="input_attempted")
            self._produced = tf.Variable(0, dtype=tf.int64, trainable=False, name="input_produced")

    @property
    def skipped(self) -> int:
        return int(self._skipped.numpy())

    @property
    def decode_errors(self) -> int:
        return max(0, int(self._attempted.numpy() - self._produced.numpy() - self._skipped.numpy()))

    @property
    def produced(self) -> int:
        return int(self._produced.numpy())

    def log(self) -> None:
        """Log the counts (call it at the end of an epoch / evaluation)."""
        if self.skipped or self.decode_errors:
            logger.warning("input pipeline: %d unreadable images skipped, %d failed to decode, %d used",
                           self.skipped, self.decode_errors, self.produced)
        else:
            logger.info("input pipeline: %d images used, none skipped", self.produced)


# ---------------------------------------------------------------------------
# sources


def _parse_source(source: str) -> tuple[str, str]:
    if source == "digits":
        return "tfds", DIGITS_BUILDER
    kind, sep, arg = source.partition(":")
    if not sep or kind not in ("tfds", "folder", "tfrecord") or not arg:
        raise ValueError(
            f"Unknown data source {source!r}: use 'tfds:<name>', 'folder:<path>', "
            "'tfrecord:<glob>' or 'digits'."
        )
    return kind, arg


def _tfds_builder(name: str, data_dir: str | None, download: bool, manual_dir: str | None):
    import tensorflow_datasets as tfds

    if name == DIGITS_BUILDER:
        from keras_effnet import digits_dataset  # noqa: F401  (registers the builder)
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except Exception as error:  # DatasetNotFoundError and friends
        raise ValueError(f"TFDS has no dataset {name!r} ({error}). Check the name: 'tfds:<name>'.") from error
    if not builder.is_prepared():
        if not download:
            raise FileNotFoundError(
                f"TFDS dataset {name!r} is not prepared in {builder.data_dir!r}; pass download=True "
                "or run tfds.builder(name).download_and_prepare()."
            )
        config = tfds.download.DownloadConfig(manual_dir=manual_dir)
        try:
            builder.download_and_prepare(download_config=config)
        except AssertionError as error:  # tfds asserts on missing manual files (imagenet2012)
            raise FileNotFoundError(
                f"TFDS dataset {name!r} needs files you download yourself: {error} "
                f"Put them in manual_dir (now {manual_dir or builder.data_dir + '/downloads/manual'})."
            ) from error
    return builder


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


def _folder_class_names(path: str) -> list[str]:
    if not tf.io.gfile.isdir(path):
        raise FileNotFoundError(f"Image folder {path!r} does not exist (source 'folder:{path}').")
    root, _ = _folder_split_root(path, "train") if _has_split_dirs(path) else (path, None)
    names = sorted(n.rstrip("/") for n in tf.io.gfile.listdir(root)
                   if not n.startswith(".") and tf.io.gfile.isdir(os.path.join(root, n)))
    if not names:
        raise ValueError(f"No class subfolders in {root!r}: expected one folder of images per class.")
    return names


def _has_split_dirs(path: str) -> bool:
    return any(tf.io.gfile.isdir(os.path.join(path, n)) for n in ("train",) + VALIDATION_NAMES)


def _list_folder(path: str, split: str, validation_fraction: float) -> tuple[list[str], list[int], list[str]]:
    """(file paths, labels, class names) of one split of a class-folder tree."""
    class_names = _folder_class_names(path)
    root, hash_split = _folder_split_root(path, split)
    files, labels = [], []
    for label, name in enumerate(class_names):
        class_dir = os.path.join(root, name)
        if not tf.io.gfile.isdir(class_dir):
            logger.warning("class folder %r is missing from split %r", class_dir, split)
            continue
        found = []
        for directory, _, filenames in tf.io.gfile.walk(class_dir):
            found.extend(os.path.join(directory, f) for f in filenames
                         if f.lower().endswith(IMAGE_EXTENSIONS) and not f.startswith("."))
        found.sort()
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


def _tfrecord_files(pattern: str, split: str) -> list[str]:
    pattern = pattern.replace("{split}", split)
    files = sorted(tf.io.gfile.glob(pattern))
    if not files:
        raise FileNotFoundError(f"No TFRecord files match {pattern!r} (source 'tfrecord:<glob>').")
    if all(tf.io.gfile.stat(f).length == 0 for f in files):
        raise ValueError(f"All TFRecord files matching {pattern!r} are empty.")
    return files


_TFRECORD_FEATURES = {
    "image/encoded": tf.io.FixedLenFeature([], tf.string, default_value=""),
    "image/class/label": tf.io.FixedLenFeature([], tf.int64, default_value=-1),
}


def _parse_tfrecord(record, label_offset: int):
    parsed = tf.io.parse_single_example(record, _TFRECORD_FEATURES)
    label = tf.cast(parsed["image/class/label"] + label_offset, tf.int32)
    return parsed["image/encoded"], label, tf.constant("tfrecord")


def dataset_info(source: str, split: str, data_dir: str | None = None, *, label_offset: int = 0,
                 validation_fraction: float = 0.1, download: bool = True,
                 manual_dir: str | None = None, label_key: str = "label") -> DatasetInfo:
    """Classes and size of a source/split (see `make_dataset` for the source forms).

    For "tfrecord:" sources this scans the records' labels (reads every file once);
    class names there are "0", "1", ... .
    """
    kind, arg = _parse_source(source)
    if kind == "tfds":
        builder = _tfds_builder(arg, data_dir, download, manual_dir)
        _check_tfds_split(builder, arg, split)
        feature = builder.info.features[label_key]
        names = tuple(feature.names) if getattr(feature, "names", None) else tuple(
            str(i) for i in range(feature.num_classes))
        return DatasetInfo(source, split, feature.num_classes, builder.info.splits[split].num_examples, names)
    if kind == "folder":
        files, _, names = _list_folder(arg, split, validation_fraction)
        return DatasetInfo(source, split, len(names), len(files), tuple(names))
    files = _tfrecord_files(arg, split)
    labels = tf.data.TFRecordDataset(files).map(
        lambda r: tf.io.parse_single_example(r, {"image/class/label": _TFRECORD_FEATURES["image/class/label"]})[
            "image/class/label"], num_parallel_calls=AUTOTUNE)
    count, low, high = labels.reduce(
        (tf.constant(0, tf.int64), tf.constant(2**62, tf.int64), tf.constant(-(2**62), tf.int64)),
        lambda state, label: (state[0] + 1, tf.minimum(state[1], label), tf.maximum(state[2], label)))
    count, low, high = int(count), int(low) + label_offset, int(high) + label_offset
    if count == 0:
        raise ValueError(f"TFRecord files {files[:3]}... hold no records.")
    if low < 0:
        raise ValueError(f"TFRecord labels go down to {low} after label_offset={label_offset}: "
                         "labels must be >= 0 (ImageNet TFRecords are 1-based: label_offset=-1).")
    num_classes = high + 1
    return DatasetInfo(source, split, num_classes, count, tuple(str(i) for i in range(num_classes)))


def _check_tfds_split(builder, name: str, split: str) -> None:
    base = split.split("[")[0].split("+")[0]
    if base not in builder.info.splits:
        raise ValueError(f"TFDS dataset {name!r} has no split {split!r}; it has {sorted(builder.info.splits)}.")
    if builder.info.splits[split].num_examples == 0:
        raise ValueError(f"Split {split!r} of TFDS dataset {name!r} is empty.")


# ---------------------------------------------------------------------------
# the pipeline


def _records(kind: str, arg: str, split: str, *, training: bool, data_dir, seed, input_context,
             label_offset: int, validation_fraction: float, download: bool, manual_dir,
             image_key: str, label_key: str):
    """Dataset of (encoded bytes, int32 label, name for logs), sharded; and num_classes."""
    num_pipelines = input_context.num_input_pipelines if input_context else 1
    pipeline_id = input_context.input_pipeline_id if input_context else 0
    if kind == "tfds":
        import tensorflow_datasets as tfds

        builder = _tfds_builder(arg, data_dir, download, manual_dir)
        _check_tfds_split(builder, arg, split)
        num_classes = builder.info.features[label_key].num_classes
        num_shards = builder.info.splits[split].num_shards
        # TFDS shards by files; with fewer files than pipelines, shard by records below.
        by_files = input_context is not None and num_shards >= num_pipelines
        read_config = tfds.ReadConfig(input_context=input_context if by_files else None, shuffle_seed=seed,
                                      try_autocache=False)
        ds = builder.as_dataset(split=split, shuffle_files=training, read_config=read_config,
                                decoders={image_key: tfds.decode.SkipDecoding()})
        if num_pipelines > 1 and not by_files:
            ds = ds.shard(num_pipelines, pipeline_id)
        ds = ds.map(lambda ex: (ex[image_key], tf.cast(ex[label_key], tf.int32), tf.constant(arg)),
                    num_parallel_calls=AUTOTUNE)
        return ds, num_classes
    if kind == "folder":
        files, labels, names = _list_folder(arg, split, validation_fraction)
        ds = tf.data.Dataset.from_tensor_slices((files, tf.constant(labels, tf.int32)))
        if num_pipelines > 1:
            ds = ds.shard(num_pipelines, pipeline_id)
        if training:  # a full shuffle of the file names is cheap
            ds = ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
        ds = ds.map(lambda path, label: (tf.io.read_file(path), label, path), num_parallel_calls=AUTOTUNE)
        return ds, len(names)
    files = _tfrecord_files(arg, split)
    file_ds = tf.data.Dataset.from_tensor_slices(files)
    by_files = len(files) >= num_pipelines
    if num_pipelines > 1 and by_files:
        file_ds = file_ds.shard(num_pipelines, pipeline_id)
    if training:
        file_ds = file_ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    ds = file_ds.interleave(lambda f: tf.data.TFRecordDataset(f, buffer_size=8 << 20),
                            cycle_length=min(16, len(files)), num_parallel_calls=AUTOTUNE,
                            deterministic=None)
    if num_pipelines > 1 and not by_files:
        ds = ds.shard(num_pipelines, pipeline_id)
    ds = ds.map(lambda r: _parse_tfrecord(r, label_offset), num_parallel_calls=AUTOTUNE)
    return ds, None


def make_dataset(source: str, split: str, *, image_size: int, batch_size: int, training: bool,
                 augment: str | None = None, randaugment_layers: int = 2, randaugment_magnitude: float = 10,
                 mixup_alpha: float = 0.0, cutmix_alpha: float = 0.0, num_classes: int | None = None,
                 data_dir: str | None = None, shuffle_buffer: int = 8192, seed: int | None = None,
                 deterministic: bool = False, cache: bool | str = False,
                 input_context: tf.distribute.InputContext | None = None,
                 drop_remainder: bool | None = None, repeat: bool | None = None,
                 autoaugment_policy: str = "v0", crop_fraction: float | None = None,
                 crop_padding: int = preprocessing.CROP_PADDING,
                 area_range: Sequence[float] | None = None, flip: bool | None = None,
                 label_offset: int = 0, validation_fraction: float = 0.1,
                 download: bool = True, manual_dir: str | None = None,
                 image_key: str = "image", label_key: str = "label",
                 stats: InputStats | None = None, num_parallel_calls: int = AUTOTUNE,
                 threadpool_size: int | None = None, prefetch: int = AUTOTUNE) -> tf.data.Dataset:
    """A batched, prefetched tf.data pipeline of (images, labels); see the module docstring.

    Args:
      source, split: where the data is ("tfds:<name>", "folder:<path>", "tfrecord:<glob>",
        "digits") and which split ("train", "validation", "test"; TFDS slicing works).
      image_size: output side S. batch_size: per replica when `input_context` is given,
        global otherwise.
      training: random crop + flip + augmentation, shuffling, and by default repeat and
        drop_remainder; else the evaluation centre crop, one pass, partial last batch.
      augment: None, "autoaugment" (`autoaugment_policy`) or "randaugment" (N, M).
      mixup_alpha, cutmix_alpha: > 0 turns labels into mixed one-hot float32 [B, C].
      num_classes: required for "tfrecord:" with MixUp/CutMix; when given, every label is
        checked to be in [0, num_classes) (otherwise against the dataset's own classes).
      seed: makes shuffling and every augmentation reproducible; with `deterministic=True`
        the element order is too (slower).
      cache: True caches encoded images in memory, a string caches them to that file.
      crop_fraction, crop_padding: evaluation crop (see preprocessing.preprocess_for_eval).
      area_range, flip: training crop area range and mirroring (ImageNet defaults
        (0.08, 1.0) and True; "digits" defaults to (0.5, 1.0), no flip, crop_fraction 1.0).
      label_offset: added to TFRecord labels (-1 for the original 1-based ImageNet records).
      stats: an InputStats to count skipped images in (one is created if None; read it
        from `dataset.input_stats` when the attribute could be attached).
      num_parallel_calls, threadpool_size: map parallelism and tf.data's private thread
        pool (None: shared pool); used by tools/bench_input.py to measure one core.

    Raises:
      ValueError / FileNotFoundError before any data is read, for an unknown source, a
      missing dataset, split or folder, an empty dataset or class folder, or
      num_classes smaller than the dataset's. A label out of range raises
      InvalidArgumentError naming the label when its element is produced.
    """
    kind, arg = _parse_source(source)
    if source == "digits":
        crop_fraction = DIGITS_DEFAULTS["crop_fraction"] if crop_fraction is None else crop_fraction
        area_range = DIGITS_DEFAULTS["area_range"] if area_range is None else area_range
        flip = DIGITS_DEFAULTS["flip"] if flip is None else flip
    area_range = tuple(area_range or (0.08, 1.0))
    flip = True if flip is None else flip
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    if augment not in preprocessing.AUGMENTATIONS:
        raise ValueError(f"augment must be one of {preprocessing.AUGMENTATIONS}, got {augment!r}.")
    drop_remainder = training if drop_remainder is None else drop_remainder
    repeat = training if repeat is None else repeat
    stats = stats or InputStats()

    records, source_classes = _records(
        kind, arg, split, training=training, data_dir=data_dir, seed=seed, input_context=input_context,
        label_offset=label_offset, validation_fraction=validation_fraction, download=download,
        manual_dir=manual_dir, image_key=image_key, label_key=label_key)
    if num_classes is not None and source_classes is not None and num_classes < source_classes:
        raise ValueError(f"num_classes={num_classes} but {source!r} has {source_classes} classes.")
    num_classes = num_classes or source_classes
    mixing = mixup_alpha > 0 or cutmix_alpha > 0
    if mixing and num_classes is None:
        raise ValueError("MixUp/CutMix need num_classes for one-hot labels: pass num_classes=...")

    if cache:
        records = records.cache(cache if isinstance(cache, str) else "")
    if training and kind != "folder" and shuffle_buffer > 1:
        records = records.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        records = records.repeat()

    def load(index, record):
        image_bytes, label, name = record
        complete = preprocessing.looks_complete(image_bytes)
        with tf.control_dependencies([stats._attempted.assign_add(1)]):
            if training:
                element_seed = None if seed is None else tf.stack([tf.cast(seed, tf.int64), index])
                make = lambda: preprocessing.preprocess_for_train(  # noqa: E731
                    image_bytes, image_size, augment, randaugment_layers, randaugment_magnitude,
                    seed=element_seed, autoaugment_policy=autoaugment_policy, area_range=area_range,
                    flip=flip)
            else:
                make = lambda: preprocessing.preprocess_for_eval(  # noqa: E731
                    image_bytes, image_size, crop_fraction, crop_padding)
            image = tf.cond(complete, make, lambda: tf.zeros([image_size, image_size, 3], tf.float32))

        def report():
            count = stats._skipped.assign_add(1)
            tf.print("keras_effnet.data: skipping unreadable image", name, "(", count,
                     "skipped so far)", output_stream=sys.stderr)
            return count

        skipped_so_far = tf.cond(complete, lambda: stats._skipped.read_value(), report)
        with tf.control_dependencies([skipped_so_far]):
            return tf.identity(image), label, complete

    def check_label(image, label, complete):
        del complete
        checks = [tf.debugging.assert_greater_equal(
            label, 0, message=f"label below 0 in {source!r} (1-based labels? use label_offset=-1)")]
        if num_classes is not None:
            checks.append(tf.debugging.assert_less(
                label, num_classes, message=f"label out of range [0, {num_classes}) in {source!r}; "
                "set num_classes to the dataset's class count (1-based ImageNet TFRecords: label_offset=-1)"))
        with tf.control_dependencies(checks + [stats._produced.assign_add(1)]):
            return tf.identity(image), tf.identity(label)

    ds = records.enumerate().map(load, num_parallel_calls=num_parallel_calls, deterministic=deterministic)
    ds = ds.filter(lambda image, label, complete: complete)
    # Backstop for files that pass the completeness check but still fail to decode:
    # drop them (tf.data logs each); label errors are raised after this, never swallowed.
    ds = ds.ignore_errors(log_warning=True)
    ds = ds.map(check_label, num_parallel_calls=AUTOTUNE, deterministic=deterministic)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    if mixing:
        def mix(index, batch):
            images, labels = batch
            one_hot = tf.one_hot(labels, num_classes, dtype=tf.float32)
            batch_seed = None if seed is None else tf.stack([tf.cast(seed, tf.int64) + 1, index])
            from keras_effnet import augment as augment_lib

            return augment_lib.mix_batch(images, one_hot, mixup_alpha, cutmix_alpha, seed=batch_seed)

        ds = ds.enumerate().map(mix, num_parallel_calls=AUTOTUNE, deterministic=deterministic)
    ds = ds.prefetch(prefetch)

    options = tf.data.Options()
    options.deterministic = deterministic
    if threadpool_size:
        options.threading.private_threadpool_size = threadpool_size
        options.threading.max_intra_op_parallelism = 1
    ds = ds.with_options(options)
    try:
        ds.input_stats = stats
    except AttributeError:  # pragma: no cover - depends on the tf.data implementation
        pass
    return ds


def measure_throughput(dataset: tf.data.Dataset, num_batches: int = 20,
                       warmup_batches: int = 3) -> tuple[float, float]:
    """(images per wall-clock second, images per CPU-second of this process) of `dataset`.

    The CPU-second figure is what one fully used core delivers, even on a shared machine.
    The first `warmup_batches` (tracing, buffer filling) are not timed.
    """
    import time

    iterator = iter(dataset)
    for _ in range(warmup_batches):
        next(iterator)
    images = 0
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(num_batches):
        batch_images, _ = next(iterator)
        images += int(batch_images.shape[0])
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return images / wall, images / max(cpu, 1e-9)

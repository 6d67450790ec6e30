"""The tf.data input pipeline: records of a source -> decoded, cropped, augmented, batched images.

``make_dataset(source, split, ...)`` yields ``(images, labels)``:
- images: float32 [B, S, S, 3], RGB in [0, 255] (normalisation is inside the model);
- labels: int32 [B]; with MixUp / CutMix (``mixup_alpha`` / ``cutmix_alpha`` > 0) they are
  one-hot float32 [B, num_classes] mixed like the images.

Distribution: with ``input_context`` (from ``strategy.distribute_datasets_from_function``)
the data is sharded across input pipelines and ``batch_size`` is the PER-REPLICA batch.
"""

from __future__ import annotations

import logging
import statistics
import sys
import time
from typing import Sequence

import tensorflow as tf

from keras_effnet import augment as augment_lib
from keras_effnet import preprocessing
from keras_effnet.data.sources import (AUTOTUNE, check_tfrecords, eval_preprocessing_for, list_folder,
                                       parse_source, parse_tfrecord, tfrecord_files, train_defaults_for)
from keras_effnet.data.tfds_source import check_tfds_split, tfds_builder

logger = logging.getLogger(__name__)


class InputStats:
    """Counters of an input pipeline, readable while it runs.

    - `skipped`: images dropped because they are empty, truncated or not JPEG/PNG/GIF/BMP
      (exact). Each is also reported on stderr with its file name and the running count.
    - `decode_errors`: images the decoder still rejected (e.g. corrupt data inside a
      complete file), dropped by tf.data's ignore_errors (which logs each). Exact once
      the iterator has passed those elements; while running it may also include images
      that are still in flight in the parallel map (at most a few batches).
    """

    def __init__(self):
        with tf.init_scope():
            self.skipped_counter = tf.Variable(0, dtype=tf.int64, trainable=False, name="input_skipped")
            self.attempted_counter = tf.Variable(0, dtype=tf.int64, trainable=False, name="input_attempted")
            self.produced_counter = tf.Variable(0, dtype=tf.int64, trainable=False, name="input_produced")

    @property
    def skipped(self) -> int:
        return int(self.skipped_counter.numpy())

    @property
    def decode_errors(self) -> int:
        return max(0, int(self.attempted_counter.numpy() - self.produced_counter.numpy()
                          - self.skipped_counter.numpy()))

    @property
    def produced(self) -> int:
        return int(self.produced_counter.numpy())

    def log(self) -> None:
        """Log the counts (call it at the end of an epoch / evaluation)."""
        if self.skipped or self.decode_errors:
            logger.warning("input pipeline: %d unreadable images skipped, %d failed to decode, %d used",
                           self.skipped, self.decode_errors, self.produced)
        else:
            logger.info("input pipeline: %d images used, none skipped", self.produced)


def _records(kind: str, arg: str, split: str, *, training: bool, data_dir, seed, input_context,
             label_offset: int, validation_fraction: float, download: bool, manual_dir,
             image_key: str, label_key: str):
    """Dataset of (encoded bytes, int32 label, name for logs), sharded; and num_classes."""
    num_pipelines = input_context.num_input_pipelines if input_context else 1
    pipeline_id = input_context.input_pipeline_id if input_context else 0
    if kind == "tfds":
        import tensorflow_datasets as tfds  # noqa: PLC0415  (slow import; only TFDS sources need it)

        builder = tfds_builder(arg, data_dir, download, manual_dir)
        check_tfds_split(builder, arg, split)
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
        files, labels, names = list_folder(arg, split, validation_fraction)
        ds = tf.data.Dataset.from_tensor_slices((files, tf.constant(labels, tf.int32)))
        if num_pipelines > 1:
            ds = ds.shard(num_pipelines, pipeline_id)
        if training:  # a full shuffle of the file names is cheap
            ds = ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
        ds = ds.map(lambda path, label: (tf.io.read_file(path), label, path), num_parallel_calls=AUTOTUNE)
        return ds, len(names)
    files = tfrecord_files(arg, split)
    check_tfrecords(files, f"tfrecord:{arg}")  # the pipeline would drop unreadable records one by one
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
    ds = ds.map(lambda r: parse_tfrecord(r, label_offset), num_parallel_calls=AUTOTUNE)
    return ds, None


def _resolve_eval_preprocessing(source: str, image_size: int,
                                eval_preprocessing: preprocessing.EvalPreprocessing | None,
                                crop_fraction: float | None,
                                crop_padding: int | None) -> preprocessing.EvalPreprocessing:
    """``eval_preprocessing`` as given, else the source's (``eval_preprocessing_for``) with the crop args."""
    if eval_preprocessing is not None:
        if crop_fraction is not None or crop_padding is not None:
            raise ValueError("pass either eval_preprocessing or crop_fraction/crop_padding, not both "
                             f"(got eval_preprocessing={eval_preprocessing}, crop_fraction={crop_fraction}, "
                             f"crop_padding={crop_padding}).")
        if eval_preprocessing.resolution != image_size:
            raise ValueError(f"eval_preprocessing.resolution={eval_preprocessing.resolution} differs from "
                             f"image_size={image_size}: pass eval_preprocessing.replace(resolution={image_size}).")
        return eval_preprocessing
    settings = eval_preprocessing_for(source, image_size)
    changes = {}
    if crop_fraction is not None:
        changes["crop_fraction"] = crop_fraction
    if crop_padding is not None:
        changes["crop_padding"] = crop_padding
    return settings.replace(**changes) if changes else settings


def make_dataset(source: str, split: str, *, image_size: int, batch_size: int, training: bool,
                 augment: str | None = None, randaugment_layers: int = 2, randaugment_magnitude: float = 10,
                 mixup_alpha: float = 0.0, cutmix_alpha: float = 0.0, num_classes: int | None = None,
                 data_dir: str | None = None, shuffle_buffer: int = 8192, seed: int | None = None,
                 deterministic: bool = False, cache: bool | str = False,
                 input_context: tf.distribute.InputContext | None = None,
                 drop_remainder: bool | None = None, repeat: bool | None = None,
                 autoaugment_policy: str = "v0",
                 eval_preprocessing: preprocessing.EvalPreprocessing | None = None,
                 crop_fraction: float | None = None, crop_padding: int | None = None,
                 area_range: Sequence[float] | None = None, flip: bool | None = None,
                 label_offset: int = 0, validation_fraction: float = 0.1,
                 semantics: str = augment_lib.DEFAULT_SEMANTICS,
                 download: bool = True, manual_dir: str | None = None,
                 image_key: str = "image", label_key: str = "label",
                 stats: InputStats | None = None, num_parallel_calls: int = AUTOTUNE,
                 threadpool_size: int | None = None, prefetch: int = AUTOTUNE) -> tf.data.Dataset:
    """A batched, prefetched tf.data pipeline of (images, labels); see the module docstring.

    Args:
      source, split: where the data is ("tfds:<name>", "folder:<path>", "tfrecord:<glob>",
        "digits"; see ``keras_effnet.data``) and which split ("train", "validation", "test";
        TFDS slicing works).
      image_size: output side S. batch_size: per replica when `input_context` is given,
        global otherwise.
      training: random crop + flip + augmentation, shuffling, and by default repeat and
        drop_remainder; else the evaluation centre crop, one pass, partial last batch.
      augment: None, "autoaugment" (`autoaugment_policy`) or "randaugment" (N, M).
      semantics: augmentation op semantics, "original" (tensorflow/tpu autoaugment.py, the
        default) or "pil" (see ``keras_effnet.augment``); training only.
      mixup_alpha, cutmix_alpha: > 0 turns labels into mixed one-hot float32 [B, C].
      num_classes: required for "tfrecord:" with MixUp/CutMix; when given, every label is
        checked to be in [0, num_classes) (otherwise against the dataset's own classes).
      seed: makes shuffling and every augmentation reproducible; with `deterministic=True`
        the element order is too (slower).
      cache: True caches encoded images in memory, a string caches them to that file.
      eval_preprocessing: the evaluation crop and resize (its resolution must be
        `image_size`); default ``eval_preprocessing_for(source, image_size)``.
      crop_fraction, crop_padding: instead of `eval_preprocessing`, change only the crop of
        the source's default (see preprocessing.preprocess_for_eval).
      area_range, flip: training crop area range and mirroring (default
        ``train_defaults_for(source)``: ImageNet's (0.08, 1.0) and True; the digits' (0.5, 1.0), no flip).
      label_offset: added to TFRecord labels (-1 for the original 1-based ImageNet records).
      validation_fraction: for a folder without split subfolders, the share of files in
        "validation" (by a hash of the path).
      stats: an InputStats to count skipped images in (one is created if None; read it
        from `dataset.input_stats` when the attribute could be attached).
      num_parallel_calls, threadpool_size: map parallelism and tf.data's private thread
        pool (None: shared pool); used by ``keras-effnet-bench-input`` to measure one core.

    Raises:
      ValueError / FileNotFoundError before the pipeline runs, for an unknown source, a
      missing dataset, split or folder, an empty dataset or class folder, TFRecord files
      whose first record is not an ImageNet-format tf.train.Example (the first and the
      last file are read), or num_classes smaller than the dataset's. A label out of range raises
      InvalidArgumentError naming the label when its element is produced.
    """
    kind, arg = parse_source(source)
    train_defaults = train_defaults_for(source)
    area_range = tuple(train_defaults["area_range"] if area_range is None else area_range)
    flip = train_defaults["flip"] if flip is None else flip
    eval_settings = _resolve_eval_preprocessing(source, image_size, eval_preprocessing, crop_fraction,
                                                crop_padding)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    if augment not in preprocessing.AUGMENTATIONS:
        raise ValueError(f"augment must be one of {preprocessing.AUGMENTATIONS}, got {augment!r}.")
    augment_lib.check_semantics(semantics)
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

    # Augmented images are uint8 until batched: batching copies a quarter of the bytes and one
    # cast per batch replaces one per image (0.1 ms less per 224 px image); the same values.
    augmented = training and augment is not None
    pixel_dtype = tf.uint8 if augmented else tf.float32

    def load(index, record):
        image_bytes, label, name = record
        complete = preprocessing.looks_complete(image_bytes)
        with tf.control_dependencies([stats.attempted_counter.assign_add(1)]):
            if training:
                element_seed = None if seed is None else tf.stack([tf.cast(seed, tf.int64), index])
                make = lambda: preprocessing.preprocess_for_train(  # noqa: E731
                    image_bytes, image_size, augment, randaugment_layers, randaugment_magnitude,
                    seed=element_seed, autoaugment_policy=autoaugment_policy, area_range=area_range,
                    flip=flip, semantics=semantics, as_uint8=augmented)
            else:
                make = lambda: preprocessing.preprocess_for_eval(image_bytes, eval_settings)  # noqa: E731
            image = tf.cond(complete, make, lambda: tf.zeros([image_size, image_size, 3], pixel_dtype))

        def report():
            count = stats.skipped_counter.assign_add(1)
            # A graph-side message: this runs inside tf.data, where a Python logger call would
            # need a py_function (and break iterator checkpointing); InputStats.log() sums up.
            tf.print("WARNING keras_effnet.data: skipping unreadable image", name, "(", count,
                     "skipped so far)", output_stream=sys.stderr)
            return count

        skipped_so_far = tf.cond(complete, lambda: tf.constant(0, tf.int64), report)
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
        with tf.control_dependencies(checks + [stats.produced_counter.assign_add(1)]):
            return tf.identity(image), tf.identity(label)

    ds = records.enumerate().map(load, num_parallel_calls=num_parallel_calls, deterministic=deterministic)
    ds = ds.filter(lambda image, label, complete: complete)
    # Backstop for files that pass the completeness check but still fail to decode:
    # drop them (tf.data logs each); label errors are raised after this, never swallowed.
    ds = ds.ignore_errors(log_warning=True)
    # A few scalar ops: run in line (a parallel map's hand-over between threads costs more).
    ds = ds.map(check_label)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    if augmented:
        ds = ds.map(lambda images, labels: (tf.cast(images, tf.float32), labels))
    if mixing:
        def mix(index, batch):
            images, labels = batch
            one_hot = tf.one_hot(labels, num_classes, dtype=tf.float32)
            batch_seed = None if seed is None else tf.stack([tf.cast(seed, tf.int64) + 1, index])
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
                       warmup_batches: int = 3, rounds: int = 1) -> tuple[float, float]:
    """(images per wall-clock second, images per CPU-second of this process) of `dataset`.

    The CPU-second figure is what one fully used core delivers, even on a shared machine.
    The first `warmup_batches` (tracing, buffer filling) are not timed. With `rounds` > 1,
    `rounds` consecutive windows of `num_batches` are timed and the medians returned (other
    load on a shared machine moves single windows by 10-20 %).
    """
    iterator = iter(dataset)
    for _ in range(warmup_batches):
        next(iterator)
    per_wall, per_cpu = [], []
    for _ in range(rounds):
        images = 0
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(num_batches):
            batch_images, _ = next(iterator)
            images += int(batch_images.shape[0])
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        per_wall.append(images / wall)
        per_cpu.append(images / max(cpu, 1e-9))
    return statistics.median(per_wall), statistics.median(per_cpu)

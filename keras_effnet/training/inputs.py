"""What a run reads: the dataset facts and the per-worker input pipelines (``keras_effnet.data``)."""

from __future__ import annotations

import tensorflow as tf

from keras_effnet import data
from keras_effnet.config import Config
from keras_effnet.training.task import DatasetFacts


def dataset_facts(config: Config) -> DatasetFacts:
    """Classes, class names and example counts from ``data.dataset_info``; clear error if missing."""
    source, data_dir = config.data.source, config.data.data_dir
    fraction = config.data.validation_fraction
    try:
        train_info = data.dataset_info(source, config.data.train_split, data_dir=data_dir,
                                       validation_fraction=fraction)
    except (FileNotFoundError, ValueError, OSError) as error:
        raise FileNotFoundError(f"cannot open the training data {source!r} split "
                                f"{config.data.train_split!r}: {error}") from None
    try:
        eval_info = data.dataset_info(source, config.data.eval_split, data_dir=data_dir,
                                      validation_fraction=fraction)
    except (FileNotFoundError, ValueError, OSError) as error:
        raise FileNotFoundError(f"cannot open the evaluation data {source!r} split "
                                f"{config.data.eval_split!r}: {error}") from None
    return DatasetFacts(num_classes=int(train_info.num_classes),
                        num_train_examples=int(config.data.num_train_examples
                                               or train_info.num_examples),
                        num_eval_examples=eval_info.num_examples,
                        class_names=tuple(train_info.class_names))


def train_dataset(config: Config, image_size: int, num_classes: int, *, worker_index: int,
                  num_workers: int, num_replicas: int) -> tf.data.Dataset:
    """This worker's repeated training pipeline, batches of ``batch_size / num_workers``.

    The trainer slices each batch across the worker's local replicas; with several workers the
    input context only shards the files. ``augmentation.semantics`` reaches
    ``preprocessing.preprocess_for_train`` through ``data.make_dataset``.
    """
    aug = config.augmentation
    context = None
    if num_workers > 1:
        context = tf.distribute.InputContext(num_workers, worker_index, num_replicas)
    return data.make_dataset(
        config.data.source, config.data.train_split, image_size=image_size,
        batch_size=config.data.batch_size // num_workers, training=True,
        augment=None if aug.name == "none" else aug.name,
        randaugment_layers=aug.randaugment_layers,
        randaugment_magnitude=aug.randaugment_magnitude,
        mixup_alpha=aug.mixup_alpha, cutmix_alpha=aug.cutmix_alpha, semantics=aug.semantics,
        num_classes=num_classes, data_dir=config.data.data_dir,
        validation_fraction=config.data.validation_fraction,
        seed=config.runtime.seed, deterministic=config.runtime.deterministic,
        cache=config.data.cache, input_context=context, drop_remainder=True, repeat=True)


def eval_dataset(config: Config, image_size: int) -> tf.data.Dataset:
    """One pass over the evaluation split (global batches, partial last batch kept)."""
    return data.make_dataset(
        config.data.source, config.data.eval_split, image_size=image_size,
        batch_size=config.data.eval_batch_size or config.data.batch_size, training=False,
        data_dir=config.data.data_dir, cache=config.data.cache, drop_remainder=False,
        repeat=False, validation_fraction=config.data.validation_fraction)

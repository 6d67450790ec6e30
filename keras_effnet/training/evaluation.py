"""Evaluate a training run, or a published weight set on ImageNet's validation split.

A run: its checkpoints (EMA weights by default) on its evaluation split. The model comes from the
run directory (``config.yaml`` + the checkpoint), never from the initial weights: a run fine-tuned
from a file that was since deleted still evaluates.

A weight set (``evaluate_weights``): the variant with that set's weights, through the set's own
``EvalPreprocessing`` (``weights.eval_preprocessing``: the original's crop, TF1 bicubic resize and
normalisation), so its top-1 can be compared with the published one (``WeightSet.top1``).
"""

from __future__ import annotations

import logging
import os
import time
from typing import Iterator

import tensorflow as tf

from keras_effnet import applications, data
from keras_effnet import weights as weight_sets
from keras_effnet.config import Config
from keras_effnet.run_dir import RunDirectory
from keras_effnet.scaling import get_spec
from keras_effnet.training.checkpoints import resolve_checkpoint
from keras_effnet.training.loop import Trainer
from keras_effnet.training.run_files import check_compatible
from keras_effnet.training.task import DatasetFacts, correct

logger = logging.getLogger(__name__)

IMAGENET = "tfds:imagenet2012"


def evaluator(config: Config, *, strategy=None, eval_dataset: tf.data.Dataset | None = None,
              facts: DatasetFacts | None = None) -> Trainer:
    """A ``Trainer`` for evaluating checkpoints of ``runtime.model_dir`` (checked against the
    run's metadata when it has one)."""
    trainer = Trainer(config, strategy=strategy, eval_dataset=eval_dataset, facts=facts)
    if trainer.run.has_metadata():
        check_compatible(trainer.run.read_metadata(), config, trainer.facts)
    return trainer


def evaluate_loaded(trainer: Trainer, path: str, use_ema: bool = True) -> dict:
    """Restore model (+ EMA) of checkpoint ``path`` into ``trainer`` and evaluate it."""
    trainer.build(initial_weights=False)
    task = trainer.task
    restore = dict(model=task.model, step=task.step)
    if task.ema is not None:
        restore["ema"] = task.ema
    tf.train.Checkpoint(**restore).restore(path).expect_partial()
    result = trainer.evaluate(use_ema=use_ema)
    result.update(step=int(task.step.numpy()), checkpoint=path)
    return result


def evaluate_checkpoint(config: Config, checkpoint: str | None = None, *, use_ema: bool = True,
                        strategy=None, eval_dataset: tf.data.Dataset | None = None,
                        facts: DatasetFacts | None = None) -> dict:
    """Top-1/top-5 of a checkpoint (a prefix or directory; default the latest of
    ``runtime.model_dir``)."""
    trainer = evaluator(config, strategy=strategy, eval_dataset=eval_dataset, facts=facts)
    path = resolve_checkpoint(checkpoint or trainer.model_dir)
    return evaluate_loaded(trainer, path, use_ema)


def follow_checkpoints(trainer: Trainer, timeout: float, use_ema: bool = True) -> Iterator[dict]:
    """Evaluate each new checkpoint as training writes it, until ``timeout`` seconds pass
    without one or the final step is reached."""
    for path in tf.train.checkpoints_iterator(trainer.model_dir, timeout=timeout):
        result = evaluate_loaded(trainer, path, use_ema)
        yield result
        if result["step"] >= trainer.stop_step:
            return


def eval_report_path(run_dir: str, split: str) -> str:
    """Where the evaluation of ``split`` is written in a run directory."""
    return RunDirectory(run_dir).file(f"eval_{split.replace('/', '_').replace(os.sep, '_')}.json")


def published_top1(variant: str, weights: str) -> float | None:
    """The published ImageNet top-1 (a fraction) of a named weight set, None for a file."""
    if not weight_sets.is_weight_set_name(weights):
        return None
    top1 = weight_sets.get_weight_set(variant, weights).top1
    return None if top1 is None else top1 / 100.0


def evaluate_weights(variant: str, weights: str, source: str = IMAGENET, split: str = "validation",
                     *, batch_size: int = 100, data_dir: str | None = None,
                     manual_dir: str | None = None, label_offset: int = 0,
                     max_batches: int | None = None) -> dict:
    """Top-1/top-5 of ``variant`` with ``weights`` (a set name or a file) on ``source``/``split``.

    Images get the weights' own evaluation preprocessing (``weights.eval_preprocessing``);
    labels must be ImageNet's class indices 0..999 (the original's TFRecords count from 1:
    ``label_offset=-1``). ``max_batches`` stops early (a quick check, not the published number).
    Returns the accuracies (fractions), the example count, the settings used and the published
    top-1 of a named set.

    Raises:
        ValueError / FileNotFoundError: unknown variant or set, a missing weight file or dataset
            (``tfds:imagenet2012`` needs ``manual_dir`` with ImageNet's tars, or a prepared
            ``data_dir``).
    """
    settings = weight_sets.eval_preprocessing(variant, weights)
    model = applications.build_model(variant, weights=weights, classifier_activation=None,
                                     input_shape=(settings.resolution, settings.resolution, 3))
    num_classes = int(model.output.shape[-1])
    dataset = data.make_dataset(source, split, image_size=settings.resolution,
                                batch_size=batch_size, training=False,
                                eval_preprocessing=settings, data_dir=data_dir,
                                manual_dir=manual_dir, label_offset=label_offset,
                                num_classes=num_classes)

    @tf.function
    def step(images, labels):
        logits = model(images, training=False)
        return correct(labels, logits, 1), correct(labels, logits, 5)

    top1 = top5 = 0.0
    count = 0
    start = time.time()
    for index, (images, labels) in enumerate(dataset):
        if max_batches and index >= max_batches:
            break
        hits1, hits5 = step(images, labels)
        top1, top5, count = top1 + float(hits1), top5 + float(hits5), count + int(labels.shape[0])
        if index % 50 == 0:
            logger.info("%d images: top-1 %.4f", count, top1 / count)
    if count == 0:
        raise ValueError(f"{source!r} split {split!r} gave no images to evaluate")
    return dict(model=get_spec(variant).name, weights=weights, dataset=source,
                split=split, examples=count, top1=top1 / count, top5=top5 / count,
                published_top1=published_top1(variant, weights),
                eval_preprocessing=settings.to_dict(), eval_seconds=time.time() - start)

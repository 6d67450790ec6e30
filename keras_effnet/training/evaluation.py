"""Evaluate a training run: its checkpoints (EMA weights by default) on its evaluation split.

The model comes from the run directory (``config.yaml`` + the checkpoint), never from the initial
weights: a run fine-tuned from a file that was since deleted still evaluates.
"""

from __future__ import annotations

import os
from typing import Iterator

import tensorflow as tf

from keras_effnet.config import Config
from keras_effnet.run_dir import RunDirectory
from keras_effnet.training.checkpoints import resolve_checkpoint
from keras_effnet.training.loop import Trainer
from keras_effnet.training.run_files import check_compatible
from keras_effnet.training.task import DatasetFacts


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

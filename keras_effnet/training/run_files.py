"""The run directory from the trainer's side: what a run writes once at its start, its final
model, and ``load_run_model``, the one way evaluation, export and prediction get a run's model.

Layout and metadata types: ``keras_effnet.run_dir``.
"""

from __future__ import annotations

import dataclasses
import logging
import os

import keras
import tensorflow as tf

from keras_effnet import atomic, data
from keras_effnet.config import Config, image_size_for, load_config
from keras_effnet.run_dir import FINAL_WEIGHTS, RunDirectory, RunMetadata
from keras_effnet.scaling import ModelSpec
from keras_effnet.training.checkpoints import resolve_checkpoint
from keras_effnet.training.task import DatasetFacts, build_network, make_ema, weight_source

logger = logging.getLogger(__name__)


def run_metadata(config: Config, spec: ModelSpec, facts: DatasetFacts, image_size: int,
                 normalization: str, *, custom_data: bool = False) -> RunMetadata:
    """What ``run.json`` and ``labels.txt`` say about a run of ``config``."""
    dc = config.data
    dataset = dict(source=dc.source, train_split=dc.train_split, eval_split=dc.eval_split,
                   data_dir=dc.data_dir, num_classes=facts.num_classes,
                   num_train_examples=facts.num_train_examples,
                   num_eval_examples=facts.num_eval_examples)
    if custom_data:
        dataset["source"] = "custom tf.data pipeline"
    return RunMetadata(
        spec=spec, class_names=facts.names(),
        eval_preprocessing=data.eval_preprocessing_for(dc.source, image_size, normalization),
        weight_source=weight_source(config.model.weights, config.model.new_head),
        dataset=dataset, ema=config.optimizer.ema_decay > 0)


def write_run_start(run: RunDirectory, config: Config, metadata: RunMetadata) -> bool:
    """Write ``config.yaml``, ``labels.txt`` and ``run.json`` unless the run has them already.

    Returns whether they were written (False when resuming: the files of the first start stay).
    """
    if run.has_metadata():
        return False
    with atomic.atomic_path(run.config_path, ".yaml") as tmp:
        with open(tmp, "w", encoding="utf-8") as stream:
            stream.write(config.to_yaml())
    run.write_metadata(metadata)  # run.json last: it marks the run directory complete
    return True


def write_final_model(run: RunDirectory, model: keras.Model) -> str:
    """``export/model.keras`` and ``export/model.weights.h5`` (logits head), atomically."""
    atomic.save_keras(model, run.final_model_path)
    atomic.save_keras(model, run.file(FINAL_WEIGHTS))
    logger.info("exported %s", run.final_model_path)
    return run.final_model_path


def load_run_model(run_dir: str | os.PathLike, use_ema: bool = True, *,
                   checkpoint: str | None = None) -> tuple[keras.Model, RunMetadata, dict]:
    """The model of a training run with a LOGITS head, its metadata and where its weights came from.

    ``export/model.keras`` when the run finished (it holds the EMA weights when the run kept an
    EMA); else, or when ``use_ema`` is False for a run with an EMA, or for an explicit
    ``checkpoint``, the latest (or given) checkpoint restored into a network built from the run's
    files (with its EMA weights when ``use_ema``). Never reads the initial weights or the data.

    Returns:
        ``(model, metadata, weight_source)``; ``weight_source`` says what was loaded:
        ``{"kind": "run", "run_dir", "path", "checkpoint", "step", "ema"}``.

    Raises:
        NotARunDirectory: ``run_dir`` holds no ``run.json``.
        FileNotFoundError: neither a final model nor a checkpoint.
    """
    run = RunDirectory(run_dir)
    metadata = run.read_metadata()
    source = dict(kind="run", run_dir=run.path, path=None, checkpoint=None, step=None,
                  ema=metadata.ema and use_ema)
    wants_raw = metadata.ema and not use_ema
    if checkpoint is None and not wants_raw and os.path.exists(run.final_model_path):
        model = keras.saving.load_model(run.final_model_path, compile=False)
        source["path"] = run.final_model_path
        metrics = run.read_metrics() or {}
        source["step"] = metrics.get("step")
        return model, metadata, source
    path = resolve_checkpoint(checkpoint or run.path)
    model, step = restore_checkpoint(run, metadata, path, use_ema)
    source.update(path=path, checkpoint=path, step=step)
    return model, metadata, source


def restore_checkpoint(run: RunDirectory, metadata: RunMetadata, path: str,
                       use_ema: bool = True) -> tuple[keras.Model, int]:
    """A float32 network built from ``run``'s files with checkpoint ``path`` (+ its EMA) in it."""
    config = run_config(run)
    size = metadata.eval_preprocessing.resolution
    policy = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("float32")
    try:
        # Built as for training (frozen layers included), so the EMA tracks the same variables;
        # plain batch norm (synchronisation only matters across replicas).
        plain = dataclasses.replace(config.model, sync_batch_norm=False)
        model = build_network(plain, metadata.spec, metadata.num_classes, size,
                              metadata.eval_preprocessing.normalization, for_training=True)
    finally:
        keras.mixed_precision.set_global_policy(policy)
    ema = make_ema(model, config) if metadata.ema else None
    step = tf.Variable(0, dtype=tf.int64, trainable=False, name="global_step")
    restore = dict(model=model, step=step)
    if ema is not None:
        restore["ema"] = ema
    status = tf.train.Checkpoint(**restore).restore(path)
    status.expect_partial().assert_existing_objects_matched()
    if ema is not None and use_ema:
        ema.copy_to_model()
    for layer in model.layers:
        layer.trainable = True
    return model, int(step.numpy())


def run_config(run: RunDirectory | str | os.PathLike) -> Config:
    """The configuration a run was trained with (``config.yaml``)."""
    if not isinstance(run, RunDirectory):
        run = RunDirectory(run)
    if not os.path.exists(run.config_path):
        raise FileNotFoundError(f"{run.path!r} holds no config.yaml; retrain, or restore it")
    return load_config([run.config_path])


def check_compatible(metadata: RunMetadata, config: Config, facts: DatasetFacts) -> None:
    """Refuse evaluating a run on data or settings other than its own (names both)."""
    if facts.num_classes != metadata.num_classes:
        raise ValueError(f"the run has {metadata.num_classes} classes but the data "
                         f"{config.data.source!r} has {facts.num_classes}; evaluate on the "
                         "run's own dataset")
    size = image_size_for(config)
    if size != metadata.eval_preprocessing.resolution:
        raise ValueError(f"image size {size} differs from the run's "
                         f"{metadata.eval_preprocessing.resolution}; drop --image_size")


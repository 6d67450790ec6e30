"""The trainer: a custom loop on ``tf.distribute`` with the published recipe.

``train(config)`` trains, checkpoints, evaluates with the EMA weights and exports;
``evaluate(config, checkpoint)`` reports top-1/top-5 of a checkpoint's EMA weights. See
docs/training.md for the recipe and the choices made.

Per replica and step: logits (float32) -> softmax cross-entropy with label smoothing, summed and
divided by the GLOBAL batch, plus ``wd * sum(w**2) / 2`` over non-BN weights divided by the number
of replicas; the optimiser sums gradients across replicas, so the update equals single-device
training on the global batch and the linearly scaled learning rate is right for any replica count.
"""

from __future__ import annotations

import dataclasses
import math
import os
import signal
import threading
import time

import keras
import numpy as np
import tensorflow as tf
from absl import logging
from tensorflow.core.framework import summary_pb2

from keras_effnet import atomic, checkpoints, optim
from keras_effnet.config import Config, ModelConfig
from keras_effnet.distribute import configure_logical_cpus, create_strategy, task_info

MIN_IMAGE_SIZE = 32


class TrainingStopped(RuntimeError):
    """Raised when training cannot continue (e.g. a non-finite loss)."""


@dataclasses.dataclass
class DatasetFacts:
    num_classes: int
    num_train_examples: int
    num_eval_examples: int | None = None


def resolve_spec(model: ModelConfig):
    """The ``ModelSpec`` a ``ModelConfig`` describes (variant or compound phi, then overrides)."""
    from keras_effnet import scaling  # noqa: PLC0415

    base = scaling.get_spec(model.name)
    spec = scaling.compound_spec(model.phi, base=base) if model.phi is not None else base
    changes = {key: getattr(model, key) for key in ("width", "depth", "resolution")
               if getattr(model, key) is not None}
    if changes:
        spec = dataclasses.replace(spec, **changes)
    return spec


def image_size_for(config: Config) -> int:
    """The training/eval image size: ``data.image_size`` or the variant's resolution."""
    spec = resolve_spec(config.model)
    size = config.data.image_size or spec.resolution
    if size < MIN_IMAGE_SIZE:
        raise ValueError(f"image size {size} is too small for {spec.name}: EfficientNet "
                         f"downsamples 32x, use data.image_size >= {MIN_IMAGE_SIZE}")
    if (config.data.image_size and config.model.resolution
            and config.data.image_size != config.model.resolution):
        raise ValueError(f"data.image_size={config.data.image_size} does not match "
                         f"model.resolution={config.model.resolution} of the variant; set one "
                         "of them (or both to the same value)")
    return size


def dataset_facts(config: Config) -> DatasetFacts:
    """Classes and example counts from ``keras_effnet.data.dataset_info``; clear error if missing."""
    from keras_effnet import data  # noqa: PLC0415

    source, data_dir = config.data.source, config.data.data_dir
    try:
        train_info = data.dataset_info(source, config.data.train_split, data_dir=data_dir)
    except (FileNotFoundError, ValueError, OSError) as error:
        raise FileNotFoundError(f"cannot open the training data {source!r} split "
                                f"{config.data.train_split!r}: {error}") from None
    try:
        eval_info = data.dataset_info(source, config.data.eval_split, data_dir=data_dir)
        eval_examples = eval_info.num_examples
    except (FileNotFoundError, ValueError, OSError) as error:
        raise FileNotFoundError(f"cannot open the evaluation data {source!r} split "
                                f"{config.data.eval_split!r}: {error}") from None
    return DatasetFacts(num_classes=int(train_info.num_classes),
                        num_train_examples=int(config.data.num_train_examples
                                               or train_info.num_examples),
                        num_eval_examples=eval_examples)


def set_mixed_precision(policy: str) -> None:
    keras.mixed_precision.set_global_policy(policy)


def build_network(config: Config, num_classes: int, image_size: int,
                  classifier_activation=None) -> keras.Model:
    """The model of ``config`` (logits by default), initialised from ``model.weights`` if set."""
    from keras_effnet.model import build_model  # noqa: PLC0415

    spec = resolve_spec(config.model)
    mc = config.model
    kwargs = dict(input_shape=(image_size, image_size, 3), classes=num_classes,
                  classifier_activation=classifier_activation,
                  stochastic_depth_rate=mc.stochastic_depth_rate, dropout_rate=mc.dropout_rate)
    weights = mc.weights
    file_weights = weights is not None and (os.path.exists(weights) or weights.endswith((".h5", ".keras")))
    if weights is None:
        model = build_model(spec, **kwargs)
    elif file_weights:
        if not os.path.exists(weights):
            raise FileNotFoundError(f"model.weights file {weights!r} does not exist")
        model = build_model(spec, **kwargs)
        source = _load_weight_source(weights, spec, num_classes, image_size, mc.new_head)
        copied = transfer_weights(source, model, skip_head=mc.new_head)
        logging.info("initialised %d layers from %s", copied, weights)
    elif mc.new_head:
        backbone = build_model(spec, include_top=False, weights=weights,
                               input_shape=(image_size, image_size, 3))
        model = build_model(spec, **kwargs)
        transfer_weights(backbone, model, skip_head=True)
    else:
        model = build_model(spec, weights=weights, **kwargs)
    if mc.freeze_backbone:
        for layer in model.layers:
            if layer.name != "predictions":
                layer.trainable = False
    if mc.sync_batch_norm:
        for layer in model._flatten_layers(include_self=False, recursive=True):  # noqa: SLF001
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.synchronized = True
    return model


def _load_weight_source(path: str, spec, num_classes: int, image_size: int, new_head: bool):
    from keras_effnet.model import build_model  # noqa: PLC0415

    if path.endswith(".keras"):
        return keras.saving.load_model(path, compile=False)
    # A .weights.h5 of the same architecture; its class count is unknown with a new head, so
    # load it into a headless backbone by layer name.
    if new_head:
        source = build_model(spec, include_top=False, input_shape=(image_size, image_size, 3))
        source.load_weights(path, skip_mismatch=True)
        return source
    source = build_model(spec, input_shape=(image_size, image_size, 3), classes=num_classes)
    source.load_weights(path)
    return source


def transfer_weights(source: keras.Model, target: keras.Model, skip_head: bool = False) -> int:
    """Copy weights layer by layer where names and shapes agree. Returns the layers copied."""
    by_name = {layer.name: layer for layer in source.layers}
    copied = 0
    for layer in target.layers:
        if skip_head and layer.name == "predictions":
            continue
        other = by_name.get(layer.name)
        if other is None or not layer.weights:
            continue
        values = other.get_weights()
        if [tuple(v.shape) for v in values] != [tuple(w.shape) for w in layer.weights]:
            continue
        layer.set_weights(values)
        copied += 1
    return copied


def build_optimizer(config: Config, steps_per_epoch: int, total_steps: int, global_batch: int):
    """Optimiser with the scaled learning-rate schedule (wrapped for loss scaling in float16)."""
    oc, sc = config.optimizer, config.schedule
    peak = optim.scaled_learning_rate(oc.lr_per_256, global_batch)
    warmup = int(round(sc.warmup_epochs * steps_per_epoch))
    if sc.decay == "exponential":
        schedule = optim.WarmupExponentialDecay(
            peak, warmup, decay_steps=max(1.0, sc.decay_epochs * steps_per_epoch),
            decay_rate=sc.decay_rate, staircase=sc.staircase, min_lr=sc.min_lr)
    elif sc.decay == "cosine":
        schedule = optim.WarmupCosineDecay(peak, min(warmup, total_steps - 1),
                                           max(total_steps, 1), min_lr=sc.min_lr)
    else:
        schedule = optim.WarmupExponentialDecay(peak, warmup, decay_steps=1.0, decay_rate=1.0)
    extra = {"clipnorm": oc.clipnorm} if oc.clipnorm else {}
    if oc.name == "rmsprop":
        optimizer = optim.RMSPropTF1(schedule, rho=oc.rho, momentum=oc.momentum,
                                     epsilon=oc.epsilon, **extra)
    elif oc.name == "sgd":
        optimizer = keras.optimizers.SGD(schedule, momentum=oc.momentum, nesterov=True, **extra)
    else:
        optimizer = keras.optimizers.Adam(schedule, epsilon=oc.epsilon, **extra)
    if config.runtime.mixed_precision == "mixed_float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer, schedule


def summary_scalar(name: str, value: float, step: int | None = None) -> None:
    """A TensorBoard scalar (the ``scalars`` plugin format) without importing tensorboard."""
    metadata = summary_pb2.SummaryMetadata()
    metadata.plugin_data.plugin_name = "scalars"
    tf.summary.write(name, tf.constant(float(value), tf.float32), step=step, metadata=metadata)


def _schedule_value(schedule, step: int) -> float:
    return float(schedule.value(step))


def smoothed_cross_entropy(labels, logits, num_classes: int, label_smoothing: float):
    """Per-example softmax cross-entropy in float32. ``labels``: int [B] or probabilities [B, C]."""
    logits = tf.cast(logits, tf.float32)
    if labels.shape.rank == 1:
        targets = tf.one_hot(tf.cast(labels, tf.int32), num_classes, dtype=tf.float32)
    else:
        targets = tf.cast(labels, tf.float32)
    if label_smoothing:
        targets = targets * (1.0 - label_smoothing) + label_smoothing / num_classes
    return tf.nn.softmax_cross_entropy_with_logits(targets, logits)


def _hard_labels(labels):
    return tf.cast(labels if labels.shape.rank == 1 else tf.argmax(labels, axis=-1), tf.int32)


def _correct(labels, logits, k):
    return tf.reduce_sum(tf.cast(tf.math.in_top_k(_hard_labels(labels), tf.cast(logits, tf.float32),
                                                  k), tf.float32))


class Trainer:
    """Owns strategy, model, optimiser, EMA, data and checkpoints of one run.

    ``train_dataset``/``eval_dataset`` (tf.data of (images, labels) GLOBAL batches) and
    ``facts`` replace the config's data source (tests and custom pipelines).
    """

    def __init__(self, config: Config, *, strategy: tf.distribute.Strategy | None = None,
                 train_dataset: tf.data.Dataset | None = None,
                 eval_dataset: tf.data.Dataset | None = None, facts: DatasetFacts | None = None):
        self.config = config
        self.model_dir = config.runtime.model_dir
        self._train_override = train_dataset
        self._eval_override = eval_dataset
        self._stop_signal = None
        self.validate_early()
        if config.runtime.cpu_devices and strategy is None:
            configure_logical_cpus(config.runtime.cpu_devices)
        self.strategy = strategy or create_strategy(config.runtime)
        self.worker_index, self.num_workers, self.is_chief = task_info(self.strategy)
        self.num_replicas = self.strategy.num_replicas_in_sync
        self.image_size = image_size_for(config)
        self.facts = facts or dataset_facts(config)
        self._validate_batches()
        self.global_batch = config.data.batch_size
        self.eval_batch = config.data.eval_batch_size or config.data.batch_size
        rt = config.runtime
        self.steps_per_epoch = rt.steps_per_epoch or max(1, self.facts.num_train_examples
                                                         // self.global_batch)
        self.total_steps = max(1, int(math.ceil(config.schedule.epochs * self.steps_per_epoch)))
        self.stop_step = min(self.total_steps, rt.max_steps) if rt.max_steps else self.total_steps
        self._built = False

    # -- checks before anything heavy ------------------------------------------------------------
    def validate_early(self) -> None:
        cfg = self.config
        checkpoints.check_writable(self.model_dir)
        if cfg.data.batch_size <= 0:
            raise ValueError(f"data.batch_size must be positive, got {cfg.data.batch_size}")
        if cfg.schedule.epochs <= 0:
            raise ValueError(f"schedule.epochs must be positive, got {cfg.schedule.epochs}")
        if not 0 <= cfg.optimizer.label_smoothing < 1:
            raise ValueError(f"optimizer.label_smoothing must be in [0, 1), got "
                             f"{cfg.optimizer.label_smoothing}")
        if not 0 <= cfg.optimizer.ema_decay < 1:
            raise ValueError(f"optimizer.ema_decay must be in [0, 1), got {cfg.optimizer.ema_decay}")
        resolve_spec(cfg.model)  # unknown variant names fail here

    def _validate_batches(self) -> None:
        cfg = self.config
        for label, batch in (("data.batch_size", cfg.data.batch_size),
                             ("data.eval_batch_size", cfg.data.eval_batch_size)):
            if batch is not None and batch % self.num_replicas:
                raise ValueError(
                    f"{label}={batch} is not divisible by the {self.num_replicas} replicas of the "
                    f"{cfg.runtime.strategy} strategy; use a multiple of {self.num_replicas} "
                    "(batch sizes are global)")
        if self.config.model.num_classes and self.config.model.num_classes != self.facts.num_classes:
            raise ValueError(f"model.num_classes={self.config.model.num_classes} but the dataset "
                             f"{cfg.data.source!r} has {self.facts.num_classes} classes")

    # -- construction ---------------------------------------------------------------------------
    def build(self) -> None:
        if self._built:
            return
        cfg = self.config
        rt = cfg.runtime
        if rt.seed is not None:
            keras.utils.set_random_seed(rt.seed)
        if rt.deterministic:
            tf.config.experimental.enable_op_determinism()
        set_mixed_precision(rt.mixed_precision)
        with self.strategy.scope():
            self.model = build_network(cfg, self.facts.num_classes, self.image_size)
            self.optimizer, self.schedule = build_optimizer(
                cfg, self.steps_per_epoch, self.total_steps, self.global_batch)
            self.optimizer.build(self.model.trainable_variables)
            self.ema = None
            if cfg.optimizer.ema_decay > 0:
                self.ema = optim.ExponentialMovingAverage(
                    optim.ema_variables(self.model), cfg.optimizer.ema_decay, cfg.optimizer.ema_warmup)
            self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="global_step",
                                    aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
            self.best_top1 = tf.Variable(-1.0, dtype=tf.float32, trainable=False, name="best_top1",
                                         aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
        self.decay_variables = optim.weight_decay_variables(
            self.model, include_biases=cfg.optimizer.weight_decay_biases)
        state = dict(model=self.model, optimizer=self.optimizer, step=self.step,
                     best_top1=self.best_top1, rng=_random_state(self.model))
        if self.ema is not None:
            state["ema"] = self.ema
        self.state = tf.train.Checkpoint(**state)
        self._built = True

    def _make_train_dataset(self) -> tf.data.Dataset:
        if self._train_override is not None:
            dataset = self._train_override
            if self.num_workers > 1:
                dataset = dataset.shard(self.num_workers, self.worker_index)
            return dataset.repeat()
        from keras_effnet import data  # noqa: PLC0415

        cfg = self.config
        # One pipeline per worker yielding this worker's share of the global batch, which
        # _split_to_replicas slices across the local replicas (make_dataset batches exactly
        # ``batch_size``; with an input_context it only shards).
        per_worker = self.global_batch // self.num_workers
        aug = cfg.augmentation
        context = None
        if self.num_workers > 1:
            context = tf.distribute.InputContext(self.num_workers, self.worker_index,
                                                 self.num_replicas)
        return data.make_dataset(
            cfg.data.source, cfg.data.train_split, image_size=self.image_size,
            batch_size=per_worker, training=True,
            augment=None if aug.name == "none" else aug.name,
            randaugment_layers=aug.randaugment_layers,
            randaugment_magnitude=aug.randaugment_magnitude,
            mixup_alpha=aug.mixup_alpha, cutmix_alpha=aug.cutmix_alpha,
            num_classes=self.facts.num_classes, data_dir=cfg.data.data_dir,
            seed=cfg.runtime.seed, deterministic=cfg.runtime.deterministic, cache=cfg.data.cache,
            input_context=context, drop_remainder=True, repeat=True)

    def _make_eval_dataset(self) -> tf.data.Dataset:
        if self._eval_override is not None:
            return self._eval_override
        from keras_effnet import data  # noqa: PLC0415

        cfg = self.config
        return data.make_dataset(
            cfg.data.source, cfg.data.eval_split, image_size=self.image_size,
            batch_size=self.eval_batch, training=False, data_dir=cfg.data.data_dir,
            cache=cfg.data.cache, drop_remainder=False, repeat=False)

    # -- compiled steps -------------------------------------------------------------------------
    def _split_to_replicas(self, images, labels):
        if self.num_replicas == 1:
            return images, labels
        local = self.num_replicas // self.num_workers

        def value_fn(context):
            index = context.replica_id_in_sync_group % local
            size = tf.shape(images)[0] // local
            return images[index * size:(index + 1) * size], labels[index * size:(index + 1) * size]

        return self.strategy.experimental_distribute_values_from_function(value_fn)

    def _replica_train_step(self, images, labels):
        cfg = self.config
        num_classes = self.facts.num_classes
        with tf.GradientTape() as tape:
            logits = self.model(images, training=True)
            per_example = smoothed_cross_entropy(labels, logits, num_classes,
                                                 cfg.optimizer.label_smoothing)
            cross_entropy = tf.reduce_sum(per_example) / float(self.global_batch)
            decay = optim.l2_weight_decay(self.decay_variables, cfg.optimizer.weight_decay)
            loss = cross_entropy + decay / float(self.num_replicas)
            scaled = self.optimizer.scale_loss(loss) if isinstance(
                self.optimizer, keras.optimizers.LossScaleOptimizer) else loss
        variables = self.model.trainable_variables
        gradients = tape.gradient(scaled, variables)
        self.optimizer.apply(gradients, variables)
        return dict(loss=loss, cross_entropy=cross_entropy,
                    top1=_correct(labels, logits, 1),
                    count=tf.cast(tf.shape(logits)[0], tf.float32))

    def _train_step(self, iterator):
        images, labels = next(iterator)
        images, labels = self._split_to_replicas(images, labels)
        outputs = self.strategy.run(self._replica_train_step, args=(images, labels))
        if self.ema is not None:
            self.ema.apply()
        self.step.assign_add(1)
        return {key: self.strategy.reduce(tf.distribute.ReduceOp.SUM, value, axis=None)
                for key, value in outputs.items()}

    def _replica_eval_step(self, images, labels):
        logits = tf.cast(self.model(images, training=False), tf.float32)
        per_example = smoothed_cross_entropy(labels, logits, self.facts.num_classes, 0.0)
        return dict(loss_sum=tf.reduce_sum(per_example), top1=_correct(labels, logits, 1),
                    top5=_correct(labels, logits, min(5, self.facts.num_classes)),
                    count=tf.cast(tf.shape(logits)[0], tf.float32))

    def _eval_step(self, batch):
        outputs = self.strategy.run(self._replica_eval_step, args=batch)
        return {key: self.strategy.reduce(tf.distribute.ReduceOp.SUM, value, axis=None)
                for key, value in outputs.items()}

    # -- evaluation -----------------------------------------------------------------------------
    def evaluate(self, use_ema: bool = True, max_steps: int | None = None) -> dict:
        """Top-1/top-5/loss on the eval split, with the EMA weights swapped in when available."""
        self.build()
        if not hasattr(self, "_eval_fn"):
            self._eval_fn = tf.function(self._eval_step, jit_compile=self.config.runtime.jit_compile)
        dataset = self.strategy.experimental_distribute_dataset(self._make_eval_dataset())
        max_steps = max_steps or self.config.runtime.eval_steps
        swapped = use_ema and self.ema is not None
        if swapped:
            self.ema.swap()
        totals = dict(loss_sum=0.0, top1=0.0, top5=0.0, count=0.0)
        start = time.time()
        try:
            for index, batch in enumerate(dataset):
                if max_steps and index >= max_steps:
                    break
                for key, value in self._eval_step_fn(batch).items():
                    totals[key] += float(value)
        finally:
            if swapped:
                self.ema.swap()
        count = max(totals["count"], 1.0)
        return dict(top1=totals["top1"] / count, top5=totals["top5"] / count,
                    loss=totals["loss_sum"] / count, examples=int(totals["count"]),
                    eval_seconds=time.time() - start, ema=swapped)

    def _eval_step_fn(self, batch):
        return self._eval_fn(batch)

    # -- training -------------------------------------------------------------------------------
    def _install_signal_handler(self):
        if threading.current_thread() is not threading.main_thread():
            return None

        def handler(signum, frame):  # noqa: ARG001
            self._stop_signal = signum
            logging.warning("received signal %d: saving a checkpoint and stopping", signum)

        return signal.signal(signal.SIGTERM, handler)

    def train(self) -> dict:
        """Run (or resume) the job to ``schedule.epochs``; returns the final metrics."""
        cfg = self.config
        rt = cfg.runtime
        self.build()
        if self.is_chief:
            with atomic.atomic_path(os.path.join(self.model_dir, "config.yaml"), ".yaml") as tmp:
                with open(tmp, "w", encoding="utf-8") as stream:
                    stream.write(cfg.to_yaml())
        dataset = self._make_train_dataset()
        # The iterator position is checkpointed; input counters (stateful ops) need not be.
        options = tf.data.Options()
        options.experimental_external_state_policy = tf.data.experimental.ExternalStatePolicy.IGNORE
        with tf.device("/cpu:0"):
            train_iterator = iter(dataset.with_options(options))
        data_state = tf.train.Checkpoint(iterator=train_iterator)
        self.checkpoints = checkpoints.RunCheckpoints(
            self.model_dir, self.state, data_state, keep=rt.keep_checkpoints,
            worker_index=self.worker_index, is_chief=self.is_chief)
        restored = self.checkpoints.restore_latest()
        if restored is not None:
            if int(self.step.numpy()) != restored:
                raise RuntimeError(f"checkpoint ckpt-{restored} holds step {int(self.step.numpy())}")
            logging.info("resumed from %s at step %d (lr %.6g)", self.checkpoints.manager.latest_checkpoint,
                         restored, _schedule_value(self.schedule, self._optimizer_iterations()))
        train_fn = tf.function(self._train_step, jit_compile=rt.jit_compile)
        writers = self._summary_writers()
        previous = self._install_signal_handler()
        step = int(self.step.numpy())
        last_saved = step if restored is not None else -1
        last_eval = None
        start_step, start_time = step, time.time()
        interrupted = False
        progbar = None
        try:
            while step < self.stop_step:
                epoch = step // self.steps_per_epoch
                if progbar is None and rt.progress_bar and self.is_chief:
                    print(f"epoch {epoch + 1}/{math.ceil(self.total_steps / self.steps_per_epoch)}")
                    progbar = keras.utils.Progbar(self.steps_per_epoch, stateful_metrics=[
                        "loss", "top1", "lr", "images/s"])
                tick = time.time()
                outputs = train_fn(train_iterator)
                loss = float(outputs["loss"]) / self.num_replicas
                step += 1
                if not math.isfinite(loss):
                    latest = self.checkpoints.manager.latest_checkpoint
                    raise TrainingStopped(
                        f"non-finite loss ({loss}) at step {step}: training stopped. The last good "
                        f"checkpoint is {latest or 'none (no checkpoint was saved yet)'}; lower "
                        "the learning rate (optimizer.lr_per_256) or check the input data, then "
                        "rerun to resume from it")
                seconds = max(time.time() - tick, 1e-9)
                images_per_sec = self.global_batch / seconds
                top1 = float(outputs["top1"]) / max(float(outputs["count"]), 1.0)
                lr = _schedule_value(self.schedule, self._optimizer_iterations() - 1)
                if progbar is not None:
                    progbar.update(step - epoch * self.steps_per_epoch, values=[
                        ("loss", loss), ("top1", top1), ("lr", lr), ("images/s", images_per_sec)])
                if writers and (step % rt.log_every_steps == 0 or step == self.stop_step):
                    with writers[0].as_default(step=step):
                        summary_scalar("loss", loss)
                        summary_scalar("cross_entropy", float(outputs["cross_entropy"])
                                          / self.num_replicas)
                        summary_scalar("learning_rate", lr)
                        summary_scalar("accuracy", top1)
                        summary_scalar("images_per_sec", images_per_sec)
                epoch_end = step % self.steps_per_epoch == 0
                if self._stop_signal is not None:
                    self._save(step)
                    last_saved = step
                    interrupted = True
                    break
                if (rt.checkpoint_every_steps and step % rt.checkpoint_every_steps == 0) or epoch_end:
                    self._save(step)
                    last_saved = step
                if epoch_end:
                    progbar = None
                    finished_epochs = step // self.steps_per_epoch
                    if finished_epochs % rt.eval_every_epochs == 0 or step == self.stop_step:
                        last_eval = self._evaluate_and_log(step, writers)
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
        wall = time.time() - start_time
        if interrupted:
            logging.warning("stopped by signal at step %d; checkpoint %s", step,
                            self.checkpoints.manager.latest_checkpoint)
            return dict(step=step, interrupted=True)
        if last_saved != step:
            self._save(step)
        if last_eval is None or last_eval["step"] != step:
            last_eval = self._evaluate_and_log(step, writers)
        steps_run = step - start_step
        metrics = dict(
            top1=last_eval["top1"], top5=last_eval["top5"], eval_loss=last_eval["loss"],
            eval_examples=last_eval["examples"], step=step, epoch=step / self.steps_per_epoch,
            steps_this_run=steps_run, wall_seconds=wall,
            images_per_sec=(steps_run * self.global_batch / wall) if steps_run else 0.0,
            best_top1=float(self.best_top1.numpy()), ema=last_eval["ema"],
            global_batch_size=self.global_batch, replicas=self.num_replicas,
            model=resolve_spec(cfg.model).name, image_size=self.image_size,
            interrupted=False)
        if self.is_chief:
            self.export()
            checkpoints.write_json_atomic(os.path.join(self.model_dir, "metrics.json"), metrics)
        for writer in writers:
            writer.flush()
        return metrics

    def _optimizer_iterations(self) -> int:
        return int(self.optimizer.iterations.numpy())

    def _save(self, step: int) -> None:
        path = self.checkpoints.save(step)
        logging.info("saved checkpoint %s", path)

    def _summary_writers(self):
        if not self.is_chief:
            return []
        return [tf.summary.create_file_writer(os.path.join(self.model_dir, "train")),
                tf.summary.create_file_writer(os.path.join(self.model_dir, "eval"))]

    def _evaluate_and_log(self, step: int, writers) -> dict:
        result = self.evaluate()
        result["step"] = step
        logging.info("step %d: eval top-1 %.4f top-5 %.4f loss %.4f (%d examples, EMA %s)", step,
                     result["top1"], result["top5"], result["loss"], result["examples"],
                     result["ema"])
        if self.config.runtime.progress_bar and self.is_chief:
            print(f"step {step}: eval top-1 {result['top1']:.4f} top-5 {result['top5']:.4f} "
                  f"loss {result['loss']:.4f}")
        if writers:
            with writers[1].as_default(step=step):
                summary_scalar("top1", result["top1"])
                summary_scalar("top5", result["top5"])
                summary_scalar("loss", result["loss"])
        if result["top1"] > float(self.best_top1.numpy()):
            self.best_top1.assign(result["top1"])
            self.checkpoints.save_best(step, {k: v for k, v in result.items() if k != "step"})
        return result

    # -- export ---------------------------------------------------------------------------------
    def export_model(self, classifier_activation="softmax") -> keras.Model:
        """A float32, undistributed copy of the model carrying the EMA weights."""
        policy = keras.mixed_precision.global_policy()
        keras.mixed_precision.set_global_policy("float32")
        try:
            plain = dataclasses.replace(self.config.model, weights=None, sync_batch_norm=False,
                                        freeze_backbone=False)
            exported = build_network(dataclasses.replace(self.config, model=plain),
                                     self.facts.num_classes, self.image_size,
                                     classifier_activation=classifier_activation)
        finally:
            keras.mixed_precision.set_global_policy(policy)
        if self.ema is not None:
            self.ema.swap()
        try:
            exported.set_weights([np.asarray(w) for w in self.model.get_weights()])
        finally:
            if self.ema is not None:
                self.ema.swap()
        return exported

    def export(self) -> str:
        """Write ``export/model.keras`` and ``export/model.weights.h5`` (EMA weights) atomically."""
        exported = self.export_model()
        directory = os.path.join(self.model_dir, checkpoints.EXPORT_DIR)
        path = os.path.join(directory, "model.keras")
        checkpoints.save_keras_atomic(exported, path)
        checkpoints.save_keras_atomic(exported, os.path.join(directory, "model.weights.h5"))
        logging.info("exported %s", path)
        return path


def _random_state(model) -> tf.Module:
    """The dropout / stochastic-depth seed-generator states (Keras does not checkpoint them), so a
    resumed run draws the same masks as an uninterrupted one."""
    holder = tf.Module(name="random_state")
    holder.states = [generator.state.value
                     for layer in model._flatten_layers(include_self=True, recursive=True)  # noqa: SLF001
                     for generator in getattr(layer, "_seed_generators", [])]
    return holder


def train(config: Config, **kwargs) -> dict:
    """Train (or resume) the job described by ``config``; see ``Trainer``."""
    return Trainer(config, **kwargs).train()


def evaluate_checkpoint(config: Config, checkpoint: str | None = None, *, use_ema: bool = True,
                        strategy=None, eval_dataset=None, facts=None) -> dict:
    """Top-1/top-5 of a training checkpoint (the latest in ``runtime.model_dir`` by default)."""
    trainer = Trainer(config, strategy=strategy, eval_dataset=eval_dataset, facts=facts)
    path = checkpoint or tf.train.latest_checkpoint(trainer.model_dir)
    if path is None:
        raise FileNotFoundError(f"no checkpoint in {trainer.model_dir!r}")
    if os.path.isdir(path):
        latest = tf.train.latest_checkpoint(path)
        if latest is None:
            raise FileNotFoundError(f"no checkpoint in {path!r}")
        path = latest
    return evaluate_loaded(trainer, path, use_ema)


def evaluate_loaded(trainer: Trainer, path: str, use_ema: bool = True) -> dict:
    """Restore model (+ EMA) of checkpoint ``path`` into ``trainer`` and evaluate it."""
    trainer.build()
    restore = dict(model=trainer.model, step=trainer.step)
    if trainer.ema is not None:
        restore["ema"] = trainer.ema
    tf.train.Checkpoint(**restore).restore(path).expect_partial()
    result = trainer.evaluate(use_ema=use_ema)
    result.update(step=int(trainer.step.numpy()), checkpoint=path)
    return result

"""The training loop: strategy, data, checkpoints, SIGTERM, summaries, best tracking, final export.

``Trainer(config)`` checks the job before anything heavy; ``train()`` runs (or resumes) it to
``schedule.epochs`` and ``evaluate()`` reports top-1/top-5 with the EMA weights. The model,
optimiser and steps (and a frozen warm-up's switch) are the ``TrainingTask``'s.
"""

from __future__ import annotations

import logging
import math
import signal
import threading
import time

import keras
import tensorflow as tf

from keras_effnet import atomic
from keras_effnet.config import Config, image_size_for, resolve_spec
from keras_effnet.distribute import configure_logical_cpus, create_strategy, task_info
from keras_effnet.run_dir import METRICS_FILE, RunDirectory
from keras_effnet.training.inputs import dataset_facts, eval_dataset, train_dataset
from keras_effnet.training.checkpoints import RunCheckpoints, check_writable
from keras_effnet.training.guards import (
    RunLock, TrainingDiverged, check_not_diverged, check_resume, loss_problem, record_divergence,
    weights_problem)
from keras_effnet.training.reporting import TrainingReport
from keras_effnet.training.run_files import run_metadata, write_final_model, write_run_start
from keras_effnet.training.task import (
    DatasetFacts, TrainingTask, model_normalization, schedule_steps)

logger = logging.getLogger(__name__)

SUM = tf.distribute.ReduceOp.SUM


class Trainer:
    """Strategy, data, checkpoints and the loop of one run around a ``TrainingTask``.

    ``train_dataset``/``eval_dataset`` (tf.data of (images, labels) GLOBAL batches) and
    ``facts`` replace the config's data source (tests and custom pipelines).
    """

    def __init__(self, config: Config, *, strategy: tf.distribute.Strategy | None = None,
                 train_dataset: tf.data.Dataset | None = None,
                 eval_dataset: tf.data.Dataset | None = None, facts: DatasetFacts | None = None):
        self.config = config
        self.model_dir = config.runtime.model_dir
        self.run = RunDirectory(self.model_dir) if self.model_dir else None
        self._train_override = train_dataset
        self._eval_override = eval_dataset
        self._stop_signal = None
        self.validate_early()
        if config.runtime.cpu_devices and strategy is None:
            configure_logical_cpus(config.runtime.cpu_devices)
        self.strategy = strategy or create_strategy(config.runtime)
        self.worker_index, self.num_workers, self.is_chief = task_info(self.strategy)
        self.num_replicas = self.strategy.num_replicas_in_sync
        self.spec = resolve_spec(config.model)
        self.image_size = image_size_for(config)
        self.facts = facts or dataset_facts(config)
        self._validate_batches()
        self.global_batch = config.data.batch_size
        rt = config.runtime
        self.steps_per_epoch = rt.steps_per_epoch or max(1, self.facts.num_train_examples
                                                         // self.global_batch)
        # The run's length is the original's: int(epochs * num_train_examples / batch) steps
        # (tensorflow/tpu main.py), while epochs for checkpoints and evaluation are whole steps.
        self.total_steps = schedule_steps(config, self.facts.num_train_examples,
                                          self.global_batch).total_steps
        self.stop_step = min(self.total_steps, rt.max_steps) if rt.max_steps else self.total_steps
        self.task = TrainingTask(
            config, self.spec, self.facts, self.image_size,
            model_normalization(self.spec, config.model.weights),
            steps_per_epoch=self.steps_per_epoch, total_steps=self.total_steps,
            global_batch=self.global_batch, num_replicas=self.num_replicas)
        self._built = False
        self._eval_fn = None

    # -- checks before anything heavy ------------------------------------------------------------
    def validate_early(self) -> None:
        cfg = self.config
        check_writable(self.model_dir)
        if cfg.data.batch_size <= 0:
            raise ValueError(f"data.batch_size must be positive, got {cfg.data.batch_size}")
        if cfg.schedule.epochs <= 0:
            raise ValueError(f"schedule.epochs must be positive, got {cfg.schedule.epochs}")
        if not 0 <= cfg.optimizer.label_smoothing < 1:
            raise ValueError(f"optimizer.label_smoothing must be in [0, 1), got "
                             f"{cfg.optimizer.label_smoothing}")
        if not 0 <= cfg.optimizer.ema_decay < 1:
            raise ValueError(f"optimizer.ema_decay must be in [0, 1), got {cfg.optimizer.ema_decay}")
        if not cfg.optimizer.lr_per_256 > 0:
            raise ValueError(f"optimizer.lr_per_256 must be positive, got "
                             f"{cfg.optimizer.lr_per_256} (the published recipe uses 0.016)")
        for key in ("eval_every_epochs", "log_every_steps", "keep_checkpoints"):
            value = getattr(cfg.runtime, key)
            if value < 1:
                raise ValueError(f"runtime.{key} must be at least 1, got {value}")
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
        if self.facts.num_classes < 2:
            raise ValueError(f"the dataset {cfg.data.source!r} has {self.facts.num_classes} "
                             "class: a classifier needs at least 2 (check that each class has "
                             "its own sub-folder, or the labels of the records)")
        if cfg.model.num_classes and cfg.model.num_classes != self.facts.num_classes:
            raise ValueError(f"model.num_classes={cfg.model.num_classes} but the dataset "
                             f"{cfg.data.source!r} has {self.facts.num_classes} classes")

    # -- construction ---------------------------------------------------------------------------
    def build(self, initial_weights: bool = False) -> None:
        """Build the task in the strategy's scope; ``initial_weights`` loads ``model.weights``."""
        if self._built:
            return
        rt = self.config.runtime
        if rt.seed is not None:
            keras.utils.set_random_seed(rt.seed)
        if rt.deterministic:
            tf.config.experimental.enable_op_determinism()
        keras.mixed_precision.set_global_policy(rt.mixed_precision)
        with self.strategy.scope():
            self.task.build(initial_weights)
        self._built = True

    @property
    def model(self) -> keras.Model:
        return self.task.model

    def _make_train_dataset(self) -> tf.data.Dataset:
        if self._train_override is not None:
            dataset = self._train_override
            if self.num_workers > 1:
                dataset = dataset.shard(self.num_workers, self.worker_index)
            return dataset.repeat()
        return train_dataset(self.config, self.image_size, self.facts.num_classes,
                             worker_index=self.worker_index, num_workers=self.num_workers,
                             num_replicas=self.num_replicas)

    def _make_eval_dataset(self) -> tf.data.Dataset:
        if self._eval_override is not None:
            return self._eval_override
        return eval_dataset(self.config, self.image_size)

    # -- distributed steps ----------------------------------------------------------------------
    def _split_to_replicas(self, images, labels):
        if self.num_replicas == 1:
            return images, labels
        local = self.num_replicas // self.num_workers

        def value_fn(context):
            index = context.replica_id_in_sync_group % local
            size = tf.shape(images)[0] // local
            return images[index * size:(index + 1) * size], labels[index * size:(index + 1) * size]

        return self.strategy.experimental_distribute_values_from_function(value_fn)

    def _train_step(self, iterator):
        images, labels = self._split_to_replicas(*next(iterator))
        outputs = self.strategy.run(self.task.replica_train_step, args=(images, labels))
        if self.task.ema is not None:
            self.task.ema.apply()
        self.task.step.assign_add(1)
        return {key: self.strategy.reduce(SUM, value, axis=None) for key, value in outputs.items()}

    def _eval_step(self, batch):
        outputs = self.strategy.run(self.task.replica_eval_step, args=batch)
        return {key: self.strategy.reduce(SUM, value, axis=None) for key, value in outputs.items()}

    # -- evaluation -----------------------------------------------------------------------------
    def evaluate(self, use_ema: bool = True, max_steps: int | None = None) -> dict:
        """Top-1/top-5/loss on the eval split, with the EMA weights swapped in when available."""
        self.build()
        if self._eval_fn is None:
            self._eval_fn = tf.function(self._eval_step, jit_compile=self.config.runtime.jit_compile)
        dataset = self.strategy.experimental_distribute_dataset(self._make_eval_dataset())
        max_steps = max_steps or self.config.runtime.eval_steps
        ema = self.task.ema
        swapped = use_ema and ema is not None
        if swapped:
            ema.swap()
        totals = dict(loss_sum=0.0, top1=0.0, top5=0.0, count=0.0)
        start = time.time()
        try:
            for index, batch in enumerate(dataset):
                if max_steps and index >= max_steps:
                    break
                for key, value in self._eval_fn(batch).items():
                    totals[key] += float(value)
        finally:
            if swapped:
                ema.swap()
        count = max(totals["count"], 1.0)
        return dict(top1=totals["top1"] / count, top5=totals["top5"] / count,
                    loss=totals["loss_sum"] / count, examples=int(totals["count"]),
                    eval_seconds=time.time() - start, ema=swapped)

    # -- training -------------------------------------------------------------------------------
    def _install_signal_handler(self):
        if threading.current_thread() is not threading.main_thread():
            return None

        def handler(signum, frame):  # noqa: ARG001
            self._stop_signal = signum
            logger.warning("received signal %d: saving a checkpoint and stopping", signum)

        # Ctrl-C (SIGINT) is treated as SIGTERM: checkpoint, then stop (issue 13).
        return {signum: signal.signal(signum, handler) for signum in (signal.SIGTERM, signal.SIGINT)}

    def _start(self):
        """Build (initial weights only for a fresh run), write the run files, restore the latest
        checkpoint. Returns (iterator, restored step or None)."""
        fresh = tf.train.latest_checkpoint(self.model_dir) is None
        self.build(initial_weights=fresh)
        if self.is_chief:
            check_resume(self.model_dir, self.config)  # again, now under the lock
            metadata = run_metadata(self.config, self.spec, self.facts, self.image_size,
                                    self.task.normalization,
                                    custom_data=self._train_override is not None)
            write_run_start(self.run, self.config, metadata)
        # The iterator position is checkpointed; input counters (stateful ops) need not be.
        options = tf.data.Options()
        options.experimental_external_state_policy = tf.data.experimental.ExternalStatePolicy.IGNORE
        with tf.device("/cpu:0"):
            iterator = iter(self._make_train_dataset().with_options(options))
        self.checkpoints = RunCheckpoints(
            self.model_dir, self.task.state, tf.train.Checkpoint(iterator=iterator),
            keep=self.config.runtime.keep_checkpoints, worker_index=self.worker_index,
            is_chief=self.is_chief)
        restored = self.checkpoints.restore_latest()
        if restored is not None:
            if int(self.task.step.numpy()) != restored:
                raise RuntimeError(f"checkpoint ckpt-{restored} holds step "
                                   f"{int(self.task.step.numpy())}")
            logger.info("resumed from %s at step %d (lr %.6g)",
                        self.checkpoints.manager.latest_checkpoint, restored,
                        self.task.learning_rate(int(self.task.optimizer.iterations.numpy())))
        return iterator, restored

    def train(self) -> dict:
        """Run (or resume) the job to ``schedule.epochs``; returns the final metrics.

        Raises:
            guards.RunLocked: another live job trains in ``model_dir``.
            TrainingDiverged: the loss or weights went non-finite / exploded.
        """
        # Before anything is written (evaluation of the run is not held to these).
        check_resume(self.model_dir, self.config)
        check_not_diverged(self.model_dir, self.config)
        if not self.is_chief:
            return self._train()
        with RunLock(self.model_dir):
            return self._train()

    def _train(self) -> dict:
        rt = self.config.runtime
        iterator, restored = self._start()
        writers = self._summary_writers()
        previous = self._install_signal_handler()
        step = int(self.task.step.numpy())
        last_saved = step if restored is not None else -1
        train_fn = last_eval = None  # train_fn: traced at the first step, again when unfrozen
        start_step, start_time = step, time.time()
        self._first_loss = None
        # Console progress (a bar per epoch in a terminal; one plain line per epoch when not a
        # terminal or with runtime.progress_bar=false), summary.csv and curves.png.
        self._report = TrainingReport(
            self.model_dir, epochs=math.ceil(self.total_steps / self.steps_per_epoch),
            steps_per_epoch=self.steps_per_epoch, enabled=self.is_chief,
            num_classes=self.facts.num_classes, start_step=step,
            interactive=None if rt.progress_bar else False)
        try:
            while step < self.stop_step:
                if self.task.set_trainable_for(step) or train_fn is None:
                    train_fn = tf.function(self._train_step, jit_compile=rt.jit_compile)
                tick = time.time()
                outputs = train_fn(iterator)
                loss = float(outputs["loss"]) / self.num_replicas
                step += 1
                problem = loss_problem(loss, self._first_loss)
                if problem is not None:
                    raise self._diverged(step, problem)
                if self._first_loss is None:
                    self._first_loss = loss
                images_per_sec = self.global_batch / max(time.time() - tick, 1e-9)
                top1 = float(outputs["top1"]) / max(float(outputs["count"]), 1.0)
                lr = self.task.learning_rate()
                self._report.step(step, loss=loss, top1=top1, lr=lr,
                                  images_per_second=images_per_sec)
                if writers and (step % rt.log_every_steps == 0 or step == self.stop_step):
                    with writers[0].as_default(step=step):
                        tf.summary.scalar("loss", loss)
                        tf.summary.scalar("cross_entropy",
                                          float(outputs["cross_entropy"]) / self.num_replicas)
                        tf.summary.scalar("learning_rate", lr)
                        tf.summary.scalar("accuracy", top1)
                        tf.summary.scalar("images_per_sec", images_per_sec)
                epoch_end = step % self.steps_per_epoch == 0
                if self._stop_signal is not None:
                    self._save(step)
                    logger.warning("stopped by signal at step %d; checkpoint %s", step,
                                   self.checkpoints.manager.latest_checkpoint)
                    return dict(step=step, interrupted=True)
                # Evaluate before checkpointing: a step whose evaluation diverged is never saved.
                if epoch_end:
                    self._report.epoch_end(step // self.steps_per_epoch, step)
                    if (step // self.steps_per_epoch) % rt.eval_every_epochs == 0 or step == self.stop_step:
                        last_eval = self._evaluate_and_log(step, writers)
                if (rt.checkpoint_every_steps and step % rt.checkpoint_every_steps == 0) or epoch_end:
                    self._save(step)
                    last_saved = step
            return self._finish(step, last_saved, last_eval, writers, start_step, start_time)
        finally:
            for signum, handler in (previous or {}).items():
                signal.signal(signum, handler)

    def _finish(self, step, last_saved, last_eval, writers, start_step, start_time) -> dict:
        wall = time.time() - start_time
        if last_eval is None or last_eval["step"] != step:
            last_eval = self._evaluate_and_log(step, writers)
        if last_saved != step:
            self._save(step)
        steps_run = step - start_step
        metrics = dict(
            top1=last_eval["top1"], top5=last_eval["top5"], eval_loss=last_eval["loss"],
            eval_examples=last_eval["examples"], step=step, epoch=step / self.steps_per_epoch,
            steps_this_run=steps_run, wall_seconds=wall,
            images_per_sec=(steps_run * self.global_batch / wall) if steps_run else 0.0,
            best_top1=float(self.task.best_top1.numpy()), ema=last_eval["ema"],
            global_batch_size=self.global_batch, replicas=self.num_replicas,
            model=self.spec.name, image_size=self.image_size, interrupted=False)
        if self.is_chief:
            self.export()
            atomic.write_json(self.run.file(METRICS_FILE), metrics)
        self._report.finish(metrics)
        for writer in writers:
            writer.flush()
        return metrics

    def _diverged(self, step: int, problem: str) -> TrainingDiverged:
        latest = self.checkpoints.manager.latest_checkpoint
        if not self.is_chief:
            return TrainingDiverged(f"{problem} at step {step}: training diverged")
        return record_divergence(self.model_dir, self.config, step, problem, latest)

    def _save(self, step: int) -> None:
        """Checkpoint ``step`` unless the weights went NaN/inf (never overwrite good state)."""
        problem = weights_problem(self.model.weights)
        if problem is not None:
            raise self._diverged(step, problem)
        self.checkpoints.save(step)

    def _summary_writers(self) -> list:
        if not self.is_chief:
            return []
        return [tf.summary.create_file_writer(self.run.file("train")),
                tf.summary.create_file_writer(self.run.file("eval"))]

    def _evaluate_and_log(self, step: int, writers) -> dict:
        result = self.evaluate()
        result["step"] = step
        if not math.isfinite(result["loss"]):
            raise self._diverged(step, f"non-finite evaluation loss ({result['loss']})")
        logger.debug("step %d: eval top-1 %.4f top-5 %.4f loss %.4f (%d examples, EMA %s)", step,
                    result["top1"], result["top5"], result["loss"], result["examples"],
                    result["ema"])
        if getattr(self, "_report", None) is not None:
            self._report.evaluation(step, result)
        if writers:
            with writers[1].as_default(step=step):
                for name in ("top1", "top5", "loss"):
                    tf.summary.scalar(name, result[name])
        if result["top1"] > float(self.task.best_top1.numpy()):
            self.task.best_top1.assign(result["top1"])
            self.checkpoints.save_best(step, {k: v for k, v in result.items() if k != "step"})
        return result

    # -- export ---------------------------------------------------------------------------------
    def export_model(self) -> keras.Model:
        """A float32, undistributed copy of the model: EMA weights, LOGITS head."""
        self.build()
        return self.task.final_model()

    def export(self) -> str:
        """Write ``export/model.keras`` and ``export/model.weights.h5`` atomically."""
        return write_final_model(self.run, self.export_model())


def train(config: Config, **kwargs) -> dict:
    """Train (or resume) the job described by ``config``; see ``Trainer``."""
    return Trainer(config, **kwargs).train()

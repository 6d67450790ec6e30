"""The training task: the network (and its fine-tune initialisation), optimiser and schedule, the
loss, the EMA, and one replica's train and eval steps.

Per replica and step: logits (float32) -> softmax cross-entropy with label smoothing, summed and
divided by the GLOBAL batch, plus ``wd * sum(w**2) / 2`` over non-BN weights divided by the number
of replicas; the optimiser sums gradients across replicas, so the update equals single-device
training on the global batch and the linearly scaled learning rate is right for any replica count.
"""

from __future__ import annotations

import dataclasses
import logging
import os

import keras
import numpy as np
import tensorflow as tf

from keras_effnet import finetune, optim, remat
from keras_effnet import weights as weight_sets
from keras_effnet.config import Config, ModelConfig
from keras_effnet.model import EfficientNet
from keras_effnet.scaling import ModelSpec

logger = logging.getLogger(__name__)

CLASSIFIER = "predictions"
# The last layer before the classifier (global pooling and dropout have no weights).
BACKBONE_OUTPUT = "top_activation"


class TrainingStopped(RuntimeError):
    """Raised when training cannot continue (e.g. a non-finite loss)."""


@dataclasses.dataclass
class DatasetFacts:
    """Classes and example counts of the training data (``class_names`` default "0".."C-1")."""

    num_classes: int
    num_train_examples: int
    num_eval_examples: int | None = None
    class_names: tuple[str, ...] | None = None

    def names(self) -> tuple[str, ...]:
        """One class name per classifier output."""
        if self.class_names is not None:
            return tuple(str(name) for name in self.class_names)
        return tuple(str(index) for index in range(self.num_classes))


def weight_source(weights: str | None, new_head: bool = False) -> dict:
    """How ``model.weights`` is recorded in ``run.json`` (never read again)."""
    if weights is None:
        return {"kind": "none"}
    if weight_sets.is_weight_set_name(weights):
        return {"kind": "weight_set", "name": weights, "new_head": bool(new_head)}
    return {"kind": "file", "path": os.path.abspath(weights), "new_head": bool(new_head)}


def model_normalization(spec: ModelSpec, weights: str | None) -> str:
    """The input normalisation of the network: the weight set's, else the variant's.

    Never opens a file: a weight file keeps the variant's normalisation (its own statistics are
    loaded with its weights).
    """
    if weights is not None and weight_sets.is_weight_set_name(weights):
        return weight_sets.eval_preprocessing(spec, weights).normalization
    return spec.normalization


def check_fine_tuning(config: Config) -> None:
    """Refuse contradictory freezing and layer-decay keys (``TrainingTask`` does, before
    anything is built)."""
    mc, layer_decay = config.model, config.optimizer.layer_decay
    if mc.frozen_epochs < 0:
        raise ValueError(f"model.frozen_epochs must be >= 0, got {mc.frozen_epochs} (0: never "
                         "frozen)")
    if mc.freeze_backbone and mc.frozen_epochs > 0:
        raise ValueError(
            f"model.freeze_backbone=true freezes the backbone for the whole run, but "
            f"model.frozen_epochs={mc.frozen_epochs:g} unfreezes it after {mc.frozen_epochs:g} "
            "epochs: set one of them (frozen_epochs alone for a frozen warm-up followed by the "
            "whole network)")
    if mc.freeze_up_to is not None:
        if not (mc.freeze_backbone or mc.frozen_epochs > 0):
            raise ValueError(
                f"model.freeze_up_to={mc.freeze_up_to!r} freezes nothing without "
                "model.frozen_epochs > 0 (a frozen warm-up) or model.freeze_backbone=true "
                "(frozen for the whole run)")
        if mc.freeze_up_to not in finetune.STAGES:
            raise ValueError(f"model.freeze_up_to={mc.freeze_up_to!r} is not a stage; use one "
                             f"of {', '.join(finetune.STAGES)} (or null for the whole backbone)")
    if mc.unfreeze_batch_norm and not mc.frozen_epochs > 0:
        raise ValueError("model.unfreeze_batch_norm=true only applies when the backbone is "
                         "unfrozen after model.frozen_epochs; set frozen_epochs > 0 or drop it")
    if layer_decay is not None and not 0.0 < layer_decay <= 1.0:
        raise ValueError(f"optimizer.layer_decay must be in (0, 1] (timm uses 0.65-0.75) or "
                         f"null for none, got {layer_decay}")


def unfreeze_step(model_config: ModelConfig, steps_per_epoch: int,
                  total_steps: int) -> int | None:
    """The step at which a frozen warm-up ends: ``int(frozen_epochs * steps_per_epoch)`` in the
    loop's whole-step epochs; None without one.

    Raises:
        ValueError: the warm-up is shorter than a step or lasts the whole run.
    """
    epochs = model_config.frozen_epochs
    if not epochs > 0:
        return None
    step = int(epochs * steps_per_epoch)
    if step < 1:
        raise ValueError(f"model.frozen_epochs={epochs:g} is shorter than one step "
                         f"({steps_per_epoch} steps per epoch); use at least "
                         f"{1 / steps_per_epoch:.3g} or 0 for no frozen warm-up")
    if step >= total_steps:
        raise ValueError(f"model.frozen_epochs={epochs:g} ({step} steps) lasts the whole run of "
                         f"{total_steps} steps, so the backbone would never train; use "
                         "model.freeze_backbone=true to train only the head, or fewer frozen "
                         "epochs")
    return step


def build_network(model_config: ModelConfig, spec: ModelSpec, num_classes: int, image_size: int,
                  normalization: str, *, for_training: bool = True) -> keras.Model:
    """The (uninitialised) network of a run, with a LOGITS head.

    ``for_training`` applies ``freeze_backbone`` (up to ``freeze_up_to``) and
    ``sync_batch_norm``; the exported copy is built without them (float32, plain batch norm).
    A frozen warm-up (``frozen_epochs``) is the ``TrainingTask``'s: the network comes back
    trainable, so the optimiser and the EMA cover every variable the run will train.
    """
    # A new head starts at zero (uniform predictions, loss ln(classes); Big Transfer,
    # Kolesnikov et al. 2020, section 3.3): the fan-out initialiser suits 1000 classes and made
    # a 4-class head start at loss 7.4.
    new_head = model_config.new_head and model_config.weights is not None
    model = EfficientNet(spec, input_shape=(image_size, image_size, 3), classes=num_classes,
                         classifier_activation=None,
                         stochastic_depth_rate=model_config.stochastic_depth_rate,
                         dropout_rate=model_config.dropout_rate, normalization=normalization,
                         classifier_initializer="zeros" if new_head else None)
    if for_training and model_config.freeze_backbone:
        # batch norm of the frozen backbone runs in inference mode
        finetune.freeze(model, up_to=model_config.freeze_up_to)
    if for_training and model_config.sync_batch_norm:
        for layer in optim.all_layers(model):
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.synchronized = True
    return model


def initialise_weights(model: keras.Model, weights: str, spec: ModelSpec, new_head: bool) -> None:
    """Load ``weights`` (a set name or a file) into ``model`` through the strict loader.

    With ``new_head`` only the backbone is loaded (a view of ``model`` that stops before the
    classifier shares its variables), so the classifier keeps its fresh initialisation; otherwise
    every variable, the classifier included, must come from ``weights``.
    """
    classes = int(model.get_layer(CLASSIFIER).units)
    weight_sets.check_weights_argument(weights, spec, not new_head, classes)
    target = model
    if new_head:
        target = keras.Model(model.inputs, model.get_layer(BACKBONE_OUTPUT).output,
                             name=f"{model.name}_backbone")
    weight_sets.load_weights_into(target, weights, spec)
    logger.info("initialised %s from %s%s", model.name, weights, " (new head)" if new_head else "")


def schedule_steps(config: Config, num_train_examples: int,
                   global_batch: int) -> optim.ScheduleSteps:
    """The schedule's step counts as the original computes them (``optim.schedule_steps``):
    steps per epoch ``num_train_examples / global_batch`` unrounded (or
    ``runtime.steps_per_epoch``), ``int()`` of the warm-up and the total, float decay steps."""
    sc = config.schedule
    return optim.schedule_steps(num_train_examples, global_batch, sc.epochs, sc.warmup_epochs,
                                sc.decay_epochs, steps_per_epoch=config.runtime.steps_per_epoch)


def build_optimizer(config: Config, steps: optim.ScheduleSteps, global_batch: int,
                    total_steps: int | None = None,
                    learning_rate_multipliers: dict[str, float] | None = None):
    """Optimiser with the scaled learning-rate schedule (wrapped for loss scaling in float16).

    ``steps`` gives the warm-up and decay lengths; ``total_steps`` (default ``steps.total_steps``)
    is where the cosine schedule ends. ``learning_rate_multipliers`` (variable path -> factor,
    ``finetune.layer_decay_multipliers``) scale each variable's rate
    (``finetune.scale_learning_rates``); build the optimiser afterwards.
    """
    oc, sc = config.optimizer, config.schedule
    peak = optim.scaled_learning_rate(oc.lr_per_256, global_batch)
    warmup = steps.warmup_steps
    total_steps = steps.total_steps if total_steps is None else total_steps
    if sc.decay == "exponential":
        schedule = optim.WarmupExponentialDecay(
            peak, warmup, decay_steps=max(1.0, steps.decay_steps),
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
    if learning_rate_multipliers is not None:
        finetune.scale_learning_rates(optimizer, learning_rate_multipliers)
    if config.runtime.mixed_precision == "mixed_float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer, schedule


def make_ema(model: keras.Model, config: Config) -> optim.ExponentialMovingAverage | None:
    """The EMA of ``model`` (None when ``optimizer.ema_decay`` is 0); inside strategy.scope()."""
    if config.optimizer.ema_decay <= 0:
        return None
    return optim.ExponentialMovingAverage(optim.ema_variables(model), config.optimizer.ema_decay,
                                          config.optimizer.ema_warmup)


def cross_entropy(labels, logits, num_classes: int, label_smoothing: float):
    """Per-example softmax cross-entropy in float32. ``labels``: int [B] or probabilities [B, C]."""
    logits = tf.cast(logits, tf.float32)
    if labels.shape.rank == 1:
        targets = tf.one_hot(tf.cast(labels, tf.int32), num_classes, dtype=tf.float32)
    else:
        targets = tf.cast(labels, tf.float32)
    return keras.losses.categorical_crossentropy(targets, logits, from_logits=True,
                                                 label_smoothing=label_smoothing)


def correct(labels, logits, k: int):
    """How many rows have their (hard) label among the top ``k`` logits."""
    hard = tf.cast(labels if labels.shape.rank == 1 else tf.argmax(labels, axis=-1), tf.int32)
    return tf.reduce_sum(tf.cast(tf.math.in_top_k(hard, tf.cast(logits, tf.float32), k),
                                 tf.float32))


class TrainingTask:
    """Model, optimiser, schedule, EMA and the per-replica steps of one run.

    ``build`` must run inside the strategy's scope. ``initial_weights`` loads ``model.weights``
    (only when a run starts fresh: a resumed run restores everything from its checkpoint).
    ``steps_per_epoch`` (whole steps) marks the loop's epochs; the learning-rate schedule uses
    ``schedule_steps`` (the original's float epoch), and ``total_steps`` ends the cosine.

    A frozen warm-up (``model.frozen_epochs``) freezes the backbone before ``unfreeze_step`` and
    unfreezes it from then on (``set_trainable_for``; the loop traces its train step again). The
    optimiser slots and the EMA cover the whole network from the start, so checkpoints hold
    the same state before and after the switch and a resumed run derives its phase from the step.
    """

    def __init__(self, config: Config, spec: ModelSpec, facts: DatasetFacts, image_size: int,
                 normalization: str, *, steps_per_epoch: int, total_steps: int, global_batch: int,
                 num_replicas: int):
        self.config = config
        self.spec = spec
        self.facts = facts
        self.image_size = image_size
        self.normalization = normalization
        self.steps_per_epoch = steps_per_epoch
        self.total_steps = total_steps
        self.global_batch = global_batch
        self.num_replicas = num_replicas
        self.schedule_steps = schedule_steps(config, facts.num_train_examples, global_batch)
        check_fine_tuning(config)
        self.unfreeze_step = unfreeze_step(config.model, steps_per_epoch, total_steps)
        self.frozen: bool | None = None  # the phase the model is in (None: not set yet)

    def build(self, initial_weights: bool) -> None:
        cfg = self.config
        self.model = build_network(cfg.model, self.spec, self.facts.num_classes, self.image_size,
                                   self.normalization)
        if initial_weights and cfg.model.weights is not None:
            initialise_weights(self.model, cfg.model.weights, self.spec, cfg.model.new_head)
        # Gradient checkpointing: the same model and variables, each block recomputed in the
        # backward pass (keras_effnet.remat; docs/performance.md, "Gradient checkpointing").
        self.forward = (remat.checkpointed_forward(self.model, self.spec)
                        if cfg.runtime.gradient_checkpointing else self.model)
        multipliers = None
        if cfg.optimizer.layer_decay is not None:
            multipliers = finetune.layer_decay_multipliers(self.model, cfg.optimizer.layer_decay)
        self.optimizer, self.schedule = build_optimizer(
            cfg, self.schedule_steps, self.global_batch, self.total_steps,
            learning_rate_multipliers=multipliers)
        # Everything trainable now, the backbone of a frozen warm-up included (it is frozen
        # below): its slots exist, and are checkpointed, from step 0.
        self.optimizer.build(self.model.trainable_variables)
        self.ema = make_ema(self.model, cfg)  # after the initial weights: it starts from them
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="global_step",
                                aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
        self.best_top1 = tf.Variable(-1.0, dtype=tf.float32, trainable=False, name="best_top1",
                                     aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
        self.decay_variables = optim.weight_decay_variables(
            self.model, include_biases=cfg.optimizer.weight_decay_biases)
        self.set_trainable_for(0)
        # Keras does not checkpoint the seed-generator states: kept here, a resumed run draws
        # the same dropout / stochastic-depth masks as an uninterrupted one.
        random_state = tf.Module(name="random_state")
        random_state.states = [v.value for v in optim.random_state_variables(self.model)]
        state = dict(model=self.model, optimizer=self.optimizer, step=self.step,
                     best_top1=self.best_top1, rng=random_state)
        if self.ema is not None:
            state["ema"] = self.ema
        self.state = tf.train.Checkpoint(**state)

    def set_trainable_for(self, step: int) -> bool:
        """Freeze the backbone before ``unfreeze_step``, unfreeze it from then on; True when the
        trainable variables changed (a traced train step must be traced again).

        The state depends only on ``step``: unfrozen, the layers that the warm-up froze train
        again except their batch norm (kept frozen unless ``model.unfreeze_batch_norm``).
        """
        if self.unfreeze_step is None:
            return False
        frozen = step < self.unfreeze_step
        if frozen == self.frozen:
            return False
        mc = self.config.model
        finetune.freeze(self.model, up_to=mc.freeze_up_to)
        if not frozen:
            finetune.unfreeze(self.model, keep_batch_norm_frozen=not mc.unfreeze_batch_norm)
            logger.info("step %d: the backbone is unfrozen (%d trainable variables)", step,
                        len(self.model.trainable_variables))
        self.frozen = frozen
        self.decay_variables = optim.weight_decay_variables(
            self.model, include_biases=self.config.optimizer.weight_decay_biases)
        return True

    def learning_rate(self, iteration: int | None = None) -> float:
        """The learning rate of optimiser iteration ``iteration`` (default: the last one)."""
        if iteration is None:
            iteration = int(self.optimizer.iterations.numpy()) - 1
        return float(self.schedule.value(max(iteration, 0)))

    def replica_train_step(self, images, labels) -> dict:
        optimizer_config = self.config.optimizer
        with tf.GradientTape() as tape:
            logits = self.forward(images, training=True)
            per_example = cross_entropy(labels, logits, self.facts.num_classes,
                                        optimizer_config.label_smoothing)
            entropy = tf.reduce_sum(per_example) / float(self.global_batch)
            decay = optim.l2_weight_decay(self.decay_variables, optimizer_config.weight_decay)
            loss = entropy + decay / float(self.num_replicas)
            scaled = self.optimizer.scale_loss(loss) if isinstance(
                self.optimizer, keras.optimizers.LossScaleOptimizer) else loss
        variables = self.model.trainable_variables
        self.optimizer.apply(tape.gradient(scaled, variables), variables)
        return dict(loss=loss, cross_entropy=entropy, top1=correct(labels, logits, 1),
                    count=tf.cast(tf.shape(logits)[0], tf.float32))

    def replica_eval_step(self, images, labels) -> dict:
        logits = tf.cast(self.model(images, training=False), tf.float32)
        per_example = cross_entropy(labels, logits, self.facts.num_classes, 0.0)
        return dict(loss_sum=tf.reduce_sum(per_example), top1=correct(labels, logits, 1),
                    top5=correct(labels, logits, min(5, self.facts.num_classes)),
                    count=tf.cast(tf.shape(logits)[0], tf.float32))

    def final_model(self) -> keras.Model:
        """A float32, undistributed copy of the model with a logits head and the EMA weights."""
        policy = keras.mixed_precision.global_policy()
        keras.mixed_precision.set_global_policy("float32")
        try:
            exported = build_network(self.config.model, self.spec, self.facts.num_classes,
                                     self.image_size, self.normalization, for_training=False)
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

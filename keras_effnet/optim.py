"""Optimisation pieces of the published recipe (Tan & Le 2019, section 5.2; tensorflow/tpu
``models/official/efficientnet/main.py`` and ``utils.py``).

- ``RMSPropTF1``: RMSProp with the semantics of TF1's ``tf.compat.v1.train.RMSPropOptimizer``, which
  the original EfficientNet code used: epsilon inside the square root and the mean-square accumulator
  initialised to ONE (Keras' ``RMSprop`` starts it at zero, which makes the first steps huge).
- ``WarmupExponentialDecay``: linear warm-up, then ``lr * rate ** (step / decay_steps)`` (staircase).
- ``scaled_learning_rate``: the linear scaling rule, ``lr_per_256 * global_batch / 256``.
- ``schedule_steps``: the schedule's step counts from epochs as the original computes them
  (steps per epoch a float, ``int()`` only where the original truncates).
- ``ExponentialMovingAverage``: EMA of the trainable weights AND the batch-norm moving statistics,
  distribution-aware, with the original warm-up ``decay = min(decay, (1 + t) / (10 + t))``, t the
  global step after the update (1 at the first).
- ``weight_decay_variables`` / ``l2_weight_decay``: the explicit L2 term of the recipe.
"""

from __future__ import annotations

import dataclasses
import math

import keras
import tensorflow as tf
from keras import ops

PACKAGE = "keras_effnet"


@keras.saving.register_keras_serializable(package=PACKAGE)
class RMSPropTF1(keras.optimizers.Optimizer):
    """RMSProp with TF1 semantics (``tf.compat.v1.train.RMSPropOptimizer``, centered=False).

    Per variable ``w`` with gradient ``g`` and learning rate ``lr``::

        ms  <- rho * ms + (1 - rho) * g**2          # ms starts at 1.0
        mom <- momentum * mom + lr * g / sqrt(ms + epsilon)
        w   <- w - mom

    Args:
        learning_rate: float or ``keras.optimizers.schedules.LearningRateSchedule``.
        rho: decay of the mean-square accumulator (0.9 in the recipe).
        momentum: momentum (0.9 in the recipe).
        epsilon: added to the mean square INSIDE the square root (1e-3 in the recipe).
        initial_accumulator: starting value of ``ms`` (TF1: 1.0).
        **kwargs: the base ``keras.optimizers.Optimizer`` arguments (clipnorm, name, ...).
    """

    def __init__(self, learning_rate=0.016, rho=0.9, momentum=0.9, epsilon=1e-3,
                 initial_accumulator=1.0, name="rmsprop_tf1", **kwargs):
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        if not 0.0 <= rho < 1.0:
            raise ValueError(f"rho must be in [0, 1), got {rho}")
        if momentum < 0.0:
            raise ValueError(f"momentum must be >= 0, got {momentum}")
        self.rho = float(rho)
        self.momentum = float(momentum)
        self.epsilon = float(epsilon)
        self.initial_accumulator = float(initial_accumulator)

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        init = keras.initializers.Constant(self.initial_accumulator)
        self._mean_squares = self.add_optimizer_variables(var_list, "rms", initializer=init)
        self._momentums = self.add_optimizer_variables(var_list, "momentum")

    def update_step(self, gradient, variable, learning_rate):
        index = self._get_variable_index(variable)
        mean_square = self._mean_squares[index]
        momentum = self._momentums[index]
        lr = ops.cast(learning_rate, variable.dtype)
        gradient = ops.cast(gradient, variable.dtype)
        self.assign(mean_square, ops.add(ops.multiply(self.rho, mean_square),
                                         ops.multiply(1.0 - self.rho, ops.square(gradient))))
        step = ops.divide(ops.multiply(lr, gradient), ops.sqrt(ops.add(mean_square, self.epsilon)))
        self.assign(momentum, ops.add(ops.multiply(self.momentum, momentum), step))
        self.assign_sub(variable, momentum)

    def get_config(self):
        config = super().get_config()
        config.update(rho=self.rho, momentum=self.momentum, epsilon=self.epsilon,
                      initial_accumulator=self.initial_accumulator)
        return config


def scaled_learning_rate(lr_per_256: float, global_batch_size: int) -> float:
    """Linear scaling rule of the recipe: ``lr_per_256 * global_batch_size / 256``."""
    if global_batch_size <= 0:
        raise ValueError(f"global batch size must be positive, got {global_batch_size}")
    return lr_per_256 * global_batch_size / 256.0


@dataclasses.dataclass(frozen=True)
class ScheduleSteps:
    """Step counts of a schedule given in epochs, as tensorflow/tpu ``efficientnet/main.py`` and
    ``utils.py`` compute them.

    Attributes:
        steps_per_epoch: ``num_train_images / train_batch_size``, a float (``main.py`` passes it
            unrounded in ``params['steps_per_epoch']``): 312.78 for ImageNet at 4096.
        warmup_steps: ``int(warmup_epochs * steps_per_epoch)`` (``utils.build_learning_rate``
            truncates): 1563 for 5 epochs at 4096.
        decay_steps: ``steps_per_epoch * decay_epochs``, a float (``tf.train.exponential_decay``
            takes it as is): 750.68 for 2.4 epochs at 4096.
        total_steps: ``int(epochs * steps_per_epoch)``, the original's ``train_steps``
            (its default 218949 is int(350 * 1281167 / 2048)).
    """

    steps_per_epoch: float
    warmup_steps: int
    decay_steps: float
    total_steps: int


def schedule_steps(num_train_examples: int, global_batch_size: int, epochs: float,
                   warmup_epochs: float, decay_epochs: float,
                   steps_per_epoch: float | None = None) -> ScheduleSteps:
    """``ScheduleSteps`` of a run: epochs over ``num_train_examples`` at ``global_batch_size``.

    ``steps_per_epoch`` overrides ``num_train_examples / global_batch_size`` (a fixed epoch
    length); ValueError for a non-positive size or batch.
    """
    if global_batch_size <= 0:
        raise ValueError(f"global batch size must be positive, got {global_batch_size}")
    if steps_per_epoch is None:
        if num_train_examples <= 0:
            raise ValueError(f"num_train_examples must be positive, got {num_train_examples}")
        steps_per_epoch = num_train_examples / global_batch_size
    if steps_per_epoch <= 0:
        raise ValueError(f"steps_per_epoch must be positive, got {steps_per_epoch}")
    steps_per_epoch = float(steps_per_epoch)
    return ScheduleSteps(steps_per_epoch=steps_per_epoch,
                         warmup_steps=int(warmup_epochs * steps_per_epoch),
                         decay_steps=decay_epochs * steps_per_epoch,
                         total_steps=max(1, int(epochs * steps_per_epoch)))


@keras.saving.register_keras_serializable(package=PACKAGE)
class WarmupExponentialDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up to ``peak_lr`` over ``warmup_steps``, then exponential decay.

    ``lr(step) = peak_lr * step / warmup_steps`` for ``step < warmup_steps`` and afterwards
    ``peak_lr * decay_rate ** (step / decay_steps)`` (``floor`` of the exponent when ``staircase``),
    floored at ``min_lr``. As in the original code the decay counts from step 0, not from the end of
    the warm-up. ``step`` is the optimiser iteration (0 for the first update).

    The recipe (tensorflow/tpu ``efficientnet/main.py``): ``peak_lr = 0.016 * global_batch / 256``, 5 warm-up epochs,
    ``decay_rate = 0.97``, ``decay_steps = 2.4 epochs``, staircase; ``schedule_steps`` turns the
    epochs into ``warmup_steps`` and ``decay_steps`` as the original does.
    """

    def __init__(self, peak_lr: float, warmup_steps: int, decay_steps: float, decay_rate: float = 0.97,
                 staircase: bool = True, min_lr: float = 0.0):
        if peak_lr <= 0:
            raise ValueError(f"peak_lr must be positive, got {peak_lr}")
        if warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}")
        if decay_steps <= 0:
            raise ValueError(f"decay_steps must be positive, got {decay_steps}")
        self.peak_lr = float(peak_lr)
        self.warmup_steps = int(warmup_steps)
        self.decay_steps = float(decay_steps)
        self.decay_rate = float(decay_rate)
        self.staircase = bool(staircase)
        self.min_lr = float(min_lr)

    def __call__(self, step):
        step = ops.cast(step, "float32")
        exponent = step / self.decay_steps
        if self.staircase:
            exponent = ops.floor(exponent)
        decayed = self.peak_lr * ops.power(self.decay_rate, exponent)
        if self.warmup_steps > 0:
            warm = self.peak_lr * step / float(self.warmup_steps)
            decayed = ops.where(step < self.warmup_steps, warm, decayed)
        return ops.maximum(decayed, self.min_lr)

    def value(self, step: int) -> float:
        """The learning rate at ``step`` in plain Python (for logs and tests)."""
        if step < self.warmup_steps:
            return max(self.peak_lr * step / self.warmup_steps, self.min_lr)
        exponent = step / self.decay_steps
        if self.staircase:
            exponent = math.floor(exponent)
        return max(self.peak_lr * self.decay_rate ** exponent, self.min_lr)

    def get_config(self):
        return dict(peak_lr=self.peak_lr, warmup_steps=self.warmup_steps,
                    decay_steps=self.decay_steps, decay_rate=self.decay_rate,
                    staircase=self.staircase, min_lr=self.min_lr)


@keras.saving.register_keras_serializable(package=PACKAGE)
class WarmupCosineDecay(keras.optimizers.schedules.CosineDecay):
    """Linear warm-up to ``peak_lr``, then half-cosine to ``min_lr`` at ``total_steps``.

    Keras' ``CosineDecay`` with a warm-up from 0 and ``alpha = min_lr / peak_lr``, in the terms of
    the trainer. Not the published recipe; useful for short runs (the demo) where 0.97 every 2.4
    epochs barely decays.
    """

    def __init__(self, peak_lr: float, warmup_steps: int, total_steps: int, min_lr: float = 0.0):
        if peak_lr <= 0:
            raise ValueError(f"peak_lr must be positive, got {peak_lr}")
        if total_steps <= warmup_steps:
            raise ValueError(f"total_steps ({total_steps}) must exceed warmup_steps ({warmup_steps})")
        self.peak_lr = float(peak_lr)
        self.total_steps = int(total_steps)
        self.min_lr = float(min_lr)
        super().__init__(0.0, decay_steps=self.total_steps - int(warmup_steps),
                         alpha=self.min_lr / self.peak_lr, warmup_target=self.peak_lr,
                         warmup_steps=int(warmup_steps))

    def value(self, step: int) -> float:
        """The learning rate at ``step`` in plain Python (for logs and tests)."""
        if step < self.warmup_steps:
            return self.peak_lr * step / self.warmup_steps
        progress = min(1.0, (step - self.warmup_steps) / (self.total_steps - self.warmup_steps))
        return self.min_lr + 0.5 * (self.peak_lr - self.min_lr) * (1.0 + math.cos(math.pi * progress))

    def get_config(self):
        return dict(peak_lr=self.peak_lr, warmup_steps=self.warmup_steps,
                    total_steps=self.total_steps, min_lr=self.min_lr)


def all_layers(model) -> list:
    """Every layer of ``model``, nested models' layers included (depth first)."""
    found = []
    for layer in model.layers:
        found.append(layer)
        if isinstance(layer, keras.Model):
            found.extend(all_layers(layer))
    return found


def _var_id(variable):
    return id(getattr(variable, "value", variable))


def batch_norm_variables(model) -> list:
    """Every variable owned by a batch-normalisation layer (gamma, beta, moving statistics)."""
    found = []
    for layer in all_layers(model):
        if isinstance(layer, keras.layers.BatchNormalization):
            found.extend(layer.variables)
    return found


def weight_decay_variables(model, include_biases: bool = True) -> list:
    """The trainable variables the recipe decays: everything except batch-norm variables.

    The original code (tensorflow/tpu ``efficientnet/main.py``) decays every trainable variable
    whose name lacks ``batch_normalization``, biases included; ``include_biases=False`` keeps only
    kernels (rank >= 2).
    """
    excluded = {_var_id(v) for v in batch_norm_variables(model)}
    chosen = []
    for variable in model.trainable_variables:
        if _var_id(variable) in excluded:
            continue
        if not include_biases and len(variable.shape) < 2:
            continue
        chosen.append(variable)
    return chosen


def l2_weight_decay(variables, weight_decay: float):
    """``weight_decay * sum(w**2) / 2`` in float32 (``tf.nn.l2_loss`` of the original code)."""
    if not variables or weight_decay == 0:
        return tf.constant(0.0, tf.float32)
    return weight_decay * tf.add_n([tf.nn.l2_loss(tf.cast(_tensor(v), tf.float32)) for v in variables])


def _tensor(variable):
    return variable.value if isinstance(variable, keras.Variable) else variable


def random_state_variables(model) -> list:
    """The dropout / stochastic-depth seed-generator states of ``model``.

    Keras lists each ``keras.random.SeedGenerator`` state among the layer's non-trainable
    variables; they are the model's only integer variables. Checkpointing them makes a resumed
    run draw the same masks as an uninterrupted one.
    """
    return [variable for variable in model.non_trainable_variables
            if "int" in keras.backend.standardize_dtype(variable.dtype)]


def ema_variables(model) -> list:
    """What the EMA tracks: trainable weights plus the batch-norm moving mean/variance.

    Other non-trainable floats (e.g. the fixed normalisation constants) never change, and integer
    state (dropout seed generators) must not be averaged, so both are left out.
    """
    tracked = list(model.trainable_variables)
    seen = {_var_id(v) for v in tracked}
    for layer in all_layers(model):
        if isinstance(layer, keras.layers.BatchNormalization):
            for variable in layer.non_trainable_variables:
                if _var_id(variable) not in seen:
                    tracked.append(variable)
                    seen.add(_var_id(variable))
    return tracked


class ExponentialMovingAverage(tf.Module):
    """EMA of model variables, checkpointable, working under any ``tf.distribute`` strategy.

    ``decay_t = min(decay, (1 + t) / (10 + t))`` when ``warmup``, so short runs are not dominated
    by the random initialisation; ``decay_t = decay`` otherwise. t is the number of updates
    including this one (1 at the first update): the original builds
    ``tf.train.ExponentialMovingAverage(decay, num_updates=global_step)`` and applies it under a
    control dependency on ``optimizer.minimize(loss, global_step)``, so it reads the global step
    after the increment (tensorflow/tpu ``efficientnet/main.py``). ``num_updates`` counts the
    updates applied. Create it inside ``strategy.scope()``; ``apply`` and ``swap`` must be called
    in cross-replica context (outside ``strategy.run``).
    """

    def __init__(self, variables, decay: float = 0.9999, warmup: bool = True, name="ema"):
        super().__init__(name=name)
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay = float(decay)
        self.warmup = bool(warmup)
        # The strategy the variables belong to (apply/swap may run outside its scope).
        self._strategy = tf.distribute.get_strategy()
        self._model_variables = [_tensor(v) for v in variables]
        self.average_variables = []
        for variable in self._model_variables:
            shadow = tf.Variable(variable.read_value(), trainable=False,
                                 name=variable.name.split(":")[0].replace("/", "_") + "_ema",
                                 aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
            self.average_variables.append(shadow)
        self.num_updates = tf.Variable(0, dtype=tf.int64, trainable=False, name="ema_num_updates",
                                       aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)

    def current_decay(self, step=None):
        """The decay of the update that makes ``step`` updates (default: the next update,
        ``num_updates + 1``)."""
        step = self.num_updates + 1 if step is None else step
        decay = tf.constant(self.decay, tf.float32)
        if self.warmup:
            t = tf.cast(step, tf.float32)
            decay = tf.minimum(decay, (1.0 + t) / (10.0 + t))
        return decay

    @tf.autograph.experimental.do_not_convert
    def apply(self):
        """One EMA update from the current model variables (cross-replica context)."""
        strategy = self._strategy
        decay = self.current_decay()  # t = num_updates + 1: this update included

        def update(shadow, value, decay):
            decay = tf.cast(decay, shadow.dtype)
            return shadow.assign(shadow * decay + tf.cast(value, shadow.dtype) * (1.0 - decay))

        for shadow, variable in zip(self.average_variables, self._model_variables):
            strategy.extended.update(shadow, update, args=(variable, decay), group=False)
        self.num_updates.assign_add(1)

    @tf.autograph.experimental.do_not_convert
    def swap(self):
        """Exchange model and average values (call twice to undo). Cross-replica context."""
        strategy = self._strategy

        def exchange(variable, shadow):
            # Runs per device: ``shadow`` is this device's component of the average.
            saved = tf.identity(variable)
            variable.assign(tf.cast(shadow, variable.dtype))
            shadow.assign(tf.cast(saved, shadow.dtype))

        for shadow, variable in zip(self.average_variables, self._model_variables):
            strategy.extended.update(variable, exchange, args=(shadow,), group=False)

    @tf.autograph.experimental.do_not_convert
    def copy_to_model(self):
        """Overwrite the model variables with the averages (used for the final export)."""
        strategy = self._strategy
        for shadow, variable in zip(self.average_variables, self._model_variables):
            strategy.extended.update(variable, lambda v, s: v.assign(tf.cast(s, v.dtype)),
                                     args=(shadow,), group=False)

"""keras_effnet.optim: TF1 RMSProp against NumPy, the schedule at known steps, EMA, weight decay."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_effnet import optim


def rmsprop_tf1_reference(weights, gradients, learning_rates, rho=0.9, momentum=0.9, epsilon=1e-3,
                          initial_accumulator=1.0):
    """NumPy reference of the TF1 ``RMSPropOptimizer`` update: the weights after each gradient."""
    w = np.array(weights, dtype=np.float64)
    ms = np.full_like(w, initial_accumulator)
    mom = np.zeros_like(w)
    history = []
    for g, lr in zip(gradients, learning_rates):
        g = np.asarray(g, dtype=np.float64)
        ms = rho * ms + (1 - rho) * g * g
        mom = momentum * mom + lr * g / np.sqrt(ms + epsilon)
        w = w - mom
        history.append(w.copy())
    return history


def test_rmsprop_tf1_matches_numpy_reference():
    rng = np.random.default_rng(0)
    start = rng.normal(size=(3, 4)).astype("float32")
    gradients = [rng.normal(size=(3, 4)).astype("float32") for _ in range(5)]
    variable = keras.Variable(start)
    optimizer = optim.RMSPropTF1(learning_rate=0.05, rho=0.9, momentum=0.9, epsilon=1e-3)
    got = []
    for gradient in gradients:
        optimizer.apply([tf.constant(gradient)], [variable])
        got.append(np.array(variable.numpy()))
    expected = rmsprop_tf1_reference(start, gradients, [0.05] * 5)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    # The accumulator starting at one keeps the first step small (Keras' RMSprop starts at 0).
    first = np.abs(expected[0] - start)
    assert np.all(first <= 0.05 * np.abs(gradients[0]) / np.sqrt(0.9 + 1e-3) + 1e-6)


def test_rmsprop_tf1_with_schedule_and_serialization():
    schedule = optim.WarmupExponentialDecay(0.1, warmup_steps=2, decay_steps=3, decay_rate=0.5)
    optimizer = optim.RMSPropTF1(schedule, epsilon=1e-3)
    variable = keras.Variable(np.ones((2,), "float32"))
    gradients = [np.full((2,), 0.5, "float32")] * 6
    for gradient in gradients:
        optimizer.apply([tf.constant(gradient)], [variable])
    expected = rmsprop_tf1_reference(np.ones(2), gradients, [schedule.value(s) for s in range(6)])
    np.testing.assert_allclose(variable.numpy(), expected[-1], rtol=1e-5)
    clone = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
    assert isinstance(clone, optim.RMSPropTF1)
    assert clone.epsilon == 1e-3 and clone.initial_accumulator == 1.0


def original_learning_rate(initial_lr, global_step, steps_per_epoch, decay_epochs=2.4,
                           decay_factor=0.97, warmup_epochs=5):
    """tensorflow/tpu ``efficientnet/utils.py`` ``build_learning_rate`` (exponential), written
    from the original's code with the TF1 op it called."""
    global_step = tf.constant(global_step, tf.int64)
    decay_steps = steps_per_epoch * decay_epochs
    lr = tf.compat.v1.train.exponential_decay(initial_lr, global_step, decay_steps, decay_factor,
                                              staircase=True)
    lr = lr() if callable(lr) else lr
    warmup_steps = int(warmup_epochs * steps_per_epoch)
    warmup_lr = initial_lr * tf.cast(global_step, tf.float32) / tf.cast(warmup_steps, tf.float32)
    return float(warmup_lr if global_step < warmup_steps else lr)


def test_schedule_steps_are_the_originals():
    # ImageNet at 4096: main.py's steps_per_epoch = num_train_images / train_batch_size (float).
    steps = optim.schedule_steps(1281167, 4096, epochs=350, warmup_epochs=5, decay_epochs=2.4)
    assert steps.steps_per_epoch == 1281167 / 4096 == 312.784912109375
    assert steps.warmup_steps == int(5 * 1281167 / 4096) == 1563      # utils.py truncates
    assert steps.decay_steps == pytest.approx(750.6837890625, abs=1e-9)  # float, as passed
    assert steps.total_steps == 109474
    # The original's default train_steps=218949 is 350 epochs at its default batch of 2048.
    assert optim.schedule_steps(1281167, 2048, 350, 5, 2.4).total_steps == 218949
    fixed = optim.schedule_steps(0, 8, epochs=2, warmup_epochs=0.5, decay_epochs=1, steps_per_epoch=4)
    assert (fixed.steps_per_epoch, fixed.warmup_steps, fixed.decay_steps, fixed.total_steps) == (4, 2, 4, 8)
    with pytest.raises(ValueError, match="global batch size must be positive"):
        optim.schedule_steps(100, 0, 1, 0, 1)
    with pytest.raises(ValueError, match="num_train_examples must be positive"):
        optim.schedule_steps(0, 8, 1, 0, 1)


def test_warmup_exponential_decay_at_known_steps():
    # Recipe at global batch 4096: peak 0.256; 5 warm-up epochs; x0.97 every 2.4 epochs.
    steps_per_epoch = 1281167 / 4096  # 312.78: a float, as the original keeps it
    peak = optim.scaled_learning_rate(0.016, 4096)
    assert peak == pytest.approx(0.256)
    steps = optim.schedule_steps(1281167, 4096, 350, 5, 2.4)
    schedule = optim.WarmupExponentialDecay(peak, steps.warmup_steps, steps.decay_steps, 0.97)
    # 1563 warm-up steps; decays at multiples of 750.68: step 2252 is still below 3 x 750.68.
    cases = {0: 0.0, 780: 0.256 * 780 / 1563, 1562: 0.256 * 1562 / 1563,
             1563: 0.256 * 0.97 ** 2, 2252: 0.256 * 0.97 ** 2, 2253: 0.256 * 0.97 ** 3,
             steps.total_steps: 0.256 * 0.97 ** 145}
    for step, value in cases.items():
        assert float(schedule(step)) == pytest.approx(value, rel=1e-5), step
        assert schedule.value(step) == pytest.approx(value, rel=1e-9), step
    # Against the original's build_learning_rate at the boundaries and in between.
    probe = sorted({0, 1, 1562, 1563, 1564, 2251, 2252, 2253, 3002, 3003, 50_000, steps.total_steps}
                   | set(range(0, steps.total_steps, 997)))
    for step in probe:
        want = original_learning_rate(peak, step, steps_per_epoch)
        assert float(schedule(step)) == pytest.approx(want, rel=1e-6), step
        assert schedule.value(step) == pytest.approx(want, rel=1e-5), step  # float64 vs float32
    restored = optim.WarmupExponentialDecay.from_config(schedule.get_config())
    assert float(restored(2253)) == pytest.approx(float(schedule(2253)))
    assert keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(schedule)).get_config() == schedule.get_config()


def test_warmup_cosine_decay():
    schedule = optim.WarmupCosineDecay(1.0, warmup_steps=10, total_steps=110)
    for step, value in {0: 0.0, 5: 0.5, 10: 1.0, 60: 0.5, 110: 0.0, 200: 0.0}.items():
        assert float(schedule(step)) == pytest.approx(value, abs=1e-6)
        assert schedule.value(step) == pytest.approx(value, abs=1e-9)
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(schedule))
    assert restored.get_config() == schedule.get_config()
    assert float(restored(60)) == pytest.approx(0.5, abs=1e-6)


def test_scaled_learning_rate_rejects_bad_batch():
    assert optim.scaled_learning_rate(0.016, 256) == pytest.approx(0.016)
    with pytest.raises(ValueError):
        optim.scaled_learning_rate(0.016, 0)


def _tiny_model():
    inputs = keras.Input((4, 4, 3))
    x = keras.layers.Conv2D(2, 3, use_bias=False, name="conv")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dropout(0.5)(x)
    outputs = keras.layers.Dense(3, name="dense")(x)
    return keras.Model(inputs, outputs)


def test_weight_decay_and_ema_variable_selection():
    model = _tiny_model()
    names = lambda variables: sorted(v.path for v in variables)  # noqa: E731
    assert names(optim.weight_decay_variables(model)) == ["conv/kernel", "dense/bias", "dense/kernel"]
    assert names(optim.weight_decay_variables(model, include_biases=False)) == ["conv/kernel", "dense/kernel"]
    tracked = names(optim.ema_variables(model))
    assert "bn/moving_mean" in tracked and "bn/moving_variance" in tracked and "bn/gamma" in tracked
    assert not any("seed" in name for name in tracked)  # dropout RNG state is not averaged
    assert [v.path for v in optim.random_state_variables(model)] == [
        v.path for v in model.non_trainable_variables if "seed" in v.path]
    assert len(optim.random_state_variables(model)) == 1
    kernel = model.get_layer("conv").kernel
    expected = 1e-5 * 0.5 * float(np.sum(kernel.numpy() ** 2) + np.sum(model.get_layer("dense").kernel.numpy() ** 2)
                                  + np.sum(model.get_layer("dense").bias.numpy() ** 2))
    got = float(optim.l2_weight_decay(optim.weight_decay_variables(model), 1e-5))
    assert got == pytest.approx(expected, rel=1e-5)


def test_ema_update_warmup_and_swap():
    model = _tiny_model()
    ema = optim.ExponentialMovingAverage(optim.ema_variables(model), decay=0.9999, warmup=True)
    kernel = model.get_layer("conv").kernel
    moving_mean = model.get_layer("bn").moving_mean
    start = kernel.numpy().copy()
    kernel.assign(start + 1.0)
    moving_mean.assign(np.full(moving_mean.shape, 2.0, "float32"))
    ema.apply()  # t=1 (the global step after the first update): decay = min(0.9999, 2/11)
    average_kernel = start * 2 / 11 + (start + 1.0) * 9 / 11
    index = [v.path for v in optim.ema_variables(model)].index("bn/moving_mean")
    np.testing.assert_allclose(ema.average_variables[0].numpy(), average_kernel, rtol=1e-6)
    np.testing.assert_allclose(ema.average_variables[index].numpy(), 9 / 11 * 2.0, rtol=1e-6)
    assert int(ema.num_updates.numpy()) == 1
    assert float(ema.current_decay()) == pytest.approx(3 / 12)  # the next update: t=2
    assert float(ema.current_decay(10 ** 6)) == pytest.approx(0.9999)
    ema.swap()
    np.testing.assert_allclose(kernel.numpy(), average_kernel, rtol=1e-6)
    np.testing.assert_allclose(moving_mean.numpy(), 9 / 11 * 2.0, rtol=1e-6)
    ema.swap()
    np.testing.assert_allclose(kernel.numpy(), start + 1.0, rtol=1e-6)
    without_warmup = optim.ExponentialMovingAverage(optim.ema_variables(model), decay=0.5, warmup=False)
    assert float(without_warmup.current_decay()) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        optim.ExponentialMovingAverage([], decay=1.0)


def test_ema_equals_the_originals_tf1_average():
    """The original (tensorflow/tpu efficientnet/main.py): optimizer.minimize(loss, global_step)
    increments the step, then ExponentialMovingAverage(decay, num_updates=global_step).apply
    runs under a control dependency on it. Replayed here with TF1's own class."""
    rng = np.random.default_rng(0)
    variable = tf.Variable(rng.normal(size=(3,)).astype("float32"))
    global_step = tf.Variable(0, dtype=tf.int64)
    original = tf.compat.v1.train.ExponentialMovingAverage(0.9999, num_updates=global_step)
    ours = optim.ExponentialMovingAverage([variable], decay=0.9999, warmup=True)
    # In graph mode the average is created from the initial value; eagerly its first apply
    # creates it. Applied before any change, that first call leaves it at the initial value.
    original.apply([variable])
    for _ in range(25):
        variable.assign_add(rng.normal(size=(3,)).astype("float32"))  # the optimiser step
        global_step.assign_add(1)
        original.apply([variable])
        ours.apply()
        np.testing.assert_allclose(ours.average_variables[0].numpy(),
                                   original.average(variable).numpy(), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name, precision", [
    ("rmsprop", "float32"), ("sgd", "float32"), ("adam", "float32"), ("rmsprop", "mixed_float16")])
def test_build_optimizer_applies_learning_rate_multipliers(name, precision):
    """The per-variable multipliers of optimizer.layer_decay reach every optimiser the trainer
    builds, in a tf.function and under loss scaling: a variable with multiplier 0.25 moves a
    quarter as far as one without."""
    from keras_effnet.config import load_config  # noqa: PLC0415
    from keras_effnet.training import task  # noqa: PLC0415

    config = load_config(overrides=[f"optimizer.name={name}", f"runtime.mixed_precision={precision}",
                                    "schedule.decay=constant", "schedule.warmup_epochs=0"])
    steps = optim.schedule_steps(256, 256, epochs=1, warmup_epochs=0, decay_epochs=1)
    full = keras.Variable(np.ones(3, "float32"), name="full")
    scaled = keras.Variable(np.ones(3, "float32"), name="scaled")
    optimizer, _ = task.build_optimizer(config, steps, 256,
                                        learning_rate_multipliers={scaled.path: 0.25})
    optimizer.build([full, scaled])
    # (a loss-scale optimiser divides the gradients by its scale)
    gradient = tf.constant([1.0, -2.0, 0.5]) * float(optimizer.scale_loss(1.0))
    tf.function(lambda: optimizer.apply([gradient, gradient], [full, scaled]))()
    moved = 1.0 - full.numpy()
    assert np.all(np.abs(moved) > 1e-3)
    np.testing.assert_allclose(1.0 - scaled.numpy(), 0.25 * moved, rtol=1e-4)

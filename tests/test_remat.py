"""Gradient checkpointing: the checkpointed forward pass trains exactly like the plain model
(logits, gradients, batch-norm statistics, stochastic-depth masks), keeps far less for the
backward pass, and leaves the model itself unchanged; the benchmark's comparison of the two."""

import os

import numpy as np
import keras
import pytest
import tensorflow as tf

import keras_effnet
from keras_effnet import finetune, remat

SPEC = keras_effnet.compound_spec(-6)
SIZE = 64
BATCH = 4


def tiny_model(stochastic_depth_rate=0.5):
    keras.utils.set_random_seed(0)
    return keras_effnet.EfficientNet(SPEC, input_shape=(SIZE, SIZE, 3), classes=10,
                                     classifier_activation=None,
                                     stochastic_depth_rate=stochastic_depth_rate)


def batch():
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (BATCH, SIZE, SIZE, 3)).astype("float32")
    return tf.constant(images), tf.constant([1, 2, 3, 4])


def train_step(model, forward, images, labels):
    """Logits and the gradients of the trainable variables."""
    with tf.GradientTape() as tape:
        logits = forward(images, training=True)
        loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(
            labels, tf.cast(logits, tf.float32), from_logits=True))
    return tf.cast(logits, tf.float32), tape.gradient(loss, model.trainable_variables)


def run_step(model, forward, compiled):
    """(logits, gradients, every non-trainable value after the step) as arrays."""
    images, labels = batch()
    step = lambda x, y: train_step(model, forward, x, y)  # noqa: E731
    logits, gradients = (tf.function(step) if compiled else step)(images, labels)
    return (logits.numpy(), [g.numpy() for g in gradients],
            [v.numpy() for v in model.non_trainable_variables])


def plain_and_checkpointed(model, compiled, forward=None):
    """One step of the plain model and one of the checkpointed forward, from the same state
    (so the same stochastic-depth seeds)."""
    forward = forward or remat.checkpointed_forward(model, SPEC)
    state = [v.numpy() for v in model.non_trainable_variables]
    plain = run_step(model, model, compiled)
    for variable, value in zip(model.non_trainable_variables, state):
        variable.assign(value)
    return state, plain, run_step(model, forward, compiled)


def assert_same_step(plain, checkpointed, state_before, rtol=1e-6):
    (logits, gradients, state), (logits_c, gradients_c, state_c) = plain, checkpointed
    np.testing.assert_allclose(logits_c, logits, rtol=rtol, atol=1e-6)
    for gradient_c, gradient in zip(gradients_c, gradients, strict=True):
        np.testing.assert_allclose(gradient_c, gradient, rtol=rtol, atol=1e-7)
    changed = 0
    for value_c, value, before in zip(state_c, state, state_before, strict=True):
        np.testing.assert_array_equal(value_c, value)  # moving statistics, seed states
        changed += not np.array_equal(value, before)
    return changed


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "tf_function"])
def test_step_equals_plain_model_with_stochastic_depth(compiled):
    model = tiny_model(stochastic_depth_rate=0.5)
    state, plain, checkpointed = plain_and_checkpointed(model, compiled)
    changed = assert_same_step(plain, checkpointed, state)
    # Every batch norm moved its two statistics once; every stochastic depth and the top
    # dropout advanced its seed.
    layers = model.layers
    batch_norms = sum(isinstance(layer, keras.layers.BatchNormalization) for layer in layers)
    drops = sum(isinstance(layer, keras_effnet.StochasticDepth) for layer in layers)
    assert drops > 0 and changed == 2 * batch_norms + drops + 1


def test_plain_recompute_grad_would_double_update_and_redraw_masks():
    """What the StatelessScope in remat.recomputed_call is for: wrapping the same segments in
    bare tf.recompute_grad (what keras.remat does on TensorFlow) gets both wrong."""
    model = tiny_model(stochastic_depth_rate=0.5)
    views = remat.checkpointed_forward(model, SPEC)

    def bare(images, training=True):
        x = images
        for segment in views.segments:
            x = tf.recompute_grad(lambda t, segment=segment: segment(t, training=True))(x)
        return views.head(x, training=True)

    _, (_, gradients, state), (_, gradients_b, state_b) = plain_and_checkpointed(
        model, compiled=False, forward=bare)
    moving_mean = [v.path for v in model.non_trainable_variables].index("stem_bn/moving_mean")
    assert not np.allclose(state_b[moving_mean], state[moving_mean], rtol=1e-6)
    assert not all(np.allclose(a, b, rtol=1e-3) for a, b in zip(gradients_b, gradients))


def test_mixed_bfloat16_step_equals_plain_model():
    keras.config.set_dtype_policy("mixed_bfloat16")
    model = tiny_model(stochastic_depth_rate=0.2)
    state, plain, checkpointed = plain_and_checkpointed(model, compiled=False)
    assert plain[0].dtype == np.float32
    assert assert_same_step(plain, checkpointed, state) > 0


def test_partly_frozen_model():
    model = tiny_model()
    finetune.freeze(model, "block3")  # frozen batch norm runs in inference mode
    state, plain, checkpointed = plain_and_checkpointed(model, compiled=False)
    assert assert_same_step(plain, checkpointed, state) > 0


def test_keeps_a_fraction_of_the_activations_for_backward():
    model = tiny_model()
    forward = remat.checkpointed_forward(model, SPEC)
    shape = (BATCH, SIZE, SIZE, 3)
    plain = remat.backward_footprint(model, model.trainable_variables, shape)
    checkpointed = remat.backward_footprint(forward, model.trainable_variables, shape)
    # Measured: 232 tensors / 14.6 MiB plain, 85 / 1.1 MiB checkpointed (7.8%): each block
    # keeps its input only; the head keeps all of its own.
    assert checkpointed.tensors < plain.tensors / 2
    assert checkpointed.bytes < 0.15 * plain.bytes
    # A floor: the segment inputs (image, stem output, block outputs) are kept.
    boundaries = [model.input] + [segment.output for segment in forward.segments]
    floor = sum(int(np.prod(t.shape[1:])) * BATCH * 4 for t in boundaries)
    assert checkpointed.bytes > floor


def test_inference_and_the_model_are_unchanged(tmp_path):
    model = tiny_model()
    config, weights = model.to_json(), [v.path for v in model.weights]
    forward = remat.checkpointed_forward(model, SPEC)
    assert [s.name for s in forward.segments][:3] == ["stem", "block1a", "block2a"]
    assert len(forward.segments) == 1 + len(keras_effnet.block_plan(SPEC))
    images, _ = batch()
    np.testing.assert_array_equal(forward(images, training=False), model(images, training=False))
    assert model.to_json() == config and [v.path for v in model.weights] == weights
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert [layer.name for layer in loaded.layers] == [layer.name for layer in model.layers]
    assert [v.path for v in loaded.weights] == weights


def test_another_spec_is_refused():
    with pytest.raises(ValueError, match="block1b_.*spec the model was built from"):
        remat.checkpointed_forward(tiny_model(), "efficientnet-b1")


# The benchmark's gradient-checkpointing section (keras_effnet.benchmark.memory).


def test_checkpointing_table():
    from keras_effnet.benchmark import BenchmarkConfig
    from keras_effnet.benchmark.memory import CheckpointingRow, checkpointing_markdown

    rows = [CheckpointingRow("plain", 8, 10.0, 1.0, 300.0, 900.0, 2100.0),
            CheckpointingRow("checkpointed", 8, 7.5, 0.75, 40.0, None, None, "probe died")]
    table = checkpointing_markdown(rows, BenchmarkConfig(model="b0", train_batch_size=8),
                                   {"cpu": "test cpu"})
    assert table.startswith("Machine: cpu test cpu\n\nGradient checkpointing, efficientnet-b0 "
                            "224x224, float32, training batch 8")
    assert "| plain | 10.00 | 1.00× | 300.0 | 900 | 2100 | 1200 |" in table
    assert "| checkpointed | 7.50 | 0.75× | 40.0 |  |  |  |" in table
    assert "- checkpointed memory: probe died" in table


def probe_for_test(name, config):
    if name == "dies":
        os._exit(3)  # as if killed for memory
    return {"engine": name, "pid": os.getpid(), "model": config.model}


@pytest.mark.slow
def test_probes_run_in_fresh_processes_and_a_dead_one_is_reported():
    from keras_effnet.benchmark import BenchmarkConfig
    from keras_effnet.benchmark.memory import _in_fresh_processes

    fine, dies = _in_fresh_processes(probe_for_test, ["fine", "dies"],
                                     BenchmarkConfig(model="b1"), timeout=300)
    assert fine["model"] == "b1" and fine["pid"] != os.getpid()
    assert dies["engine"] == "dies" and "exited with code 3" in dies["error"]


@pytest.mark.slow
def test_checkpointing_comparison_runs_with_fresh_process_memory():
    from keras_effnet.benchmark import BenchmarkConfig
    from keras_effnet.benchmark.memory import compare_checkpointing

    config = BenchmarkConfig(model=keras_effnet.compound_spec(-8), image_size=32,
                             train_batch_size=2, engines=(), rounds=2, warmup=1,
                             min_round_seconds=0.0)
    plain, checkpointed = compare_checkpointing(config, timeout=300)
    assert (plain.forward, checkpointed.forward) == ("plain", "checkpointed")
    assert plain.ratio_median == 1.0 and checkpointed.ratio_median > 0
    assert checkpointed.kept_for_backward_mib < plain.kept_for_backward_mib
    for row in (plain, checkpointed):
        assert not row.error and row.peak_training_mib >= row.peak_after_build_mib > 0


def test_a_training_run_with_checkpointing_ends_with_the_same_weights(tmp_path):
    """``runtime.gradient_checkpointing`` changes how a step is computed, not its result."""
    from keras_effnet import training  # noqa: PLC0415
    from test_training import datasets, tiny_config  # noqa: PLC0415

    finals = []
    for checkpointing in (False, True):
        config = tiny_config(tmp_path / str(checkpointing), "data.batch_size=8",
                             "schedule.epochs=1", "runtime.deterministic=true",
                             f"runtime.gradient_checkpointing={str(checkpointing).lower()}")
        train, evaluation, facts = datasets(8, count=16)
        trainer = training.Trainer(config, train_dataset=train, eval_dataset=evaluation,
                                   facts=facts)
        trainer.train()
        assert (trainer.task.forward is trainer.model) is not checkpointing
        finals.append([variable.numpy() for variable in trainer.model.weights])
    for plain, checkpointed in zip(*finals):
        np.testing.assert_allclose(checkpointed, plain, rtol=1e-5, atol=1e-6)

"""Fine-tuning: new heads, freezing with batch norm in inference mode, layer-wise lr decay,
adapted stems (keras_effnet.finetune and build_model's new_head / in_channels); the frozen
warm-up, its resume and layer decay in training (model.frozen_epochs, optimizer.layer_decay)."""

import math
import os
import signal
import subprocess

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_effnet
from keras_effnet import finetune, training
from keras_effnet.config import load_config, resolve_spec
from helpers import randomized_batch_norm
from test_resume import (
    ROOT, checkpoint_values, latest_step, make_folder_dataset, start, train_command, wait_for_step)
from test_training import synthetic


@pytest.fixture(scope="module")
def lite0_file(tmp_path_factory):
    source = keras_effnet.build_model("lite0", input_shape=(64, 64, 3))
    source.set_weights(randomized_batch_norm(source, seed=3))
    path = str(tmp_path_factory.mktemp("weights") / "lite0.weights.h5")
    source.save_weights(path)
    return source, path


def test_new_head_loads_the_backbone_and_starts_at_ln_classes(lite0_file):
    source, path = lite0_file
    model = keras_effnet.EfficientNetLite0(weights=path, input_shape=(64, 64, 3), classes=4,
                                           new_head=True, classifier_activation=None)
    for layer in source.layers:
        if layer.name != "predictions" and layer.get_weights():
            for ours, theirs in zip(model.get_layer(layer.name).get_weights(), layer.get_weights()):
                np.testing.assert_array_equal(ours, theirs)
    assert model.get_layer("predictions").units == 4
    images = np.random.default_rng(0).uniform(0, 255, (4, 64, 64, 3)).astype("float32")
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(
        np.arange(4), model(images, training=False))
    assert float(loss) == pytest.approx(math.log(4), abs=1e-5)


def test_other_classes_without_new_head_say_what_to_do(lite0_file):
    _, path = lite0_file
    with pytest.raises(ValueError, match="new_head=True"):
        keras_effnet.EfficientNetLite0(weights=path, input_shape=(64, 64, 3), classes=4)
    with pytest.raises(ValueError, match="pass new_head=True to load the backbone"):
        keras_effnet.EfficientNetLite0(weights="imagenet", classes=4)
    with pytest.raises(ValueError, match="include_top=False"):
        keras_effnet.EfficientNetLite0(weights=path, include_top=False, new_head=True)


def test_freeze_up_to_a_stage_keeps_batch_norm_in_inference_mode():
    # no stochastic depth: drop-path (like dropout) still runs in frozen layers under training
    model = keras_effnet.build_model("b0", input_shape=(32, 32, 3), classes=3,
                                     classifier_activation=None, stochastic_depth_rate=0.0)
    model.set_weights(randomized_batch_norm(model, seed=1))
    frozen = finetune.freeze(model, up_to="block5")
    assert "stem_conv" in frozen and "block5c_project_bn" in frozen
    assert "block6a_expand_conv" not in frozen and "predictions" not in frozen
    assert not model.get_layer("block5a_bn").trainable and model.get_layer("block6a_bn").trainable
    stats = model.get_layer("block2a_bn").moving_mean.numpy().copy()
    images = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    model.compile(optimizer=keras.optimizers.SGD(0.1),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    frozen_kernel = model.get_layer("block3a_project_conv").kernel.numpy().copy()
    model.fit(images, np.array([0, 1, 2, 0]), epochs=1, verbose=0)
    np.testing.assert_array_equal(model.get_layer("block2a_bn").moving_mean.numpy(), stats)
    np.testing.assert_array_equal(model.get_layer("block3a_project_conv").kernel.numpy(),
                                  frozen_kernel)
    # frozen layers compute as in inference: block5's output is the same with training=True
    probe = keras.Model(model.input, model.get_layer("block5c_add").output)
    np.testing.assert_allclose(probe(images, training=True), probe(images, training=False),
                               rtol=1e-5, atol=1e-5)
    whole = finetune.freeze(model)
    assert "top_bn" in whole and "predictions" not in whole
    assert [w.path for w in model.trainable_weights] == ["predictions/kernel", "predictions/bias"]
    with pytest.raises(ValueError, match="block9"):
        finetune.freeze(model, up_to="block9")
    finetune.unfreeze(model)
    assert all(layer.trainable for layer in model.layers)


def test_layer_decay_multipliers_and_optimizer():
    model = keras_effnet.build_model("b0", input_shape=(32, 32, 3), classes=3)
    multipliers = finetune.layer_decay_multipliers(model, decay=0.5)
    groups = finetune.depth_groups(model)
    last = max(groups.values())
    assert multipliers["predictions/kernel"] == 1.0
    assert multipliers["top_conv/kernel"] == 0.5
    assert multipliers["stem_conv/kernel"] == 0.5 ** last
    assert groups["block1a_dwconv"] == 1 and last == 16 + 2  # 16 blocks, top, classifier
    with pytest.raises(ValueError, match="decay"):
        finetune.layer_decay_multipliers(model, decay=0.0)

    a, b = keras.Variable(np.ones(2, "float32"), name="a"), keras.Variable(
        np.ones(2, "float32"), name="b")
    optimizer = finetune.scale_learning_rates(keras.optimizers.SGD(1.0), {a.path: 0.5, b.path: 0.0})
    optimizer.apply([np.ones(2, "float32"), np.ones(2, "float32")], [a, b])
    np.testing.assert_allclose(a.numpy(), [0.5, 0.5])
    np.testing.assert_allclose(b.numpy(), [1.0, 1.0])


def test_adapt_stem_kernel_as_timm():
    kernel = np.random.default_rng(0).normal(size=(3, 3, 3, 8)).astype("float32")
    np.testing.assert_allclose(finetune.adapt_stem_kernel(kernel, 1), kernel.sum(2, keepdims=True))
    four = finetune.adapt_stem_kernel(kernel, 4)
    np.testing.assert_allclose(four[:, :, :3], kernel * 0.75)
    np.testing.assert_allclose(four[:, :, 3], kernel[:, :, 0] * 0.75)
    assert finetune.adapt_stem_kernel(kernel, 3) is kernel
    with pytest.raises(ValueError, match="RGB kernel"):
        finetune.adapt_stem_kernel(kernel[:, :, :1], 2)


@pytest.mark.parametrize("channels", [1, 4])
def test_in_channels_adapts_the_pretrained_stem(lite0_file, channels):
    source, path = lite0_file
    model = keras_effnet.EfficientNetLite0(weights=path, input_shape=(64, 64, channels),
                                           in_channels=channels)
    np.testing.assert_allclose(model.get_layer("stem_conv").kernel.numpy(),
                               finetune.adapt_stem_kernel(source.get_layer("stem_conv").kernel.numpy(),
                                                          channels), rtol=1e-6)
    np.testing.assert_array_equal(model.get_layer("top_bn").moving_mean.numpy(),
                                  source.get_layer("top_bn").moving_mean.numpy())
    # a gray image as 1 channel (or RGB + a copy of R as 4) gives the RGB model's logits
    gray = np.random.default_rng(1).uniform(0, 255, (2, 64, 64, 1)).astype("float32")
    rgb = np.repeat(gray, 3, axis=-1)
    inputs = gray if channels == 1 else np.concatenate([rgb, rgb[..., :1]], axis=-1)
    # (exact because Lite's normalisation is the same for every channel)
    np.testing.assert_allclose(model(inputs), source(rgb), rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="in_channels=1"):
        keras_effnet.EfficientNetLite0(weights=path, input_shape=(64, 64, 1))


# -- fine-tuning in the training loop (model.frozen_epochs, optimizer.layer_decay) ----------------

TINY = ["model.phi=-8", "model.resolution=32", "data.image_size=32", "augmentation.name=none",
        "runtime.progress_bar=false", "runtime.seed=0", "data.batch_size=8", "schedule.epochs=2"]


def tiny_trainer(model_dir, *overrides, count=32):
    """A Trainer of a tiny network on ``count`` images whose dominant colour is the class
    (tests/test_training.py's ``synthetic``; batch 8: ``count / 8`` steps per epoch)."""
    images, labels = synthetic(count)
    train = tf.data.Dataset.from_tensor_slices((images, labels)).batch(8, drop_remainder=True)
    evaluation = tf.data.Dataset.from_tensor_slices((images[:16], labels[:16])).batch(8)
    config = load_config(overrides=TINY + [f"runtime.model_dir={model_dir}", *overrides])
    return training.Trainer(config, train_dataset=train, eval_dataset=evaluation,
                            facts=training.DatasetFacts(num_classes=4, num_train_examples=count))


def values(variables) -> dict[str, np.ndarray]:
    return {variable.path: np.array(variable.numpy()) for variable in variables}


def slot(optimizer, name: str) -> np.ndarray:
    """The optimiser variable ``<optimizer>/<name>`` (e.g. ``stem_conv_kernel_momentum``)."""
    (found,) = [v for v in optimizer.variables if v.path.endswith(f"/{name}")]
    return found.numpy()


@pytest.mark.parametrize("overrides, message", [
    (["model.freeze_backbone=true", "model.frozen_epochs=1"], "set one of them"),
    (["model.freeze_up_to=block5"], "freezes nothing without model.frozen_epochs"),
    (["model.frozen_epochs=1", "model.freeze_up_to=block9"], "'block9' is not a stage"),
    (["model.unfreeze_batch_norm=true"], "only applies when the backbone is unfrozen"),
    (["model.frozen_epochs=-1"], "must be >= 0"),
    (["model.frozen_epochs=2"], "lasts the whole run of 8 steps"),
    (["model.frozen_epochs=0.1"], "shorter than one step"),
    (["optimizer.layer_decay=0"], r"must be in \(0, 1\]"),
    (["optimizer.layer_decay=1.5"], r"must be in \(0, 1\]"),
])
def test_contradictory_fine_tuning_keys_fail_before_training(tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        tiny_trainer(tmp_path, *overrides)
    assert not os.path.exists(tmp_path / "checkpoint")


def test_frozen_warmup_then_unfreeze_in_one_run_and_a_resume_at_the_switch(tmp_path):
    # 4 steps per epoch: frozen for steps 1-4, the whole network (but its batch norm) for 5-8.
    common = ["model.frozen_epochs=1", "optimizer.name=adam", "optimizer.ema_decay=0.5",
              "runtime.checkpoint_every_steps=0", "model.stochastic_depth_rate=0"]
    trainer = tiny_trainer(tmp_path, *common, "runtime.max_steps=4")
    trainer.build()
    assert trainer.task.unfreeze_step == 4
    assert [v.path for v in trainer.model.trainable_variables] == ["predictions/kernel",
                                                                   "predictions/bias"]
    initial = values(trainer.model.weights)
    assert trainer.train()["step"] == 4  # stops at the switch, as a killed run would
    at_switch = values(trainer.model.weights)
    # the backbone's slots exist from the start, unused so far
    assert np.all(slot(trainer.task.optimizer, "stem_conv_kernel_momentum") == 0)
    for path, value in initial.items():
        if path.startswith("predictions/"):
            assert not np.array_equal(at_switch[path], value), path
        else:  # frozen: weights and batch-norm statistics as loaded
            np.testing.assert_array_equal(at_switch[path], value, err_msg=path)

    resumed = tiny_trainer(tmp_path, *common)
    metrics = resumed.train()
    assert metrics["step"] == 8
    trained = {v.path for v in resumed.model.trainable_variables}
    assert {"stem_conv/kernel", "block1a_dwconv/kernel", "top_conv/kernel"} <= trained
    assert not any("_bn/" in path for path in trained)  # frozen batch norm stays frozen
    final = values(resumed.model.weights)
    for path in ("stem_conv/kernel", "block1a_project_conv/kernel", "top_conv/kernel"):
        assert not np.array_equal(final[path], at_switch[path]), path
    for path in ("stem_bn/moving_mean", "stem_bn/gamma", "top_bn/moving_variance"):
        np.testing.assert_array_equal(final[path], at_switch[path], err_msg=path)
    assert np.any(slot(resumed.task.optimizer, "stem_conv_kernel_momentum") != 0)
    # The EMA covers the backbone: its average of the stem moved after the unfreeze.
    ema = resumed.task.ema
    ema.swap()
    try:
        averaged = resumed.model.get_layer("stem_conv").kernel.numpy()
    finally:
        ema.swap()
    assert not np.array_equal(averaged, at_switch["stem_conv/kernel"])
    assert not np.array_equal(averaged, final["stem_conv/kernel"])
    # ... and is what the export and a checkpoint restored from the run directory hold
    for checkpoint in (None, str(tmp_path / "ckpt-8")):
        loaded, _, _ = training.load_run_model(tmp_path, checkpoint=checkpoint)
        np.testing.assert_array_equal(loaded.get_layer("stem_conv").kernel.numpy(), averaged)


def test_layer_decay_scales_each_variables_update():
    """One SGD step with optimizer.layer_decay moves each variable by its multiplier times the
    step without it: the stem 0.8 ** (depth groups - 1) as far, the classifier as far."""
    images, labels = synthetic(8)
    facts = training.DatasetFacts(num_classes=4, num_train_examples=32)

    def one_step(*overrides):
        config = load_config(overrides=TINY + [
            "optimizer.name=sgd", "optimizer.lr_per_256=8", "schedule.decay=constant",
            "schedule.warmup_epochs=0", "optimizer.ema_decay=0", *overrides])
        spec = resolve_spec(config.model)
        task = training.TrainingTask(config, spec, facts, 32, spec.normalization,
                                     steps_per_epoch=4, total_steps=8, global_batch=8,
                                     num_replicas=1)
        keras.utils.set_random_seed(0)  # the same initial weights and dropout masks
        task.build(initial_weights=False)
        before = values(task.model.trainable_variables)
        # eager: a quarter of the time of tracing (test_optim checks the compiled update)
        task.replica_train_step(tf.constant(images), tf.constant(labels))
        after = values(task.model.trainable_variables)
        return task.model, {path: after[path] - before[path] for path in before}

    _, plain = one_step()
    model, decayed = one_step("optimizer.layer_decay=0.8")
    multipliers = finetune.layer_decay_multipliers(model, 0.8)
    last = max(finetune.depth_groups(model).values())
    assert last >= 9 and multipliers["predictions/kernel"] == 1.0
    assert multipliers["stem_conv/kernel"] == pytest.approx(0.8 ** last)
    assert set(decayed) == set(multipliers)
    ratios = {}
    for path, delta in decayed.items():
        size = np.linalg.norm(plain[path])
        if size == 0:  # (no gradient reaches it in one step)
            continue
        ratios[path] = np.linalg.norm(delta) / size
        assert ratios[path] == pytest.approx(multipliers[path], rel=2e-3), path
    assert {"stem_conv/kernel", "top_conv/kernel", "predictions/kernel"} <= set(ratios)
    # the early stage moves less than the head, by the multipliers' factor
    assert (np.abs(decayed["stem_conv/kernel"]).max()
            < 0.8 ** (last - 1) * np.abs(plain["stem_conv/kernel"]).max())
    assert ratios["stem_conv/kernel"] < ratios["block4a_expand_conv/kernel"] < ratios[
        "predictions/kernel"]


@pytest.mark.slow
def test_killed_after_unfreezing_resumes_unfrozen_bit_identical(tmp_path):
    """kill -9 a real run after its frozen warm-up ended; the rerun resumes unfrozen and ends
    with the weights, optimiser slots, EMA and RNG state of a run that went straight through
    (deterministic mode, as tests/test_resume.py)."""
    data_root = make_folder_dataset(str(tmp_path / "data"))  # 48 images: 6 steps per epoch
    warmup = ["--set=model.frozen_epochs=1", "--set=optimizer.layer_decay=0.8"]
    model_dir = tmp_path / "run"
    log_path = tmp_path / "log.txt"
    with open(log_path, "w") as log:
        process = start(train_command(data_root, model_dir, *warmup), log)
        wait_for_step(process, model_dir, 8)  # the backbone unfroze at step 6
        process.send_signal(signal.SIGKILL)
        process.wait(30)
        killed_at = latest_step(model_dir)
        assert 8 <= killed_at < 12
        process = start(train_command(data_root, model_dir, *warmup), log)
        assert process.wait(300) == 0
    text = log_path.read_text()
    assert "step 6: the backbone is unfrozen" in text
    assert f"resumed from {model_dir}/ckpt-{killed_at} at step {killed_at}" in text
    assert f"step {killed_at}: the backbone is unfrozen" in text  # resumed unfrozen
    final = checkpoint_values(str(model_dir / "ckpt-12"))

    straight = tmp_path / "straight"
    subprocess.run(train_command(data_root, straight, *warmup), cwd=ROOT, check=True,
                   env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT),
                   stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, timeout=300)
    expected = checkpoint_values(str(straight / "ckpt-12"))
    compared = [name for name in expected if name.startswith(("model", "optimizer", "ema", "rng"))]
    assert len(compared) > 100
    for name in compared:
        np.testing.assert_array_equal(final[name], expected[name], err_msg=name)

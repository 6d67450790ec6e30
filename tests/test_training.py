"""keras_effnet.training: a tiny end-to-end run, export, evaluation, bad input, NaN stop."""

import json
import os
import re
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from helpers import run_together

from keras_effnet import training
from keras_effnet.config import Config, load_config
from keras_effnet.run_dir import RunDirectory

TINY = ["model.phi=-8", "model.resolution=32", "data.image_size=32", "augmentation.name=none",
        "runtime.progress_bar=false", "runtime.seed=0", "optimizer.ema_decay=0.9"]


def tiny_config(model_dir, *extra):
    return load_config(overrides=TINY + [f"runtime.model_dir={model_dir}", *extra])


def synthetic(count, classes=4, size=32, seed=0):
    """Images whose dominant colour channel encodes the class."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, count).astype("int32")
    images = rng.uniform(0, 60, (count, size, size, 3)).astype("float32")
    for index, label in enumerate(labels):
        images[index, :, :, label % 3] += 120 + 60 * (label // 3)
    return images, labels


def datasets(batch, count=32):
    images, labels = synthetic(count)
    train = tf.data.Dataset.from_tensor_slices((images, labels)).batch(batch, drop_remainder=True)
    evaluation = tf.data.Dataset.from_tensor_slices((images[:16], labels[:16])).batch(8)
    return train, evaluation, training.DatasetFacts(num_classes=4, num_train_examples=count)


def test_tiny_run_trains_checkpoints_exports_and_evaluates(tmp_path):
    config = tiny_config(tmp_path, "data.batch_size=8", "schedule.epochs=2",
                         "schedule.warmup_epochs=0.5", "runtime.checkpoint_every_steps=3")
    train, evaluation, facts = datasets(8)
    metrics = training.train(config, train_dataset=train, eval_dataset=evaluation, facts=facts)
    assert metrics["step"] == 8 and metrics["epoch"] == 2.0 and metrics["ema"]
    assert 0.0 <= metrics["top1"] <= metrics["top5"] <= 1.0
    on_disk = json.loads((tmp_path / "metrics.json").read_text())
    assert on_disk["step"] == 8 and "images_per_sec" in on_disk and "wall_seconds" in on_disk
    assert tf.train.latest_checkpoint(str(tmp_path)).endswith("ckpt-8")
    assert {"ckpt-6.index", "ckpt-8.index"} <= set(os.listdir(tmp_path))   # every N steps + epoch end
    assert os.path.exists(tmp_path / "best" / "metrics.json")
    assert os.listdir(tmp_path / "train") and os.listdir(tmp_path / "eval")  # TensorBoard events
    assert os.path.exists(tmp_path / "data_state" / "worker-0" / "ckpt-8.index")

    exported = keras.saving.load_model(str(tmp_path / "export" / "model.keras"))
    logits = exported.predict(synthetic(4)[0], verbose=0)
    assert exported.get_layer("predictions").activation is keras.activations.linear  # logits head
    assert not np.allclose(logits.sum(axis=1), 1.0)
    np.testing.assert_allclose(keras.ops.softmax(logits).numpy().sum(axis=1), 1.0, rtol=1e-5)
    weights_only = keras.models.clone_model(exported)
    weights_only.load_weights(str(tmp_path / "export" / "model.weights.h5"))
    np.testing.assert_allclose(weights_only.predict(synthetic(4)[0], verbose=0), logits, rtol=1e-5)

    run = RunDirectory(tmp_path)
    metadata = run.read_metadata()
    assert metadata.class_names == ("0", "1", "2", "3") and metadata.ema
    assert metadata.eval_preprocessing.resolution == 32
    assert metadata.weight_source == {"kind": "none"}
    assert (tmp_path / "config.yaml").exists() and (tmp_path / "labels.txt").exists()

    result = training.evaluate_checkpoint(config, eval_dataset=evaluation, facts=facts)
    assert result["step"] == 8 and result["ema"]
    assert result["top1"] == pytest.approx(metrics["top1"])
    # The export carries the EMA weights: its accuracy equals the EMA evaluation.
    images, labels = synthetic(32)
    top1 = np.mean(np.argmax(exported.predict(images[:16], verbose=0), axis=1) == labels[:16])
    assert top1 == pytest.approx(metrics["top1"])

    # Written once: a second start of the same run leaves the run files alone.
    stamp = os.stat(tmp_path / "run.json").st_mtime_ns
    training.train(config, train_dataset=train, eval_dataset=evaluation, facts=facts)
    assert os.stat(tmp_path / "run.json").st_mtime_ns == stamp


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    config = tiny_config(tmp_path, "data.batch_size=8", "schedule.epochs=4",
                         "runtime.checkpoint_every_steps=2", "optimizer.ema_decay=0")
    images, labels = synthetic(40)
    images[24:32] = np.nan  # the 4th batch
    train = tf.data.Dataset.from_tensor_slices((images, labels)).batch(8, drop_remainder=True)
    _, evaluation, _ = datasets(8)
    facts = training.DatasetFacts(num_classes=4, num_train_examples=40)
    with pytest.raises(training.TrainingStopped, match=r"non-finite loss .* at step 4.*ckpt-2"):
        training.train(config, train_dataset=train, eval_dataset=evaluation, facts=facts)
    assert tf.train.latest_checkpoint(str(tmp_path)).endswith("ckpt-2")
    reader = tf.train.load_checkpoint(str(tmp_path / "ckpt-2"))
    for name, _ in tf.train.list_variables(str(tmp_path / "ckpt-2")):
        if name.startswith("model/") and "VARIABLE_VALUE" in name:
            value = reader.get_tensor(name)
            if np.issubdtype(np.asarray(value).dtype, np.floating):
                assert np.all(np.isfinite(value)), name


class _TwoReplicas:
    """Stands in for a two-replica strategy: only the replica count is read before training."""

    num_replicas_in_sync = 2


def test_bad_input_fails_before_training(tmp_path):
    _, evaluation, facts = datasets(8)
    with pytest.raises(ValueError, match=r"batch_size=9 is not divisible by the 2 replicas"):
        training.Trainer(tiny_config(tmp_path, "data.batch_size=9"), strategy=_TwoReplicas(),
                         facts=facts)
    with pytest.raises(ValueError, match=r"image size 16 is too small"):
        training.Trainer(tiny_config(tmp_path, "data.image_size=16", "model.resolution=16"), facts=facts)
    with pytest.raises(ValueError, match=r"does not match model.resolution"):
        training.Trainer(tiny_config(tmp_path, "data.image_size=64"), facts=facts)
    with pytest.raises(ValueError, match=r"unknown EfficientNet variant"):
        training.Trainer(tiny_config(tmp_path, "model.name=b99"), facts=facts)
    with pytest.raises(FileNotFoundError, match=r"cannot open the training data"):
        training.Trainer(tiny_config(tmp_path, f"data.source=folder:{tmp_path}/missing"))
    with pytest.raises(ValueError, match=r"model_dir is required"):
        training.Trainer(Config(), facts=facts)
    blocked = tmp_path / "file"
    blocked.write_text("not a directory")
    with pytest.raises(PermissionError, match=r"not writable"):
        training.Trainer(tiny_config(blocked / "run"), facts=facts)
    assert not os.path.exists(tmp_path / "checkpoint")  # nothing was trained


def test_recipe_schedule_follows_the_original():
    """The recipe's schedule at 4096 (tensorflow/tpu efficientnet/main.py + utils.py): steps per
    epoch 1281167 / 4096 unrounded, int() of the 5 warm-up epochs, decay every 2.4 epochs as a
    float; the loop's whole-step epochs do not change it."""
    from keras_effnet import scaling  # noqa: PLC0415
    from keras_effnet.training import task as task_lib  # noqa: PLC0415

    config = Config()
    facts = training.DatasetFacts(num_classes=1000, num_train_examples=1281167)
    run = training.TrainingTask(config, scaling.get_spec("b0"), facts, 224, "imagenet",
                                steps_per_epoch=1281167 // 4096, total_steps=109474,
                                global_batch=4096, num_replicas=1)
    steps = run.schedule_steps
    assert steps.steps_per_epoch == 1281167 / 4096
    assert steps.warmup_steps == int(5 * (1281167 / 4096)) == 1563
    assert steps.decay_steps == pytest.approx(2.4 * 1281167 / 4096) == 750.6837890625
    assert steps.total_steps == int(350 * (1281167 / 4096)) == 109474
    _, schedule = task_lib.build_optimizer(config, steps, 4096)
    assert (schedule.warmup_steps, schedule.decay_steps) == (1563, steps.decay_steps)
    assert schedule.value(1562) == pytest.approx(0.256 * 1562 / 1563)
    assert schedule.value(2252) == pytest.approx(0.256 * 0.97 ** 2)  # 3 x 750.68 = 2252.05
    assert schedule.value(2253) == pytest.approx(0.256 * 0.97 ** 3)
    fixed = task_lib.schedule_steps(load_config(overrides=["runtime.steps_per_epoch=7"]), 1281167, 4096)
    assert (fixed.steps_per_epoch, fixed.warmup_steps) == (7.0, 35)


HELP_COMMANDS = (("tools/train.py",), ("-m", "keras_effnet.cli.evaluate"))


@pytest.fixture(scope="module")
def help_results():
    """``--help`` of both jobs, run together (helpers.run_together)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    results = run_together([[sys.executable, *command, "--help"] for command in HELP_COMMANDS],
                           timeout=300, cwd=root, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    return dict(zip(HELP_COMMANDS, results))


@pytest.mark.parametrize("command, own", [
    (HELP_COMMANDS[0], ("model_dir", "config", "set", "epochs")),
    (HELP_COMMANDS[1], ("model_dir", "checkpoint", "follow", "split", "dataset")),
])
def test_help_lists_the_jobs_own_flags(help_results, command, own):
    done = help_results[command]
    assert done.returncode in (0, 1), done.stderr[-2000:]  # absl's --help exits 1
    for flag in own:
        assert re.search(rf"--(\[no\])?{flag}:", done.stdout), done.stdout

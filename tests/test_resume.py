"""Nothing lost: kill -9 and SIGTERM a real training process, then resume it to the end."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN = os.path.join(ROOT, "tools", "train.py")


def make_folder_dataset(root, classes=4, per_class=(12, 4), size=32):
    """A tiny image-folder dataset: train/ and validation/ with one PNG folder per class."""
    rng = np.random.default_rng(0)
    for split, count in zip(("train", "validation"), per_class):
        for label in range(classes):
            directory = os.path.join(root, split, f"class{label}")
            os.makedirs(directory, exist_ok=True)
            for index in range(count):
                image = rng.uniform(0, 60, (size, size, 3))
                image[..., label % 3] += 120 + 60 * (label // 3)
                tf.io.write_file(os.path.join(directory, f"{index}.png"),
                                 tf.io.encode_png(image.astype("uint8")))
    return root


def train_command(data_root, model_dir, *extra):
    return [sys.executable, TRAIN, f"--model_dir={model_dir}", f"--dataset=folder:{data_root}",
            "--image_size=32", "--batch_size=8", "--epochs=2",
            "--set=model.phi=-8", "--set=model.resolution=32", "--set=augmentation.name=none",
            "--set=data.cache=false", "--set=runtime.checkpoint_every_steps=2",
            "--set=runtime.keep_checkpoints=20", "--set=runtime.deterministic=true",
            "--set=runtime.progress_bar=false", "--set=optimizer.ema_decay=0.9",
            "--verbosity=1", *extra]  # -v 1: progress lines ("resumed from ...") on stderr


def latest_step(model_dir):
    path = tf.train.latest_checkpoint(str(model_dir))
    return int(path.rsplit("-", 1)[1]) if path else -1


def start(command, log):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT)
    return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)


def wait_for_step(process, model_dir, at_least, timeout=240):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if latest_step(model_dir) >= at_least:
            return latest_step(model_dir)
        if process.poll() is not None:
            pytest.fail(f"training exited early with {process.returncode}")
        time.sleep(0.05)
    process.kill()
    pytest.fail(f"no checkpoint at step >= {at_least} within {timeout}s")


def checkpoint_values(path):
    reader = tf.train.load_checkpoint(path)
    return {name: reader.get_tensor(name) for name, _ in tf.train.list_variables(path)
            if not name.startswith("_CHECKPOINTABLE_OBJECT_GRAPH")}


@pytest.mark.slow
def test_kill_and_sigterm_then_resume_continues_from_saved_state(tmp_path):
    data_root = make_folder_dataset(str(tmp_path / "data"))
    model_dir = tmp_path / "run"
    log_path = tmp_path / "log.txt"
    with open(log_path, "w") as log:
        # 1. kill -9 after a checkpoint at step >= 4.
        process = start(train_command(data_root, model_dir), log)
        killed_at = wait_for_step(process, model_dir, 4)
        process.send_signal(signal.SIGKILL)
        process.wait(30)
        killed_at = latest_step(model_dir)
        assert 4 <= killed_at < 12  # 48 images / batch 8 x 2 epochs = 12 steps
        # 2. resume; SIGTERM once it has saved a later checkpoint: it saves and exits 143.
        process = start(train_command(data_root, model_dir), log)
        wait_for_step(process, model_dir, killed_at + 2)
        process.send_signal(signal.SIGTERM)
        assert process.wait(120) == 143
        terminated_at = latest_step(model_dir)
        assert killed_at + 2 <= terminated_at <= 12
        # 3. resume to the end.
        process = start(train_command(data_root, model_dir), log)
        assert process.wait(300) == 0
    text = log_path.read_text()
    assert f"resumed from {model_dir}/ckpt-{killed_at} at step {killed_at}" in text
    assert f"at step {terminated_at}" in text
    assert latest_step(model_dir) == 12
    assert os.path.exists(model_dir / "export" / "model.keras")

    final = checkpoint_values(str(model_dir / "ckpt-12"))
    assert any("ema" in name for name in final) and any("rng" in name for name in final)
    iterations = [value for name, value in final.items() if name.startswith("optimizer/_iterations")]
    assert iterations and int(iterations[0]) == 12  # optimizer position == step after two resumes
    assert int(final["step/.ATTRIBUTES/VARIABLE_VALUE"]) == 12

    # Same step, optimiser state, EMA, RNG and data position: in deterministic mode the run that
    # was killed and terminated ends bit-identical to one that ran straight through.
    straight = tmp_path / "straight"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT)
    subprocess.run(train_command(data_root, straight), env=env, cwd=ROOT, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, timeout=300)
    expected = checkpoint_values(str(straight / "ckpt-12"))
    compared = [name for name in expected if name.startswith(("model", "optimizer", "ema", "rng"))]
    assert len(compared) > 100
    for name in compared:
        np.testing.assert_array_equal(final[name], expected[name], err_msg=name)

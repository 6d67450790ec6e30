"""Issue 13, training side: a careless user's bad inputs to keras-effnet-train, as they meet them.

Every job here is tiny (compound phi=-8 at 32 px, 4 classes of 4 images, 2 steps an epoch) and
runs through the command line: the Ctrl-C run in a subprocess, the others through the command
line's main in this process (``helpers.run_cli``: the same flags, exit status and stderr, without
the ~8 s of CPU a subprocess spends importing TensorFlow).
"""

import collections
import fcntl
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf
from helpers import ROOT, make_folder_dataset, run_cli

from keras_effnet import training
from keras_effnet.config import load_config
from keras_effnet.training import guards


def train_flags(data_root, model_dir, *extra):
    return [f"--model_dir={model_dir}",
            f"--dataset=folder:{data_root}", "--image_size=32", "--batch_size=8", "--epochs=1",
            "--set=model.phi=-8", "--set=model.resolution=32", "--set=augmentation.name=none",
            "--set=data.cache=false", "--set=runtime.progress_bar=false",
            "--set=optimizer.ema_decay=0", *extra]


Result = collections.namedtuple("Result", "returncode stdout stderr")


def run_train(capsys, data_root, model_dir, *extra):
    """keras-effnet-train with these flags: its exit status and what it printed."""
    capsys.readouterr()  # only this command line's output
    status = run_cli("train", train_flags(data_root, model_dir, *extra))
    out, err = capsys.readouterr()
    return Result(status, out, err)


def assert_clear_error(result, *needles):
    assert result.returncode != 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    for needle in needles:
        assert needle in result.stderr, result.stderr


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return make_folder_dataset(tmp_path_factory.mktemp("data"), per_class=(4, 4))


@pytest.fixture(scope="module")
def interrupted_run(data_root, tmp_path_factory):
    """A run stopped by Ctrl-C after its first checkpoint: (model_dir, exit status, stderr)."""
    model_dir = str(tmp_path_factory.mktemp("run"))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    process = subprocess.Popen(
        [sys.executable, "-m", "keras_effnet.cli.train",
         *train_flags(data_root, model_dir, "--epochs=1000")], cwd=ROOT, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 180
    while tf.train.latest_checkpoint(model_dir) is None and time.time() < deadline:
        if process.poll() is not None:
            pytest.fail(process.stderr.read())
        time.sleep(0.1)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    return model_dir, process.returncode, stderr


def snapshot(directory):
    found = {}
    for root, _, files in os.walk(directory):
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as stream:
                found[os.path.relpath(path, directory)] = stream.read()
    return found


# 2. A failed resume must not touch the run.
def test_resume_with_another_model_is_refused_and_changes_nothing(data_root, interrupted_run,
                                                                  capsys):
    finished_run = interrupted_run[0]
    before = snapshot(finished_run)
    result = run_train(capsys, data_root, finished_run, "--set=model.phi=-7")
    assert_clear_error(result, "model.phi", "-8", "-7", "new --model_dir")
    assert snapshot(finished_run) == before
    # The run still evaluates/loads afterwards.
    model, metadata, source = training.load_run_model(finished_run)
    assert metadata.num_classes == 4 and source["checkpoint"]


# 3. An exclusive lock: a second job on a locked directory is refused; a stale lock is not.
def test_second_job_on_a_locked_run_is_refused(data_root, interrupted_run, capsys):
    finished_run = interrupted_run[0]
    # flock locks belong to the open file, so this one blocks the job's own open() in this
    # process as it blocks another process's.
    with open(os.path.join(finished_run, guards.LOCK_FILE), "a+") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        handle.write(json.dumps(dict(pid=12345, host="elsewhere")))
        handle.flush()
        result = run_train(capsys, data_root, finished_run)
    assert_clear_error(result, "in use by another training job", "12345")


def test_stale_lock_of_a_dead_process_does_not_block(tmp_path):
    with open(tmp_path / guards.LOCK_FILE, "w") as stream:  # left by a killed job: no flock
        json.dump(dict(pid=999999, host="gone"), stream)
    with guards.RunLock(str(tmp_path)):
        with pytest.raises(guards.RunLocked, match="in use"):
            guards.RunLock(str(tmp_path)).acquire()
    guards.RunLock(str(tmp_path)).acquire()


# 4. Divergence: clear error, no best/ or export/ with NaN, and a rerun does not "succeed".
def test_divergence_stops_and_a_rerun_does_not_resume_into_success(data_root, tmp_path, capsys):
    model_dir = str(tmp_path / "run")
    args = (data_root, model_dir, "--epochs=2", "--set=optimizer.lr_per_256=1e6")
    result = run_train(capsys, *args)
    assert_clear_error(result, "diverged", "optimizer.lr_per_256")
    assert not os.path.exists(os.path.join(model_dir, "export"))
    assert not os.path.exists(os.path.join(model_dir, "metrics.json"))
    best = tf.train.latest_checkpoint(os.path.join(model_dir, "best"))
    for path in filter(None, [best, tf.train.latest_checkpoint(model_dir)]):
        reader = tf.train.load_checkpoint(path)
        for name, _ in tf.train.list_variables(path):
            value = reader.get_tensor(name)
            if isinstance(value, np.ndarray) and value.dtype.kind == "f":
                assert np.isfinite(value).all(), (path, name)
    rerun = run_train(capsys, *args)
    assert_clear_error(rerun, "diverged", "same optimizer settings")


# 8. A one-class dataset and a negative learning rate are refused before the first step.
# (In-process: the command line prints the same ValueError, see the resume test above.)
def job(data_root, model_dir, *overrides):
    return load_config(overrides=[
        f"runtime.model_dir={model_dir}", f"data.source=folder:{data_root}", "data.image_size=32",
        "data.batch_size=8", "model.phi=-8", "model.resolution=32", *overrides])


def test_one_class_dataset_is_refused(tmp_path):
    data = make_folder_dataset(tmp_path / "one", classes=1, per_class=(4, 4))
    with pytest.raises(ValueError, match="has 1 class: a classifier needs at least 2"):
        training.Trainer(job(data, tmp_path / "run"))
    assert not os.path.exists(tmp_path / "run" / "config.yaml")


@pytest.mark.parametrize("override, needle", [
    ("optimizer.lr_per_256=-0.1", "optimizer.lr_per_256 must be positive"),
    ("optimizer.lr_per_256=0", "optimizer.lr_per_256 must be positive"),
    ("runtime.eval_every_epochs=0", "runtime.eval_every_epochs must be at least 1"),
    ("runtime.log_every_steps=0", "runtime.log_every_steps must be at least 1"),
    ("runtime.keep_checkpoints=0", "runtime.keep_checkpoints must be at least 1"),
])
def test_bad_settings_are_refused_before_training(data_root, tmp_path, override, needle):
    with pytest.raises(ValueError, match=needle):
        training.Trainer(job(data_root, tmp_path / "run", override))
    assert not os.path.exists(tmp_path / "run" / "config.yaml")


def test_malformed_yaml_names_file_and_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  phi: [1, 2\n")
    with pytest.raises(ValueError, match=r"bad.yaml.*is not valid YAML at line \d+"):
        load_config([str(bad)])
    with pytest.raises(ValueError, match="not valid YAML"):
        load_config(overrides=["model.phi=[1"])


# Ctrl-C is treated as SIGTERM: a checkpoint, then the resume exit status, no traceback.
def test_ctrl_c_saves_a_checkpoint(interrupted_run):
    model_dir, returncode, stderr = interrupted_run
    assert returncode == 143, stderr
    assert "Traceback" not in stderr
    assert "rerun to resume" in stderr
    assert tf.train.latest_checkpoint(model_dir)


# 9 (training files): written with the umask's mode, like the checkpoints.
def test_run_files_honour_the_umask(interrupted_run):
    model_dir = interrupted_run[0]
    checkpoint_mode = os.stat(tf.train.latest_checkpoint(model_dir) + ".index").st_mode & 0o777
    for name in ("config.yaml", "run.json", "labels.txt"):
        assert os.stat(os.path.join(model_dir, name)).st_mode & 0o777 == checkpoint_mode, name


# Disk full while checkpointing: one clear OSError, no ckpt-N_temp left, the old checkpoint current.
def test_failed_checkpoint_write_leaves_no_temp_files(tmp_path, monkeypatch):
    state = tf.train.Checkpoint(value=tf.Variable(1.0))
    checkpoints = training.RunCheckpoints(str(tmp_path), state, None, keep=2)
    checkpoints.save(1)

    def full_disk(checkpoint_number):
        os.makedirs(tmp_path / f"ckpt-{checkpoint_number}_temp" / "part")
        raise tf.errors.ResourceExhaustedError(None, None, "No space left on device")

    monkeypatch.setattr(checkpoints.manager, "save", full_disk)
    with pytest.raises(OSError, match="No space left.*last checkpoint is .*ckpt-1"):
        checkpoints.save(2)
    assert not [name for name in os.listdir(tmp_path) if "_temp" in name]
    assert tf.train.latest_checkpoint(str(tmp_path)).endswith("ckpt-1")

"""What a command line prints (issue 15): the 2-epoch demo in at most 30 lines and no TensorFlow or
absl log line, ``-v 2`` brings them back, errors always pass; ``import keras_effnet`` and
``keras_effnet.cli`` load neither Keras nor TensorFlow, so a command line acts before they do.

Each command runs in a subprocess, as a user runs it, without the test suite's
``TF_CPP_MIN_LOG_LEVEL`` (the conftest's), which TensorFlow 2.21 ignores for these lines anyway.
The demo runs as on a new machine, preparing the embedded dataset into an empty TFDS directory.
"""

import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Written independently of keras_effnet.logs.NATIVE_NOISE: any C++ log line (absl's prefix), absl's
# start-up warning, and Python-side TensorFlow/absl log records.
LOG_LINE = re.compile(r"^[IWEF]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ \S+:\d+\] |absl::InitializeLog"
                      r"|^(INFO|WARNING|ERROR) (absl|tensorflow|h5py)\b")


def _run(*args, timeout=600, env_extra=None):
    env = {key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"}
    env.update(env_extra or {})
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=ROOT,
                          env=env, timeout=timeout)


def _log_lines(text):
    return [line for line in text.splitlines() if LOG_LINE.search(line)]


def test_import_loads_neither_keras_nor_tensorflow():
    check = ("import sys, keras_effnet, keras_effnet.cli, keras_effnet.logs, keras_effnet.config\n"
             "from keras_effnet import VARIANTS, get_spec, BlockArgs\n"
             "heavy = sorted({'keras', 'tensorflow'} & set(sys.modules))\n"
             "assert not heavy, heavy\n"
             "assert keras_effnet.EfficientNetB0.__module__ == 'keras_effnet.applications'\n"
             "import keras\n"
             "assert keras.saving.get_registered_object('keras_effnet>RMSPropTF1') is not None\n"
             "assert keras.saving.get_registered_object('keras_effnet>ImageNormalization')\n")
    done = _run("-c", check, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.mark.slow
def test_demo_prints_a_short_clean_console(tmp_path):
    # As on a new machine: the embedded dataset is prepared by this run (an empty TFDS directory).
    done = _run("tools/train.py", "--config", "configs/demo.yaml",
                "--model_dir", str(tmp_path / "run"), "--epochs", "2",
                "--set", "runtime.steps_per_epoch=2", "--set", "runtime.eval_steps=1",
                env_extra={"TFDS_DATA_DIR": str(tmp_path / "tfds")})
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    assert not _log_lines(output), output
    assert len(output.splitlines()) <= 30, output
    assert "final eval top-1" in done.stdout and done.stderr == "", output


def test_verbosity_2_shows_tensorflow_start_up_lines():
    quiet = _run("-m", "keras_effnet.cli.info", "--model=lite0", timeout=300)
    assert quiet.returncode == 0, quiet.stderr[-3000:]
    assert "efficientnet-lite0: 4.69M parameters" in quiet.stdout
    assert not _log_lines(quiet.stdout + quiet.stderr), quiet.stderr
    loud = _run("-m", "keras_effnet.cli.info", "--model=lite0", "-v", "2", timeout=300)
    assert loud.returncode == 0, loud.stderr[-3000:]
    assert "efficientnet-lite0: 4.69M parameters" in loud.stdout
    assert any("absl::InitializeLog" in line for line in loud.stderr.splitlines()), loud.stderr
    assert _log_lines(loud.stderr), loud.stderr


def test_an_error_message_passes_the_filter(tmp_path):
    done = _run("tools/train.py", "--config", str(tmp_path / "missing.yaml"),
                "--model_dir", str(tmp_path / "run"), timeout=300)
    assert done.returncode == 1, done.stderr[-3000:]
    [message] = done.stderr.splitlines()  # the message alone, no start-up line around it
    assert message.startswith("error: ") and "missing.yaml" in message, done.stderr

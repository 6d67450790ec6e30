"""keras_effnet.logs: one handler, quiet by default, -v for keras_effnet INFO, -v 2 for TF/absl
INFO; the command lines' filter of TensorFlow's C++ start-up lines (whole lines only, errors kept)."""

import itertools
import logging
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from absl import logging as absl_logging

from keras_effnet import logs


def _ours():
    return [h for h in logging.getLogger().handlers if h.get_name() == "keras_effnet.logs"]


def test_quiet_by_default_and_verbose_levels():
    package = logging.getLogger("keras_effnet.data")
    try:
        logs.configure()
        assert not package.isEnabledFor(logging.INFO)
        assert package.isEnabledFor(logging.WARNING)
        assert not logging.getLogger("tensorflow").isEnabledFor(logging.INFO)
        assert absl_logging.get_verbosity() == absl_logging.WARNING

        logs.configure(1)
        assert package.isEnabledFor(logging.INFO)
        assert not logging.getLogger("tensorflow").isEnabledFor(logging.INFO)

        logs.configure(2)
        assert logging.getLogger("tensorflow").isEnabledFor(logging.INFO)
        assert absl_logging.get_verbosity() == absl_logging.INFO
        assert len(_ours()) == 1, "configure() twice must not stack handlers"
    finally:
        logs.configure(0)


def test_plain_format(capsys):
    logs.configure(1)
    try:
        handler = _ours()[0]
        record = logging.LogRecord("keras_effnet.data", logging.INFO, __file__, 1, "hello %s",
                                   ("world",), None)
        assert handler.format(record) == "INFO keras_effnet.data: hello world"
    finally:
        logs.configure(0)


# -- the C++ start-up filter of the command lines (prepare_command_line) --------------------------

# Lines TensorFlow 2.21 printed on this project's CPU machines (issue 15), and lines that must stay.
NOISE = [
    b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    b"I0000 00:00:1796171302.107986   20635 port.cc:153] oneDNN custom operations are on. You may "
    b"see slightly different numerical results due to floating-point round-off errors.",
    b"I0000 00:00:1796171302.108533   20635 cudart_stub.cc:31] Could not find cuda drivers on your "
    b"machine, GPU will not be used.",
    b"I0000 00:00:1796171302.198416   20635 cpu_feature_guard.cc:227] This TensorFlow binary is "
    b"optimized to use available CPU instructions in performance-critical operations.",
    b"To enable the following instructions: AVX2 AVX512F AVX512_VNNI FMA, in other operations, "
    b"rebuild TensorFlow with the appropriate compiler flags.",
    b"E0000 00:00:1796171307.660527   20635 cuda_platform.cc:52] failed call to cuInit: INTERNAL: "
    b"CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)",
    b"I0000 00:00:1796171318.763406   21257 tf_record_dataset_op.cc:396] The default buffer size "
    b"is 262144, which is overridden by the user specified `buffer_size` of 8388608",
    b"W1105 10:11:12.345678  4242 allocator.cc:7] Allocation of 9 exceeds 10% of free memory.",
]
KEPT = [
    b"E0000 00:00:1796171307.660527   20635 cuda_dnn.cc:52] Could not create cudnn handle",
    b"F0000 00:00:1796171307.660527   20635 tensor.cc:12] Check failed: shape.dims() == 2",
    b"W1105 10:11:12.345678 140000 train.py:12] an absl-py warning from Python code",
    b"Traceback (most recent call last):",
    b'  File "keras_effnet/training/loop.py", line 1, in <module>',
    b"ValueError: data.batch_size must be positive, got 0",
    b"error: config file not found: /nope.yaml",
    b"WARNING keras_effnet.data: skipped 2 unreadable images",
    b"/site-packages/keras/src/trainer.py:1: UserWarning: something a user should read",
    b"epoch 1/2  step 22  loss 4.7088  top-1 0.1286  lr 0.00382  292.1 images/s  (15.3 s)",
]


def test_native_noise_matches_whole_start_up_lines_only():
    for line in NOISE:
        assert logs.is_native_noise(line), line
    for line in KEPT:
        assert not logs.is_native_noise(line), line
    assert not logs.is_native_noise(b"prefix " + NOISE[1])  # a noise line only as a whole line


def _forwarded(writes, drop=logs.is_native_noise):
    read_end, write_end = os.pipe()
    out_read, out_write = os.pipe()
    forwarder = threading.Thread(target=logs.forward_lines, args=(read_end, out_write, drop))
    forwarder.start()
    for data in writes:
        os.write(write_end, data)
    os.close(write_end)
    forwarder.join(10)
    os.close(out_write)
    with os.fdopen(out_read, "rb") as stream:
        output = stream.read()
    os.close(read_end)
    return output


def test_forward_lines_drops_noise_and_keeps_everything_else_in_order():
    mixed = [line for pair in itertools.zip_longest(NOISE, KEPT) for line in pair if line]
    data = b"".join(line + b"\n" for line in mixed)
    # Whatever the pipe's chunks, even when one splits a noise line.
    assert _forwarded([data[:100], data[100:1000], data[1000:]]) == b"".join(
        line + b"\n" for line in KEPT)


def test_forward_lines_passes_a_line_without_its_end():
    # A prompt or progress bar without a newline is forwarded after a short wait, and the rest of
    # that line with it, even when the rest would look like noise on its own.
    assert _forwarded([b"Password: "]) == b"Password: "
    read_end, write_end = os.pipe()
    out_read, out_write = os.pipe()
    forwarder = threading.Thread(target=logs.forward_lines,
                                 args=(read_end, out_write, logs.is_native_noise))
    forwarder.start()
    os.write(write_end, b"progress 10%")
    time.sleep(0.5)
    os.write(write_end, NOISE[1] + b"\n" + NOISE[2] + b"\n")
    os.close(write_end)
    forwarder.join(10)
    os.close(out_write)
    with os.fdopen(out_read, "rb") as stream:
        assert stream.read() == b"progress 10%" + NOISE[1] + b"\n"
    os.close(read_end)


def test_verbosity_from_argv():
    assert logs.verbosity_from_argv([]) == 0
    assert logs.verbosity_from_argv(["--model_dir", "x", "-v", "2"]) == 2
    assert logs.verbosity_from_argv(["-v=1"]) == 1
    assert logs.verbosity_from_argv(["--verbosity=2", "--config", "c.yaml"]) == 2
    assert logs.verbosity_from_argv(["--verbosity", "-1"]) == -1
    assert logs.verbosity_from_argv(["--v=2"]) == 2
    assert logs.verbosity_from_argv(["-v", "lots"]) == 0  # absl reports the bad value itself
    assert logs.verbosity_from_argv(["--", "-v", "2"]) == 0
    assert logs.verbosity_from_argv(["--vmodule=x=2", "--very=2"]) == 0


def test_started_as_command_line():
    python = sys.executable
    assert logs.started_as_command_line(["/usr/bin/keras-effnet-train"], [python, "/usr/bin/k"])
    assert logs.started_as_command_line(["tools/train.py"], [python, "tools/train.py"])
    assert logs.started_as_command_line(
        ["-m"], [python, "-W", "error", "-m", "keras_effnet.cli.train", "--epochs=1"])
    assert logs.started_as_command_line(["-m"], [python, "-mkeras_effnet.cli.info"])
    assert not logs.started_as_command_line(["/x/pytest/__main__.py"], [python, "-m", "pytest"])
    assert not logs.started_as_command_line(["/usr/bin/pytest"], [python, "/usr/bin/pytest"])
    assert not logs.started_as_command_line(["-c"], [python, "-c", "import keras_effnet.cli"])
    assert not logs.started_as_command_line(["my_script.py"], [python, "my_script.py", "-m", "x"])
    # This test process imported keras_effnet.cli (the conftest, other tests): fd 2 untouched.
    assert not logs.started_as_command_line()


FILTERED = """
import os, sys
from keras_effnet import logs
logs.filter_native_stderr()
os.write(2, b"I0000 00:00:1.5 42 port.cc:153] oneDNN custom operations are on.\\n")
print("a warning from keras_effnet", file=sys.stderr)
os.write(2, b"E0000 00:00:1.5 42 cuda_dnn.cc:9] Could not create cudnn handle\\n")
if sys.argv[1] == "abort":
    os.write(2, b"F0000 00:00:1.5 42 tensor.cc:12] Check failed: dims == 2\\n")
    os.abort()
raise RuntimeError("boom")
"""


@pytest.mark.parametrize("ending", ["traceback", "abort"])
def test_filter_keeps_errors_tracebacks_and_the_last_words_of_a_crash(ending):
    done = subprocess.run([sys.executable, "-c", FILTERED, ending], capture_output=True,
                          text=True, timeout=60)
    lines = done.stderr.splitlines()
    assert "oneDNN" not in done.stderr
    assert lines[:2] == ["a warning from keras_effnet",
                         "E0000 00:00:1.5 42 cuda_dnn.cc:9] Could not create cudnn handle"]
    if ending == "abort":
        assert done.returncode == -signal.SIGABRT
        assert lines[2:] == ["F0000 00:00:1.5 42 tensor.cc:12] Check failed: dims == 2"]
    else:
        assert done.returncode == 1
        assert lines[2] == "Traceback (most recent call last):"
        assert lines[-1] == "RuntimeError: boom"

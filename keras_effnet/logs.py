"""Logging set-up for the command lines: quiet by default, ``-v`` for progress.

The library only ever calls ``logging.getLogger(__name__)``; this module is the one place that
decides what reaches the terminal, in two steps, both for command-line processes only:

- :func:`prepare_command_line`, before TensorFlow loads (``keras_effnet.cli`` calls it when a
  command line imports it): sets ``TF_CPP_MIN_LOG_LEVEL`` and, below ``-v 2``, filters TensorFlow's
  C++ start-up lines out of file descriptor 2 (:func:`filter_native_stderr`).
- :func:`configure`, at the start of a main: the Python loggers.
"""

from __future__ import annotations

import atexit
import logging
import os
import re
import select
import signal
import sys
import time
from collections.abc import Callable, Sequence

from absl import logging as absl_logging

PACKAGE_LOGGER = "keras_effnet"
FORMAT = "%(levelname)s %(name)s: %(message)s"

# TF_CPP_MIN_LOG_LEVEL: 0 all, 1 no INFO, 2 no WARNING, 3 no ERROR either.
_TF_CPP_LEVEL = {0: "2", 1: "2", 2: "0"}

# What filter_native_stderr drops below -v 2: whole C++ log lines only (a Python file:line never
# matches). TensorFlow 2.21 never calls absl::InitializeLog, so absl writes its C++ log lines to
# stderr whatever TF_CPP_MIN_LOG_LEVEL says (port.cc, cudart_stub.cc ... print twice, once per absl
# copy in TF's shared libraries; issue 15). The prefix: severity, MMDD hh:mm:ss.micros (0000
# 00:00:<epoch> before InitializeLog), thread id, C++ file:line. INFO and WARNING go, as
# TF_CPP_MIN_LOG_LEVEL=2 intends; ERROR and FATAL stay, except the cuInit failure that every machine
# without a GPU prints.
_CPP_PREFIX = rb"\d{4} \d\d:\d\d:\d+\.\d+ +\d+ [\w.+-]+\.(?:cc|cpp|h):\d+\] "
NATIVE_NOISE = re.compile(
    rb"WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    rb"|[IW]" + _CPP_PREFIX + rb".*"
    rb"|E" + _CPP_PREFIX + rb"failed call to cuInit: .*"
    # The second line of cpu_feature_guard.cc's INFO message.
    rb"|To enable the following instructions: .*, in other operations, rebuild TensorFlow with the"
    rb" appropriate compiler flags\.")

# A line without its end is held this long for the rest (absl writes a whole line in one write).
_PARTIAL_LINE_WAIT_S = 0.05
# At exit, how long to wait for the filter to print what it still holds.
_DRAIN_WAIT_S = 2.0

_VERBOSITY_FLAG = re.compile(r"--?(?:v|verbosity)(?:=(.*))?")

_filter_pid: int | None = None  # the filter process of this one, once started


def configure(verbosity: int = 0) -> None:
    """Route keras_effnet (and TensorFlow/absl) logs to one stderr handler.

    ``verbosity`` 0: warnings and errors only (TensorFlow's C++ INFO/WARNING lines off);
    1: also ``keras_effnet`` INFO (progress); 2: also TensorFlow and absl INFO.
    Negative values (absl's ``-v -1``) count as 0. Calling it again replaces the handler, so mains
    and tests may call it freely.
    """
    level = _level(verbosity)
    if "tensorflow" not in sys.modules:
        _set_tf_cpp_level(level)

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(FORMAT))
    handler.set_name("keras_effnet.logs")
    root = logging.getLogger()
    for existing in list(root.handlers):
        if existing.get_name() == "keras_effnet.logs":
            root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(logging.INFO if level >= 2 else logging.WARNING)

    logging.getLogger(PACKAGE_LOGGER).setLevel(logging.INFO if level >= 1 else logging.WARNING)
    third_party = logging.INFO if level >= 2 else logging.WARNING
    for name in ("tensorflow", "absl", "h5py", "jax"):
        third_party_logger = logging.getLogger(name)
        third_party_logger.setLevel(third_party)
        # TensorFlow adds its own stderr handler when it loads before any root handler exists;
        # drop it so each record is printed once, by the handler above.
        for existing in list(third_party_logger.handlers):
            if isinstance(existing, logging.StreamHandler):
                third_party_logger.removeHandler(existing)
        third_party_logger.propagate = True
    absl_logging.set_verbosity(absl_logging.INFO if level >= 2 else absl_logging.WARNING)
    # absl's app.run puts its own handler on the root logger; ours stays the only one.
    absl_handler = absl_logging.get_absl_handler()
    if absl_handler in root.handlers:
        root.removeHandler(absl_handler)


def started_as_command_line(argv: Sequence[str] | None = None,
                            orig_argv: Sequence[str] | None = None) -> bool:
    """Whether this process runs one of the package's command lines: a console script
    (``keras-effnet-*``), a ``tools/*.py`` shim or ``python -m keras_effnet.cli.<name>``.

    ``argv`` and ``orig_argv`` default to ``sys.argv`` and ``sys.orig_argv`` (the interpreter's
    own arguments, where ``-m`` shows). A test runner or a user's script importing
    ``keras_effnet.cli`` is none of these.
    """
    argv = sys.argv if argv is None else argv
    orig_argv = getattr(sys, "orig_argv", []) if orig_argv is None else orig_argv
    script = argv[0] if argv else ""
    if os.path.basename(script).startswith("keras-effnet-"):
        return True
    folder = os.path.basename(os.path.dirname(os.path.abspath(script)))
    if script.endswith(".py") and folder == "tools":
        return True
    options = iter(orig_argv[1:])
    for option in options:  # the interpreter's options end at -m, -c or the script
        if option in ("-W", "-X"):
            next(options, None)
        elif option.startswith("-m"):
            module = option[2:] or next(options, "")
            return module.startswith("keras_effnet.cli.")
        elif option.startswith("-c") or not option.startswith("-"):
            return False
    return False


def verbosity_from_argv(argv: Sequence[str]) -> int:
    """absl's ``-v``/``--verbosity`` as written on a command line (``-v 2``, ``--verbosity=2`` ...),
    read before the flags are parsed; 0 when absent or not a number (absl reports that later)."""
    verbosity = 0
    for index, argument in enumerate(argv):
        if argument == "--":
            break
        match = _VERBOSITY_FLAG.fullmatch(argument)
        if match:
            value = match.group(1)
            if value is None:
                value = argv[index + 1] if index + 1 < len(argv) else ""
            try:
                verbosity = int(value)
            except ValueError:
                verbosity = 0
    return verbosity


def prepare_command_line(argv: Sequence[str]) -> None:
    """Before TensorFlow loads in a command-line process: ``TF_CPP_MIN_LOG_LEVEL`` for the
    ``-v`` in ``argv`` (the flags, without the program) and, below ``-v 2``, the C++ start-up lines
    filtered out of stderr. Never for a library import: it changes file descriptor 2."""
    level = _level(verbosity_from_argv(argv))
    _set_tf_cpp_level(level)
    if level < 2:
        filter_native_stderr()


def is_native_noise(line: bytes) -> bool:
    """Whether ``line`` (without its newline) is one of the C++ log lines hidden below ``-v 2``."""
    return NATIVE_NOISE.fullmatch(line.rstrip(b"\r")) is not None


def filter_native_stderr(drop: Callable[[bytes], bool] = is_native_noise) -> None:
    """Send file descriptor 2 through a filter process that drops the whole lines ``drop`` accepts
    and forwards everything else unchanged (C++ and Python writers alike, child processes too).

    A process, not a thread, so that what a crashing process wrote last (a fatal C++ check, a
    segfault's traceback) still reaches the terminal. The filter ignores SIGINT and SIGTERM and ends
    when the last writer closes the pipe; at exit this process restores stderr and waits for it.
    Once per process; nothing on systems without ``fork``.
    """
    global _filter_pid
    if _filter_pid is not None or not hasattr(os, "fork"):
        return
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the filter: reads the pipe, writes the original stderr (still fd 2 here)
        status = 0
        try:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            os.close(write_end)
            null = os.open(os.devnull, os.O_RDWR)
            os.dup2(null, 0)
            os.dup2(null, 1)  # so a reader of this process's stdout sees its end on time
            forward_lines(read_end, 2, drop)
        except BaseException:  # noqa: BLE001 - a broken terminal: nothing left to tell
            status = 1
        finally:
            os._exit(status)
    os.close(read_end)
    original = os.dup(2)
    os.dup2(write_end, 2)
    os.close(write_end)
    _filter_pid = pid
    atexit.register(_stop_filter, pid, original)


def forward_lines(source: int, target: int, drop: Callable[[bytes], bool]) -> None:
    """Copy ``source`` to ``target`` (file descriptors) until the end, leaving out the complete
    lines ``drop`` accepts. A line still without its end after a short wait is forwarded as it is
    (a prompt, a progress bar), and so is the rest of it when it comes."""
    pending = b""
    mid_line = False  # the start of the pending line was already forwarded
    while True:
        if pending and not select.select([source], [], [], _PARTIAL_LINE_WAIT_S)[0]:
            _write_all(target, pending)
            pending, mid_line = b"", True
            continue
        chunk = os.read(source, 65536)
        if not chunk:
            break
        *lines, pending = (pending + chunk).split(b"\n")
        kept = []
        for line in lines:
            if mid_line or not drop(line):
                kept.append(line + b"\n")
            mid_line = False
        _write_all(target, b"".join(kept))
    _write_all(target, pending)


def _write_all(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data):]


def _stop_filter(pid: int, original: int) -> None:
    """At exit: stderr back to the original (which closes this process's end of the pipe), then
    give the filter a moment to print what it holds."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os.dup2(original, 2)
    os.close(original)
    deadline = time.monotonic() + _DRAIN_WAIT_S
    while time.monotonic() < deadline:  # a child process may still hold the pipe: bounded
        if os.waitpid(pid, os.WNOHANG)[0]:
            return
        time.sleep(0.005)


def _level(verbosity: int) -> int:
    return min(max(int(verbosity), 0), 2)


def _set_tf_cpp_level(level: int) -> None:
    """An explicit setting in the environment wins, except when asking for everything."""
    if level >= 2:
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = _TF_CPP_LEVEL[level]
    else:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", _TF_CPP_LEVEL[level])

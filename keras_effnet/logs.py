"""Logging set-up for the command lines: quiet by default, ``-v`` for progress.

The library only ever calls ``logging.getLogger(__name__)``; this module is the one place that decides
what reaches the terminal. Call :func:`configure` at the start of a main, before TensorFlow loads when
possible (``TF_CPP_MIN_LOG_LEVEL`` is read once, when TensorFlow's C++ runtime starts).
"""

from __future__ import annotations

import logging
import os
import sys

from absl import logging as absl_logging

PACKAGE_LOGGER = "keras_effnet"
FORMAT = "%(levelname)s %(name)s: %(message)s"

# TF_CPP_MIN_LOG_LEVEL: 0 all, 1 no INFO, 2 no WARNING, 3 no ERROR either.
_TF_CPP_LEVEL = {0: "2", 1: "2", 2: "0"}


def configure(verbosity: int = 0) -> None:
    """Route keras_effnet (and TensorFlow/absl) logs to one stderr handler.

    ``verbosity`` 0: warnings and errors only (TensorFlow's C++ INFO/WARNING lines off);
    1: also ``keras_effnet`` INFO (progress); 2: also TensorFlow and absl INFO.
    Negative values (absl's ``-v -1``) count as 0. Calling it again replaces the handler, so mains
    and tests may call it freely.
    """
    level = min(max(int(verbosity), 0), 2)
    if "tensorflow" not in sys.modules:
        # An explicit setting in the environment wins, except when asking for everything.
        if level >= 2:
            os.environ["TF_CPP_MIN_LOG_LEVEL"] = _TF_CPP_LEVEL[level]
        else:
            os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", _TF_CPP_LEVEL[level])

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

"""What keeps a run directory safe: one job at a time, no silent model change, no diverged result.

- ``RunLock``: an exclusive ``fcntl`` lock on ``<model_dir>/.lock`` for the length of a run. The
  kernel drops it when the holder dies, so a lock left by a dead process (or by a host that is
  gone) never blocks a rerun; the file records pid and host for the message.
- ``check_resume``: the requested configuration against the run's ``config.yaml``, before
  anything is written (a resume with another model used to overwrite ``config.yaml`` and then fail
  in the restore, issue 13 item 2).
- Divergence: a non-finite loss, a training loss far past its start, non-finite weights before a
  checkpoint; ``DIVERGED`` in the run directory keeps a rerun with the same optimiser settings from
  "resuming" into success.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import logging
import math
import os
import socket

import tensorflow as tf

from keras_effnet import atomic
from keras_effnet.config import Config, load_config
from keras_effnet.run_dir import CONFIG_FILE
from keras_effnet.training.task import TrainingStopped

logger = logging.getLogger(__name__)

LOCK_FILE = ".lock"
DIVERGED_FILE = "DIVERGED.json"
# A training loss this many times its first value (of this process) is divergence: the loss of a
# healthy run falls from about ln(classes) (+ weight decay); 4.9e13 was seen with lr_per_256=1e6.
DIVERGENCE_FACTOR = 100.0
# Fields that may change between the first start and a resume (a longer schedule, another data
# location, more steps); everything else in these sections must match the run's config.yaml.
RESUMABLE_FIELDS = {"model": {"weights"}, "data": {"data_dir"}}
CHECKED_SECTIONS = ("model", "data")
CHECKED_DATA_FIELDS = ("source", "image_size")


class TrainingDiverged(TrainingStopped, ValueError):
    """Training diverged (non-finite or exploding loss); the message names the last good state."""


class RunLocked(RuntimeError):
    """Another live process trains in this run directory."""


class RunLock:
    """Exclusive lock on a run directory; use as a context manager or acquire()/release()."""

    def __init__(self, model_dir: str):
        self.path = os.path.join(model_dir, LOCK_FILE)
        self._handle = None

    def acquire(self) -> None:
        handle = open(self.path, "a+", encoding="utf-8")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            holder = handle.read().strip() or "an unknown process"
            handle.close()
            raise RunLocked(
                f"{os.path.dirname(self.path)!r} is in use by another training job ({holder}); "
                "wait for it to finish, or train into another --model_dir") from None
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps(dict(pid=os.getpid(), host=socket.gethostname())))
        handle.flush()
        self._handle = handle

    def release(self) -> None:
        if self._handle is not None:
            fcntl.flock(self._handle.fileno(), fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _differences(run: dict, requested: dict) -> list[str]:
    found = []
    for section in CHECKED_SECTIONS:
        old, new = run.get(section, {}), requested.get(section, {})
        keys = sorted(set(old) | set(new))
        if section == "data":
            keys = [key for key in keys if key in CHECKED_DATA_FIELDS]
        for key in keys:
            if key in RESUMABLE_FIELDS.get(section, ()):
                continue
            if old.get(key) != new.get(key):
                found.append(f"{section}.{key}: run {old.get(key)!r}, requested {new.get(key)!r}")
    return found


def check_resume(model_dir: str, config: Config) -> None:
    """Refuse resuming ``model_dir`` with a different model or data (before writing anything)."""
    path = os.path.join(model_dir, CONFIG_FILE)
    if not os.path.exists(path):
        return
    try:
        previous = load_config([path])
    except (ValueError, FileNotFoundError) as error:
        raise ValueError(f"{model_dir!r} holds an unreadable {CONFIG_FILE} ({error}); it is not a "
                         "run this version can resume: train into a new --model_dir") from None
    differences = _differences(previous.to_dict(), config.to_dict())
    if differences:
        raise ValueError(
            f"{model_dir!r} holds a run of a different model or data, so it cannot be resumed "
            f"with this configuration: {'; '.join(differences)}. Nothing was changed. Rerun with "
            f"the run's own settings (its {CONFIG_FILE}: --config {path}) to resume, or pass a new "
            "--model_dir to start fresh")


def check_not_diverged(model_dir: str, config: Config) -> None:
    """Refuse rerunning a diverged run with the optimiser settings it diverged with."""
    path = os.path.join(model_dir, DIVERGED_FILE)
    if not os.path.exists(path):
        return
    with open(path, encoding="utf-8") as stream:
        record = json.load(stream)
    optimizer = dataclasses.asdict(config.optimizer)
    if record.get("optimizer") == json.loads(json.dumps(optimizer)):
        raise TrainingDiverged(
            f"{model_dir!r} diverged at step {record.get('step')} ({record.get('reason')}); "
            "rerunning with the same optimizer settings would diverge again. Lower "
            "optimizer.lr_per_256 (e.g. --set optimizer.lr_per_256=0.016) to resume from the "
            f"last good checkpoint {record.get('last_good_checkpoint')}, or train into a new "
            "--model_dir")
    logger.warning("%s diverged before; resuming from its last good checkpoint with new "
                   "optimizer settings", model_dir)
    with contextlib.suppress(FileNotFoundError):  # another worker removed it first
        os.remove(path)


def record_divergence(model_dir: str, config: Config, step: int, reason: str,
                      last_good: str | None) -> TrainingDiverged:
    """Write ``DIVERGED.json`` and return the error to raise."""
    atomic.write_json(os.path.join(model_dir, DIVERGED_FILE), dict(
        step=step, reason=reason, last_good_checkpoint=last_good,
        optimizer=dataclasses.asdict(config.optimizer)))
    return TrainingDiverged(
        f"{reason} at step {step}: training diverged and stopped. Nothing was promoted to best/ or export/; "
        f"the last good checkpoint is {last_good or 'none (no checkpoint was saved yet)'}. Lower "
        "the learning rate (optimizer.lr_per_256) or check the input data, then rerun to resume "
        "from it")


def loss_problem(loss: float, first_loss: float | None) -> str | None:
    """Why a training ``loss`` means divergence, or None."""
    if not math.isfinite(loss):
        return f"non-finite loss ({loss})"
    if first_loss is not None and loss > DIVERGENCE_FACTOR * max(first_loss, 1.0):
        return (f"training loss {loss:.4g} is over {DIVERGENCE_FACTOR:g}x its first value "
                f"{first_loss:.4g}")
    return None


def weights_problem(variables) -> str | None:
    """Names the first model variable holding NaN/inf, or None."""
    for variable in variables:
        if "float" in str(variable.dtype) and not bool(
                tf.reduce_all(tf.math.is_finite(tf.convert_to_tensor(variable)))):
            return f"variable {getattr(variable, 'path', variable.name)} holds NaN/inf"
    return None

"""Training-state checkpoints of a run: nothing half-written, nothing lost.

``tf.train.CheckpointManager`` writes the data files first and then atomically replaces the
``checkpoint`` index file, so a process killed mid-save leaves the previous checkpoint current. The
data-iterator state is written before the training state of the same step (layout:
``keras_effnet.run_dir``).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile

import tensorflow as tf

from keras_effnet import atomic
from keras_effnet.run_dir import BEST_DIR, DATA_DIR, METRICS_FILE

logger = logging.getLogger(__name__)


def check_writable(model_dir: str | None) -> None:
    """Create ``model_dir`` and prove a file can be written there, or raise a clear error."""
    if not model_dir:
        raise ValueError("model_dir is required (--model_dir DIR): checkpoints and metrics go there")
    try:
        os.makedirs(model_dir, exist_ok=True)
        handle, probe = tempfile.mkstemp(prefix=".write-test-", dir=model_dir)
        os.close(handle)
        os.remove(probe)
    except OSError as error:
        raise PermissionError(f"model_dir {model_dir!r} is not writable ({error.strerror}); "
                              "pass a directory you can write to with --model_dir") from None


def resolve_checkpoint(path: str) -> str:
    """A checkpoint prefix from a prefix or a directory (its latest); FileNotFoundError if none."""
    if os.path.isdir(path):
        latest = tf.train.latest_checkpoint(path)
        if latest is None:
            raise FileNotFoundError(f"no checkpoint in {path!r}: train into it first "
                                    "(keras-effnet-train --model_dir DIR)")
        return latest
    if not tf.io.gfile.exists(path + ".index"):
        raise FileNotFoundError(f"checkpoint {path!r} does not exist (no {path}.index)")
    return path


class RunCheckpoints:
    """Training-state, data-position and best checkpoints of one worker.

    Every worker of a multi-worker job must call ``save`` (the variables are synchronised with
    collectives), but only the chief writes into ``model_dir``; the others write to a scratch
    directory that is removed afterwards. Each worker keeps its own data-iterator state.
    """

    def __init__(self, model_dir: str, state: tf.train.Checkpoint,
                 data_state: tf.train.Checkpoint | None, keep: int, worker_index: int = 0,
                 is_chief: bool = True):
        self.model_dir = model_dir
        self.is_chief = is_chief
        self._state = state
        self._data_state = data_state
        state_dir = model_dir if is_chief else os.path.join(model_dir, ".scratch",
                                                             f"worker-{worker_index}")
        self._scratch = None if is_chief else state_dir
        self.manager = tf.train.CheckpointManager(state, state_dir, max_to_keep=keep)
        self.best_manager = tf.train.CheckpointManager(
            state, os.path.join(model_dir if is_chief else state_dir, BEST_DIR), max_to_keep=1)
        self.data_manager = None
        if data_state is not None:
            self.data_manager = tf.train.CheckpointManager(
                data_state, os.path.join(model_dir, DATA_DIR, f"worker-{worker_index}"),
                max_to_keep=keep + 1)

    def save(self, step: int) -> str:
        """Save data position, then training state, both numbered ``step``. Returns the prefix.

        Raises:
            OSError: the write failed (disk full, permissions); the partial ``ckpt-<step>_temp``
                files are removed and the previous checkpoint stays current.
        """
        try:
            if self.data_manager is not None:
                self.data_manager.save(checkpoint_number=step)
            path = self.manager.save(checkpoint_number=step)
        except (OSError, tf.errors.OpError) as error:
            self._remove_partial(step)
            latest = tf.train.latest_checkpoint(self.manager.directory)
            raise OSError(f"could not write checkpoint ckpt-{step} in {self.model_dir!r} "
                          f"({getattr(error, 'message', None) or error}); the partial files were "
                          f"removed and the last checkpoint is {latest or 'none'}. Free disk "
                          "space (or fix permissions), then rerun to resume") from None
        self._clean_scratch()
        logger.info("saved checkpoint %s", path)
        return path

    def save_best(self, step: int, metrics: dict) -> None:
        """Keep the training state of ``step`` in ``best/`` with its metrics."""
        self.best_manager.save(checkpoint_number=step)
        if self.is_chief:
            atomic.write_json(os.path.join(self.model_dir, BEST_DIR, METRICS_FILE),
                              dict(metrics, step=step))
        self._clean_scratch()

    def restore_latest(self) -> int | None:
        """Restore the newest training state (and its data position). Returns its step or None."""
        path = tf.train.latest_checkpoint(self.model_dir)
        if path is None:
            return None
        self._state.restore(path).expect_partial()
        step = int(path.rsplit("-", 1)[1])
        if self.data_manager is not None:
            data_path = os.path.join(self.data_manager.directory, f"ckpt-{step}")
            if tf.io.gfile.exists(data_path + ".index"):
                self._data_state.restore(data_path)
            else:
                logger.warning("no data-iterator state for step %d in %s: the input pipeline "
                               "restarts from a fresh shuffle", step, self.data_manager.directory)
        return step

    def _remove_partial(self, step: int) -> None:
        directories = [self.manager.directory]
        if self.data_manager is not None:
            directories.append(self.data_manager.directory)
        for directory in directories:
            for path in tf.io.gfile.glob(os.path.join(directory, f"ckpt-{step}_temp*")):
                if tf.io.gfile.isdir(path):
                    tf.io.gfile.rmtree(path)
                else:
                    tf.io.gfile.remove(path)

    def _clean_scratch(self) -> None:
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)

"""Checkpoints and artefacts of a run: nothing half-written, nothing lost.

Layout of a model_dir::

    ckpt-<step>.index/.data-*, checkpoint   training state: model, optimizer, EMA, step (last K)
    data_state/worker-<i>/ckpt-<step>.*     input-iterator position of worker i at the same step
    best/ckpt-<step>.*, best/metrics.json   the training state with the best eval top-1
    export/model.keras                      final model, EMA weights, softmax head (keras.saving)
    export/model.weights.h5                 the same weights only
    metrics.json                            final metrics
    train/, eval/                           TensorBoard summaries

``tf.train.CheckpointManager`` writes the data files first and then atomically replaces the
``checkpoint`` index file, so a process killed mid-save leaves the previous checkpoint current. The
data-iterator state is written before the training state of the same step. JSON and Keras files are
written to a temporary name and ``os.replace``-d.
"""

from __future__ import annotations

import os
import shutil
import tempfile

import tensorflow as tf

from keras_effnet import atomic

BEST_DIR = "best"
DATA_DIR = "data_state"
EXPORT_DIR = "export"


def write_json_atomic(path: str, payload: dict) -> None:
    """Write ``payload`` as JSON atomically (readers never see half a file)."""
    atomic.write_json(path, payload)


def save_keras_atomic(model, path: str) -> None:
    """``model.save`` (``.keras``) or ``model.save_weights`` (``.weights.h5``) atomically."""
    atomic.save_keras(model, path)


def check_writable(model_dir: str) -> None:
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


class RunCheckpoints:
    """Training-state, data-position and best checkpoints of one worker.

    Every worker of a multi-worker job must call ``save`` (the variables are synchronised with
    collectives), but only the chief writes into ``model_dir``; the others write to a scratch
    directory that is removed afterwards. Each worker keeps its own data-iterator state.
    """

    def __init__(self, model_dir: str, state: tf.train.Checkpoint, data_state: tf.train.Checkpoint | None,
                 keep: int, worker_index: int = 0, is_chief: bool = True):
        self.model_dir = model_dir
        self.is_chief = is_chief
        self._state = state
        self._data_state = data_state
        state_dir = model_dir if is_chief else os.path.join(model_dir, ".scratch", f"worker-{worker_index}")
        self._scratch = None if is_chief else state_dir
        self.manager = tf.train.CheckpointManager(state, state_dir, max_to_keep=keep)
        self.best_manager = tf.train.CheckpointManager(
            state, os.path.join(model_dir if is_chief else state_dir, BEST_DIR), max_to_keep=1)
        self.data_manager = None
        if data_state is not None:
            self.data_manager = tf.train.CheckpointManager(
                data_state, os.path.join(model_dir, DATA_DIR, f"worker-{worker_index}"),
                max_to_keep=keep + 1)

    @staticmethod
    def latest(model_dir: str) -> str | None:
        return tf.train.latest_checkpoint(model_dir)

    def save(self, step: int) -> str:
        """Save data position, then training state, both numbered ``step``. Returns the prefix."""
        if self.data_manager is not None:
            self.data_manager.save(checkpoint_number=step)
        path = self.manager.save(checkpoint_number=step)
        self._clean_scratch()
        return path

    def save_best(self, step: int, metrics: dict) -> None:
        self.best_manager.save(checkpoint_number=step)
        if self.is_chief:
            write_json_atomic(os.path.join(self.model_dir, BEST_DIR, "metrics.json"),
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
                tf.get_logger().warning(
                    "no data-iterator state for step %d in %s: the input pipeline restarts from "
                    "a fresh shuffle", step, self.data_manager.directory)
        return step

    def _clean_scratch(self) -> None:
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)

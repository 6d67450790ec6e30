"""Flags shared by the train and evaluate command lines, and their translation into a Config."""

from __future__ import annotations

import sys
from types import ModuleType

from absl import flags

from keras_effnet import logs
from keras_effnet.config import Config, demo_config, load_config

FLAGS = flags.FLAGS

# Exit status of a job stopped by SIGTERM after saving its state: rerun it to resume.
EXIT_PREEMPTED = 143

FLAG_KEYS = {
    "model_dir": "runtime.model_dir", "strategy": "runtime.strategy", "tpu": "runtime.tpu",
    "num_gpus": "runtime.num_gpus", "mixed_precision": "runtime.mixed_precision",
    "jit_compile": "runtime.jit_compile", "model": "model.name", "dataset": "data.source",
    "data_dir": "data.data_dir", "batch_size": "data.batch_size",
    "eval_batch_size": "data.eval_batch_size", "image_size": "data.image_size",
    "epochs": "schedule.epochs",
}


def define_job_flags() -> None:
    """Define the job flags of train and evaluate (called from their ``run()``, once)."""
    if "config" in FLAGS:  # both mains' run() in one process (tests)
        return
    flags.DEFINE_multi_string("config", [], "YAML config file; repeatable, later files win. "
                              "Without any, the embedded demo job (configs/demo.yaml).")
    flags.DEFINE_multi_string("set", [], "Override, e.g. --set optimizer.lr_per_256=0.02 "
                              "(repeatable; applied after all other flags).")
    flags.DEFINE_string("model_dir", None, "Run directory: checkpoints, summaries, exports.")
    flags.DEFINE_enum("strategy", None, ["default", "one_device", "mirrored",
                                         "multi_worker_mirrored", "tpu"], "tf.distribute strategy.")
    flags.DEFINE_string("tpu", None, "TPU name or grpc:// address ('local' for a TPU VM).")
    flags.DEFINE_integer("num_gpus", None, "GPUs for the mirrored strategy (default: all).")
    flags.DEFINE_enum("mixed_precision", None, ["float32", "mixed_float16", "mixed_bfloat16"],
                      "Keras dtype policy.")
    flags.DEFINE_bool("jit_compile", None, "XLA-compile the steps (GPU/TPU; slow on CPU).")
    flags.DEFINE_string("model", None, "Variant name, e.g. efficientnet-b0 (model.name).")
    flags.DEFINE_string("dataset", None, "Data source: tfds:<name>, folder:<path>, "
                        "tfrecord:<glob> or digits (data.source).")
    flags.DEFINE_string("data_dir", None, "TFDS data directory (data.data_dir).")
    flags.DEFINE_integer("batch_size", None, "GLOBAL training batch size (data.batch_size).")
    flags.DEFINE_integer("eval_batch_size", None, "GLOBAL evaluation batch size.")
    flags.DEFINE_integer("image_size", None, "Image side in pixels (data.image_size).")
    flags.DEFINE_float("epochs", None, "Training epochs (schedule.epochs).")


def show_in_help(*modules: ModuleType) -> None:
    """Make the flags defined in ``modules`` key flags of the running program, so ``--help``
    lists them whether it runs as ``tools/X.py``, a console script or ``python -m``
    (absl lists only the main module's key flags)."""
    for module in modules:
        for flag in FLAGS.get_key_flags_for_module(module):
            FLAGS.register_key_flag_for_module(sys.argv[0], flag)


def start_logging() -> None:
    """Quiet by default; ``-v 1`` shows keras_effnet progress, ``-v 2`` TensorFlow's too."""
    logs.configure(max(FLAGS.verbosity, 0))


def config_from_flags(base_files: list[str] | None = None) -> Config:
    """Config files (or the demo job), then the dedicated flags, then ``--set`` overrides."""
    files = list(base_files or []) + list(FLAGS.config)
    config = load_config(files) if files else demo_config()
    overrides = [f"{key}={getattr(FLAGS, name)}" for name, key in FLAG_KEYS.items()
                 if getattr(FLAGS, name) is not None]
    return load_config(overrides=overrides + list(FLAGS.set), base=config)

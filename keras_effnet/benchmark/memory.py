"""Peak memory of each Keras engine, and the cost of gradient checkpointing.

A process's peak RSS only ever grows, so each model's peak is measured in a fresh subprocess
(``sys.executable``, fork + exec) that imports TensorFlow, builds the model, runs inference at the
largest batch, then training steps; it reports RSS after the imports and the peak (``VmHWM``
of /proc/self/status) after each phase.

``compare_checkpointing`` sets a training step of the plain model beside the same step through
``keras_effnet.remat.checkpointed_forward``: images/s timed interleaved in this process (the
per-round ratio), the activations each keeps for the backward pass (``remat.backward_footprint``,
a graph fact), and each one's peak RSS in its own fresh process.
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import os
import pickle
import resource
import subprocess
import sys
from typing import Callable, Sequence

import keras
import tensorflow as tf

from keras_effnet import remat
from keras_effnet.applications import build_model
from keras_effnet.benchmark.engines import EngineSet, configure_frameworks, random_batch, variant_size
from keras_effnet.benchmark.timing import (TRAINABLE_ENGINES, BenchmarkConfig, interleave,
                                           ratio_median)
from keras_effnet.scaling import get_spec

logger = logging.getLogger(__name__)


def rss_mib() -> float:
    """This process's resident set size now (MiB)."""
    try:
        import psutil  # noqa: PLC0415

        return psutil.Process().memory_info().rss / 2**20
    except ImportError:
        with open("/proc/self/statm", encoding="utf-8") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mib() -> float:
    """This process's peak RSS (MiB).

    ``VmHWM`` belongs to the address space, so a spawned (fork + exec) child starts afresh;
    ``ru_maxrss`` would not do: Linux carries it over from the parent across execve.
    """
    try:
        with open("/proc/self/status", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def memory_probe(engine: str, config: BenchmarkConfig, steps: int = 3) -> dict:
    """Run in a fresh process: peak RSS of one Keras engine after inference, then training."""
    configure_frameworks(config.threads, config.precision)
    result = {"engine": engine, "rss_after_imports_mib": rss_mib()}
    size = variant_size(config.model, config.image_size)
    batch_size = max(config.batch_sizes)
    engines = EngineSet(config)
    images, labels = random_batch(batch_size, size, config.seed)
    step = engines.inference_step(engine, images)
    for _ in range(steps):
        step()
    result["peak_inference_mib"] = peak_rss_mib()
    result["peak_training_mib"] = None
    if config.train_batch_size and engine in TRAINABLE_ENGINES:
        images, labels = random_batch(config.train_batch_size, size, config.seed)
        step = engines.training_step(engine, images, labels)
        for _ in range(steps):
            step()
        result["peak_training_mib"] = peak_rss_mib()
    return result


def measure_memory(config: BenchmarkConfig, engines: Sequence[str] = ("effnet", "applications"),
                   timeout: float = 900.0) -> list[dict]:
    """Peak RSS of each Keras engine, each in its own fresh process (see module docstring)."""
    return _in_fresh_processes(memory_probe, engines, config, timeout)


# The probe process: its parent's sys.path, then probe_main reads its job from stdin.
PROBE_CODE = ("import sys; sys.path[:0] = {path!r}; "
              "from keras_effnet.benchmark.memory import probe_main; probe_main()")
RESULT_PREFIX = "keras-effnet-probe-result "


def _in_fresh_processes(probe: Callable[[str, BenchmarkConfig], dict], names: Sequence[str],
                        config: BenchmarkConfig, timeout: float) -> list[dict]:
    """``probe(name, config)`` for each name, each in a fresh Python process, one at a time.

    A plain subprocess, not ``multiprocessing`` spawn: spawn re-runs the parent's main script in
    the child, and the ``tools/*.py`` shims call their main unguarded, so through
    ``tools/benchmark.py`` every probe re-ran the whole benchmark and spawned a probe of its own.
    A probe that fails, dies (killed for memory, a crash) or outlasts ``timeout`` seconds gives
    an entry with an ``error``.
    """
    return [_run_probe(probe, name, config, timeout) for name in names]


def _run_probe(probe, name: str, config: BenchmarkConfig, timeout: float) -> dict:
    command = [sys.executable, "-c", PROBE_CODE.format(path=list(sys.path))]
    try:
        done = subprocess.run(command, input=pickle.dumps((probe, name, config)),
                              capture_output=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return {"engine": name, "error": f"no result within {timeout:.0f} s"}
    for line in reversed(done.stdout.decode(errors="replace").splitlines()):
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX):])
    last = done.stderr.decode(errors="replace").strip().splitlines()[-1:]
    return {"engine": name, "error": f"probe process exited with code {done.returncode} before "
                                      f"reporting{f' ({last[0]})' if last else ''}"}


def probe_main() -> None:
    """A probe process's entry: ``(probe, name, config)`` pickled on stdin, the result printed
    as one JSON line after ``RESULT_PREFIX``."""
    probe, name, config = pickle.load(sys.stdin.buffer)
    try:
        result = probe(name, config)
    except Exception as error:  # noqa: BLE001 - reported by the parent
        result = {"engine": name, "error": f"{type(error).__name__}: {error}"}
    print(RESULT_PREFIX + json.dumps(result), flush=True)


# ---------------------------------------------------------------------------------------------
# Gradient checkpointing (issue #15)

FORWARDS = ("plain", "checkpointed")


def checkpointing_step(forward_kind: str, config: BenchmarkConfig, model=None):
    """(model, a blocking training step, the forward it calls) for ``plain`` or
    ``checkpointed``: SGD with momentum on softmax cross-entropy of the logits, at
    ``config.train_batch_size`` (``model``: reuse one, else a fresh random-weight one). The
    step is traced here, so its graph is built before the first call."""
    if forward_kind not in FORWARDS:
        raise ValueError(f"forward_kind must be one of {FORWARDS}, got {forward_kind!r}")
    size = variant_size(config.model, config.image_size)
    if model is None:
        model = build_model(config.model, weights=None, input_shape=(size, size, 3),
                            classifier_activation=None)
    forward = (remat.checkpointed_forward(model, config.model)
               if forward_kind == "checkpointed" else model)
    optimizer = keras.optimizers.SGD(0.01, momentum=0.9)
    variables = model.trainable_variables
    optimizer.build(variables)

    @tf.function(jit_compile=config.jit_compile)
    def train(images, labels):
        with tf.GradientTape() as tape:
            logits = tf.cast(forward(images, training=True), tf.float32)
            loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(
                labels, logits, from_logits=True))
        optimizer.apply(tape.gradient(loss, variables), variables)
        return loss

    images, labels = random_batch(config.train_batch_size, size, config.seed)
    images, labels = tf.constant(images), tf.constant(labels)
    train.get_concrete_function(images, labels)

    def step():
        return float(train(images, labels))

    return model, step, forward


def checkpointing_probe(forward_kind: str, config: BenchmarkConfig, steps: int = 3) -> dict:
    """Run in a fresh process: peak RSS of training steps of the plain or checkpointed forward."""
    configure_frameworks(config.threads, config.precision)
    result = {"engine": forward_kind, "rss_after_imports_mib": rss_mib()}
    _, step, _ = checkpointing_step(forward_kind, config)
    result["peak_after_build_mib"] = peak_rss_mib()  # model, optimiser, traced step
    for _ in range(steps):
        step()
    result["peak_training_mib"] = peak_rss_mib()
    return result


@dataclasses.dataclass
class CheckpointingRow:
    """One forward of the comparison (``plain`` or ``checkpointed``)."""

    forward: str
    batch_size: int
    images_per_second: float
    ratio_median: float  # images/s over the plain step's, median of the rounds
    kept_for_backward_mib: float  # remat.backward_footprint
    peak_after_build_mib: float | None = None
    peak_training_mib: float | None = None
    error: str = ""


def compare_checkpointing(config: BenchmarkConfig, memory: bool = True,
                          log: Callable[[str], None] | None = None,
                          timeout: float = 900.0) -> list[CheckpointingRow]:
    """A training step with and without gradient checkpointing at ``config.train_batch_size``
    (see the module docstring); ``memory=False`` skips the fresh-process RSS probes. ``log``
    receives one progress line per phase (default: this module's logger at INFO)."""
    log = log or logger.info
    if not config.train_batch_size:
        raise ValueError("the gradient-checkpointing comparison needs a training batch size "
                         "(--train_batch_size > 0)")
    configure_frameworks(config.threads, config.precision)
    size = variant_size(config.model, config.image_size)
    shape = (config.train_batch_size, size, size, 3)
    model, steps, footprints = None, {}, {}
    for kind in FORWARDS:
        log(f"gradient checkpointing: tracing the {kind} step")
        model, steps[kind], forward = checkpointing_step(kind, config, model)
        footprints[kind] = remat.backward_footprint(forward, model.trainable_variables, shape)
    log("gradient checkpointing: timing")
    timed = interleave(steps, config.train_batch_size, "training", rounds=config.rounds,
                       warmup=config.warmup, min_round_seconds=config.min_round_seconds)
    rows = [CheckpointingRow(kind, config.train_batch_size, timed[kind].images_per_second,
                             ratio_median(timed[kind], timed["plain"]), footprints[kind].mib)
            for kind in FORWARDS]
    if memory:
        log("gradient checkpointing: peak RSS, one fresh process each")
        for row, probe in zip(rows, _in_fresh_processes(checkpointing_probe, FORWARDS, config,
                                                        timeout)):
            row.error = probe.get("error", "")
            row.peak_after_build_mib = probe.get("peak_after_build_mib")
            row.peak_training_mib = probe.get("peak_training_mib")
    return rows


def checkpointing_markdown(rows: Sequence[CheckpointingRow], config: BenchmarkConfig,
                           machine: dict[str, str] | None = None) -> str:
    """The comparison as a Markdown table with its notes (after the machine, when given)."""
    size = variant_size(config.model, config.image_size)
    out = io.StringIO()
    if machine:
        out.write("Machine: " + "; ".join(f"{k} {v}" for k, v in machine.items()) + "\n\n")
    out.write(f"Gradient checkpointing, {get_spec(config.model).name} {size}x{size}, "
              f"{config.precision}, "
              f"training batch {config.train_batch_size}:\n\n"
              "| forward | images/s | × plain (median of rounds) | kept for backward MiB "
              "| peak RSS built + traced MiB | peak RSS training MiB | training − built MiB |\n"
              "|---|---:|---:|---:|---:|---:|---:|\n")
    for row in rows:
        growth = (row.peak_training_mib - row.peak_after_build_mib
                  if row.peak_training_mib is not None and row.peak_after_build_mib is not None
                  else None)
        out.write(f"| {row.forward} | {row.images_per_second:.2f} | {row.ratio_median:.2f}× | "
                  f"{row.kept_for_backward_mib:.1f} | {_mib(row.peak_after_build_mib)} | "
                  f"{_mib(row.peak_training_mib)} | {_mib(growth)} |\n")
    notes = [f"{row.forward} memory: {row.error}" for row in rows if row.error]
    notes.append("kept for backward: forward tensors the backward pass reads "
                 "(keras_effnet.remat.backward_footprint, the traced graph)")
    if any(row.peak_training_mib is not None for row in rows):
        notes.append("peak RSS: VmHWM of a fresh process once the model, optimiser and traced "
                     "step exist, and after 3 steps")
    out.write("\n" + "\n".join(f"- {note}" for note in notes) + "\n")
    return out.getvalue()


def _mib(value: float | None) -> str:
    return "" if value is None else f"{value:.0f}"

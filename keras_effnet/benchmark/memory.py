"""Peak memory of each Keras engine, measured in a fresh process per model.

A process's peak RSS only ever grows, so each model's peak is measured in a fresh subprocess
(``multiprocessing`` spawn) that imports TensorFlow, builds the model, runs inference at the
largest batch, then training steps; it reports RSS after the imports and the peak (``VmHWM``
of /proc/self/status) after each phase.
"""

from __future__ import annotations

import os
import resource
import time
from typing import Sequence

from keras_effnet.benchmark.engines import EngineSet, configure_frameworks, random_batch, variant_size
from keras_effnet.benchmark.timing import TRAINABLE_ENGINES, BenchmarkConfig


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


def _probe_entry(queue, engine: str, config: BenchmarkConfig) -> None:
    try:
        queue.put(memory_probe(engine, config))
    except Exception as error:  # noqa: BLE001 - reported by the parent
        queue.put({"engine": engine, "error": f"{type(error).__name__}: {error}"})


def _result_or_exit(queue, process, engine: str, timeout: float) -> dict:
    """The probe's result; an error entry when the probe dies without one (killed for memory,
    a crash) instead of waiting ``timeout`` for a result that never comes."""
    import queue as queues  # noqa: PLC0415

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            return queue.get(timeout=2.0)
        except queues.Empty:
            if not process.is_alive():
                return {"engine": engine, "error": f"probe process exited with code "
                                                   f"{process.exitcode} before reporting"}
    return {"engine": engine, "error": f"no result within {timeout:.0f} s"}


def measure_memory(config: BenchmarkConfig, engines: Sequence[str] = ("effnet", "applications"),
                   timeout: float = 900.0) -> list[dict]:
    """Peak RSS of each Keras engine, each in its own spawned process (see module docstring)."""
    import multiprocessing  # noqa: PLC0415

    context = multiprocessing.get_context("spawn")
    results = []
    for engine in engines:
        queue = context.Queue()
        process = context.Process(target=_probe_entry, args=(queue, engine, config))
        process.start()
        try:
            results.append(_result_or_exit(queue, process, engine, timeout))
        finally:
            process.join(timeout=60)
            if process.is_alive():
                process.terminate()
    return results

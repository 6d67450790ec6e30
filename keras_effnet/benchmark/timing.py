"""Benchmark configuration and framework-independent timing: interleaved rounds, per-round ratios.

Each round runs every engine once (in order on even rounds, reversed on odd rounds, A B / B A),
so the slow drift of a shared machine cancels in the per-round ratio to the baseline.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import time
from typing import Callable

import numpy as np

# Engine name -> baseline engine name ("" for none).
ENGINES: dict[str, str] = {
    "effnet": "applications",
    "effnet-deploy": "applications",
    "applications": "",
    "effnet-tflite": "applications-tflite",
    "effnet-onnxruntime": "applications-tflite",
    "applications-tflite": "",
    "applications-onnxruntime": "applications-tflite",
    "effnet-tflite-float16": "applications-tflite",
    "effnet-tflite-int8": "applications-tflite",
    "effnet-onnxruntime-int8": "applications-tflite",
    "effnet-openvino": "applications-tflite",
    "effnet-openvino-bf16": "applications-tflite",
    "effnet-openvino-int8": "applications-tflite",
    "timm": "applications",
}
# Reduced-precision engines: their outputs differ from float32 (the int8 report measures how much).
REDUCED_PRECISION_ENGINES = ("effnet-tflite-float16", "effnet-tflite-int8",
                             "effnet-onnxruntime-int8", "effnet-openvino-bf16",
                             "effnet-openvino-int8")
DEFAULT_ENGINES = ("effnet", "applications", "effnet-deploy", "effnet-tflite",
                   "applications-tflite", "effnet-onnxruntime", "applications-onnxruntime",
                   "effnet-openvino", *REDUCED_PRECISION_ENGINES)
TRAINABLE_ENGINES = ("effnet", "applications", "timm")
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")


class EngineUnavailable(RuntimeError):
    """An engine cannot run here (missing package or exporter); the report says why."""


@dataclasses.dataclass(frozen=True)
class BenchmarkConfig:
    """What to measure. ``image_size=None`` means the variant's own resolution."""

    model: str = "efficientnet-b0"
    image_size: int | None = None
    batch_sizes: tuple[int, ...] = (1, 32)
    train_batch_size: int | None = 32  # None: no training measurement
    engines: tuple[str, ...] = DEFAULT_ENGINES
    rounds: int = 7
    warmup: int = 2
    min_round_seconds: float = 1.0
    jit_compile: bool = False
    precision: str = "float32"
    threads: int | None = None  # None: each framework's default
    memory: bool = True
    export_dir: str | None = None  # where exported engines are written (default: a temp dir)
    seed: int = 0

    def __post_init__(self):
        unknown = [e for e in self.engines if e not in ENGINES]
        if unknown:
            raise ValueError(f"unknown engines {unknown}; choose from {sorted(ENGINES)}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if not self.batch_sizes or any(b < 1 for b in self.batch_sizes):
            raise ValueError(f"batch_sizes must be positive integers, got {self.batch_sizes}")
        if self.rounds < 1 or self.warmup < 0:
            raise ValueError(f"need rounds >= 1 and warmup >= 0, got {self.rounds}, {self.warmup}")


@dataclasses.dataclass
class Measurement:
    """Timings of one engine on one task: per-round throughput and per-call latencies."""

    engine: str
    task: str  # "inference" or "training"
    batch_size: int
    round_images_per_second: list[float] = dataclasses.field(default_factory=list)
    call_seconds: list[float] = dataclasses.field(default_factory=list)
    # Process CPU seconds (all threads) per image, per round: unlike wall time, barely moved by
    # other jobs taking the cores of a shared machine.
    round_cpu_seconds_per_image: list[float] = dataclasses.field(default_factory=list)

    @property
    def images_per_second(self) -> float:
        return statistics.median(self.round_images_per_second)

    def latency_ms(self, quantile: float) -> float:
        return 1000.0 * float(np.quantile(self.call_seconds, quantile))


@dataclasses.dataclass
class Row:
    """One line of the report."""

    engine: str
    task: str
    batch_size: int
    images_per_second: float
    p50_ms: float
    p90_ms: float
    baseline: str = ""
    ratio_median: float | None = None
    rounds: int = 0


# ---------------------------------------------------------------------------------------------
# Timing (framework independent)


def interleave(steps: dict[str, Callable[[], object]], batch_size: int, task: str, *,
               rounds: int, warmup: int = 2, min_round_seconds: float = 1.0,
               clock: Callable[[], float] = time.perf_counter,
               cpu_clock: Callable[[], float] = time.process_time) -> dict[str, Measurement]:
    """Time ``steps`` (name -> one blocking call) interleaved round by round.

    Each step runs ``warmup`` times, then the calls per round are chosen per engine so a round
    lasts about ``min_round_seconds``; then ``rounds`` rounds run every engine once each, in
    order on even rounds and reversed on odd rounds. ``cpu_clock`` (the process's CPU time)
    gives each round's CPU seconds per image as well.
    """
    calls_per_round = {}
    for name, step in steps.items():
        for _ in range(warmup):
            step()
        start = clock()
        step()
        elapsed = max(clock() - start, 1e-9)
        calls_per_round[name] = max(1, math.ceil(min_round_seconds / elapsed))
    results = {name: Measurement(name, task, batch_size) for name in steps}
    names = list(steps)
    for round_index in range(rounds):
        for name in (names if round_index % 2 == 0 else names[::-1]):
            step, result = steps[name], results[name]
            round_start, cpu_start = clock(), cpu_clock()
            for _ in range(calls_per_round[name]):
                start = clock()
                step()
                result.call_seconds.append(clock() - start)
            round_seconds = max(clock() - round_start, 1e-12)
            images = calls_per_round[name] * batch_size
            result.round_images_per_second.append(images / round_seconds)
            result.round_cpu_seconds_per_image.append((cpu_clock() - cpu_start) / images)
    return results


def ratio_median(engine: Measurement, baseline: Measurement) -> float:
    """Median over rounds of ``engine`` images/s divided by ``baseline`` images/s."""
    ratios = [a / b for a, b in zip(engine.round_images_per_second,
                                    baseline.round_images_per_second)]
    return statistics.median(ratios)


def cpu_ratio_median(engine: Measurement, baseline: Measurement) -> float | None:
    """Median over rounds of ``baseline`` CPU seconds per image divided by ``engine``'s (> 1:
    ``engine`` needs less CPU per image); None without CPU timings."""
    ratios = [b / a for a, b in zip(engine.round_cpu_seconds_per_image,
                                    baseline.round_cpu_seconds_per_image) if a > 0]
    return statistics.median(ratios) if ratios else None


def rows_from(measurements: dict[str, Measurement]) -> list[Row]:
    """Report rows, each with its per-round ratio median against its baseline when present."""
    rows = []
    for name, result in measurements.items():
        baseline = ENGINES.get(name, "")
        ratio = (ratio_median(result, measurements[baseline])
                 if baseline in measurements else None)
        rows.append(Row(name, result.task, result.batch_size, result.images_per_second,
                        result.latency_ms(0.5), result.latency_ms(0.9),
                        baseline if ratio is not None else "", ratio,
                        len(result.round_images_per_second)))
    return rows

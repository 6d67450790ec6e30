"""Where a TensorFlow inference step spends its time: op timings from the TF profiler by layer role.

``profile_engines(config)`` builds the Keras engines (``effnet``, ``effnet-deploy``,
``applications``), runs each one's benchmark ``tf.function`` (``engines.inference_function``)
under ``tf.profiler`` and reads the ops TensorFlow actually ran (after grappler's rewrites:
fused convolutions, ``_MklSwish`` ...) with their durations. Each op is attributed to the
layer whose name scope it carries and to that layer's *role*, its name without the block prefix
(``block2a_expand_conv`` -> ``expand_conv``), so the 16 blocks of B0 add up by role.

On a shared machine an op's duration is stretched whenever another job takes its core, so each op
counts with its **minimum** over the profiled calls; the shares are of the sum of those minima
(ops on TensorFlow's two inter-op threads can overlap, so the sum can exceed the wall time of a
call). The speed of the engines relative to each other comes from ``timing.interleave``
(interleaved rounds, wall-clock and process-CPU ratios), not from the profile.
"""

from __future__ import annotations

import dataclasses
import glob
import logging
import re
import statistics
import tempfile
from typing import Callable

import tensorflow as tf
# The profiler writes an XSpace protocol buffer; TensorFlow ships its schema, the only reader of
# it without the TensorBoard profile plugin.
from tensorflow.tsl.profiler.protobuf import xplane_pb2

from keras_effnet.benchmark.engines import (KERAS_ENGINES, EngineSet, configure_frameworks,
                                            inference_function, random_batch)
from keras_effnet.benchmark.timing import (BenchmarkConfig, cpu_ratio_median, interleave,
                                           ratio_median)

# Trace events of executed ops are "<node name>:<op type>" on the executor's threads.
EXECUTOR_THREAD_PREFIX = "tf_Compute"
BLOCK_PREFIX = re.compile(r"^block\d+[a-z]_")
NAME_SCOPE_SUFFIX = re.compile(r"_\d+$")  # Keras makes each call's name scope unique: conv_1

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class OpTime:
    """One executed op: node name, op type, layer and role it belongs to, milliseconds per call
    (minimum over the profiled calls)."""

    node: str
    op_type: str
    layer: str
    role: str
    ms: float


@dataclasses.dataclass
class EngineProfile:
    """An engine's op times, and its interleaved speed against the first engine profiled."""

    engine: str
    ops: list[OpTime]
    wall_ms_per_call: float = 0.0
    # Median over interleaved rounds of this engine's images/s / the reference engine's, and of
    # the reference's CPU seconds per image / this engine's (> 1: faster than the reference).
    speed_wall: float | None = None
    speed_cpu: float | None = None

    @property
    def total_ms(self) -> float:
        return sum(op.ms for op in self.ops)

    def by(self, *keys: str) -> list[tuple[tuple[str, ...], float]]:
        """Milliseconds per group of ``keys`` (``role``, ``op_type``, ``layer``), largest first."""
        totals: dict[tuple[str, ...], float] = {}
        for op in self.ops:
            key = tuple(getattr(op, k) for k in keys)
            totals[key] = totals.get(key, 0.0) + op.ms
        return sorted(totals.items(), key=lambda item: -item[1])


def layer_of(node: str, layer_names: set[str]) -> str:
    """The layer whose name scope ``node`` is in (``efficientnetb0_1/stem_conv_1/BiasAdd`` ->
    ``stem_conv``), or ``(graph)`` for ops outside every layer."""
    for part in node.split("/"):
        for name in (part, NAME_SCOPE_SUFFIX.sub("", part)):
            if name in layer_names:
                return name
    return "(graph)"


def role_of(layer: str) -> str:
    """A layer's role: its name without the ``block<stage><letter>_`` prefix."""
    return BLOCK_PREFIX.sub("", layer)


def executed_ops(xspace_path: str) -> list[tuple[str, str, float]]:
    """``(node, op type, milliseconds)`` of every op run on the executor's threads in a trace."""
    space = xplane_pb2.XSpace()
    with open(xspace_path, "rb") as stream:
        space.ParseFromString(stream.read())
    ops = []
    for plane in space.planes:
        for line in plane.lines:
            if not line.name.startswith(EXECUTOR_THREAD_PREFIX):
                continue
            for event in line.events:
                name = plane.event_metadata[event.metadata_id].name
                if ":" not in name or "::" in name:  # executor bookkeeping, not an op
                    continue
                node, _, op_type = name.rpartition(":")
                ops.append((node, op_type, event.duration_ps / 1e9))
    return ops


def trace_op_times(forward: Callable, images: tf.Tensor, layer_names: set[str],
                   calls: int = 3) -> list[OpTime]:
    """Profile ``calls`` calls of ``forward(images)`` one by one (after a warm-up call); each op
    with its minimum duration over the calls. Variable reads and identities are left out."""
    forward(images)
    durations: dict[tuple[str, str], list[float]] = {}
    for _ in range(calls):
        with tempfile.TemporaryDirectory(prefix="effnet_profile_") as logdir:
            tf.profiler.experimental.start(logdir)
            try:
                tf.nest.map_structure(lambda t: t.numpy(), forward(images))
            finally:
                tf.profiler.experimental.stop()
            paths = glob.glob(f"{logdir}/**/*.xplane.pb", recursive=True)
            if not paths:
                raise RuntimeError(f"the TensorFlow profiler wrote no trace under {logdir}")
            for node, op_type, ms in executed_ops(paths[0]):
                durations.setdefault((node, op_type), []).append(ms)
    ops = []
    for (node, op_type), values in durations.items():
        if op_type in ("ReadVariableOp", "Identity", "NoOp", "_Retval", "_Arg"):
            continue
        layer = layer_of(node, layer_names)
        ops.append(OpTime(node, op_type, layer, role_of(layer), min(values)))
    return ops


def profile_engines(config: BenchmarkConfig, batch_size: int = 32, calls: int = 3,
                    log: Callable[[str], None] | None = None) -> list[EngineProfile]:
    """Profile each Keras engine of ``config`` at ``batch_size``, then time them interleaved
    (``config.rounds`` rounds) for their speed relative to the first engine. ``log`` receives
    one progress line per phase (default: this module's logger at INFO).

    Raises:
        ValueError: an engine that is not one of ``KERAS_ENGINES``.
    """
    unknown = [engine for engine in config.engines if engine not in KERAS_ENGINES]
    if unknown:
        raise ValueError(f"the TensorFlow profile covers {KERAS_ENGINES}, not {unknown}")
    log = log or logger.info
    configure_frameworks(config.threads, config.precision)
    engine_set = EngineSet(config)
    images, _ = random_batch(batch_size, engine_set.image_size, config.seed)
    tensor = tf.constant(images)
    profiles, forwards = [], {}
    for engine in config.engines:
        log(f"{engine}: building and profiling {calls} calls at batch {batch_size}")
        model = engine_set.keras_model(engine)
        forwards[engine] = inference_function(model, config.jit_compile)
        names = {layer.name for layer in model.layers}
        profiles.append(EngineProfile(engine, trace_op_times(forwards[engine], tensor, names,
                                                             calls)))
    log(f"timing {list(forwards)} in {config.rounds} interleaved rounds")
    steps = {engine: (lambda f=forward: f(tensor).numpy()) for engine, forward in forwards.items()}
    timed = interleave(steps, batch_size, "inference", rounds=config.rounds, warmup=config.warmup,
                       min_round_seconds=config.min_round_seconds)
    reference = timed[config.engines[0]]
    for profile in profiles:
        measured = timed[profile.engine]
        profile.wall_ms_per_call = 1000.0 * statistics.median(measured.call_seconds)
        profile.speed_wall = ratio_median(measured, reference)
        profile.speed_cpu = cpu_ratio_median(measured, reference)
    return profiles


def to_markdown(profiles: list[EngineProfile], top: int = 15) -> str:
    """A speed table, then each engine's largest (role, op type) groups and its op types."""
    lines = ["| engine | wall ms per call (median) | speed vs "
             f"{profiles[0].engine}, wall | speed, CPU time | sum of op minima ms |",
             "|---|---:|---:|---:|---:|"]
    for p in profiles:
        cpu = "" if p.speed_cpu is None else f"{p.speed_cpu:.2f}x"
        lines.append(f"| {p.engine} | {p.wall_ms_per_call:.1f} | {p.speed_wall:.2f}x | {cpu} | "
                     f"{p.total_ms:.1f} |")
    for p in profiles:
        total = p.total_ms or 1.0
        lines += ["", f"{p.engine}: ops by layer role (ms per call, share of the op-time sum)", "",
                  "| role | op type | ms | share |", "|---|---|---:|---:|"]
        for (role, op_type), ms in p.by("role", "op_type")[:top]:
            lines.append(f"| {role} | {op_type} | {ms:.1f} | {100 * ms / total:.1f}% |")
        kinds = ", ".join(f"{op_type} {100 * ms / total:.0f}%" for (op_type,), ms in p.by("op_type")
                          if ms / total >= 0.005)
        lines += ["", f"op types: {kinds}"]
    return "\n".join(lines) + "\n"

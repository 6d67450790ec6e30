"""Side-by-side speed and memory measurement of keras-effnet against its peers.

Every engine is timed in ONE process, interleaved: after a warm-up, each round runs every
engine once (the order reversed on odd rounds, A B / B A, so slow drift of a shared machine
cancels), and each engine's ratio to its baseline is taken per round; the report gives the
median of those per-round ratios, which stays meaningful when the machine's speed moves
10-30% between runs (REFERENCE.md §9).

Engines (``ENGINES``):

| name | what runs | baseline |
|---|---|---|
| ``effnet`` | our Keras model through ``tf.function`` | ``applications`` |
| ``effnet-deploy`` | ``keras_effnet.deploy.deploy(model)`` through ``tf.function`` | ``applications`` |
| ``applications`` | ``keras.applications.EfficientNetB*`` through ``tf.function`` | |
| ``effnet-tflite`` | deploy transform, ``export.export_tflite``, TFLite interpreter (XNNPACK) | ``applications-tflite`` |
| ``effnet-onnxruntime`` | deploy transform, ``export.export_onnx``, onnxruntime CPU | ``applications-tflite`` |
| ``applications-tflite`` | keras.applications through the same exporter and interpreter | |
| ``applications-onnxruntime`` | keras.applications through the same exporter and onnxruntime | ``applications-tflite`` |
| ``timm`` | ``timm`` efficientnet_b0 in PyTorch, channels_last (when timm imports) | ``applications`` |

Training steps (``model.train_on_batch`` with SGD, i.e. Keras' compiled ``tf.function`` step)
run for the Keras engines ``effnet`` and ``applications`` (and ``timm``).

Peak memory: a process's peak RSS only ever grows, so each Keras model's peak is measured in a
fresh subprocess (``multiprocessing`` spawn) that imports TensorFlow, builds the model, runs
inference at the largest batch, then training steps; it reports RSS after the imports and the
peak (``VmHWM`` of /proc/self/status) after each phase.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
import os
import platform
import resource
import statistics
import tempfile
import time
from typing import Callable, Iterable, Sequence

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
    "timm": "applications",
}
DEFAULT_ENGINES = ("effnet", "applications", "effnet-deploy", "effnet-tflite",
                   "applications-tflite", "effnet-onnxruntime", "applications-onnxruntime")
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
               clock: Callable[[], float] = time.perf_counter) -> dict[str, Measurement]:
    """Time ``steps`` (name -> one blocking call) interleaved round by round.

    Each step runs ``warmup`` times, then the calls per round are chosen per engine so a round
    lasts about ``min_round_seconds``; then ``rounds`` rounds run every engine once each, in
    order on even rounds and reversed on odd rounds.
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
            round_start = clock()
            for _ in range(calls_per_round[name]):
                start = clock()
                step()
                result.call_seconds.append(clock() - start)
            round_seconds = max(clock() - round_start, 1e-12)
            result.round_images_per_second.append(
                calls_per_round[name] * batch_size / round_seconds)
    return results


def ratio_median(engine: Measurement, baseline: Measurement) -> float:
    """Median over rounds of ``engine`` images/s divided by ``baseline`` images/s."""
    ratios = [a / b for a, b in zip(engine.round_images_per_second,
                                    baseline.round_images_per_second)]
    return statistics.median(ratios)


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


# ---------------------------------------------------------------------------------------------
# Report


def machine_description(threads: int | None = None) -> dict[str, str]:
    """The machine and software a report was measured on."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    info = {"cpu": cpu, "cores": str(os.cpu_count()),
            "load average (1, 5, 15 min)": " ".join(f"{v:.2f}" for v in os.getloadavg()),
            "threads": "framework default" if threads is None else str(threads),
            "python": platform.python_version()}
    for module in ("tensorflow", "keras", "onnxruntime", "torch"):
        try:
            info[module] = __import__(module).__version__
        except Exception:  # noqa: BLE001 - optional packages
            continue
    return info


def to_markdown(rows: Sequence[Row], machine: dict[str, str] | None = None,
                memory: Sequence[dict] = (), notes: Iterable[str] = ()) -> str:
    """The report as Markdown: machine, speed table, memory table, notes."""
    out = io.StringIO()
    if machine:
        out.write("Machine: " + "; ".join(f"{k} {v}" for k, v in machine.items()) + "\n\n")
    out.write("| engine | task | batch | images/s | p50 ms | p90 ms "
              "| × baseline (median of rounds) | baseline |\n"
              "|---|---|---:|---:|---:|---:|---:|---|\n")
    for row in rows:
        ratio = "" if row.ratio_median is None else f"{row.ratio_median:.2f}×"
        out.write(f"| {row.engine} | {row.task} | {row.batch_size} | "
                  f"{row.images_per_second:.1f} | {row.p50_ms:.1f} | {row.p90_ms:.1f} | "
                  f"{ratio} | {row.baseline} |\n")
    if memory:
        out.write("\n| model | RSS after imports MiB | peak RSS inference MiB | "
                  "peak RSS training MiB |\n|---|---:|---:|---:|\n")
        for entry in memory:
            out.write(f"| {entry['engine']} | {entry['rss_after_imports_mib']:.0f} | "
                      f"{entry['peak_inference_mib']:.0f} | "
                      f"{_format_optional(entry.get('peak_training_mib'))} |\n")
    notes = list(notes)
    if notes:
        out.write("\n" + "\n".join(f"- {note}" for note in notes) + "\n")
    return out.getvalue()


def _format_optional(value) -> str:
    return "" if value is None else f"{value:.0f}"


def to_csv(rows: Sequence[Row], memory: Sequence[dict] = ()) -> str:
    """The report as CSV: one line per row; memory entries as task ``peak_rss_*``."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["engine", "task", "batch_size", "images_per_second", "p50_ms", "p90_ms",
                     "baseline", "ratio_median", "rounds"])
    for row in rows:
        writer.writerow([row.engine, row.task, row.batch_size, f"{row.images_per_second:.3f}",
                         f"{row.p50_ms:.3f}", f"{row.p90_ms:.3f}", row.baseline,
                         "" if row.ratio_median is None else f"{row.ratio_median:.4f}",
                         row.rounds])
    for entry in memory:
        for key in ("rss_after_imports_mib", "peak_inference_mib", "peak_training_mib"):
            if entry.get(key) is not None:
                writer.writerow([entry["engine"], key, "", f"{entry[key]:.1f}", "", "", "", "",
                                 ""])
    return out.getvalue()


# ---------------------------------------------------------------------------------------------
# Engines


def configure_frameworks(threads: int | None, precision: str) -> None:
    """Thread counts and the Keras dtype policy; call before any model is built."""
    import keras  # noqa: PLC0415

    if threads is not None:
        import tensorflow as tf  # noqa: PLC0415

        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(threads)
        except RuntimeError:  # already initialised: keep what runs
            pass
    keras.config.set_dtype_policy(precision)


def variant_size(model: str, image_size: int | None) -> int:
    from keras_effnet.scaling import get_spec  # noqa: PLC0415

    return image_size or get_spec(model).resolution


def build_keras(engine: str, model: str, image_size: int):
    """A Keras model for ``effnet`` / ``applications`` (random weights, 1000 classes)."""
    import keras  # noqa: PLC0415

    from keras_effnet.model import build_model  # noqa: PLC0415
    from keras_effnet.scaling import canonical_name  # noqa: PLC0415

    shape = (image_size, image_size, 3)
    if engine.startswith("effnet"):
        return build_model(model, weights=None, input_shape=shape)
    name = canonical_name(model)
    suffix = name.replace("efficientnet-", "")
    if not (len(suffix) == 2 and suffix[0] == "b" and suffix[1] in "01234567"):
        raise EngineUnavailable(f"keras.applications has no {name}")
    constructor = getattr(keras.applications, f"EfficientNetB{suffix[1]}")
    return constructor(weights=None, input_shape=shape)


def _inference_step(model, images, jit_compile: bool) -> Callable[[], object]:
    import tensorflow as tf  # noqa: PLC0415

    forward = tf.function(lambda x: model(x, training=False), jit_compile=jit_compile)
    tensor = tf.constant(images)

    def step():
        return forward(tensor).numpy()

    return step


def _training_step(model, images, labels, jit_compile: bool) -> Callable[[], object]:
    import keras  # noqa: PLC0415

    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
                  loss=keras.losses.SparseCategoricalCrossentropy(), jit_compile=jit_compile)

    def step():
        return model.train_on_batch(images, labels)

    return step


def _export(kind: str, model, path: str) -> str:
    """Export through ``keras_effnet.export`` (the one exporter); ``kind`` tflite or onnx."""
    try:
        from keras_effnet import export  # noqa: PLC0415
    except ImportError as error:
        raise EngineUnavailable(f"keras_effnet.export is not available ({error})") from error
    if kind == "tflite":
        export.export_tflite(model, path, quantization="float32", overwrite=True)
    else:
        export.export_onnx(model, path, opset=17, overwrite=True)
    return path


def _tflite_step(path: str, images: np.ndarray, threads: int | None) -> Callable[[], object]:
    import tensorflow as tf  # noqa: PLC0415

    # XNNPACK is TFLite's default CPU delegate for float models.
    interpreter = tf.lite.Interpreter(model_path=path, num_threads=threads or os.cpu_count())
    input_index = interpreter.get_input_details()[0]["index"]
    output_index = interpreter.get_output_details()[0]["index"]
    interpreter.resize_tensor_input(input_index, list(images.shape))
    interpreter.allocate_tensors()

    def step():
        interpreter.set_tensor(input_index, images)
        interpreter.invoke()
        return interpreter.get_tensor(output_index)

    return step


def _onnxruntime_step(path: str, images: np.ndarray,
                      threads: int | None) -> Callable[[], object]:
    try:
        import onnxruntime  # noqa: PLC0415
    except ImportError as error:
        raise EngineUnavailable(f"onnxruntime is not installed ({error})") from error
    options = onnxruntime.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name

    def step():
        return session.run(None, {input_name: images})

    return step


def _timm_model(image_size: int, threads: int | None):
    try:
        import timm  # noqa: PLC0415
        import torch  # noqa: PLC0415
    except ImportError as error:  # timm needs torchvision (REFERENCE.md §9)
        raise EngineUnavailable(f"timm does not import here ({error})") from error
    if threads:
        torch.set_num_threads(threads)
    model = timm.create_model("efficientnet_b0", pretrained=False, num_classes=1000)
    return model.to(memory_format=torch.channels_last), torch


def _timm_inference_step(bundle, images: np.ndarray) -> Callable[[], object]:
    model, torch = bundle
    model.eval()
    tensor = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(
        memory_format=torch.channels_last)

    def step():
        with torch.inference_mode():
            return model(tensor)

    return step


def _timm_training_step(bundle, images: np.ndarray, labels: np.ndarray) -> Callable[[], object]:
    model, torch = bundle
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    tensor = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(
        memory_format=torch.channels_last)
    target = torch.from_numpy(labels.astype(np.int64))

    def step():
        model.train()
        optimizer.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(model(tensor), target)
        loss.backward()
        optimizer.step()
        return loss.item()

    return step


class EngineSet:
    """Builds each engine once and hands out blocking step functions per batch size."""

    def __init__(self, config: BenchmarkConfig):
        self.config = config
        self.image_size = variant_size(config.model, config.image_size)
        self.models: dict[str, object] = {}
        self.exports: dict[str, str] = {}
        self.unavailable: dict[str, str] = {}
        self._tempdir = None

    def _export_dir(self) -> str:
        if self.config.export_dir:
            os.makedirs(self.config.export_dir, exist_ok=True)
            return self.config.export_dir
        if self._tempdir is None:
            self._tempdir = tempfile.TemporaryDirectory(prefix="effnet_bench_")
        return self._tempdir.name

    def _keras(self, engine: str):
        """Keras model for effnet / effnet-deploy / applications (cached)."""
        if engine not in self.models:
            if engine == "effnet-deploy":
                from keras_effnet.deploy import deploy  # noqa: PLC0415

                self.models[engine] = deploy(self._keras("effnet"))
            else:
                self.models[engine] = build_keras(engine, self.config.model, self.image_size)
        return self.models[engine]

    def _exported(self, engine: str) -> str:
        if engine not in self.exports:
            source, kind = engine.rsplit("-", 1)
            kind = "tflite" if kind == "tflite" else "onnx"
            # Our exported engines start from the deploy transform.
            model = self._keras("effnet-deploy" if source == "effnet" else "applications")
            path = os.path.join(self._export_dir(),
                                f"{source}_{self.config.model}_{self.image_size}.{kind}")
            self.exports[engine] = _export(kind, model, path)
        return self.exports[engine]

    def inference_step(self, engine: str, images: np.ndarray) -> Callable[[], object]:
        if engine in ("effnet", "effnet-deploy", "applications"):
            return _inference_step(self._keras(engine), images, self.config.jit_compile)
        if engine.endswith("-tflite"):
            return _tflite_step(self._exported(engine), images, self.config.threads)
        if engine.endswith("-onnxruntime"):
            return _onnxruntime_step(self._exported(engine), images, self.config.threads)
        if engine == "timm":
            if "timm" not in self.models:
                self.models["timm"] = _timm_model(self.image_size, self.config.threads)
            return _timm_inference_step(self.models["timm"], images)
        raise ValueError(f"unknown engine {engine!r}")

    def training_step(self, engine: str, images: np.ndarray,
                      labels: np.ndarray) -> Callable[[], object]:
        if engine == "timm":
            if "timm" not in self.models:
                self.models["timm"] = _timm_model(self.image_size, self.config.threads)
            return _timm_training_step(self.models["timm"], images, labels)
        return _training_step(self._keras(engine), images, labels, self.config.jit_compile)


def _steps(make: Callable[[str], Callable[[], object]], engines: Iterable[str],
           unavailable: dict[str, str]) -> dict[str, Callable[[], object]]:
    steps = {}
    for engine in engines:
        if engine in unavailable:
            continue
        try:
            steps[engine] = make(engine)
        except EngineUnavailable as error:
            unavailable[engine] = str(error)
    return steps


def random_batch(batch_size: int, image_size: int, seed: int = 0):
    """Float images in [0, 255] [batch, size, size, 3] and int32 labels [batch]."""
    rng = np.random.default_rng(seed)
    images = rng.uniform(0, 255, (batch_size, image_size, image_size, 3)).astype(np.float32)
    return images, rng.integers(0, 1000, batch_size).astype(np.int32)


def run_benchmark(config: BenchmarkConfig,
                  log: Callable[[str], None] = print) -> tuple[list[Row], dict[str, str]]:
    """Measure every engine of ``config``; returns (rows, unavailable engine -> reason)."""
    configure_frameworks(config.threads, config.precision)
    engines = EngineSet(config)
    size = engines.image_size
    rows: list[Row] = []
    for batch_size in config.batch_sizes:
        images, _ = random_batch(batch_size, size, config.seed)
        log(f"inference, batch {batch_size}, {size}x{size}: preparing")
        steps = _steps(lambda e: engines.inference_step(e, images), config.engines,
                       engines.unavailable)
        log(f"inference, batch {batch_size}: timing {list(steps)}")
        rows += rows_from(interleave(steps, batch_size, "inference", rounds=config.rounds,
                                     warmup=config.warmup,
                                     min_round_seconds=config.min_round_seconds))
    if config.train_batch_size:
        images, labels = random_batch(config.train_batch_size, size, config.seed)
        trainable = [e for e in config.engines if e in TRAINABLE_ENGINES]
        log(f"training, batch {config.train_batch_size}: preparing {trainable}")
        steps = _steps(lambda e: engines.training_step(e, images, labels), trainable,
                       engines.unavailable)
        log(f"training, batch {config.train_batch_size}: timing {list(steps)}")
        rows += rows_from(interleave(steps, config.train_batch_size, "training",
                                     rounds=config.rounds, warmup=config.warmup,
                                     min_round_seconds=config.min_round_seconds))
    return rows, engines.unavailable


# ---------------------------------------------------------------------------------------------
# Peak memory (one fresh process per model)


def _rss_mib() -> float:
    try:
        import psutil  # noqa: PLC0415

        return psutil.Process().memory_info().rss / 2**20
    except ImportError:
        with open("/proc/self/statm", encoding="utf-8") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_rss_mib() -> float:
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
    import tensorflow  # noqa: F401, PLC0415

    configure_frameworks(config.threads, config.precision)
    result = {"engine": engine, "rss_after_imports_mib": _rss_mib()}
    size = variant_size(config.model, config.image_size)
    batch_size = max(config.batch_sizes)
    engines = EngineSet(config)
    images, labels = random_batch(batch_size, size, config.seed)
    step = engines.inference_step(engine, images)
    for _ in range(steps):
        step()
    result["peak_inference_mib"] = _peak_rss_mib()
    result["peak_training_mib"] = None
    if config.train_batch_size and engine in TRAINABLE_ENGINES:
        images, labels = random_batch(config.train_batch_size, size, config.seed)
        step = engines.training_step(engine, images, labels)
        for _ in range(steps):
            step()
        result["peak_training_mib"] = _peak_rss_mib()
    return result


def _probe_entry(queue, engine: str, config: BenchmarkConfig) -> None:
    try:
        queue.put(memory_probe(engine, config))
    except Exception as error:  # noqa: BLE001 - reported by the parent
        queue.put({"engine": engine, "error": f"{type(error).__name__}: {error}"})


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
            results.append(queue.get(timeout=timeout))
        finally:
            process.join(timeout=60)
            if process.is_alive():
                process.terminate()
    return results

"""Side-by-side speed and memory measurement of keras-effnet against its peers.

Modules: ``timing`` (configuration, interleaved rounds, ratios), ``engines`` (what runs),
``memory`` (peak RSS in fresh processes), ``report`` (Markdown / CSV).

Every engine is timed in ONE process, interleaved: after a warm-up, each round runs every
engine once (the order reversed on odd rounds, A B / B A, so slow drift of a shared machine
cancels), and each engine's ratio to its baseline is taken per round; the report gives the
median of those per-round ratios, which stays meaningful when the machine's speed moves
10-30% between runs (measured on the shared 2-core CI machines).

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
| ``effnet-tflite-float16`` / ``-int8`` | deploy transform, TFLite float16 weights / full-integer int8 (XNNPACK) | ``applications-tflite`` |
| ``effnet-onnxruntime-int8`` | the ONNX file quantised statically (QDQ, per-channel) by ``onnxruntime.quantization`` | ``applications-tflite`` |
| ``effnet-openvino`` / ``-bf16`` / ``-int8`` | deploy transform, ``export.export_openvino`` (float32 IR; bf16 inference precision; NNCF int8), OpenVINO CPU | ``applications-tflite`` |
| ``timm`` | ``timm`` efficientnet_b0 in PyTorch, channels_last (when timm imports) | ``applications`` |

The reduced-precision engines (``REDUCED_PRECISION_ENGINES``) are in the default set when their
packages are installed (a missing one is reported as not measured); int8 engines calibrate on
scikit-image's photographs. Their accuracy on real photos with the real Lite0 weights is the
companion report ``keras-effnet-report-int8`` (``keras_effnet.cli.report_int8``).

Training steps (``model.train_on_batch`` with SGD, i.e. Keras' compiled ``tf.function`` step)
run for the Keras engines ``effnet`` and ``applications`` (and ``timm``).

Peak memory: a process's peak RSS only ever grows, so each Keras model's peak is measured in a
fresh subprocess (``multiprocessing`` spawn) that imports TensorFlow, builds the model, runs
inference at the largest batch, then training steps; it reports RSS after the imports and the
peak (``VmHWM`` of /proc/self/status) after each phase.
"""

from keras_effnet.benchmark.engines import (EngineSet, build_keras, collect_steps, configure_frameworks,
                                            random_batch, run_benchmark, variant_size)
from keras_effnet.benchmark.memory import measure_memory, memory_probe, peak_rss_mib, rss_mib
from keras_effnet.benchmark.report import machine_description, to_csv, to_markdown
from keras_effnet.benchmark.timing import (DEFAULT_ENGINES, ENGINES, PRECISIONS, REDUCED_PRECISION_ENGINES, TRAINABLE_ENGINES,
                                           BenchmarkConfig, EngineUnavailable, Measurement, Row,
                                           interleave, ratio_median, rows_from)

__all__ = [
    "DEFAULT_ENGINES", "ENGINES", "PRECISIONS", "REDUCED_PRECISION_ENGINES", "TRAINABLE_ENGINES", "BenchmarkConfig", "EngineSet",
    "EngineUnavailable", "Measurement", "Row", "build_keras", "collect_steps", "configure_frameworks",
    "interleave", "machine_description", "measure_memory", "memory_probe", "peak_rss_mib",
    "random_batch", "ratio_median", "rows_from", "rss_mib", "run_benchmark", "to_csv", "to_markdown",
    "variant_size",
]

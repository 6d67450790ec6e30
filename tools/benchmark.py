"""Side-by-side benchmark: keras-effnet vs keras.applications (and exported engines).

    python tools/benchmark.py --model efficientnet-b0
    python tools/benchmark.py --model b0 --image_size 128 --batch_sizes 1,8 --train_batch_size 8 \
        --rounds 3 --min_round_seconds 0.3 --nomemory

Prints a Markdown table (images/s, p50/p90 latency, per-round ratio medians against the
baseline) and writes it and a CSV when asked. All logic is in ``keras_effnet.benchmark``.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402

from keras_effnet import benchmark  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("model", "efficientnet-b0", "Variant name (efficientnet-b0, b3, lite0 ...).")
flags.DEFINE_integer("image_size", None, "Input size (default: the variant's resolution).")
flags.DEFINE_list("batch_sizes", ["1", "32"], "Inference batch sizes.")
flags.DEFINE_integer("train_batch_size", 32, "Training-step batch size; 0 skips training.")
flags.DEFINE_list("engines", list(benchmark.DEFAULT_ENGINES),
                  f"Engines to compare, from {sorted(benchmark.ENGINES)}.")
flags.DEFINE_integer("rounds", 7, "Interleaved timing rounds after warm-up.")
flags.DEFINE_integer("warmup", 2, "Warm-up calls per engine.")
flags.DEFINE_float("min_round_seconds", 1.0, "Each engine's share of a round lasts about this.")
flags.DEFINE_boolean("jit_compile", False, "XLA-compile the Keras steps (5-10x slower on CPU).")
flags.DEFINE_enum("precision", "float32", list(benchmark.PRECISIONS), "Keras dtype policy.")
flags.DEFINE_integer("threads", None, "Intra-op threads for every framework (default: theirs).")
flags.DEFINE_boolean("memory", True, "Measure peak RSS of each Keras model in a subprocess.")
flags.DEFINE_string("export_dir", None, "Keep the exported .tflite/.onnx files here.")
flags.DEFINE_string("markdown_out", None, "Also write the Markdown report to this file.")
flags.DEFINE_string("csv_out", None, "Also write the CSV report to this file.")


def main(argv):
    del argv
    config = benchmark.BenchmarkConfig(
        model=FLAGS.model, image_size=FLAGS.image_size,
        batch_sizes=tuple(int(b) for b in FLAGS.batch_sizes),
        train_batch_size=FLAGS.train_batch_size or None, engines=tuple(FLAGS.engines),
        rounds=FLAGS.rounds, warmup=FLAGS.warmup, min_round_seconds=FLAGS.min_round_seconds,
        jit_compile=FLAGS.jit_compile, precision=FLAGS.precision, threads=FLAGS.threads,
        memory=FLAGS.memory, export_dir=FLAGS.export_dir)
    load_before = benchmark.machine_description(config.threads)["load average (1, 5, 15 min)"]
    rows, unavailable = benchmark.run_benchmark(
        config, log=lambda message: print(message, file=sys.stderr, flush=True))
    memory = []
    if config.memory:
        keras_engines = [e for e in ("effnet", "applications") if e in config.engines]
        memory = benchmark.measure_memory(config, keras_engines)
    machine = benchmark.machine_description(config.threads)
    machine["load average (1, 5, 15 min)"] = (
        f"{load_before} before, {machine['load average (1, 5, 15 min)']} after")
    size = benchmark.variant_size(config.model, config.image_size)
    notes = [f"{config.model}, {size}x{size}, random weights, {config.precision}, "
             f"jit_compile={config.jit_compile}, {config.rounds} interleaved rounds; "
             "ratio = median over rounds of images/s ÷ the baseline's in the same round"]
    notes += [f"{engine}: not measured ({reason})" for engine, reason in unavailable.items()]
    notes += [f"{entry['engine']} memory: {entry['error']}" for entry in memory if "error" in entry]
    memory = [entry for entry in memory if "error" not in entry]
    command = "python tools/benchmark.py " + " ".join(sys.argv[1:])
    report = (f"`{command}`\n\n"
              + benchmark.to_markdown(rows, machine, memory, notes))
    print(report)
    if FLAGS.markdown_out:
        with open(FLAGS.markdown_out, "w", encoding="utf-8") as handle:
            handle.write(report)
    if FLAGS.csv_out:
        with open(FLAGS.csv_out, "w", encoding="utf-8") as handle:
            handle.write(benchmark.to_csv(rows, memory))


if __name__ == "__main__":
    app.run(main)

"""Side-by-side benchmark: keras-effnet vs keras.applications (and exported engines).

    keras-effnet-benchmark --model efficientnet-b0
    keras-effnet-benchmark --model b0 --image_size 128 --batch_sizes 1,8 --train_batch_size 8 \\
        --rounds 3 --min_round_seconds 0.3 --nomemory
    keras-effnet-benchmark --model b3 --train_batch_size 4 --engines= --training_memory

Prints a Markdown table (images/s, p50/p90 latency, per-round ratio medians against the
baseline) and writes it and a CSV when asked; ``-v 1`` shows progress. ``--training_memory``
adds a training step with and without gradient checkpointing (``keras_effnet.remat``) side by
side: images/s, activations kept for the backward pass, peak RSS in fresh processes; with
``--engines=`` (none) it is the only section. All logic is in ``keras_effnet.benchmark``.
"""

from __future__ import annotations

import sys

from absl import app, flags

from keras_effnet import atomic, benchmark
from keras_effnet.benchmark.memory import checkpointing_markdown, compare_checkpointing
from keras_effnet.cli import common

FLAGS = flags.FLAGS


def define_flags() -> None:
    """Define this job's flags (a second call redefines them) and make them the ones ``--help`` lists."""
    again = {"allow_override": True}
    flags.DEFINE_string("model", "efficientnet-b0", "Variant name (efficientnet-b0, b3, lite0 ...).", **again)
    flags.DEFINE_integer("image_size", None, "Input size (default: the variant's resolution).", **again)
    flags.DEFINE_list("batch_sizes", ["1", "32"], "Inference batch sizes.", **again)
    flags.DEFINE_integer("train_batch_size", 32, "Training-step batch size; 0 skips training.", **again)
    flags.DEFINE_list("engines", list(benchmark.DEFAULT_ENGINES),
                      f"Engines to compare, from {sorted(benchmark.ENGINES)}.", **again)
    flags.DEFINE_integer("rounds", 7, "Interleaved timing rounds after warm-up.", **again)
    flags.DEFINE_integer("warmup", 2, "Warm-up calls per engine.", **again)
    flags.DEFINE_float("min_round_seconds", 1.0, "Each engine's share of a round lasts about this.",
                       **again)
    flags.DEFINE_boolean("jit_compile", False, "XLA-compile the Keras steps (5-10x slower on CPU).",
                         **again)
    flags.DEFINE_enum("precision", "float32", list(benchmark.PRECISIONS), "Keras dtype policy.", **again)
    flags.DEFINE_integer("threads", None, "Intra-op threads for every framework (default: theirs).",
                         **again)
    flags.DEFINE_boolean("memory", True, "Measure peak RSS of each Keras model in a subprocess.", **again)
    flags.DEFINE_boolean("training_memory", False,
                         "Also compare a training step with and without gradient checkpointing "
                         "(images/s, activations kept for backward, peak RSS; at "
                         "--train_batch_size).", **again)
    flags.DEFINE_string("export_dir", None, "Keep the exported .tflite/.onnx files here.", **again)
    flags.DEFINE_string("markdown_out", None, "Also write the Markdown report to this file.", **again)
    flags.DEFINE_string("csv_out", None, "Also write the CSV report to this file.", **again)
    common.show_in_help(sys.modules[__name__])


def main(argv: list[str]) -> int:
    """Run the benchmark of the flags and print the report."""
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    common.start_logging()
    try:
        config = benchmark.BenchmarkConfig(
            model=FLAGS.model, image_size=FLAGS.image_size,
            batch_sizes=tuple(int(b) for b in FLAGS.batch_sizes),
            train_batch_size=FLAGS.train_batch_size or None, engines=tuple(FLAGS.engines),
            rounds=FLAGS.rounds, warmup=FLAGS.warmup, min_round_seconds=FLAGS.min_round_seconds,
            jit_compile=FLAGS.jit_compile, precision=FLAGS.precision, threads=FLAGS.threads,
            memory=FLAGS.memory, export_dir=FLAGS.export_dir)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    if FLAGS.training_memory and not config.train_batch_size:
        print("error: --training_memory needs --train_batch_size > 0", file=sys.stderr)
        return 1
    if not config.engines and not FLAGS.training_memory:
        print("error: nothing to measure: name --engines, or pass --training_memory",
              file=sys.stderr)
        return 1
    load_before = benchmark.machine_description(config.threads)["load average (1, 5, 15 min)"]
    rows, unavailable = benchmark.run_benchmark(config) if config.engines else ([], {})
    memory = []
    if config.memory and config.engines:
        keras_engines = [e for e in ("effnet", "applications") if e in config.engines]
        memory = benchmark.measure_memory(config, keras_engines)
    checkpointing = []
    if FLAGS.training_memory:
        checkpointing = compare_checkpointing(config, memory=config.memory)
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
    command = "keras-effnet-benchmark " + " ".join(sys.argv[1:])
    if config.engines:
        report = f"`{command}`\n\n" + benchmark.to_markdown(rows, machine, memory, notes)
        if checkpointing:
            report += "\n" + checkpointing_markdown(checkpointing, config)
    else:
        report = f"`{command}`\n\n" + checkpointing_markdown(checkpointing, config, machine)
    print(report)
    if FLAGS.markdown_out:
        atomic.write_text(FLAGS.markdown_out, report)
    if FLAGS.csv_out:
        atomic.write_text(FLAGS.csv_out, benchmark.to_csv(rows, memory))
    return 0


def run() -> None:
    """Console-script entry point (``keras-effnet-benchmark``)."""
    define_flags()
    app.run(main)


if __name__ == "__main__":
    run()

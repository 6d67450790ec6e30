"""Where the TensorFlow inference path spends its time, op by op, grouped by layer role.

    keras-effnet-profile-tf
    keras-effnet-profile-tf --model b0 --image_size 224 --batch_size 32 \\
        --engines effnet-deploy,effnet,applications --calls 3 --rounds 5
    keras-effnet-profile-tf --image_size 64 --batch_size 2 --calls 1 --rounds 1   # a quick look

Runs each Keras engine's benchmark ``tf.function`` under the TensorFlow profiler and prints,
per engine, the ops TensorFlow ran after its graph rewrites (fused convolutions, ``_MklSwish``,
``Mean`` ...) summed by layer role (``expand_conv``, ``dwconv``, ``se_excite`` ...) and by op
type; then the engines' speed relative to the first one, from interleaved rounds (wall clock and
process CPU time). Random weights; ``-v 1`` shows progress. All logic is in
``keras_effnet.benchmark.op_profile``.
"""

from __future__ import annotations

import sys

from absl import app, flags

from keras_effnet import atomic
from keras_effnet.benchmark import BenchmarkConfig, machine_description, op_profile, variant_size
from keras_effnet.benchmark.engines import KERAS_ENGINES
from keras_effnet.cli import common

FLAGS = flags.FLAGS


def define_flags() -> None:
    """Define this job's flags (a second call redefines them); ``--help`` lists them."""
    again = {"allow_override": True}
    flags.DEFINE_string("model", "efficientnet-b0", "Variant name (efficientnet-b0, b3 ...).",
                        **again)
    flags.DEFINE_integer("image_size", None, "Input size (default: the variant's resolution).",
                         **again)
    flags.DEFINE_integer("batch_size", 32, "Inference batch size.", **again)
    flags.DEFINE_list("engines", ["effnet-deploy", "effnet", "applications"],
                      f"Keras engines, from {list(KERAS_ENGINES)}; speeds are relative to the "
                      "first.", **again)
    flags.DEFINE_integer("calls", 3, "Profiled calls per engine (each op counts with its "
                         "minimum over them).", **again)
    flags.DEFINE_integer("rounds", 5, "Interleaved timing rounds for the relative speeds.", **again)
    flags.DEFINE_float("min_round_seconds", 1.0, "Each engine's share of a timing round.", **again)
    flags.DEFINE_integer("top", 15, "(role, op type) rows shown per engine.", **again)
    flags.DEFINE_integer("threads", None, "Intra-/inter-op threads (default: TensorFlow's).",
                         **again)
    flags.DEFINE_string("markdown_out", None, "Also write the report to this file.", **again)
    common.show_in_help(sys.modules[__name__])


def main(argv: list[str]) -> int:
    """Profile the engines of the flags and print the report."""
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    common.start_logging()
    try:
        config = BenchmarkConfig(model=FLAGS.model, image_size=FLAGS.image_size,
                                 batch_sizes=(FLAGS.batch_size,), train_batch_size=None,
                                 engines=tuple(FLAGS.engines), rounds=FLAGS.rounds, warmup=1,
                                 min_round_seconds=FLAGS.min_round_seconds,
                                 threads=FLAGS.threads, memory=False)
        if FLAGS.calls < 1:
            raise ValueError(f"--calls must be at least 1, got {FLAGS.calls}")
        profiles = op_profile.profile_engines(config, batch_size=FLAGS.batch_size,
                                              calls=FLAGS.calls)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    machine = machine_description(FLAGS.threads)
    size = variant_size(config.model, config.image_size)
    header = (f"{config.model}, {size}x{size}, batch {FLAGS.batch_size}, random weights; "
              f"{FLAGS.calls} profiled calls per engine, "
              f"{config.rounds} interleaved timing rounds; "
              + "; ".join(f"{key} {value}" for key, value in machine.items()))
    report = header + "\n\n" + op_profile.to_markdown(profiles, top=FLAGS.top)
    print(report)
    if FLAGS.markdown_out:
        atomic.write_text(FLAGS.markdown_out, report)
    return 0


def run() -> None:
    """Console-script entry point (``keras-effnet-profile-tf``)."""
    define_flags()
    app.run(main)


if __name__ == "__main__":
    run()

"""Print parameters and multiply-adds of EfficientNet variants, counted from the built models.

    keras-effnet-model-table                                     # B0..B8, L2, Lite0..4 (markdown)
    keras-effnet-model-table --models=b0,b1 --format=csv
    keras-effnet-model-table --models= --phi=-2,0.5,3            # compound scaling from B0
    keras-effnet-model-table --models= --custom=1.3:1.5:320      # width:depth:resolution

"multiply-adds" (the paper's FLOPs) count conv, depthwise, SE and dense layers for one image;
BN, activations, pooling and elementwise ops are a separate column (see keras_effnet/flops.py
and docs/scaling.md).
"""

from __future__ import annotations

import logging
import sys
import time

from absl import app, flags

from keras_effnet import flops, scaling
from keras_effnet.cli import common

logger = logging.getLogger(__name__)

ALL_MODELS = "b0,b1,b2,b3,b4,b5,b6,b7,b8,l2,lite0,lite1,lite2,lite3,lite4"
FLAGS = flags.FLAGS


def define_flags() -> None:
    """Define this job's flags (a second call redefines them) and make them the ones ``--help`` lists."""
    again = {"allow_override": True}
    flags.DEFINE_list("models", ALL_MODELS.split(","), "Published variants ('' for none).", **again)
    flags.DEFINE_list("phi", [], "Compound coefficients: B0 scaled by alpha**phi, "
                      "beta**phi, gamma**phi (scaling.compound_spec).", **again)
    flags.DEFINE_float("alpha", scaling.ALPHA, "Depth base of compound scaling.", **again)
    flags.DEFINE_float("beta", scaling.BETA, "Width base of compound scaling.", **again)
    flags.DEFINE_float("gamma", scaling.GAMMA, "Resolution base of compound scaling.", **again)
    flags.DEFINE_list("custom", [], "B0 at width:depth:resolution, e.g. 1.3:1.5:320.", **again)
    flags.DEFINE_enum("format", "markdown", ["markdown", "csv"], "Output format.", **again)
    flags.DEFINE_enum("count", "model", ["model", "spec"],
                      "'model' builds each model and walks its layers; 'spec' computes the same numbers "
                      "from the block table (instant).", **again)
    flags.DEFINE_integer("classes", 1000, "Classifier outputs.", **again)
    flags.DEFINE_string("output", None, "Also write the table to this file.", **again)
    common.show_in_help(sys.modules[__name__])


def specs_from_flags() -> list[scaling.ModelSpec]:
    """The variants, compound coefficients and custom multipliers the flags name."""
    specs = [scaling.get_spec(name) for name in FLAGS.models if name]
    for text in FLAGS.phi:
        specs.append(scaling.compound_spec(float(text), FLAGS.alpha, FLAGS.beta, FLAGS.gamma))
    for text in FLAGS.custom:
        parts = text.split(":")
        if len(parts) != 3:
            raise app.UsageError(f"--custom expects width:depth:resolution, got {text!r}")
        width, depth, resolution = float(parts[0]), float(parts[1]), int(parts[2])
        specs.append(scaling.multiply_spec(
            "b0", width, depth, resolution / scaling.BASE_RESOLUTION, resolution_divisor=1,
            name=f"b0-w{width:g}-d{depth:g}-r{resolution}"))
    if not specs:
        raise app.UsageError("nothing to count: give --models, --phi or --custom")
    return specs


def main(argv: list[str]) -> int:
    """Count every model the flags name and print the table."""
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    common.start_logging()
    rows = []
    for spec in specs_from_flags():
        start = time.time()
        rows.append(flops.table_row(spec, count=FLAGS.count, classes=FLAGS.classes))
        logger.info("counted %s in %.1f s", spec.name, time.time() - start)
    table = flops.format_table(rows, FLAGS.format)
    sys.stdout.write(table)
    if FLAGS.output:
        with open(FLAGS.output, "w", encoding="utf-8") as stream:
            stream.write(table)
    return 0


def run() -> None:
    """Console-script entry point (``keras-effnet-model-table``)."""
    define_flags()
    app.run(main)


if __name__ == "__main__":
    run()

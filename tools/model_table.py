"""Print parameters and multiply-adds of EfficientNet variants, counted from the built models.

    python tools/model_table.py                                  # B0..B8, L2, Lite0..4 (markdown)
    python tools/model_table.py --models=b0,b1 --format=csv
    python tools/model_table.py --models= --phi=-2,0.5,3         # compound scaling from B0
    python tools/model_table.py --models= --custom=1.3:1.5:320   # width:depth:resolution

"multiply-adds" (the paper's FLOPs) count conv, depthwise, SE and dense layers for one image;
BN, activations, pooling and elementwise ops are a separate column (see keras_effnet/flops.py
and docs/scaling.md).
"""

from __future__ import annotations

import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402

from keras_effnet import flops, scaling  # noqa: E402
from keras_effnet.cli.common import define_once  # noqa: E402

ALL_MODELS = "b0,b1,b2,b3,b4,b5,b6,b7,b8,l2,lite0,lite1,lite2,lite3,lite4"

FLAGS = flags.FLAGS



define_once(flags.DEFINE_list, "models", ALL_MODELS.split(","), "Published variants ('' for none).")
define_once(flags.DEFINE_list, "phi", [], "Compound coefficients: B0 scaled by alpha**phi, "
        "beta**phi, gamma**phi (scaling.compound_spec).")
define_once(flags.DEFINE_float, "alpha", scaling.ALPHA, "Depth base of compound scaling.")
define_once(flags.DEFINE_float, "beta", scaling.BETA, "Width base of compound scaling.")
define_once(flags.DEFINE_float, "gamma", scaling.GAMMA, "Resolution base of compound scaling.")
define_once(flags.DEFINE_list, "custom", [], "B0 at width:depth:resolution, e.g. 1.3:1.5:320.")
define_once(flags.DEFINE_enum, "format", "markdown", ["markdown", "csv"], "Output format.")
define_once(flags.DEFINE_enum, "count", "model", ["model", "spec"],
        "'model' builds each model and walks its layers; 'spec' computes the same numbers "
        "from the block table (instant).")
define_once(flags.DEFINE_integer, "classes", 1000, "Classifier outputs.")
define_once(flags.DEFINE_string, "output", None, "Also write the table to this file.")


def _specs() -> list[scaling.ModelSpec]:
    specs = [scaling.get_spec(name) for name in FLAGS.models if name]
    for text in FLAGS.phi:
        phi = float(text)
        specs.append(scaling.compound_spec(phi, FLAGS.alpha, FLAGS.beta, FLAGS.gamma))
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


def main(argv):
    del argv
    rows = []
    for spec in _specs():
        start = time.time()
        rows.append(flops.table_row(spec, count=FLAGS.count, classes=FLAGS.classes))
        print(f"counted {spec.name} in {time.time() - start:.1f} s", file=sys.stderr)
    table = flops.format_table(rows, FLAGS.format)
    sys.stdout.write(table)
    if FLAGS.output:
        with open(FLAGS.output, "w", encoding="utf-8") as stream:
            stream.write(table)


if __name__ == "__main__":
    app.run(main)

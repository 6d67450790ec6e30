"""What keras-effnet offers: variants, weight sets, one model's summary, the config keys.

    keras-effnet-info --model=lite0                # parameters, multiply-adds, feature maps
    keras-effnet-info --model=b3 --resolution=320
    keras-effnet-info --list_models                # every variant and its weight sets
    keras-effnet-info --config_keys                # markdown reference of the training config
"""

from __future__ import annotations

import json
import sys

from absl import app, flags

from keras_effnet import discovery
from keras_effnet.cli import common

FLAGS = flags.FLAGS


def define_flags() -> None:
    """Define this job's flags (a second call redefines them); ``--help`` lists them."""
    again = {"allow_override": True}
    flags.DEFINE_string("model", None, "Variant to summarise (b0 ... l2, lite0 ... lite4).",
                        **again)
    flags.DEFINE_integer("resolution", None, "Input side in pixels (default: the variant's).",
                         **again)
    flags.DEFINE_integer("classes", 1000, "Classifier outputs.", **again)
    flags.DEFINE_bool("list_models", False, "List the variants and their weight sets.", **again)
    flags.DEFINE_string("list_weights", None, "List the weight sets of one variant.", **again)
    flags.DEFINE_bool("config_keys", False,
                      "Print the reference of every training config key (markdown).", **again)
    flags.DEFINE_enum("format", "text", ["text", "json"], "Output format.", **again)
    common.show_in_help(sys.modules[__name__])


def render() -> str:
    """The text the flags ask for."""
    as_json = FLAGS.format == "json"
    if FLAGS.config_keys:
        return discovery.config_reference()
    if FLAGS.list_weights:
        names = discovery.list_weights(FLAGS.list_weights)
        return json.dumps(names) + "\n" if as_json else "\n".join(names) + "\n"
    if FLAGS.model:
        result = discovery.summary(FLAGS.model, resolution=FLAGS.resolution, classes=FLAGS.classes)
        return json.dumps(result.to_dict(), indent=2) + "\n" if as_json else f"{result}\n"
    if FLAGS.list_models:
        table = discovery.list_weights()
        if as_json:
            return json.dumps({name: table.get(name, []) for name in discovery.list_models()},
                              indent=2) + "\n"
        return "".join(f"{name:20s} {', '.join(table.get(name, [])) or '-'}\n"
                       for name in discovery.list_models())
    raise app.UsageError("nothing to show: give --model, --list_models, --list_weights or "
                         "--config_keys")


def main(argv: list[str]) -> int:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    common.start_logging()
    sys.stdout.write(render())
    return 0


def run() -> None:
    """Console-script entry point (``keras-effnet-info``)."""
    define_flags()
    app.run(main)


if __name__ == "__main__":
    run()

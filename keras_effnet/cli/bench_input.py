"""Input-pipeline throughput: can decoding + cropping + augmentation keep up with training?

    keras-effnet-bench-input
    keras-effnet-bench-input --image_size 224 --augments none,autoaugment,randaugment --batches 20 --rounds 5

Writes synthetic ImageNet-like JPEGs (crops of scikit-image's bundled photos chelsea,
coffee and astronaut at ~500x375, quality 90; no network) into a temporary class
folder and runs the training pipeline of ``keras_effnet.data.make_dataset`` on them:
file read, fused JPEG decode-and-crop, bicubic resize, flip, augmentation on uint8.
Prints images/s on one thread (one map call, one tf.data thread), with all cores
(AUTOTUNE), and images per CPU-second consumed (the per-core rate, meaningful even when
other processes share the cores).
"""

from __future__ import annotations

import os
import sys
import tempfile

import numpy as np
import tensorflow as tf
from absl import app, flags
from PIL import Image

from keras_effnet import data
from keras_effnet.cli import common

FLAGS = flags.FLAGS


def define_flags() -> None:
    """Define this job's flags (a second call redefines them) and make them the ones ``--help`` lists."""
    again = {"allow_override": True}
    flags.DEFINE_integer("image_size", 224, "Output side S of the training crop.", **again)
    flags.DEFINE_list("augments", ["none", "autoaugment", "randaugment"], "Augmentations to time.",
                      **again)
    flags.DEFINE_integer("randaugment_layers", 2, "RandAugment N.", **again)
    flags.DEFINE_integer("randaugment_magnitude", 10, "RandAugment M.", **again)
    flags.DEFINE_integer("num_images", 48, "Distinct synthetic JPEGs written.", **again)
    flags.DEFINE_integer("batch_size", 32, "Batch size.", **again)
    flags.DEFINE_integer("batches", 10, "Timed batches per round (after 2 warm-up batches).",
                         **again)
    flags.DEFINE_integer("rounds", 3, "Timed rounds of --batches per measurement; the median is "
                         "printed (single rounds move by 10-20 % on a shared machine).", **again)
    flags.DEFINE_boolean("per_core", True, "Also measure a single core.", **again)
    common.show_in_help(sys.modules[__name__])


def write_synthetic_jpegs(directory: str, count: int) -> None:
    """``count`` JPEGs of about 500x375 cut from scikit-image's sample photos, in 2 classes."""
    try:
        from skimage import data as samples  # noqa: PLC0415  (the ``test`` extra)
    except ImportError as error:
        raise ImportError("keras-effnet-bench-input needs scikit-image for its sample photos: "
                          "pip install scikit-image") from error

    photos = [samples.chelsea(), samples.coffee(), samples.astronaut()]
    rng = np.random.RandomState(0)
    for i in range(count):
        photo = Image.fromarray(photos[i % len(photos)])
        scale = rng.uniform(1.0, 1.6)
        photo = photo.resize((int(photo.width * scale), int(photo.height * scale)), Image.BILINEAR)
        width, height = min(500, photo.width), min(375, photo.height)
        left, top = rng.randint(0, photo.width - width + 1), rng.randint(0, photo.height - height + 1)
        crop = photo.crop((left, top, left + width, top + height))
        class_dir = os.path.join(directory, f"class_{i % 2}")
        os.makedirs(class_dir, exist_ok=True)
        crop.save(os.path.join(class_dir, f"{i:04d}.jpg"), "JPEG", quality=90)


def main(argv: list[str]) -> int:
    """Time the training pipeline for each augmentation and print one line per augmentation."""
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    common.start_logging()
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as directory:
        write_synthetic_jpegs(directory, FLAGS.num_images)
        print(f"input pipeline, {FLAGS.num_images} JPEGs ~500x375 -> {FLAGS.image_size}px, "
              f"batch {FLAGS.batch_size}, {cores} cores, TF {tf.__version__}, median of "
              f"{FLAGS.rounds} rounds of {FLAGS.batches} batches")
        print(f"{'augment':<13}{'1 thread img/s':>15}{'all cores img/s':>17}{'img per CPU-s':>15}")
        for name in FLAGS.augments:
            augment = None if name == "none" else name

            def pipeline(**threading):
                return data.make_dataset(
                    f"folder:{directory}", "train", image_size=FLAGS.image_size, batch_size=FLAGS.batch_size,
                    training=True, augment=augment, randaugment_layers=FLAGS.randaugment_layers,
                    randaugment_magnitude=FLAGS.randaugment_magnitude, validation_fraction=0.0, seed=0,
                    **threading)

            single = float("nan")
            if FLAGS.per_core:
                single, _ = data.measure_throughput(pipeline(num_parallel_calls=1, threadpool_size=1),
                                                    FLAGS.batches, warmup_batches=2, rounds=FLAGS.rounds)
            total, per_cpu_second = data.measure_throughput(pipeline(), FLAGS.batches, warmup_batches=2,
                                                            rounds=FLAGS.rounds)
            print(f"{name:<13}{single:>15.1f}{total:>17.1f}{per_cpu_second:>15.1f}", flush=True)
        print("1 thread: one map call on one tf.data thread (wall clock). all cores: AUTOTUNE. "
              "img per CPU-s: images per CPU-second used = the per-core rate, also on a shared machine.")
    return 0


def run() -> None:
    """Console-script entry point (``keras-effnet-bench-input``)."""
    define_flags()
    app.run(main)


if __name__ == "__main__":
    run()

"""tf.data input pipelines: TFDS datasets, image folders, ImageNet TFRecords, embedded digits.

``make_dataset(source, split, ...)`` (``pipeline``) yields ``(images, labels)``: float32
[B, S, S, 3] RGB in [0, 255] (normalisation is inside the model) and int32 [B] labels, or
mixed one-hot float32 [B, C] with MixUp / CutMix. ``dataset_info`` (``sources``) tells what a
source/split holds (classes, class names, size).

Sources:
- ``"tfds:<name>"``: any TFDS image-classification dataset ("tfds:cifar10",
  "tfds:imagenet2012" with `manual_dir` holding the ImageNet tars).
- ``"folder:<path>"``: one subfolder per class. If `<path>/train` and
  `<path>/validation` (or `val`) exist they are the splits; otherwise each file goes to
  "validation" when a hash of its path falls in `validation_fraction` (stable, seed-free).
- ``"tfrecord:<glob>"``: ImageNet-format records (`image/encoded`, `image/class/label`);
  `{split}` in the glob is replaced by the split name. The original ImageNet TFRecords
  use labels 1..1000: pass `label_offset=-1`.
- ``"digits"``: the embedded dataset (``keras_effnet.data.digits``, a TFDS builder built offline).

The evaluation crop a source gets is ``eval_preprocessing_for(source, resolution, normalization)``,
the one place where the digits' settings differ from ImageNet's.
"""

from keras_effnet.data.pipeline import InputStats, make_dataset, measure_throughput
from keras_effnet.data.sources import (AUTOTUNE, DIGITS_BUILDER, DIGITS_DEFAULTS, DIGITS_SOURCE,
                                       IMAGE_EXTENSIONS, SOURCE_KINDS, VALIDATION_NAMES, DatasetInfo,
                                       dataset_info, eval_preprocessing_for, is_source, parse_source,
                                       train_defaults_for)

__all__ = [
    "AUTOTUNE", "DIGITS_BUILDER", "DIGITS_DEFAULTS", "DIGITS_SOURCE", "IMAGE_EXTENSIONS", "SOURCE_KINDS",
    "VALIDATION_NAMES", "DatasetInfo", "InputStats", "dataset_info", "eval_preprocessing_for",
    "is_source", "make_dataset", "measure_throughput", "parse_source", "train_defaults_for",
]

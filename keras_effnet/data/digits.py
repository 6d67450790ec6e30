"""`effnet_digits`: the embedded default dataset, a TFDS builder that needs no download.

Source: scikit-learn's bundled copy of the UCI optical handwritten digits
(`sklearn.datasets.load_digits`: 1,797 grey 8x8 images, 10 classes, 0..16 levels),
which ships inside the scikit-learn wheel. Each image is scaled to 0..255, upsampled
bilinearly to 32x32, replicated to RGB and stored as PNG. A fixed permutation
(seed 0) splits it into 1,437 train and 360 validation images.

Build: `tfds.builder("effnet_digits", data_dir=...).download_and_prepare()` (a few
seconds, offline); `keras_effnet.data.make_dataset("digits", ...)` does this for you.
Importing this module registers the builder with TFDS.
"""

from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds
from etils import epath
from PIL import Image

IMAGE_SIZE = 32
NUM_VALIDATION = 360
SPLIT_SEED = 0


def _load_digits():
    try:
        from sklearn.datasets import load_digits  # noqa: PLC0415  (only needed to build once)
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError(
            "The embedded 'digits' dataset needs scikit-learn (it ships the images): "
            "pip install scikit-learn"
        ) from error
    return load_digits()


def digit_images() -> tuple[np.ndarray, np.ndarray]:
    """All 1,797 images as uint8 [N, 32, 32, 3] and labels int64 [N], in source order."""
    digits = _load_digits()
    small = np.clip(np.round(digits.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)
    large = np.stack([
        np.asarray(Image.fromarray(image).resize((IMAGE_SIZE, IMAGE_SIZE), Image.BILINEAR))
        for image in small
    ])
    return np.repeat(large[..., None], 3, axis=-1), digits.target.astype(np.int64)


def split_indices() -> dict[str, np.ndarray]:
    """The fixed train / validation split (indices into the source order)."""
    order = np.random.RandomState(SPLIT_SEED).permutation(1797)
    return {"train": np.sort(order[NUM_VALIDATION:]), "validation": np.sort(order[:NUM_VALIDATION])}


class EffnetDigits(tfds.core.GeneratorBasedBuilder):
    """scikit-learn's 8x8 handwritten digits, upsampled to 32x32 RGB; train / validation."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}

    # TFDS's default locates the builder's file through the `importlib_resources`
    # backport, which tensorflow-datasets does not always install; the path is known.
    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls):
        return epath.Path(__file__)

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            description=__doc__,
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(IMAGE_SIZE, IMAGE_SIZE, 3)),
                "label": tfds.features.ClassLabel(names=[str(d) for d in range(10)]),
            }),
            supervised_keys=("image", "label"),
            homepage="https://archive.ics.uci.edu/dataset/80",
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # nothing to download
        images, labels = digit_images()
        return {
            name: self._generate_examples(images[indices], labels[indices], indices)
            for name, indices in split_indices().items()
        }

    def _generate_examples(self, images, labels, indices):
        for image, label, index in zip(images, labels, indices):
            yield int(index), {"image": image, "label": int(label)}

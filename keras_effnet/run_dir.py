"""The run directory: everything a training run leaves behind, self-contained.

Evaluate, export and predict read only a run directory (plus the data, for evaluate): never the
initial weights file, never the training data to learn the class names. Layout::

    config.yaml                 the configuration that trained the run (written once)
    run.json                    metadata: architecture, classes, evaluation preprocessing,
                                normalisation, input range, weight source, dataset (written once)
    labels.txt                  class names, one per line, in output order (written once)
    ckpt-<step>.*, checkpoint   training state (model, optimiser, EMA, step), the last K
    data_state/worker-<i>/      input-iterator position of each worker at the same steps
    best/                       the training state with the best evaluation top-1 (+ metrics.json)
    export/model.keras          the final model: EMA weights, LOGITS head (keras.saving)
    export/model.weights.h5     the same weights only
    metrics.json                final metrics
    train/, eval/               TensorBoard summaries

Every file is written through ``keras_effnet.atomic`` (a reader never sees half a file).
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

from keras_effnet import atomic
from keras_effnet.blocks import decode_blocks, encode_blocks
from keras_effnet.eval_preprocessing import EvalPreprocessing
from keras_effnet.scaling import ModelSpec

CONFIG_FILE = "config.yaml"
METADATA_FILE = "run.json"
LABELS_FILE = "labels.txt"
METRICS_FILE = "metrics.json"
BEST_DIR = "best"
DATA_DIR = "data_state"
EXPORT_DIR = "export"
FINAL_MODEL = os.path.join(EXPORT_DIR, "model.keras")
FINAL_WEIGHTS = os.path.join(EXPORT_DIR, "model.weights.h5")
FORMAT_VERSION = 1


class NotARunDirectory(FileNotFoundError):
    """The directory holds no run metadata (not written by the training job)."""


def spec_to_dict(spec: ModelSpec) -> dict:
    """JSON-ready form of a ``ModelSpec`` (block table in the original string form)."""
    values = dataclasses.asdict(spec)
    values["blocks"] = encode_blocks(spec.blocks)
    return values


def spec_from_dict(values: dict) -> ModelSpec:
    """Inverse of ``spec_to_dict``."""
    values = dict(values)
    values["blocks"] = decode_blocks(values["blocks"])
    return ModelSpec(**values)


@dataclasses.dataclass(frozen=True)
class RunMetadata:
    """What a run directory says about its model (``run.json`` + ``labels.txt``).

    Attributes:
        spec: the architecture (``ModelSpec``).
        class_names: one name per classifier output, in order.
        eval_preprocessing: how images are prepared for the model (resolution, crop, resize,
            normalisation, input range).
        weight_source: where the initial weights came from (``{"kind": "none"}``, a weight set,
            or a file: recorded, never read again).
        dataset: the training data (source, splits, example counts).
        ema: whether ``export/`` and evaluation use exponential-moving-average weights.
    """

    spec: ModelSpec
    class_names: tuple[str, ...]
    eval_preprocessing: EvalPreprocessing
    weight_source: dict = dataclasses.field(default_factory=lambda: {"kind": "none"})
    dataset: dict = dataclasses.field(default_factory=dict)
    ema: bool = True

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def to_dict(self) -> dict:
        return {
            "format_version": FORMAT_VERSION,
            "spec": spec_to_dict(self.spec),
            "num_classes": self.num_classes,
            "eval_preprocessing": self.eval_preprocessing.to_dict(),
            "normalization": self.eval_preprocessing.normalization,
            "input_range": list(self.eval_preprocessing.input_range),
            "weight_source": self.weight_source,
            "dataset": self.dataset,
            "ema": self.ema,
        }

    @classmethod
    def from_dict(cls, values: dict, class_names: list[str]) -> "RunMetadata":
        if values.get("num_classes") not in (None, len(class_names)):
            raise ValueError(f"run metadata names {values['num_classes']} classes but "
                             f"{LABELS_FILE} holds {len(class_names)}")
        return cls(spec=spec_from_dict(values["spec"]), class_names=tuple(class_names),
                   eval_preprocessing=EvalPreprocessing.from_dict(values["eval_preprocessing"]),
                   weight_source=values.get("weight_source", {"kind": "none"}),
                   dataset=values.get("dataset", {}), ema=bool(values.get("ema", True)))


class RunDirectory:
    """Paths and metadata of one training run (see the module docstring for the layout)."""

    def __init__(self, path: str | os.PathLike):
        self.path = os.path.abspath(os.fspath(path))

    def file(self, name: str) -> str:
        """Absolute path of ``name`` inside the run."""
        return os.path.join(self.path, name)

    @property
    def config_path(self) -> str:
        return self.file(CONFIG_FILE)

    @property
    def final_model_path(self) -> str:
        return self.file(FINAL_MODEL)

    def has_metadata(self) -> bool:
        return os.path.exists(self.file(METADATA_FILE))

    def write_metadata(self, metadata: RunMetadata) -> None:
        """Write ``labels.txt`` then ``run.json`` (atomically; run.json marks the run complete)."""
        with atomic.atomic_path(self.file(LABELS_FILE), ".txt") as tmp:
            with open(tmp, "w", encoding="utf-8") as stream:
                stream.writelines(f"{name}\n" for name in metadata.class_names)
        atomic.write_json(self.file(METADATA_FILE), metadata.to_dict())

    def read_metadata(self) -> RunMetadata:
        """The run's metadata; ``NotARunDirectory`` naming what is missing and what to do."""
        if not os.path.isdir(self.path):
            raise NotARunDirectory(f"run directory {self.path!r} does not exist")
        path = self.file(METADATA_FILE)
        if not os.path.exists(path):
            raise NotARunDirectory(
                f"{self.path!r} holds no {METADATA_FILE}: not a keras-effnet training run "
                "(train into it with keras-effnet-train --model_dir DIR; for a weight file use "
                "--model VARIANT --weights FILE)")
        try:
            with open(path, encoding="utf-8") as stream:
                values = json.load(stream)
            labels = self.read_labels()
            return RunMetadata.from_dict(values, labels)
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
            raise ValueError(f"{path} is damaged ({error}); retrain, or restore the file from "
                             "a backup") from None

    def read_labels(self) -> list[str]:
        path = self.file(LABELS_FILE)
        if not os.path.exists(path):
            raise NotARunDirectory(f"{self.path!r} holds no {LABELS_FILE} (class names)")
        with open(path, encoding="utf-8") as stream:
            return [line.rstrip("\n") for line in stream if line.strip()]

    def read_metrics(self) -> dict[str, Any] | None:
        path = self.file(METRICS_FILE)
        if not os.path.exists(path):
            return None
        with open(path, encoding="utf-8") as stream:
            return json.load(stream)

"""The evaluation-preprocessing settings type (TensorFlow-free, so the model and the weight
registry import it under every Keras backend); ``keras_effnet.preprocessing`` applies it."""

from __future__ import annotations

import dataclasses
from typing import Any

CROP_PADDING = 32
# "bicubic_tf1" is tf.compat.v1.image.resize_bicubic (the original's); the others name
# tf.image.resize methods ("bicubic": half-pixel centres, Keys a = -0.5).
RESIZE_METHODS = ("bicubic_tf1", "bicubic", "bilinear", "area", "nearest")
DEFAULT_RESIZE_METHOD = "bicubic_tf1"
NORMALIZATION_NAMES = ("imagenet", "lite", "inception", "none")


@dataclasses.dataclass(frozen=True)
class EvalPreprocessing:
    """How images are prepared for a model at evaluation, export and prediction time.

    One value of this type travels with a weight set, a data source, a run directory and every
    export, and ``preprocess_for_eval`` applies it, so none of them can disagree.

    Attributes:
        resolution: square model input side S in pixels.
        crop_fraction: centre-crop fraction of the short side; ``None`` is the original rule
            ``S / (S + crop_padding)`` (tensorflow/tpu ``preprocessing.py``, the published
            checkpoints); 0.875 for newer recipes; 1.0 keeps the whole short side.
        crop_padding: see ``crop_fraction``.
        resize_method: resize kernel after the crop (``RESIZE_METHODS``); the default
            "bicubic_tf1" is the original's TF1 ``resize_bicubic``, not clipped.
        normalization: what the model's own ``normalization`` layer does to its inputs
            (``imagenet`` mean/std, ``lite`` (x - 127) / 128, ``inception`` [-1, 1], ``none``);
            recorded here for consumers that feed the model directly.
        input_range: the pixel range the model expects after this preprocessing.
    """

    resolution: int
    crop_fraction: float | None = None
    crop_padding: int = CROP_PADDING
    resize_method: str = DEFAULT_RESIZE_METHOD
    normalization: str = "imagenet"
    input_range: tuple[float, float] = (0.0, 255.0)

    def __post_init__(self) -> None:
        if not isinstance(self.resolution, int) or self.resolution < 1:
            raise ValueError(f"resolution must be a positive integer, got {self.resolution!r}")
        if self.crop_fraction is not None and not 0.0 < self.crop_fraction <= 1.0:
            raise ValueError(f"crop_fraction must be in (0, 1] or None, got {self.crop_fraction}")
        check_resize_method(self.resize_method)
        if self.normalization not in NORMALIZATION_NAMES:
            raise ValueError(f"normalization must be one of {', '.join(NORMALIZATION_NAMES)}, "
                             f"got {self.normalization!r}")
        object.__setattr__(self, "input_range", tuple(float(v) for v in self.input_range))

    @property
    def effective_crop_fraction(self) -> float:
        """The crop fraction actually applied (the original rule resolved)."""
        if self.crop_fraction is not None:
            return self.crop_fraction
        return self.resolution / (self.resolution + self.crop_padding)

    def replace(self, **changes: Any) -> "EvalPreprocessing":
        """A copy with ``changes`` (e.g. another ``resolution``)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        """JSON-ready form (run metadata, export metadata)."""
        values = dataclasses.asdict(self)
        values["input_range"] = list(self.input_range)
        return values

    @classmethod
    def from_dict(cls, values: dict) -> "EvalPreprocessing":
        """Inverse of ``to_dict``; unknown keys are refused by name."""
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown evaluation-preprocessing keys {unknown}; "
                             f"expected some of {sorted(known)}")
        values = dict(values)
        if "input_range" in values:
            values["input_range"] = tuple(values["input_range"])
        return cls(**values)


def check_resize_method(method: str) -> str:
    """``method`` if it is one of ``RESIZE_METHODS``; a ValueError naming it otherwise."""
    if method not in RESIZE_METHODS:
        raise ValueError(f"resize_method must be one of {', '.join(RESIZE_METHODS)}, "
                         f"got {method!r}")
    return method

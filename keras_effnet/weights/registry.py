"""The weight-set registry: one row per published weight file, and queries over it.

=====================  ==================  ==========================================
name                   variants            source
=====================  ==================  ==========================================
``imagenet``           B0..B7 / Lite0..4   keras.applications ``.h5`` (md5-checked) /
                                           tensorflow/tpu ``lite/`` checkpoints
``autoaugment``        B0..B7              tensorflow/tpu ``ckptsaug/``
``baseline``           B0..B5              tensorflow/tpu ``ckpts/``
``randaugment``        B5, B7              tensorflow/tpu ``randaug/``
``advprop``            B0..B8              tensorflow/tpu ``advprop/`` (inputs in [-1, 1])
``noisy-student``      B0..B7, L2          tensorflow/tpu ``noisystudent/``
``noisy-student-475``  L2                  the L2 checkpoint trained at 475 pixels
=====================  ==================  ==========================================

Every row names the evaluation its publisher ran (``WeightSet.eval``, an ``EvalPreprocessing``):

=====================  ===============  ===============  ===================================
name                   resize           crop rule        normalisation
=====================  ===============  ===============  ===================================
``imagenet`` (B0..B7)  ``bicubic_tf1``  ``padding-32``   ``imagenet`` (mean/std)
``imagenet`` (Lite)    ``bicubic_tf1``  ``padding-32``   ``lite`` ((x - 127) / 128)
``autoaugment``,       ``bicubic_tf1``  ``padding-32``   ``imagenet``
``baseline``,
``randaugment``,
``noisy-student(-475)``
``advprop``            ``bicubic_tf1``  ``padding-32``   ``inception`` ([-1, 1])
=====================  ===============  ===============  ===================================

``bicubic_tf1`` is TF1's ``tf.image.resize_bicubic``, unclipped, and ``padding-32`` the centre
crop of ``S / (S + 32)`` of the short side: what tensorflow/tpu
``models/official/efficientnet/preprocessing.py`` and ``eval_ckpt_main.py`` evaluated every
published checkpoint with (the keras.applications files are conversions of the ``autoaugment``
checkpoints). The crop of a later revision, ``fraction-0.875`` (``CROP_RULES``), is there for
weight sets that were evaluated with it; none of the published ones was.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from keras_effnet.eval_preprocessing import CROP_PADDING, DEFAULT_RESIZE_METHOD, EvalPreprocessing
from keras_effnet.scaling import ModelSpec, canonical_name, get_spec

ORIGIN = "https://storage.googleapis.com"
_KERAS_BASE = f"{ORIGIN}/keras-applications"
_TPU_BASE = f"{ORIGIN}/cloud-tpu-checkpoints/efficientnet"

# Resize of every published set's evaluation: the original's TF1 resize_bicubic, not clipped
# (docs/fidelity.md measures what tf.image.resize's "bicubic" would change).
RESIZE_METHOD = DEFAULT_RESIZE_METHOD

# Centre-crop rules by name: resolution S -> (crop_fraction, crop_padding) of EvalPreprocessing.
# "padding-32": S / (S + 32) of the short side, tensorflow/tpu efficientnet/preprocessing.py as
# the published checkpoints were evaluated. "fraction-0.875": the later revision's
# crop_padding = round(S * (1 / 0.875 - 1)), i.e. S / (S + round(S / 7)).
ORIGINAL_CROP = "padding-32"
CROP_RULES = {
    ORIGINAL_CROP: lambda resolution: (None, CROP_PADDING),
    "fraction-0.875": lambda resolution: (None, round(resolution * (1 / 0.875 - 1))),
}

# Formats of the registry's files.
KERAS_H5 = "keras-h5"
TPU_CHECKPOINT = "tpu-checkpoint"


@dataclasses.dataclass(frozen=True)
class WeightSet:
    """One row of the registry: a published weight file for one variant.

    Attributes:
        model: canonical variant name (``efficientnet-b0``).
        name: weight-set name (``imagenet``, ``noisy-student`` ...).
        url: where the publisher serves the file.
        checksum: ``"md5:<hex>"`` / ``"sha256:<hex>"``, or ``None`` where none is published
            (then the archive must read to its end and every tensor must match the model).
        source: ``keras-h5`` (loads directly) or ``tpu-checkpoint`` (converted once, cached).
        eval: the evaluation preprocessing the publisher evaluated the weights with
            (``SET_EVALUATION``: resize, crop rule and normalisation).
        notop_url / notop_checksum: the file without the classifier, where one is published.
        top1: published ImageNet top-1 accuracy (%), for reference.
    """

    model: str
    name: str
    url: str
    checksum: str | None
    source: str
    eval: EvalPreprocessing
    notop_url: str | None = None
    notop_checksum: str | None = None
    top1: float | None = None


# keras.applications EfficientNet files: md5 of (with top, without top).
_KERAS_MD5 = {
    0: ("902e53a9f72be733fc0bcb005b3ebbac", "50bc09e76180e00e4465e1a485ddc09d"),
    1: ("1d254153d4ab51201f1646940f018540", "74c4e6b3e1f6a1eea24c589628592432"),
    2: ("b15cce36ff4dcbd00b6dd88e7857a6ad", "111f8e2ac8aa800a7a99e3239f7bfb39"),
    3: ("ffd1fdc53d0ce67064dc6a9c7960ede0", "af6d107764bb5b1abb91932881670226"),
    4: ("18c95ad55216b8f92d7e70b3a046e2fc", "ebc24e6d6c33eaebbd558eafbeedf1ba"),
    5: ("ace28f2a6363774853a83a0b21b9421a", "38879255a25d3c92d5e44e04ae6cec6f"),
    6: ("165f6e37dce68623721b423839de8be5", "9ecce42647a20130c1f39a5d4cb75743"),
    7: ("8c03f828fec3ef71311cd463b6759d99", "cbcfe4450ddf6f3ad90b1b398090fe4a"),
}

# Published top-1 (tensorflow/tpu README): set -> accuracies from B0 on.
_TOP1 = {
    "baseline": (76.7, 78.7, 79.8, 81.1, 82.5, 83.1),
    "autoaugment": (77.1, 79.1, 80.1, 81.6, 82.9, 83.6, 84.0, 84.3),
    "advprop": (77.6, 79.6, 80.5, 81.9, 83.3, 84.3, 84.8, 85.2, 85.5),
    "noisy-student": (78.8, 81.5, 82.4, 84.1, 85.3, 86.1, 86.4, 86.9),
}
_LITE_TOP1 = (75.1, 76.7, 77.6, 79.8, 81.5)


# How each set's publisher evaluated it: (resize, crop rule, normalisation); None is the
# variant's own normalisation (``imagenet`` mean/std for B0..L2, ``lite`` for Lite0..4).
SET_EVALUATION: dict[str, tuple[str, str, str | None]] = {
    "imagenet": (RESIZE_METHOD, ORIGINAL_CROP, None),
    "baseline": (RESIZE_METHOD, ORIGINAL_CROP, "imagenet"),
    "autoaugment": (RESIZE_METHOD, ORIGINAL_CROP, "imagenet"),
    "randaugment": (RESIZE_METHOD, ORIGINAL_CROP, "imagenet"),
    # AdvProp checkpoints expect Inception-style inputs in [-1, 1] (tensorflow/tpu README).
    "advprop": (RESIZE_METHOD, ORIGINAL_CROP, "inception"),
    "noisy-student": (RESIZE_METHOD, ORIGINAL_CROP, "imagenet"),
    "noisy-student-475": (RESIZE_METHOD, ORIGINAL_CROP, "imagenet"),
}


def evaluation_settings(resolution: int, normalization: str, crop_rule: str = ORIGINAL_CROP,
                        resize_method: str = RESIZE_METHOD) -> EvalPreprocessing:
    """The ``EvalPreprocessing`` of a named crop rule (``CROP_RULES``), resize and normalisation."""
    if crop_rule not in CROP_RULES:
        raise ValueError(f"unknown crop rule {crop_rule!r}; use one of {', '.join(CROP_RULES)}")
    crop_fraction, crop_padding = CROP_RULES[crop_rule](resolution)
    return EvalPreprocessing(resolution=resolution, crop_fraction=crop_fraction,
                             crop_padding=crop_padding, resize_method=resize_method,
                             normalization=normalization)


def _eval(model: str, name: str, resolution: int | None = None) -> EvalPreprocessing:
    resize_method, crop_rule, normalization = SET_EVALUATION[name]
    spec = get_spec(model)
    return evaluation_settings(resolution or spec.resolution, normalization or spec.normalization,
                               crop_rule, resize_method)


def _tpu(model: str, name: str, path: str, top1: float | None = None,
         resolution: int | None = None) -> WeightSet:
    return WeightSet(model, name, f"{_TPU_BASE}/{path}", None, TPU_CHECKPOINT,
                     _eval(model, name, resolution), top1=top1)


def _registry() -> list[WeightSet]:
    sets = []
    for i, (md5_top, md5_notop) in _KERAS_MD5.items():
        model = f"efficientnet-b{i}"
        sets.append(WeightSet(
            model, "imagenet", f"{_KERAS_BASE}/efficientnetb{i}.h5", f"md5:{md5_top}",
            KERAS_H5, _eval(model, "imagenet"),
            notop_url=f"{_KERAS_BASE}/efficientnetb{i}_notop.h5",
            notop_checksum=f"md5:{md5_notop}", top1=_TOP1["autoaugment"][i]))
    for i in range(6):
        sets.append(_tpu(f"efficientnet-b{i}", "baseline", f"ckpts/efficientnet-b{i}.tar.gz",
                         top1=_TOP1["baseline"][i]))
    for i in range(8):
        sets.append(_tpu(f"efficientnet-b{i}", "autoaugment", f"ckptsaug/efficientnet-b{i}.tar.gz",
                         top1=_TOP1["autoaugment"][i]))
    for i, top1 in ((5, 83.7), (7, 84.7)):
        sets.append(_tpu(f"efficientnet-b{i}", "randaugment",
                         f"randaug/efficientnet-b{i}-randaug.tar.gz", top1=top1))
    for i in range(9):
        sets.append(_tpu(f"efficientnet-b{i}", "advprop", f"advprop/efficientnet-b{i}.tar.gz",
                         top1=_TOP1["advprop"][i]))
    for i in range(8):
        sets.append(_tpu(f"efficientnet-b{i}", "noisy-student",
                         f"noisystudent/noisy_student_efficientnet-b{i}.tar.gz",
                         top1=_TOP1["noisy-student"][i]))
    sets.append(_tpu("efficientnet-l2", "noisy-student",
                     "noisystudent/noisy_student_efficientnet-l2.tar.gz", top1=88.4))
    sets.append(_tpu("efficientnet-l2", "noisy-student-475",
                     "noisystudent/noisy_student_efficientnet-l2_475.tar.gz", top1=88.2,
                     resolution=475))
    for i in range(5):
        sets.append(_tpu(f"efficientnet-lite{i}", "imagenet", f"lite/efficientnet-lite{i}.tar.gz",
                         top1=_LITE_TOP1[i]))
    return sets


WEIGHT_SETS: dict[tuple[str, str], WeightSet] = {(w.model, w.name): w for w in _registry()}
SET_NAMES: tuple[str, ...] = tuple(dict.fromkeys(name for _, name in WEIGHT_SETS))


def variant_name(model: ModelSpec | str) -> str:
    """Canonical variant name of a spec or of any spelling (``"B0"`` -> ``efficientnet-b0``)."""
    return model.name if isinstance(model, ModelSpec) else canonical_name(model)


def available_weights(model: ModelSpec | str | None = None) -> list[str] | dict[str, list[str]]:
    """Weight-set names for one variant, or ``{variant: [names]}`` for all."""
    if model is None:
        table: dict[str, list[str]] = {}
        for variant, name in WEIGHT_SETS:
            table.setdefault(variant, []).append(name)
        return table
    variant = variant_name(model)
    return [name for v, name in WEIGHT_SETS if v == variant]


def get_weight_set(model: ModelSpec | str, name: str) -> WeightSet:
    """The registry row for (variant, set name); ValueError listing the alternatives."""
    variant = variant_name(model)
    key = (variant, name.lower())
    if key not in WEIGHT_SETS:
        known = available_weights(variant)
        raise ValueError(
            f"no weight set {name!r} for {variant}; available: {', '.join(known) or 'none'} "
            "(or pass a path to a weight file)")
    return WEIGHT_SETS[key]


def is_weight_set_name(weights: object) -> bool:
    """Whether ``weights`` names a set rather than a file.

    Known set names always do (a folder called ``imagenet`` in the working directory does not
    shadow them); other strings do when they look like no path (no separator, no suffix) and
    no such file exists, so that a typo gets "no weight set ..." rather than "no file ...".
    """
    if not isinstance(weights, str):
        return False
    text = weights.lower()
    if text in SET_NAMES:
        return True
    return (os.sep not in text and "/" not in text and not Path(text).suffix
            and not Path(weights).exists())


def eval_preprocessing(model: ModelSpec | str,
                       weights: str | os.PathLike | None = None) -> EvalPreprocessing:
    """The evaluation preprocessing for a variant with ``weights``.

    A named set gives its registry row's (``advprop`` -> ``inception`` normalisation, Lite ->
    ``lite``, L2 ``noisy-student-475`` -> 475 pixels). Files and ``None`` get the variant's own
    resolution and normalisation with the original crop rule (a ``.weights.h5`` carries its
    normalisation in the ``normalization`` layer anyway). Its ``.normalization`` is what the
    model is built with.

    Raises:
        ValueError: ``weights`` looks like a set name this variant does not have.
    """
    spec = get_spec(model)
    if isinstance(weights, str) and is_weight_set_name(weights):
        return get_weight_set(spec, weights).eval
    return evaluation_settings(spec.resolution, spec.normalization)

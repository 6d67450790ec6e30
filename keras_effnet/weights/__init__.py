"""Pretrained weights: the registry, the download cache, strict assignment, one reader per source
format, file conversion to ``.weights.h5``, and loading into a built model.

Modules, one concern each:

- ``registry``: ``WeightSet`` rows (``WEIGHT_SETS``) with their ``EvalPreprocessing``, queries.
- ``cache``: cache directory, ``$KERAS_EFFNET_BASE_URL`` mirrors, verified atomic downloads.
- ``assignment``: ``assign`` (every tensor used, every variable filled, or nothing assigned).
- ``tpu_checkpoint``, ``lukemelas``, ``keras_files``: readers, file -> tensors in Keras layout.
- ``conversion``: file -> ``.weights.h5``.
- ``load``: ``check_weights_argument``, ``weights_file``, ``load_weights_into``.

This package imports the architecture (``model``, ``plan``, ``scaling``), never
``keras_effnet.applications``: the applications layer resolves a set here, builds, then loads.
"""

from keras_effnet.weights.assignment import (
    ConversionError,
    ConversionReport,
    SourceTensor,
    Tensors,
    assign,
    set_normalization,
)
from keras_effnet.weights.cache import (
    BASE_URL_ENV,
    HOME_ENV,
    ChecksumError,
    WeightsUnavailableError,
    cache_dir,
    fetch,
    resolve_url,
)
from keras_effnet.weights.conversion import (
    SOURCES,
    build_target,
    convert,
    convert_keras_h5,
    convert_lukemelas,
    convert_tpu_checkpoint,
    read_source,
    variant_hint,
)
from keras_effnet.weights.keras_files import read_keras_h5, read_keras_weights
from keras_effnet.weights.load import (
    check_weights_argument,
    file_format,
    load_weights_into,
    weights_file,
)
from keras_effnet.weights.lukemelas import lukemelas_names, read_lukemelas
from keras_effnet.weights.registry import (
    ORIGIN,
    SET_NAMES,
    WEIGHT_SETS,
    WeightSet,
    available_weights,
    eval_preprocessing,
    get_weight_set,
    is_weight_set_name,
)
from keras_effnet.weights.tpu_checkpoint import (
    TPU_CHECKPOINT_TRAINING_STATE,
    read_tpu_checkpoint,
    tpu_checkpoint_names,
)

__all__ = [
    "BASE_URL_ENV", "HOME_ENV", "ORIGIN", "SET_NAMES", "SOURCES", "TPU_CHECKPOINT_TRAINING_STATE",
    "WEIGHT_SETS", "ChecksumError", "ConversionError", "ConversionReport", "SourceTensor",
    "Tensors", "WeightSet", "WeightsUnavailableError", "assign", "available_weights",
    "build_target", "cache_dir", "check_weights_argument", "convert", "convert_keras_h5",
    "convert_lukemelas", "convert_tpu_checkpoint", "eval_preprocessing", "fetch", "file_format",
    "get_weight_set", "is_weight_set_name", "load_weights_into", "lukemelas_names",
    "read_keras_h5", "read_keras_weights", "read_lukemelas", "read_source", "read_tpu_checkpoint",
    "resolve_url", "set_normalization", "tpu_checkpoint_names", "variant_hint", "weights_file",
]

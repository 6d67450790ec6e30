"""Export: serving SavedModel, TF-Hub feature-vector / classification modules, TFLite, ONNX.

Every writer takes a Keras model (float RGB in [0, 255], normalisation inside) and writes to a
temporary path beside the output, then renames it into place: an interrupted export leaves
nothing half-written, and an existing output is replaced only with ``overwrite=True``.

- ``export_saved_model``: TF Serving model whose signatures run THE eval preprocessing
  (``keras_effnet.preprocessing.preprocess_batch_for_eval``) and return logits, probabilities
  and the top-k classes and labels. Signatures: ``serving_default`` (float32 [B, H, W, 3] in
  [0, 255], any H, W), ``uint8_images`` (uint8 [B, H, W, 3]), ``encoded_images`` (tf.string [B]
  of JPEG/PNG/GIF/BMP bytes) and ``preprocessed_images`` (float32 [B, S, S, 3], no preprocessing).
- ``export_hub_feature_vector`` / ``export_hub_classification``: reusable SavedModels in the
  TF-Hub convention (REFERENCE.md §7): float32 [B, H, W, 3] in [0, 1]; ``__call__(images,
  training)`` traced for both Python values of ``training`` (no tf.cond, so gradients flow and
  batch-norm statistics update in training mode only); ``variables``, ``trainable_variables``,
  ``regularization_losses`` and a ``serving_default`` signature.
- ``export_tflite``: float32 / float16 / dynamic-range / full-integer int8 (uint8 pixel input,
  float32 output) through ``model.export()`` + ``TFLiteConverter.from_saved_model``.
- ``export_onnx``: ``model.export()`` + ``python -m tf2onnx.convert --saved-model``.
- ``export(source, fmt, output)``: one directory holding the model and ``metadata.json``
  (variant, resolution, input spec, preprocessing, normalisation, labels, weight source), from a
  Keras model, a variant + weight file, or a training ``model_dir`` (its EMA weights).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
from typing import Any, Iterable, Sequence

import keras
import numpy as np
import tensorflow as tf

from keras_effnet import preprocessing
from keras_effnet.layers import NORMALIZATIONS, ImageNormalization
from keras_effnet.scaling import ModelSpec, get_spec

FORMATS = ("saved_model", "hub_feature_vector", "hub_classification", "tflite", "onnx")
QUANTIZATIONS = ("float32", "float16", "dynamic", "int8")
METADATA_FILE = "metadata.json"
MODEL_FILES = {"tflite": "model.tflite", "onnx": "model.onnx"}
DEFAULT_TOP_K = 5
DEFAULT_OPSET = 17
NUM_REPRESENTATIVE = 100
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".gif", ".bmp")


class ExportError(RuntimeError):
    """A converter failed (tf2onnx, the TFLite converter); the message holds its output."""


# --------------------------------------------------------------------------------------------
# What is exported: a logits model plus the facts the metadata needs.

@dataclasses.dataclass(frozen=True)
class Preprocessing:
    """The eval preprocessing baked into serving signatures (``preprocess_for_eval`` arguments)."""

    image_size: int
    crop_fraction: float | None = None
    crop_padding: int = preprocessing.CROP_PADDING
    resize_method: str = "bicubic"


@dataclasses.dataclass
class ExportSource:
    """A model ready to export and where it came from.

    Attributes:
        model: float32 Keras model, RGB [0, 255] in, logits out (or features for a backbone).
        variant: variant name (``efficientnet-b0``, ``efficientnet-b0-phi-4`` ...).
        spec: the ``ModelSpec`` when known.
        preprocessing: eval crop/resize settings that go with the weights.
        normalization: name of the in-model normalisation (``imagenet``, ``lite`` ...).
        labels: class names, one per output (empty for a backbone).
        weight_source: what the weights are (``{"kind": "file", "path": ..., "ema": ...}``).
        weight_decay: L2 factor for Hub ``regularization_losses`` (from the training config).
        protected: paths an export must not write into (the source ``model_dir``, weight file).
        representative_data: callable(n) -> iterable of float32 [S, S, 3] images from the
            source's input pipeline, for int8 calibration (None when unknown).
    """

    model: keras.Model
    variant: str
    spec: ModelSpec | None
    preprocessing: Preprocessing
    normalization: str
    labels: list[str]
    weight_source: dict
    weight_decay: float | None = None
    protected: tuple[str, ...] = ()
    representative_data: Any = None


def load_source(model: str | ModelSpec | None = None, *, weights: str | None = None,
                model_dir: str | None = None, classes: int | None = None,
                image_size: int | None = None, include_top: bool = True) -> ExportSource:
    """The model to export from ``model`` + ``weights`` (file or set name) or a ``model_dir``.

    ``model_dir`` (a training run): its ``export/model.keras`` (EMA weights), else the latest
    checkpoint with its EMA restored; config, classes and preprocessing from the run's
    ``config.yaml``. ``weights`` with a variant: ``build_model(model, weights=...)``; the
    number of classes is read from the file when ``classes`` is None.

    Raises:
        ValueError: neither or both sources, or an unknown variant.
        FileNotFoundError: a missing weight file or model_dir.
    """
    if model_dir is not None and weights is not None:
        raise ValueError("pass either weights= (with a variant) or model_dir=, not both")
    if model_dir is not None:
        return _load_model_dir(model_dir, include_top=include_top)
    if model is None:
        raise ValueError("nothing to export: pass a variant name with weights=PATH (or a weight "
                         "set name such as 'imagenet'), or model_dir=DIR of a training run")
    return _load_variant(model, weights, classes=classes, image_size=image_size,
                         include_top=include_top)


def _load_variant(model, weights, *, classes, image_size, include_top) -> ExportSource:
    from keras_effnet import weights as weight_sets  # noqa: PLC0415
    from keras_effnet.model import build_model  # noqa: PLC0415

    spec = model if isinstance(model, ModelSpec) else get_spec(model)
    if weights is None:
        raise ValueError(f"no weights for {spec.name}: pass weights=PATH (.weights.h5, .keras, "
                         ".h5, .pth, checkpoint) or a set name "
                         f"({', '.join(weight_sets.available_weights(spec)) or 'none published'});"
                         " exporting random weights is never what you want")
    weights = os.fspath(weights)
    named = weight_sets._is_set_name(weights)
    if not named and not os.path.exists(weights):
        raise FileNotFoundError(f"weight file {weights!r} does not exist")
    if classes is None:
        classes = 1000 if named else (_classes_in_file(weights) or 1000)
    settings = weight_sets.eval_settings(spec, weights)
    size = image_size or settings.resolution
    kwargs = dict(input_shape=(size, size, 3), weights=weights, classifier_activation=None)
    if include_top:
        keras_model = build_model(spec, classes=classes, **kwargs)
    else:
        keras_model = build_model(spec, include_top=False, pooling="avg", **kwargs)
    normalization = weight_sets.normalization_for(spec, weights)
    labels = default_labels(classes) if include_top else []
    protected = () if named else (os.path.abspath(weights),)
    return ExportSource(
        model=keras_model, variant=spec.name, spec=spec,
        preprocessing=Preprocessing(size, settings.crop_fraction, settings.crop_padding,
                                    settings.resize_method),
        normalization=normalization, labels=labels,
        weight_source={"kind": "weight_set" if named else "file", "weights": weights,
                       "ema": None if not named else True},
        protected=protected)


def _classes_in_file(path: str) -> int | None:
    """Output classes of the ``predictions`` layer in a Keras weight/model file, if readable."""
    name = path.lower()
    try:
        if name.endswith(".keras"):
            import zipfile  # noqa: PLC0415
            with zipfile.ZipFile(path) as archive:
                config = json.loads(archive.read("config.json"))
            for layer in config.get("config", {}).get("layers", []):
                if layer.get("config", {}).get("name") == "predictions":
                    return int(layer["config"]["units"])
            return None
        if name.endswith((".h5", ".hdf5")):
            import h5py  # noqa: PLC0415
            with h5py.File(path, "r") as handle:
                found = []

                def visit(key, item):
                    if "predictions" in key and isinstance(item, h5py.Dataset) and item.ndim == 2:
                        found.append(item.shape[-1])

                handle.visititems(visit)
            return int(found[0]) if found else None
    except (OSError, KeyError, ValueError):
        return None
    return None


def _load_model_dir(model_dir: str, include_top: bool) -> ExportSource:
    from keras_effnet import checkpoints, config as config_lib  # noqa: PLC0415

    model_dir = os.path.abspath(os.fspath(model_dir))
    if not os.path.isdir(model_dir):
        raise FileNotFoundError(f"model_dir {model_dir!r} does not exist")
    config_path = os.path.join(model_dir, "config.yaml")
    if not os.path.exists(config_path):
        raise FileNotFoundError(f"{model_dir!r} holds no config.yaml: not a training model_dir "
                                "(use --model with --weights PATH for a weight file)")
    config = config_lib.load_config([config_path])
    keras_path = os.path.join(model_dir, checkpoints.EXPORT_DIR, "model.keras")
    if os.path.exists(keras_path):
        trained = keras.saving.load_model(keras_path, compile=False)
        ema = config.optimizer.ema_decay > 0
        weight_source = {"kind": "model_dir", "model_dir": model_dir, "file": keras_path,
                         "ema": ema}
    else:
        trained, ema, path = _restore_checkpoint(config, model_dir)
        weight_source = {"kind": "model_dir", "model_dir": model_dir, "checkpoint": path,
                         "ema": ema}
    keras_model = logits_model(trained)
    if not include_top:
        keras_model = backbone_model(keras_model)
    from keras_effnet import training  # noqa: PLC0415
    spec = training.resolve_spec(config.model)
    size = int(keras_model.input_shape[1] or training.image_size_for(config))
    crop_fraction = _source_crop_fraction(config.data.source)
    classes = int(keras_model.output_shape[-1]) if include_top else 0
    labels = _run_labels(model_dir, config, classes) if include_top else []

    def representative(count: int):
        from keras_effnet import data  # noqa: PLC0415
        dataset = data.make_dataset(config.data.source, config.data.train_split, image_size=size,
                                    batch_size=1, training=False, data_dir=config.data.data_dir,
                                    crop_fraction=crop_fraction)
        return (images[0] for images, _ in dataset.take(count))

    return ExportSource(
        model=keras_model, variant=spec.name, spec=spec,
        preprocessing=Preprocessing(size, crop_fraction),
        normalization=spec.normalization, labels=labels, weight_source=weight_source,
        weight_decay=config.optimizer.weight_decay or None, protected=(model_dir,),
        representative_data=representative)


def _restore_checkpoint(config, model_dir: str):
    """The EMA weights of the latest checkpoint when the run has no ``export/model.keras``."""
    from keras_effnet import optim, training  # noqa: PLC0415

    path = tf.train.latest_checkpoint(model_dir)
    if path is None:
        raise FileNotFoundError(f"{model_dir!r} has neither export/model.keras nor a checkpoint: "
                                "train first (keras-effnet-train --model_dir ...)")
    reader = tf.train.load_checkpoint(path)
    classes = config.model.num_classes
    for name, shape in reader.get_variable_to_shape_map().items():
        if name.startswith("model/") and len(shape) == 2 and "OPTIMIZER" not in name:
            classes = classes or shape[-1]
    if not classes:
        raise ValueError(f"cannot tell the number of classes of {path}; set model.num_classes")
    model = training.build_network(config, int(classes), training.image_size_for(config))
    state = {"model": model}
    ema = None
    if config.optimizer.ema_decay > 0:
        ema = optim.ExponentialMovingAverage(optim.ema_variables(model), config.optimizer.ema_decay,
                                             config.optimizer.ema_warmup)
        state["ema"] = ema
    tf.train.Checkpoint(**state).restore(path).expect_partial()
    if ema is not None:
        ema.swap()  # the model now holds the averages; nothing else uses it
    return model, ema is not None, path


def _source_crop_fraction(source: str) -> float | None:
    """Eval crop the input pipeline uses for a data source (the digits default keeps it all)."""
    try:
        from keras_effnet import data  # noqa: PLC0415
    except ImportError:
        return None
    defaults = getattr(data, "DIGITS_DEFAULTS", {})
    return defaults.get("crop_fraction") if source == "digits" else None


def _run_labels(model_dir: str, config, classes: int) -> list[str]:
    for candidate in ("labels.txt", os.path.join("export", "labels.txt")):
        path = os.path.join(model_dir, candidate)
        if os.path.exists(path):
            with open(path, encoding="utf-8") as handle:
                names = [line.rstrip("\n") for line in handle if line.strip()]
            if len(names) == classes:
                return names
    try:
        from keras_effnet import data  # noqa: PLC0415
        info = data.dataset_info(config.data.source, config.data.train_split,
                                 data_dir=config.data.data_dir)
        if len(info.class_names) == classes:
            return [str(name) for name in info.class_names]
    except Exception:  # noqa: BLE001 (the data may be gone; labels are a convenience)
        pass
    return default_labels(classes)


def default_labels(classes: int) -> list[str]:
    """ImageNet class names for 1000 classes, else ``"0"``, ``"1"`` ..."""
    if classes == 1000:
        from keras_effnet import imagenet  # noqa: PLC0415
        return imagenet.class_names()
    return [str(i) for i in range(classes)]


# --------------------------------------------------------------------------------------------
# Model surgery: logits head, variable input size, backbone.

def logits_model(model: keras.Model, input_shape: tuple | None = None) -> keras.Model:
    """A copy of functional ``model`` with a linear ``predictions`` layer (and ``input_shape``).

    Returns ``model`` itself when nothing changes. Weights are copied; the copy is float32.
    """
    config = model.get_config()
    changed = False
    for layer in config.get("layers", []):
        layer_config = layer.get("config", {})
        if layer_config.get("name") == "predictions" and layer_config.get("activation") != "linear":
            layer_config["activation"] = "linear"
            changed = True
        if input_shape is not None and layer.get("class_name") == "InputLayer":
            shape = tuple(input_shape)
            if tuple(layer_config.get("batch_shape", ())[1:]) != shape:
                layer_config["batch_shape"] = [None, *shape]
                changed = True
    if not changed:
        return model
    clone = model.__class__.from_config(config)
    clone.set_weights(model.get_weights())
    return clone


def backbone_model(model: keras.Model) -> keras.Model:
    """The model up to its global-average-pooled features (``avg_pool``; no dropout)."""
    names = [layer.name for layer in model.layers]
    if "avg_pool" in names:
        if model.layers[-1].name == "avg_pool":
            return model
        return keras.Model(model.input, model.get_layer("avg_pool").output, name=f"{model.name}_features")
    if len(model.output_shape) == 2:
        return model
    raise ValueError(f"model {model.name!r} has no 'avg_pool' layer and outputs {model.output_shape}: "
                     "build it with include_top=True or pooling='avg'")


def _has_classifier(model: keras.Model) -> bool:
    return any(layer.name == "predictions" for layer in model.layers)


def _normalization_layer(model: keras.Model) -> ImageNormalization | None:
    for layer in model.layers:
        if isinstance(layer, ImageNormalization):
            return layer
    return None


def _fixed_size(model: keras.Model) -> int | None:
    shape = model.input_shape
    return int(shape[1]) if shape[1] is not None and shape[1] == shape[2] else None


# --------------------------------------------------------------------------------------------
# Atomic outputs.

def check_output(output: str, overwrite: bool, protected: Iterable[str] = ()) -> str:
    """Absolute ``output`` after refusing an existing one (without ``overwrite``) or one inside
    (or containing) a ``protected`` source path; creates the parent directory."""
    output = os.path.abspath(os.fspath(output))
    for path in protected:
        path = os.path.abspath(path)
        if output == path or output.startswith(path.rstrip(os.sep) + os.sep):
            raise ValueError(f"output {output!r} is inside the source {path!r}; write exports "
                             "elsewhere (the source must never be overwritten or mixed with them)")
        if path.startswith(output.rstrip(os.sep) + os.sep):
            raise ValueError(f"output {output!r} contains the source {path!r}; replacing it would "
                             "delete the source")
    if os.path.lexists(output) and not overwrite:
        raise FileExistsError(f"output {output!r} already exists; pass overwrite=True "
                              "(--overwrite) to replace it, or choose another path")
    parent = os.path.dirname(output)
    os.makedirs(parent, exist_ok=True)
    return output


@contextlib.contextmanager
def _atomic_path(output: str, overwrite: bool, protected: Iterable[str] = ()):
    """Yield a temporary path beside ``output`` (same filesystem); rename it into place on success.

    The yielded path does not exist yet; write a file or a directory there.
    """
    output = check_output(output, overwrite, protected)
    parent, name = os.path.split(output)
    staging = tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=parent)
    target = os.path.join(staging, name)
    try:
        yield target
        if not os.path.lexists(target):
            raise ExportError(f"the export wrote nothing to {target}")
        old = None
        if os.path.lexists(output):
            old = os.path.join(staging, f"{name}.old")
            os.replace(output, old)
        os.replace(target, output)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# Metadata.

def build_metadata(source: ExportSource | None, fmt: str, *, model: keras.Model | None = None,
                   preprocess: Preprocessing | None = None, labels: Sequence[str] | None = None,
                   **extra) -> dict:
    """The JSON written beside an export: what goes in, what comes out, where weights came from."""
    import keras_effnet  # noqa: PLC0415

    model = model if model is not None else source.model
    preprocess = preprocess or (source.preprocessing if source else None)
    labels = list(labels if labels is not None else (source.labels if source else []))
    normalization = source.normalization if source else None
    layer = _normalization_layer(model)
    norm = {"name": normalization}
    if layer is not None:
        scale, offset = (np.asarray(t).tolist() for t in layer.scale_and_offset())
        norm.update(inside_model=True, scale=scale, offset=offset,
                    formula="x * scale + offset for x in [0, 255]")
    elif normalization in NORMALIZATIONS:
        norm.update(inside_model=False)
    spec = source.spec if source else None
    metadata = {
        "format": fmt,
        "variant": source.variant if source else model.name,
        "resolution": preprocess.image_size if preprocess else _fixed_size(model),
        "num_classes": len(labels) if labels else None,
        "spec": ({"width": spec.width, "depth": spec.depth, "resolution": spec.resolution,
                  "dropout": spec.dropout, "activation": spec.activation} if spec else None),
        "preprocessing": dataclasses.asdict(preprocess) if preprocess else None,
        "preprocessing_function": "keras_effnet.preprocessing.preprocess_for_eval",
        "normalization": norm,
        "labels": labels,
        "weight_source": source.weight_source if source else None,
        "keras_effnet_version": keras_effnet.__version__,
        "tensorflow_version": tf.__version__,
        "keras_version": keras.__version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    metadata.update(extra)
    return metadata


def write_metadata(path: str, metadata: dict) -> None:
    with open(path, "w", encoding="utf-8") as stream:
        json.dump(metadata, stream, indent=2)
        stream.write("\n")


# --------------------------------------------------------------------------------------------
# Serving SavedModel.

def serving_module(model: keras.Model, preprocess: Preprocessing, labels: Sequence[str] | None = None,
                   top_k: int = DEFAULT_TOP_K):
    """A trackable object holding the serving signatures (see ``export_saved_model``)."""
    model = logits_model(model)
    if not _has_classifier(model) and len(model.output_shape) != 2:
        raise ValueError("a serving model needs a classifier (include_top=True)")
    classes = int(model.output_shape[-1])
    labels = list(labels) if labels else [str(i) for i in range(classes)]
    if len(labels) != classes:
        raise ValueError(f"{len(labels)} labels for a model with {classes} classes")
    top_k = max(1, min(int(top_k), classes))
    size = preprocess.image_size
    root = tf.__internal__.tracking.AutoTrackable()
    root.variables = [v.value for v in model.variables]
    label_table = tf.constant(labels, dtype=tf.string)

    def outputs(images):
        logits = tf.cast(model(images, training=False), tf.float32)
        probabilities = tf.nn.softmax(logits, axis=-1)
        scores, indices = tf.math.top_k(probabilities, k=top_k)
        return {"logits": logits, "probabilities": probabilities,
                "top_k_classes": tf.cast(indices, tf.int32), "top_k_scores": scores,
                "top_k_labels": tf.gather(label_table, indices)}

    # One trace of the network, shared by every signature (tracing dominates export time).
    @tf.function(input_signature=[tf.TensorSpec([None, size, size, 3], tf.float32, name="images")])
    def classify(images):
        return outputs(images)

    def checked(images, name, height=None):
        """Signatures do not enforce shapes when called; fail with a message that says why."""
        shape = tf.shape(images)
        expected = f"[batch, {height or 'height'}, {height or 'width'}, 3]"
        checks = [tf.debugging.assert_equal(shape[-1], 3, message=(
            f"{name}: images must be RGB {expected}; convert grayscale/RGBA first"))]
        if height is not None:
            checks.append(tf.debugging.assert_equal(shape[1:3], [height, height], message=(
                f"{name}: images must be {expected} (already preprocessed); use serving_default "
                "or uint8_images for images of other sizes")))
        with tf.control_dependencies(checks):
            return tf.identity(images)

    def preprocessed(images):
        return preprocessing.preprocess_batch_for_eval(
            images, size, preprocess.crop_fraction, preprocess.crop_padding, preprocess.resize_method)

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32, name="images")])
    def float_images(images):
        """float32 [B, H, W, 3] RGB in [0, 255], any size: eval crop + resize inside."""
        return classify(preprocessed(checked(images, "serving_default")))

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8, name="images")])
    def uint8_images(images):
        """uint8 [B, H, W, 3] RGB, any size: eval crop + resize inside."""
        return classify(preprocessed(checked(images, "uint8_images")))

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])
    def encoded_images(image_bytes):
        """tf.string [B] of encoded JPEG / PNG / GIF / BMP images, each of its own size."""
        return classify(preprocessed(image_bytes))

    @tf.function(input_signature=[tf.TensorSpec([None, size, size, 3], tf.float32, name="images")])
    def preprocessed_images(images):
        """float32 [B, S, S, 3] in [0, 255], already preprocessed: straight into the model."""
        return classify(checked(images, "preprocessed_images", size))

    root.serving_default = float_images
    root.uint8_images = uint8_images
    root.encoded_images = encoded_images
    root.preprocessed_images = preprocessed_images
    signatures = {"serving_default": float_images.get_concrete_function(),
                  "uint8_images": uint8_images.get_concrete_function(),
                  "encoded_images": encoded_images.get_concrete_function(),
                  "preprocessed_images": preprocessed_images.get_concrete_function()}
    return root, signatures


def export_saved_model(model: keras.Model, output_dir: str, *, preprocess: Preprocessing | None = None,
                       labels: Sequence[str] | None = None, top_k: int = DEFAULT_TOP_K,
                       metadata: dict | None = None, overwrite: bool = False,
                       protected: Iterable[str] = ()) -> str:
    """Write a serving SavedModel to ``output_dir`` (atomically); returns its path.

    Signatures (outputs ``logits``, ``probabilities``, ``top_k_classes``, ``top_k_scores``,
    ``top_k_labels``): ``serving_default`` float32 [B, H, W, 3] in [0, 255];
    ``uint8_images`` uint8 [B, H, W, 3]; ``encoded_images`` tf.string [B]; all three of any
    size through ``preprocessing.preprocess_batch_for_eval``; ``preprocessed_images`` float32
    [B, S, S, 3] without preprocessing. ``preprocess`` defaults to the model's input size with
    the original crop rule. ``metadata`` (if given) is written to ``metadata.json`` inside.
    """
    preprocess = preprocess or _default_preprocessing(model)
    with _atomic_path(output_dir, overwrite, protected) as target:
        root, signatures = serving_module(model, preprocess, labels, top_k)
        tf.saved_model.save(root, target, signatures=signatures)
        if metadata is not None:
            write_metadata(os.path.join(target, METADATA_FILE), metadata)
    return os.path.abspath(output_dir)


def _default_preprocessing(model: keras.Model) -> Preprocessing:
    size = _fixed_size(model)
    if size is None:
        raise ValueError(f"model {model.name!r} has a variable input size {model.input_shape}; "
                         "pass preprocess=Preprocessing(image_size=...)")
    return Preprocessing(size)


# --------------------------------------------------------------------------------------------
# TF-Hub reusable SavedModels.

def hub_module(model: keras.Model, kind: str, weight_decay: float | None = None):
    """The reusable-SavedModel object (REFERENCE.md §7) for ``kind`` 'feature_vector'/'classification'.

    Inputs float32 [B, H, W, 3] in [0, 1] (times 255 into the model, which normalises).
    """
    if kind not in ("feature_vector", "classification"):
        raise ValueError(f"kind must be 'feature_vector' or 'classification', got {kind!r}")
    # Hub image modules accept any height and width: relax the input shape first.
    net = logits_model(model, input_shape=(None, None, 3))
    if kind == "feature_vector":
        net = backbone_model(net)
    elif not _has_classifier(net):
        raise ValueError("a classification module needs a model with its classifier "
                         "(include_top=True)")
    root = tf.__internal__.tracking.AutoTrackable()
    root.variables = [v.value for v in net.variables]
    root.trainable_variables = [v.value for v in net.trainable_variables]
    kernels = [v.value for v in net.trainable_variables if v.path.endswith("kernel")]
    root.regularization_losses = []
    if weight_decay:
        decay = float(weight_decay)

        @tf.function(input_signature=[])
        def l2_loss():
            """weight_decay * sum(w**2) / 2 over conv and dense kernels (the recipe's decay)."""
            return decay * tf.add_n([tf.nn.l2_loss(k) for k in kernels])

        root.regularization_losses = [l2_loss]

    @tf.function
    def call(images, training=False):
        images = tf.convert_to_tensor(images, tf.float32)
        return tf.cast(net(images * 255.0, training=training), tf.float32)

    spec = tf.TensorSpec([None, None, None, 3], tf.float32, name="images")
    call.get_concrete_function(spec, training=True)
    serve = call.get_concrete_function(spec, training=False)
    root.__call__ = call
    return root, {"serving_default": serve}


def _export_hub(kind: str, model, output_dir, weight_decay, metadata, overwrite, protected) -> str:
    with _atomic_path(output_dir, overwrite, protected) as target:
        root, signatures = hub_module(model, kind, weight_decay)
        tf.saved_model.save(root, target, signatures=signatures)
        if metadata is not None:
            write_metadata(os.path.join(target, METADATA_FILE), metadata)
    return os.path.abspath(output_dir)


def export_hub_feature_vector(model: keras.Model, output_dir: str, *, weight_decay: float | None = None,
                              metadata: dict | None = None, overwrite: bool = False,
                              protected: Iterable[str] = ()) -> str:
    """TF-Hub image feature-vector module: [B, H, W, 3] in [0, 1] -> [B, features], no dropout.

    ``weight_decay`` adds ``regularization_losses`` (``wd * sum(w**2) / 2`` of the kernels).
    """
    return _export_hub("feature_vector", model, output_dir, weight_decay, metadata, overwrite,
                       protected)


def export_hub_classification(model: keras.Model, output_dir: str, *, weight_decay: float | None = None,
                              metadata: dict | None = None, overwrite: bool = False,
                              protected: Iterable[str] = ()) -> str:
    """TF-Hub image classification module: [B, H, W, 3] in [0, 1] -> logits [B, classes]."""
    return _export_hub("classification", model, output_dir, weight_decay, metadata, overwrite,
                       protected)


def import_tensorflow_hub():
    """``import tensorflow_hub``, working around its use of the removed ``pkg_resources``.

    tensorflow-hub 0.16 imports ``pkg_resources.parse_version``, which setuptools >= 81 no
    longer ships; a stand-in using ``packaging.version.parse`` is installed when it is missing.
    """
    try:
        import pkg_resources  # noqa: F401, PLC0415
    except ImportError:
        import types  # noqa: PLC0415
        from packaging.version import parse  # noqa: PLC0415
        shim = types.ModuleType("pkg_resources")
        shim.parse_version = parse
        sys.modules.setdefault("pkg_resources", shim)
    import tensorflow_hub  # noqa: PLC0415
    return tensorflow_hub


# --------------------------------------------------------------------------------------------
# TFLite and ONNX (through a plain SavedModel from ``model.export``: REFERENCE.md §9).

def _fixed_input_model(model: keras.Model, image_size: int | None) -> keras.Model:
    size = image_size or _fixed_size(model)
    if size is None:
        raise ValueError(f"model {model.name!r} has a variable input size; pass image_size=")
    return logits_model(model, input_shape=(size, size, 3))


def _plain_saved_model(model: keras.Model, directory: str) -> None:
    model.export(directory, format="tf_saved_model", verbose=False)


def export_tflite(model: keras.Model, output_path: str, *, quantization: str = "float32",
                  representative_images=None, preprocess: Preprocessing | None = None,
                  num_representative: int = NUM_REPRESENTATIVE, image_size: int | None = None,
                  metadata: dict | None = None, overwrite: bool = False,
                  protected: Iterable[str] = ()) -> str:
    """Convert ``model`` (logits head, input [1, S, S, 3]) to a ``.tflite`` file; returns its path.

    quantization: ``float32``; ``float16`` (weights in half precision); ``dynamic`` (int8
    weights, float activations); ``int8`` (full integer: int8 weights and activations, uint8
    RGB input in [0, 255], float32 output), calibrated on ``representative_images``: a
    directory or list of image files, encoded bytes, uint8/float arrays [H, W, 3] of any size
    (run through ``preprocess_for_eval``), or a ``tf.data.Dataset`` of preprocessed float32
    images [S, S, 3] / batches / (image, label) pairs. ``metadata`` goes to ``<stem>.json``.
    """
    if quantization not in QUANTIZATIONS:
        raise ValueError(f"quantization must be one of {', '.join(QUANTIZATIONS)}, got {quantization!r}")
    model = _fixed_input_model(model, image_size or (preprocess.image_size if preprocess else None))
    preprocess = preprocess or _default_preprocessing(model)
    if quantization == "int8" and representative_images is None:
        raise ValueError("int8 quantization needs representative_images (about 100 images from "
                         "the input pipeline, or a directory of photos: --representative_data)")
    with _atomic_path(output_path, overwrite, protected) as target, \
            tempfile.TemporaryDirectory(prefix="keras-effnet-tflite-") as workdir:
        saved = os.path.join(workdir, "saved_model")
        _plain_saved_model(model, saved)
        converter = tf.lite.TFLiteConverter.from_saved_model(saved)
        if quantization == "float16":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.target_spec.supported_types = [tf.float16]
        elif quantization == "dynamic":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        elif quantization == "int8":
            images = list(representative_arrays(representative_images, preprocess,
                                                num_representative))
            if not images:
                raise ValueError("representative_images yielded no images")

            def dataset():
                for image in images:
                    yield [image[None]]

            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.representative_dataset = dataset
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            converter.inference_input_type = tf.uint8
        try:
            flatbuffer = converter.convert()
        except Exception as error:  # noqa: BLE001 (the converter raises many types)
            raise ExportError(f"TFLite conversion ({quantization}) failed: {error}") from error
        with open(target, "wb") as stream:
            stream.write(flatbuffer)
    if metadata is not None:
        write_metadata(os.path.splitext(os.path.abspath(output_path))[0] + ".json", metadata)
    return os.path.abspath(output_path)


def representative_arrays(images, preprocess: Preprocessing, limit: int = NUM_REPRESENTATIVE):
    """float32 [S, S, 3] arrays in [0, 255] from the forms ``export_tflite`` accepts."""
    size = preprocess.image_size
    if callable(images) and not isinstance(images, tf.data.Dataset):
        images = images(limit)
    if isinstance(images, (str, os.PathLike)):
        directory = os.fspath(images)
        if not os.path.isdir(directory):
            raise FileNotFoundError(f"representative image directory {directory!r} does not exist")
        images = sorted(path for path in glob.glob(os.path.join(directory, "**", "*"), recursive=True)
                        if path.lower().endswith(IMAGE_SUFFIXES))
        if not images:
            raise ValueError(f"no {'/'.join(IMAGE_SUFFIXES)} images under {directory!r}")
    if isinstance(images, tf.data.Dataset):
        count = 0
        for element in images:
            batch = element[0] if isinstance(element, (tuple, list)) else element
            batch = np.asarray(batch, dtype=np.float32)
            for image in (batch if batch.ndim == 4 else batch[None]):
                if image.shape[:2] != (size, size):
                    image = preprocessing.preprocess_for_eval(
                        image, size, preprocess.crop_fraction, preprocess.crop_padding,
                        preprocess.resize_method).numpy()
                yield image
                count += 1
                if count >= limit:
                    return
        return
    count = 0
    for item in images:
        if isinstance(item, (str, os.PathLike)):
            item = tf.io.read_file(os.fspath(item))
        elif isinstance(item, bytes):
            item = tf.constant(item)
        yield preprocessing.preprocess_for_eval(item, size, preprocess.crop_fraction,
                                                preprocess.crop_padding,
                                                preprocess.resize_method).numpy()
        count += 1
        if count >= limit:
            return


def export_onnx(model: keras.Model, output_path: str, *, opset: int = DEFAULT_OPSET,
                image_size: int | None = None, metadata: dict | None = None,
                overwrite: bool = False, protected: Iterable[str] = ()) -> str:
    """Convert ``model`` (logits head, input [B, S, S, 3] float32 in [0, 255]) to ONNX via tf2onnx.

    Runs ``python -m tf2onnx.convert --saved-model`` in a subprocess (its in-process
    ``from_function`` turns variables into inputs: REFERENCE.md §9). Returns the path.
    """
    model = _fixed_input_model(model, image_size)
    with _atomic_path(output_path, overwrite, protected) as target, \
            tempfile.TemporaryDirectory(prefix="keras-effnet-onnx-") as workdir:
        saved = os.path.join(workdir, "saved_model")
        _plain_saved_model(model, saved)
        command = [sys.executable, "-m", "tf2onnx.convert", "--saved-model", saved,
                   "--opset", str(int(opset)), "--output", target]
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
        result = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
        if result.returncode != 0 or not os.path.exists(target):
            tail = (result.stdout + result.stderr)[-4000:]
            raise ExportError(f"tf2onnx failed (exit {result.returncode}):\n{tail}")
    if metadata is not None:
        write_metadata(os.path.splitext(os.path.abspath(output_path))[0] + ".json", metadata)
    return os.path.abspath(output_path)


# --------------------------------------------------------------------------------------------
# The dispatcher.

def export(model_or_source, fmt: str, output: str, *, weights: str | None = None,
           model_dir: str | None = None, classes: int | None = None, image_size: int | None = None,
           overwrite: bool = False, quantization: str = "float32", representative_data=None,
           num_representative: int = NUM_REPRESENTATIVE, opset: int = DEFAULT_OPSET,
           weight_decay: float | None = None, top_k: int = DEFAULT_TOP_K) -> str:
    """Export to directory ``output``: the model in format ``fmt`` plus ``metadata.json``.

    Args:
        model_or_source: a Keras model (inputs [0, 255]), an ``ExportSource``, a variant name
            (with ``weights=``), or None with ``model_dir=`` (a training run: EMA weights).
        fmt: one of ``FORMATS``. saved_model / hub_* write a SavedModel directory at ``output``;
            tflite / onnx write ``output/model.tflite`` / ``output/model.onnx``.
        quantization, representative_data, num_representative: TFLite (see ``export_tflite``);
            for int8 the source's input pipeline is used when ``representative_data`` is None.
        weight_decay: Hub ``regularization_losses`` factor (default: the training config's).

    Returns the path of the model (directory or file).

    Raises:
        ValueError: unknown format / quantization, output inside the source, bad arguments.
        FileExistsError: ``output`` exists and ``overwrite`` is False.
        FileNotFoundError: missing weights or model_dir.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if quantization not in QUANTIZATIONS:
        raise ValueError(f"quantization must be one of {', '.join(QUANTIZATIONS)}, got {quantization!r}")
    source = _as_source(model_or_source, weights=weights, model_dir=model_dir, classes=classes,
                        image_size=image_size, include_top=fmt != "hub_feature_vector")
    output = os.path.abspath(os.fspath(output))
    check_output(output, overwrite, source.protected)
    decay = weight_decay if weight_decay is not None else source.weight_decay
    extra: dict[str, Any] = {}
    if fmt == "saved_model":
        extra.update(input={"signatures": {
            "serving_default": "float32 [B, H, W, 3] RGB in [0, 255], any size",
            "uint8_images": "uint8 [B, H, W, 3] RGB, any size",
            "encoded_images": "string [B] of JPEG/PNG/GIF/BMP bytes",
            "preprocessed_images": f"float32 [B, {source.preprocessing.image_size}, "
                                   f"{source.preprocessing.image_size}, 3] in [0, 255], preprocessed"}},
            outputs=["logits", "probabilities", "top_k_classes", "top_k_scores", "top_k_labels"],
            top_k=top_k)
    elif fmt.startswith("hub_"):
        extra.update(input={"dtype": "float32", "shape": [None, None, None, 3], "range": [0, 1],
                            "note": "hub convention: multiply by 255 happens inside"},
                     outputs=["feature_vector" if fmt == "hub_feature_vector" else "logits"],
                     weight_decay=decay)
    else:
        size = source.preprocessing.image_size
        int8 = fmt == "tflite" and quantization == "int8"
        extra.update(input={"dtype": "uint8" if int8 else "float32", "shape": [1 if fmt == "tflite"
                                                                              else None, size, size, 3],
                            "range": [0, 255], "note": "apply preprocessing first"},
                     outputs=["logits"])
        if fmt == "tflite":
            extra["quantization"] = quantization
        else:
            extra["opset"] = opset
    metadata = build_metadata(source, fmt, **extra)

    with _atomic_path(output, overwrite, source.protected) as target:
        if fmt == "saved_model":
            export_saved_model(source.model, target, preprocess=source.preprocessing,
                               labels=source.labels or None, top_k=top_k)
        elif fmt == "hub_feature_vector":
            metadata["labels"] = []
            metadata["num_classes"] = None
            export_hub_feature_vector(source.model, target, weight_decay=decay)
        elif fmt == "hub_classification":
            export_hub_classification(source.model, target, weight_decay=decay)
        elif fmt == "tflite":
            os.makedirs(target)
            representative = representative_data
            if representative is None and quantization == "int8":
                representative = source.representative_data
            export_tflite(source.model, os.path.join(target, MODEL_FILES["tflite"]),
                          quantization=quantization, representative_images=representative,
                          preprocess=source.preprocessing, num_representative=num_representative)
        else:
            os.makedirs(target)
            export_onnx(source.model, os.path.join(target, MODEL_FILES["onnx"]), opset=opset,
                        image_size=source.preprocessing.image_size)
        write_metadata(os.path.join(target, METADATA_FILE), metadata)
    if fmt in MODEL_FILES:
        return os.path.join(output, MODEL_FILES[fmt])
    return output


def _as_source(model_or_source, *, weights, model_dir, classes, image_size, include_top) -> ExportSource:
    if isinstance(model_or_source, ExportSource):
        return model_or_source
    if isinstance(model_or_source, keras.Model):
        if weights is not None or model_dir is not None:
            raise ValueError("pass weights=/model_dir= with a variant name, not with a Keras model")
        model = model_or_source
        size = image_size or _fixed_size(model)
        if size is None:
            raise ValueError(f"model {model.name!r} has a variable input size; pass image_size=")
        has_top = _has_classifier(model)
        norm = _normalization_layer(model)
        return ExportSource(
            model=model, variant=model.name, spec=None, preprocessing=Preprocessing(size),
            normalization="custom" if norm is not None else "none",
            labels=default_labels(int(model.output_shape[-1])) if has_top and include_top else [],
            weight_source={"kind": "keras_model", "name": model.name})
    return load_source(model_or_source, weights=weights, model_dir=model_dir, classes=classes,
                       image_size=image_size, include_top=include_top)


def read_metadata(path: str) -> dict:
    """The ``metadata.json`` of an export directory (or beside a model file)."""
    path = os.fspath(path)
    candidates = [os.path.join(path, METADATA_FILE)] if os.path.isdir(path) else [
        os.path.join(os.path.dirname(path), METADATA_FILE), os.path.splitext(path)[0] + ".json"]
    for candidate in candidates:
        if os.path.exists(candidate):
            with open(candidate, encoding="utf-8") as stream:
                return json.load(stream)
    raise FileNotFoundError(f"no {METADATA_FILE} for {path!r}")


# --------------------------------------------------------------------------------------------
# Running exported models (tests, the int8 report, the benchmark).

def tflite_predict(path: str, images: np.ndarray, num_threads: int | None = None) -> np.ndarray:
    """Run a ``.tflite`` file on float32 images [N, S, S, 3] in [0, 255] -> outputs [N, C].

    uint8 inputs (int8 models) get the pixels rounded; quantised outputs are dequantised.
    """
    interpreter = tf.lite.Interpreter(model_path=os.fspath(path), num_threads=num_threads)
    input_detail = interpreter.get_input_details()[0]
    output_detail = interpreter.get_output_details()[0]
    interpreter.resize_tensor_input(input_detail["index"], [1, *images.shape[1:]])
    interpreter.allocate_tensors()
    results = []
    for image in images:
        value = image[None]
        if input_detail["dtype"] in (np.uint8, np.int8):
            scale, zero = input_detail["quantization"]
            value = np.round(value / (scale or 1.0) + zero)
            info = np.iinfo(input_detail["dtype"])
            value = np.clip(value, info.min, info.max)
        interpreter.set_tensor(input_detail["index"], value.astype(input_detail["dtype"]))
        interpreter.invoke()
        out = interpreter.get_tensor(output_detail["index"]).astype(np.float32)
        if output_detail["dtype"] in (np.uint8, np.int8):
            scale, zero = output_detail["quantization"]
            out = (out - zero) * scale
        results.append(out[0])
    return np.stack(results)


def onnx_predict(path: str, images: np.ndarray) -> np.ndarray:
    """Run an ``.onnx`` file with onnxruntime on float32 images [N, S, S, 3] in [0, 255]."""
    import onnxruntime  # noqa: PLC0415

    session = onnxruntime.InferenceSession(os.fspath(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return session.run(None, {name: images.astype(np.float32)})[0]


def top1_agreement(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Fraction of rows whose argmax agrees."""
    return float(np.mean(np.argmax(reference, -1) == np.argmax(candidate, -1)))

"""What is exported: a logits model plus what its metadata says, from one of three sources.

- a Keras model with its ``EvalPreprocessing`` and labels (``source_from_model``);
- a training run directory (``source_from_run``): only what the run directory holds (``run.json``,
  ``labels.txt``, the model through ``keras_effnet.training.load_run_model``, which has a logits
  head); never the initial weights file, never the training data to learn the labels;
- a variant with a weight file or weight-set name (``source_from_weights``), built with a logits
  head (``classifier_activation=None``).

``load_source`` picks one from the command-line style arguments.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import zipfile
from typing import Any, Callable, Iterable, Sequence

import h5py
import keras
import tensorflow as tf

from keras_effnet import applications, imagenet, training
from keras_effnet import data as data_lib
from keras_effnet import weights as weights_lib
from keras_effnet.export.graph import backbone_model, default_eval_preprocessing, has_classifier
from keras_effnet.preprocessing import EvalPreprocessing
from keras_effnet.run_dir import LABELS_FILE, METADATA_FILE, RunDirectory, RunMetadata
from keras_effnet.scaling import ModelSpec, get_spec

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class ExportSource:
    """A model ready to export and where it came from.

    Attributes:
        model: float32 Keras model, RGB [0, 255] in, logits out (or features for a backbone).
        variant: variant name (``efficientnet-b0``, ``efficientnet-b0-phi-4`` ...).
        spec: the ``ModelSpec`` when known.
        eval_preprocessing: how images are prepared for the model (resolution, crop, resize,
            normalisation, input range): baked into serving signatures, written to metadata.
        labels: class names, one per output (empty for a backbone).
        weight_source: what the weights are (``{"kind": "file", "weights": ..., "ema": ...}``).
        weight_decay: L2 factor for Hub ``regularization_losses`` (from the run's config).
        protected: paths an export must not write into (the run directory, the weight file).
        representative_data: callable(n) -> iterable of float32 [S, S, 3] images from the
            source's input pipeline, for int8 calibration (None when unknown).
    """

    model: keras.Model
    variant: str
    spec: ModelSpec | None
    eval_preprocessing: EvalPreprocessing
    labels: Sequence[str]
    weight_source: dict
    weight_decay: float | None = None
    protected: tuple[str, ...] = ()
    representative_data: Callable[[int], Iterable[Any]] | None = None


def default_labels(classes: int) -> list[str]:
    """ImageNet class names for 1000 classes, else ``"0"``, ``"1"`` ..."""
    if classes == 1000:
        return imagenet.class_names()
    return [str(i) for i in range(classes)]


def source_from_model(model: keras.Model, eval_preprocessing: EvalPreprocessing | None = None,
                      labels: Sequence[str] | None = None, *, include_top: bool = True,
                      image_size: int | None = None) -> ExportSource:
    """An ``ExportSource`` for a Keras model (inputs RGB [0, 255], normalisation inside).

    ``eval_preprocessing`` defaults to the model's input size with the original crop rule and
    the normalisation its ``normalization`` layer does; ``labels`` to ``default_labels``.

    Raises:
        ValueError: a variable input size without ``image_size`` / ``eval_preprocessing``, or
            labels that do not match the classifier.
    """
    if eval_preprocessing is None:
        eval_preprocessing = default_eval_preprocessing(model, image_size)
    elif image_size is not None:
        eval_preprocessing = eval_preprocessing.replace(resolution=int(image_size))
    with_top = has_classifier(model) and include_top
    classes = int(model.output_shape[-1]) if with_top else 0
    if labels is not None and with_top and len(labels) != classes:
        raise ValueError(f"{len(labels)} labels for model {model.name!r} with {classes} classes")
    labels = list(labels) if labels is not None and with_top else (
        default_labels(classes) if with_top else [])
    return ExportSource(model=model, variant=model.name, spec=None,
                        eval_preprocessing=eval_preprocessing, labels=labels,
                        weight_source={"kind": "keras_model", "name": model.name})


def source_from_run(run_dir: str | os.PathLike, *, include_top: bool = True,
                    classes: int | None = None, image_size: int | None = None) -> ExportSource:
    """An ``ExportSource`` for a training run directory (its EMA weights, class names, settings).

    A run brings its own classifier and input size: ``classes`` / ``image_size``, when given,
    must be the run's (checked before any model loads, whether the run finished or left only a
    checkpoint).

    Raises:
        keras_effnet.run_dir.NotARunDirectory: no ``run.json`` (a ``FileNotFoundError``).
        ValueError: a damaged run directory, or ``classes`` / ``image_size`` not the run's.
    """
    run = RunDirectory(run_dir)
    # Fails fast, naming what is missing, before any model loads.
    _check_run_request(run, run.read_metadata(), classes=classes, image_size=image_size)
    model, metadata, loaded = training.load_run_model(run.path, use_ema=True)
    weight_source = {**loaded, "kind": "model_dir", "model_dir": run.path,
                     "ema": bool(loaded.get("ema", metadata.ema)),
                     "initial_weights": metadata.weight_source}
    weight_decay = None
    config = _run_config(run)
    if config is not None:
        weight_decay = config.optimizer.weight_decay or None
    if not include_top:
        model = backbone_model(model)
    return ExportSource(
        model=model, variant=metadata.spec.name, spec=metadata.spec,
        eval_preprocessing=metadata.eval_preprocessing,
        labels=list(metadata.class_names) if include_top else [],
        weight_source=weight_source, weight_decay=weight_decay, protected=(run.path,),
        representative_data=_run_images(run, metadata.eval_preprocessing))


def _check_run_request(run: RunDirectory, metadata: RunMetadata, *, classes: int | None = None,
                       image_size: int | None = None) -> None:
    """Refuse ``classes`` / ``image_size`` (the export flags) that are not the run's own."""
    if classes is not None and int(classes) != metadata.num_classes:
        names = ", ".join(metadata.class_names[:5])
        more = ", ..." if metadata.num_classes > 5 else ""
        raise ValueError(
            f"--classes {classes} does not match run {run.path!r}: it has "
            f"{metadata.num_classes} classes ({LABELS_FILE}: {names}{more}); a run "
            "exports its own classifier and class names: drop --classes (to change the classes, "
            "fine-tune a new run from this one)")
    resolution = metadata.eval_preprocessing.resolution
    if image_size is not None and int(image_size) != resolution:
        raise ValueError(
            f"--image_size {image_size} does not match run {run.path!r}: its model takes "
            f"{resolution} x {resolution} images ({METADATA_FILE}); drop --image_size")


def _run_config(run: RunDirectory):
    """The run's ``config.yaml`` as a ``Config``, or None when it is gone."""
    if not os.path.exists(run.config_path):
        return None
    return training.run_config(run)


def _run_images(run: RunDirectory, settings: EvalPreprocessing
                ) -> Callable[[int], tf.data.Dataset]:
    """int8 calibration images from the run's training data (through its ``config.yaml``),
    eval-preprocessed; a clear error naming the fix when the data is gone."""

    def images(count: int):
        config = _run_config(run)
        fix = "pass --representative_data DIR (a folder of image files) instead"
        if config is None:
            raise FileNotFoundError(f"{run.path!r} holds no config.yaml to find its training "
                                    f"data for int8 calibration; {fix}")
        try:
            dataset = data_lib.make_dataset(
                config.data.source, config.data.train_split, image_size=settings.resolution,
                batch_size=1, training=False, data_dir=config.data.data_dir,
                eval_preprocessing=settings)
            batches = [images[0] for images, _ in dataset.take(count)]
        except (OSError, ValueError, tf.errors.OpError) as error:
            raise FileNotFoundError(
                f"the run's training data ({config.data.source!r}, data_dir "
                f"{config.data.data_dir!r}) is not available for int8 calibration ({error}); "
                f"{fix}") from None
        # Already through the eval preprocessing: a dataset, so it is not cropped again.
        return tf.data.Dataset.from_tensor_slices(tf.stack(batches))

    return images


def source_from_weights(model: str | ModelSpec, weights: str | os.PathLike | None, *,
                        classes: int | None = None, image_size: int | None = None,
                        include_top: bool = True) -> ExportSource:
    """An ``ExportSource`` for a variant with a weight file or weight-set name (logits head).

    The number of classes is read from a Keras weight file when ``classes`` is None.

    Raises:
        ValueError: no weights, or an unknown variant / weight-set name.
        FileNotFoundError: a weight file that does not exist.
    """
    spec = model if isinstance(model, ModelSpec) else get_spec(model)
    if weights is None:
        known = ", ".join(weights_lib.available_weights(spec)) or "none published"
        raise ValueError(f"no weights for {spec.name}: pass weights=PATH (.weights.h5, .keras, "
                         f".h5, .pth, checkpoint) or a set name ({known}); exporting random "
                         "weights is never what you want")
    weights = os.fspath(weights)
    named = weights_lib.is_weight_set_name(weights)
    if not named and not (os.path.exists(weights) or os.path.exists(f"{weights}.index")):
        raise FileNotFoundError(f"weight file {weights!r} does not exist")
    if classes is None:
        classes = 1000 if named else (classes_in_file(weights) or 1000)
    settings = weights_lib.eval_preprocessing(spec, weights)
    if image_size:
        settings = settings.replace(resolution=int(image_size))
    size = settings.resolution
    kwargs: dict[str, Any] = dict(input_shape=(size, size, 3), weights=weights,
                                  classifier_activation=None)
    if include_top:
        keras_model = applications.build_model(spec, classes=classes, **kwargs)
    else:
        keras_model = applications.build_model(spec, include_top=False, pooling="avg", **kwargs)
    return ExportSource(
        model=keras_model, variant=spec.name, spec=spec, eval_preprocessing=settings,
        labels=default_labels(classes) if include_top else [],
        weight_source={"kind": "weight_set" if named else "file", "weights": weights,
                       "ema": True if named else None},
        protected=() if named else (os.path.abspath(weights),))


def classes_in_file(path: str) -> int | None:
    """Output classes of the ``predictions`` layer in a Keras weight/model file, if readable."""
    name = path.lower()
    try:
        if name.endswith(".keras"):
            with zipfile.ZipFile(path) as archive:
                config = json.loads(archive.read("config.json"))
            for layer in config.get("config", {}).get("layers", []):
                if layer.get("config", {}).get("name") == "predictions":
                    return int(layer["config"]["units"])
            return None
        if name.endswith((".h5", ".hdf5")):
            found = []

            def visit(key, item):
                if "predictions" in key and isinstance(item, h5py.Dataset) and item.ndim == 2:
                    found.append(item.shape[-1])

            with h5py.File(path, "r") as handle:
                handle.visititems(visit)
            return int(found[0]) if found else None
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return None
    return None


def load_source(model: str | ModelSpec | None = None, *, weights: str | None = None,
                model_dir: str | None = None, classes: int | None = None,
                image_size: int | None = None, include_top: bool = True) -> ExportSource:
    """The model to export from ``model`` + ``weights`` (file or set name) or a ``model_dir``.

    ``classes`` / ``image_size`` build the variant; with ``model_dir`` they must be the run's.

    Raises:
        ValueError: neither or both sources, an unknown variant, or ``classes`` /
            ``image_size`` that a run directory contradicts.
        FileNotFoundError: a missing weight file or run directory.
    """
    if model_dir is not None and weights is not None:
        raise ValueError("pass either weights= (with a variant) or model_dir=, not both")
    if model_dir is not None:
        return source_from_run(model_dir, include_top=include_top, classes=classes,
                               image_size=image_size)
    if model is None:
        raise ValueError("nothing to export: pass a variant name with weights=PATH (or a weight "
                         "set name such as 'imagenet'), or model_dir=DIR of a training run")
    return source_from_weights(model, weights, classes=classes, image_size=image_size,
                               include_top=include_top)

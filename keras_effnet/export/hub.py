"""TF-Hub image modules: reusable SavedModels for feature vectors and classification.

The layout follows the tensorflow/hub documentation ("Reusable SavedModels" and the common
image signatures): inputs float32 [B, H, W, 3] in [0, 1] of any size (times 255 into the model,
which normalises); ``__call__(images, training=False)`` traced for both Python values of
``training`` (no ``tf.cond``: gradients flow, and batch-norm statistics update in training mode
only); attributes ``variables``, ``trainable_variables`` and ``regularization_losses``; and a
``serving_default`` signature. ``hub.KerasLayer`` (tf-keras) and ``keras.layers.TFSMLayer``
(Keras 3) load them.
"""

from __future__ import annotations

import os
import sys
import types
from typing import Iterable

import keras
import tensorflow as tf

from keras_effnet.export.graph import backbone_model, export_view, has_classifier
from keras_effnet.export.metadata import METADATA_FILE, write_metadata
from keras_effnet.export.staging import staged_directory

KINDS = ("feature_vector", "classification")
# The serving signature's output key per kind (also listed as ``outputs`` in metadata.json).
OUTPUT_NAMES = {"feature_vector": "feature_vector", "classification": "logits"}
IMAGES = tf.TensorSpec([None, None, None, 3], tf.float32, name="images")


class HubModule(tf.Module):
    """The trackable root of a Hub module.

    The reusable-SavedModel convention names plain attributes ``variables`` and
    ``trainable_variables``; the class attributes below let instances hold them in place of
    ``tf.Module``'s computed properties of the same names.
    """

    variables = ()
    trainable_variables = ()

    def __init__(self, net: keras.Model, output_name: str, weight_decay: float | None = None):
        super().__init__(name="hub_module")
        self.variables = [variable.value for variable in net.variables]
        self.trainable_variables = [variable.value for variable in net.trainable_variables]
        kernels = [variable.value for variable in net.trainable_variables
                   if variable.path.endswith("kernel")]
        self.regularization_losses = []
        if weight_decay:
            decay = float(weight_decay)

            @tf.function(input_signature=[])
            def l2_loss():
                """weight_decay * sum(w**2) / 2 over conv and dense kernels (the recipe's decay)."""
                return decay * tf.add_n([tf.nn.l2_loss(kernel) for kernel in kernels])

            self.regularization_losses = [l2_loss]

        @tf.function
        def call(images, training=False):
            images = tf.convert_to_tensor(images, tf.float32)
            return tf.cast(net(images * 255.0, training=training), tf.float32)

        @tf.function(input_signature=[IMAGES])
        def serve(images):
            return {output_name: call(images, training=False)}

        call.get_concrete_function(IMAGES, training=True)
        call.get_concrete_function(IMAGES, training=False)
        self.__call__ = call
        self.serve = serve

    def signatures(self) -> dict:
        """``serving_default``: ``__call__`` in inference mode, its output keyed ``feature_vector``
        or ``logits`` (the names ``metadata.json`` lists; ``keras.layers.TFSMLayer`` returns
        this dict)."""
        return {"serving_default": self.serve.get_concrete_function()}


def hub_module(model: keras.Model, kind: str, weight_decay: float | None = None) -> HubModule:
    """The Hub module root for ``kind`` ``feature_vector`` or ``classification``.

    Raises:
        ValueError: an unknown kind, or a classification module from a model without classifier.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be 'feature_vector' or 'classification', got {kind!r}")
    if kind == "feature_vector":
        model = backbone_model(model)
    elif not has_classifier(model):
        raise ValueError("a classification module needs a model with its classifier "
                         "(include_top=True)")
    # Hub image modules accept any height and width.
    return HubModule(export_view(model, input_shape=(None, None, 3)), OUTPUT_NAMES[kind],
                     weight_decay)


def _export_hub(kind: str, model, output_dir, weight_decay, metadata, overwrite, protected) -> str:
    root = hub_module(model, kind, weight_decay)
    with staged_directory(output_dir, overwrite, protected) as target:
        tf.saved_model.save(root, target, signatures=root.signatures())
        if metadata is not None:
            write_metadata(os.path.join(target, METADATA_FILE), metadata)
    return os.path.abspath(output_dir)


def export_hub_feature_vector(model: keras.Model, output_dir: str | os.PathLike, *,
                              weight_decay: float | None = None, metadata: dict | None = None,
                              overwrite: bool = False, protected: Iterable[str] = ()) -> str:
    """TF-Hub image feature-vector module: [B, H, W, 3] in [0, 1] -> [B, features], no dropout.

    ``weight_decay`` adds ``regularization_losses`` (``wd * sum(w**2) / 2`` of the kernels).
    """
    return _export_hub("feature_vector", model, output_dir, weight_decay, metadata, overwrite,
                       protected)


def export_hub_classification(model: keras.Model, output_dir: str | os.PathLike, *,
                              weight_decay: float | None = None, metadata: dict | None = None,
                              overwrite: bool = False, protected: Iterable[str] = ()) -> str:
    """TF-Hub image classification module: [B, H, W, 3] in [0, 1] -> logits [B, classes]."""
    return _export_hub("classification", model, output_dir, weight_decay, metadata, overwrite,
                       protected)


def import_tensorflow_hub():
    """``import tensorflow_hub``, working around its use of the removed ``pkg_resources``.

    tensorflow-hub 0.16 imports ``pkg_resources.parse_version``, which setuptools >= 81 no
    longer ships. The ``hub`` extra pins ``setuptools<81`` so that user code importing
    tensorflow_hub on its own works (tests/test_hub_snippet.py); for environments without it, a
    stand-in using ``packaging.version.parse`` is installed here when ``pkg_resources`` is
    missing (it serves keras_effnet's own imports only, never the user's).
    """
    try:
        import pkg_resources  # noqa: F401, PLC0415
    except ImportError:
        from packaging.version import parse  # noqa: PLC0415
        shim = types.ModuleType("pkg_resources")
        shim.parse_version = parse
        sys.modules.setdefault("pkg_resources", shim)
    import tensorflow_hub  # noqa: PLC0415
    return tensorflow_hub

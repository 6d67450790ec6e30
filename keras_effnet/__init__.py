"""keras-effnet: EfficientNet for Keras 3 (B0-B8, L2, Lite0-4, any compound coefficient).

The public names load on first use (PEP 562), so ``import keras_effnet`` and its command lines
start without Keras or TensorFlow: a command line sets up its logging before TensorFlow loads
(``keras_effnet.cli``). Once Keras is loaded, the package's Keras objects are registered (its
layers; on TensorFlow the TF1-semantics RMSProp and schedules), so saved models and training
artefacts load: ``import keras; import keras_effnet`` is enough.
"""

import importlib
import sys

__version__ = "0.1.0"

_MODULE_OF = {
    **dict.fromkeys((
        "EfficientNetB0", "EfficientNetB1", "EfficientNetB2", "EfficientNetB3", "EfficientNetB4",
        "EfficientNetB5", "EfficientNetB6", "EfficientNetB7", "EfficientNetB8", "EfficientNetL2",
        "EfficientNetLite0", "EfficientNetLite1", "EfficientNetLite2", "EfficientNetLite3",
        "EfficientNetLite4", "build_model", "feature_extractor"), "applications"),
    **dict.fromkeys(("list_models", "list_weights", "summary"), "discovery"),
    **dict.fromkeys(("BlockArgs", "EFFICIENTNET_B0_BLOCKS", "decode_blocks", "encode_blocks"),
                    "blocks"),
    **dict.fromkeys(("freeze", "layer_decay_multipliers", "scale_learning_rates", "unfreeze"),
                    "finetune"),
    **dict.fromkeys(("decode_predictions", "preprocess_input"), "imagenet"),
    **dict.fromkeys(("ImageNormalization", "StochasticDepth"), "layers"),
    "EfficientNet": "model",
    **dict.fromkeys(("BlockPlan", "FeatureInfo", "block_plan", "feature_info"), "plan"),
    **dict.fromkeys((
        "VARIANTS", "ModelSpec", "compound_coefficients", "compound_spec", "get_spec",
        "multiply_spec", "round_filters", "round_repeats", "scale_blocks", "scale_spec",
        "spec_from_blocks"), "scaling"),
}

__all__ = sorted(_MODULE_OF) + ["__version__"]

_registered = False


def __getattr__(name: str):
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'keras_effnet' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"keras_effnet.{module}"), name)
    globals()[name] = value
    _register_keras_objects()
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


def _register_keras_objects() -> None:
    """Once Keras is loaded (by the caller or by a name just used): import the modules that register
    the package's Keras objects. Before that, nothing: registering would load Keras."""
    global _registered
    if _registered or "keras" not in sys.modules:
        return
    _registered = True
    importlib.import_module("keras_effnet.layers")
    if sys.modules["keras"].config.backend() == "tensorflow":
        importlib.import_module("keras_effnet.optim")


_register_keras_objects()

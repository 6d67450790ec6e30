"""keras-effnet: EfficientNet for Keras 3 (B0-B8, L2, Lite0-4, any compound coefficient)."""

from keras_effnet.applications import (
    EfficientNetB0,
    EfficientNetB1,
    EfficientNetB2,
    EfficientNetB3,
    EfficientNetB4,
    EfficientNetB5,
    EfficientNetB6,
    EfficientNetB7,
    EfficientNetB8,
    EfficientNetL2,
    EfficientNetLite0,
    EfficientNetLite1,
    EfficientNetLite2,
    EfficientNetLite3,
    EfficientNetLite4,
    build_model,
    feature_extractor,
)
from keras_effnet.discovery import list_models, list_weights, summary
from keras_effnet.blocks import BlockArgs, EFFICIENTNET_B0_BLOCKS, decode_blocks, encode_blocks
from keras_effnet.finetune import freeze, layer_decay_multipliers, scale_learning_rates, unfreeze
from keras_effnet.imagenet import decode_predictions, preprocess_input
from keras_effnet.layers import ImageNormalization, StochasticDepth
from keras_effnet.model import EfficientNet
from keras_effnet.plan import BlockPlan, FeatureInfo, block_plan, feature_info
from keras_effnet.scaling import (
    VARIANTS,
    ModelSpec,
    compound_coefficients,
    compound_spec,
    get_spec,
    multiply_spec,
    round_filters,
    round_repeats,
    scale_blocks,
    scale_spec,
    spec_from_blocks,
)

__version__ = "0.1.0"

import keras as _keras

if _keras.config.backend() == "tensorflow":
    # Registers the TF1-semantics RMSProp and the schedules, so saved training artefacts load.
    from keras_effnet import optim as _optim  # noqa: F401

"""The TensorFlow op profile: ops attributed to layers and roles; a real trace of a tiny model."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from keras_effnet.benchmark import op_profile


def test_layer_and_role_from_node_names():
    names = {"stem_conv", "block2a_expand_conv", "block2a_expand_activation", "top_conv"}
    assert op_profile.layer_of("efficientnetb0_1/stem_conv_1/BiasAdd", names) == "stem_conv"
    assert op_profile.layer_of("m/block2a_expand_activation_1/mul_1", names) == \
        "block2a_expand_activation"
    assert op_profile.layer_of("m/unknown/Mean", names) == "(graph)"
    assert op_profile.role_of("block2a_expand_conv") == "expand_conv"
    assert op_profile.role_of("block12c_se_excite") == "se_excite"
    assert op_profile.role_of("top_conv") == "top_conv"


def test_trace_attributes_ops_to_layers():
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", name="block1a_expand_conv")(inputs)
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    model = keras.Model(inputs, x, name="tiny")
    forward = tf.function(lambda images: model(images, training=False))
    images = tf.constant(np.ones((2, 16, 16, 3), "float32"))
    ops = op_profile.trace_op_times(forward, images, {layer.name for layer in model.layers},
                                    calls=1)
    layers = {op.layer for op in ops}
    assert {"block1a_expand_conv", "avg_pool"} <= layers
    assert all(op.ms >= 0 for op in ops)
    profile = op_profile.EngineProfile("tiny", ops)
    roles = dict(profile.by("role"))
    assert ("expand_conv",) in roles and profile.total_ms == sum(roles.values())
    profile.speed_wall, profile.speed_cpu, profile.wall_ms_per_call = 1.0, 1.0, 1.0
    assert "| expand_conv |" in op_profile.to_markdown([profile], top=3)

"""keras_effnet.plan: the per-block numbers every consumer reads, against the published B0 table."""

import pytest

import keras_effnet
from keras_effnet.plan import FeatureInfo, block_letters, block_plan, feature_info

# EfficientNet-B0 (paper Table 1, with the strides of tensorflow/tpu efficientnet_builder.py):
# (prefix, input, expanded, SE, output channels, kernel, stride, skip, output stride).
B0_BLOCKS = [
    ("block1a_", 32, 32, 8, 16, 3, 1, False, 2),
    ("block2a_", 16, 96, 4, 24, 3, 2, False, 4),
    ("block2b_", 24, 144, 6, 24, 3, 1, True, 4),
    ("block3a_", 24, 144, 6, 40, 5, 2, False, 8),
    ("block3b_", 40, 240, 10, 40, 5, 1, True, 8),
    ("block4a_", 40, 240, 10, 80, 3, 2, False, 16),
    ("block4b_", 80, 480, 20, 80, 3, 1, True, 16),
    ("block4c_", 80, 480, 20, 80, 3, 1, True, 16),
    ("block5a_", 80, 480, 20, 112, 5, 1, False, 16),
    ("block5b_", 112, 672, 28, 112, 5, 1, True, 16),
    ("block5c_", 112, 672, 28, 112, 5, 1, True, 16),
    ("block6a_", 112, 672, 28, 192, 5, 2, False, 32),
    ("block6b_", 192, 1152, 48, 192, 5, 1, True, 32),
    ("block6c_", 192, 1152, 48, 192, 5, 1, True, 32),
    ("block6d_", 192, 1152, 48, 192, 5, 1, True, 32),
    ("block7a_", 192, 1152, 48, 320, 3, 1, False, 32),
]


def test_b0_blocks_match_the_published_table():
    plan = block_plan("b0")
    assert len(plan) == 16
    assert [(b.prefix, b.input_channels, b.expanded_channels, b.se_channels, b.output_channels,
             b.kernel_size, b.stride, b.skip, b.output_stride) for b in plan] == B0_BLOCKS
    assert [b.index for b in plan] == list(range(16))
    assert [(b.stage, b.repeat) for b in plan[:4]] == [(1, 0), (2, 0), (2, 1), (3, 0)]
    assert [b.has_expand for b in plan] == [False] + [True] * 15
    assert all(b.has_se for b in plan)
    assert plan[0].output_layer == "block1a_project_bn" and plan[2].output_layer == "block2b_add"


def test_b0_feature_info():
    assert feature_info("b0") == [
        FeatureInfo("stride_2", "block1a_project_bn", 16, 2),
        FeatureInfo("stride_4", "block2b_add", 24, 4),
        FeatureInfo("stride_8", "block3b_add", 40, 8),
        FeatureInfo("stride_16", "block5c_add", 112, 16),
        FeatureInfo("stride_32", "block7a_project_bn", 320, 32),
    ]
    assert keras_effnet.feature_info is feature_info


def test_lite_has_no_se_and_a_fixed_stem():
    plan = block_plan("lite4")
    assert all(not b.has_se and b.se_channels == 0 for b in plan)
    assert plan[0].input_channels == 32          # fixed stem, not round_filters(32, 1.4)
    assert plan[-1].prefix == "block7a_" and len(plan) == 30


@pytest.mark.parametrize("variant", ["b3", "lite2"])
def test_plan_matches_the_built_model(variant):
    model = keras_effnet.build_model(variant, include_top=False, input_shape=(64, 64, 3))
    for block in block_plan(variant):
        depthwise = model.get_layer(f"{block.prefix}dwconv")
        assert depthwise.kernel.shape == (block.kernel_size, block.kernel_size,
                                          block.expanded_channels, 1)
        assert depthwise.strides == (block.stride, block.stride)
        project = model.get_layer(f"{block.prefix}project_conv")
        assert project.kernel.shape == (1, 1, block.expanded_channels, block.output_channels)
        if block.has_expand:
            assert model.get_layer(f"{block.prefix}expand_conv").kernel.shape == (
                1, 1, block.input_channels, block.expanded_channels)
        if block.has_se:
            assert model.get_layer(f"{block.prefix}se_reduce").kernel.shape[-1] == block.se_channels
        assert model.get_layer(block.output_layer).output.shape[-1] == block.output_channels
        assert 64 // model.get_layer(block.output_layer).output.shape[1] == block.output_stride


def test_block_letters():
    assert [block_letters(i) for i in (0, 1, 25, 26, 27)] == ["a", "b", "z", "ba", "bb"]

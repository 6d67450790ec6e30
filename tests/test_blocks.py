import dataclasses

import pytest

from keras_effnet.blocks import (EFFICIENTNET_B0_BLOCKS, EFFICIENTNET_LITE_BLOCKS, BlockArgs,
                                 decode_blocks, encode_blocks)

B0_STRINGS = [
    "r1_k3_s11_e1_i32_o16_se0.25", "r2_k3_s22_e6_i16_o24_se0.25", "r2_k5_s22_e6_i24_o40_se0.25",
    "r3_k3_s22_e6_i40_o80_se0.25", "r3_k5_s11_e6_i80_o112_se0.25",
    "r4_k5_s22_e6_i112_o192_se0.25", "r1_k3_s11_e6_i192_o320_se0.25",
]


def test_decode_fields():
    block = BlockArgs.decode("r2_k5_s22_e6_i24_o40_se0.25")
    assert block == BlockArgs(repeats=2, kernel_size=5, strides=2, expand_ratio=6.0,
                              input_filters=24, output_filters=40, se_ratio=0.25, id_skip=True)


@pytest.mark.parametrize("text", B0_STRINGS + ["r1_k3_s11_e1_i32_o16_noskip",
                                               "r1_k3_s11_e1_i32_o16_se0.25_noskip",
                                               "r3_k5_s2_e4.5_i8_o8"])
def test_round_trip(text):
    block = BlockArgs.decode(text)
    assert BlockArgs.decode(block.encode()) == block


def test_encode_is_original_form():
    assert encode_blocks(EFFICIENTNET_B0_BLOCKS) == B0_STRINGS


def test_b0_table_stage_strides_match_code_not_paper_table():
    assert [b.strides for b in EFFICIENTNET_B0_BLOCKS] == [1, 2, 2, 2, 1, 2, 1]
    assert sum(b.repeats for b in EFFICIENTNET_B0_BLOCKS) == 16


def test_noskip_and_no_se():
    block = BlockArgs.decode("r1_k3_s11_e1_i32_o16_noskip")
    assert not block.id_skip and block.se_ratio is None and not block.has_se
    assert all(b.se_ratio is None for b in EFFICIENTNET_LITE_BLOCKS)


@pytest.mark.parametrize("text, bad", [
    ("r1_k3_s11_e1_i32_oX_se0.25", "oX"),
    ("r1_k3_s12_e1_i32_o16", "s12"),
    ("r1_k3_s11_e1_i32_o16_zz4", "zz"),
    ("r1_k3_s11_e1_i32_o16_5", "'5'"),
    ("r1_k3_s11_e1_i32_o16_se", "'se'"),
])
def test_malformed_token_is_named(text, bad):
    with pytest.raises(ValueError, match=bad):
        BlockArgs.decode(text)


def test_missing_key_and_bad_values():
    with pytest.raises(ValueError, match="lacks required keys"):
        BlockArgs.decode("r1_k3_s11_e1_i32")
    with pytest.raises(ValueError, match="kernel_size"):
        BlockArgs.decode("r1_k4_s11_e1_i32_o16")
    with pytest.raises(ValueError, match="non-empty"):
        BlockArgs.decode("")
    with pytest.raises(ValueError, match="twice"):
        BlockArgs.decode("r1_r2_k3_s11_e1_i32_o16")


def test_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        EFFICIENTNET_B0_BLOCKS[0].repeats = 3


def test_decode_blocks():
    assert decode_blocks(B0_STRINGS) == EFFICIENTNET_B0_BLOCKS

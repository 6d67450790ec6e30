import math

import pytest

from keras_effnet import scaling
from keras_effnet.blocks import BlockArgs
from keras_effnet.scaling import (VARIANTS, canonical_name, compound_coefficients, compound_spec,
                                  flops_multiplier, get_spec, round_filters, round_repeats,
                                  scale_blocks)

# (variant, stem, head, total blocks) from the original code's rounding rules.
SCALED = [
    ("efficientnet-b0", 32, 1280, 16), ("efficientnet-b1", 32, 1280, 23),
    ("efficientnet-b2", 32, 1408, 23), ("efficientnet-b3", 40, 1536, 26),
    ("efficientnet-b4", 48, 1792, 32), ("efficientnet-b5", 48, 2048, 39),
    ("efficientnet-b6", 56, 2304, 45), ("efficientnet-b7", 64, 2560, 55),
    ("efficientnet-lite4", 32, 1280, 30),
]


@pytest.mark.parametrize("name, stem, head, blocks", SCALED)
def test_scaled_stem_head_and_block_count(name, stem, head, blocks):
    spec = get_spec(name)
    assert spec.stem_channels() == stem
    assert spec.head_channels() == head
    assert spec.num_blocks() == blocks


def test_round_filters_rules():
    assert round_filters(32, 1.0) == 32
    assert round_filters(16, 1.1) == 16      # 17.6 -> 16 (within 10%)
    assert round_filters(40, 1.8) == 72
    assert round_filters(320, 2.0) == 640
    assert round_filters(3, 1.0) == 8        # never below the divisor
    assert round_filters(24, 1.4) == 32      # 33.6 -> 32
    # Rounding that loses more than 10% adds a divisor back.
    assert round_filters(10, 1.0, divisor=16) == 16
    with pytest.raises(ValueError, match="positive"):
        round_filters(32, 0)


def test_round_repeats():
    assert round_repeats(1, 1.0) == 1
    assert round_repeats(2, 1.1) == 3
    assert round_repeats(4, 3.1) == 13
    with pytest.raises(ValueError):
        round_repeats(0, 1.0)


def test_published_table():
    rows = {n: (s.width, s.depth, s.resolution, s.dropout) for n, s in VARIANTS.items()}
    assert rows["efficientnet-b0"] == (1.0, 1.0, 224, 0.2)
    assert rows["efficientnet-b4"] == (1.4, 1.8, 380, 0.4)
    assert rows["efficientnet-b7"] == (2.0, 3.1, 600, 0.5)
    assert rows["efficientnet-b8"] == (2.2, 3.6, 672, 0.5)
    assert rows["efficientnet-l2"] == (4.3, 5.3, 800, 0.5)
    assert rows["efficientnet-lite3"] == (1.2, 1.4, 280, 0.3)
    lite = get_spec("lite0")
    assert lite.activation == "relu6" and lite.fixed_stem_head and lite.normalization == "lite"


def test_lite_keeps_first_and_last_stage_repeats():
    blocks = get_spec("efficientnet-lite4").scaled_blocks()
    assert blocks[0].input_filters == 32     # the fixed stem, not round_filters(32, 1.4)
    assert blocks[0].repeats == 1 and blocks[-1].repeats == 1
    assert blocks[1].repeats == math.ceil(2 * 1.8)


@pytest.mark.parametrize("alias", ["b3", "B3", "EfficientNetB3", "efficientnet_b3",
                                   "efficientnet-b3"])
def test_canonical_names(alias):
    assert canonical_name(alias) == "efficientnet-b3"


def test_unknown_variant_lists_known_names():
    with pytest.raises(ValueError, match="unknown EfficientNet variant 'b9'.*efficientnet-b0"):
        get_spec("b9")


def test_compound_coefficients_default_and_custom():
    width, depth, res = compound_coefficients(1)
    assert (width, depth, res) == (scaling.BETA, scaling.ALPHA, scaling.GAMMA)
    width, depth, res = compound_coefficients(2, alpha=1.4, beta=1.2, gamma=1.1)
    assert depth == pytest.approx(1.96) and width == pytest.approx(1.44)
    assert res == pytest.approx(1.21)
    assert flops_multiplier(1) == pytest.approx(1.2 * 1.1 ** 2 * 1.15 ** 2)
    with pytest.raises(ValueError, match="alpha"):
        compound_coefficients(1, alpha=0.9)


@pytest.mark.parametrize("phi", [-2, -0.5, 1, 2.5])
def test_compound_spec_any_phi(phi):
    spec = compound_spec(phi)
    assert spec.width == pytest.approx(1.1 ** phi)
    assert spec.depth == pytest.approx(1.2 ** phi)
    assert spec.resolution % 8 == 0
    assert abs(spec.resolution - 224 * 1.15 ** phi) <= 4
    assert 0.1 <= spec.dropout <= 0.5
    assert spec.num_blocks() >= 7


def test_compound_spec_dropout_matches_published_at_integer_phi():
    for phi in range(8):
        assert compound_spec(phi).dropout == get_spec(f"b{phi}").dropout


def test_scale_any_block_table():
    mine = (BlockArgs(2, 3, 1, 4, 16, 24), BlockArgs(3, 5, 2, 4, 24, 48, se_ratio=None))
    scaled = scale_blocks(mine, width=1.5, depth=2.0)
    assert [(b.input_filters, b.output_filters, b.repeats) for b in scaled] == [
        (24, 40, 4), (40, 72, 6)]

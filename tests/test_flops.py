"""keras_effnet.flops: multiply-add and parameter counts, the paper's table, the scaling API."""

import csv
import io

import keras
import pytest

from keras_effnet import flops, scaling
from keras_effnet.blocks import decode_blocks
from keras_effnet.applications import build_model

# keras.applications parameter counts (with top, without top): model.summary() of
# keras/src/applications/efficientnet.py's EfficientNetB0..B7 (Keras 3).
KERAS_PARAMS = {
    "efficientnet-b0": (5_330_571, 4_049_571), "efficientnet-b1": (7_856_239, 6_575_239),
    "efficientnet-b2": (9_177_569, 7_768_569), "efficientnet-b3": (12_320_535, 10_783_535),
    "efficientnet-b4": (19_466_823, 17_673_823), "efficientnet-b5": (30_562_527, 28_513_527),
    "efficientnet-b6": (43_265_143, 40_960_143), "efficientnet-b7": (66_658_687, 64_097_687),
}
B0_TO_B7 = sorted(KERAS_PARAMS)


@pytest.fixture(scope="module")
def b0_model():
    return build_model("b0")


def test_formulas_on_a_hand_checked_model():
    inputs = keras.Input((10, 10, 4))
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", use_bias=False)(inputs)   # 5x5
    x = keras.layers.DepthwiseConv2D(5, padding="same", use_bias=False)(x)
    x = keras.layers.Conv2D(16, 1, groups=2, use_bias=False)(x)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.Activation("relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(3)(x)
    counted = flops.count_model_flops(keras.Model(inputs, x))
    assert counted.by_kind == {"conv": 5 * 5 * 9 * 4 * 8 + 5 * 5 * 8 * 16 // 2,
                               "depthwise": 5 * 5 * 25 * 8, "se": 0, "dense": 16 * 3}
    assert counted.flops == sum(counted.by_kind.values())
    # BN + ReLU per output element, pooling per input element; nothing else.
    assert counted.elementwise == 3 * 5 * 5 * 16
    assert counted.feature_size == (5, 5) and counted.feature_channels == 16
    assert counted.resolution == (10, 10)


def test_b0_model_walk_matches_paper_and_keras(b0_model):
    counted = flops.count_model_flops(b0_model)
    assert counted.params == 5_330_571
    assert counted.flops == 385_814_752           # paper: 0.39B
    assert counted.by_kind["se"] > 0 and counted.by_kind["dense"] == 1280 * 1000
    assert counted.feature_size == (7, 7) and counted.feature_channels == 1280


def test_spec_count_equals_model_walk_b0(b0_model):
    assert flops.count_spec_flops("b0") == flops.count_model_flops(b0_model)


@pytest.mark.parametrize("spec, kwargs", [
    ("lite0", {}),
    # Lite4: fixed 32-channel stem before a width-scaled (48) first stage.
    ("lite4", dict(input_shape=(64, 64, 3))),
    (scaling.compound_spec(-4.0), dict(input_shape=(57, 57, 3), include_top=False)),  # odd size
    (scaling.spec_from_blocks(["r2_k3_s22_e3_i16_o24_se0.5", "r1_k5_s22_e1_i24_o24_noskip"],
                              resolution=40, name="user-table"),
     dict(classes=7, include_preprocessing=False)),
], ids=["lite0", "lite4-64px", "phi-4-notop-57px", "user-table"])
def test_spec_count_equals_model_walk(spec, kwargs):
    spec = scaling.as_base_spec(spec)
    model = build_model(spec, **kwargs)
    resolution = kwargs.get("input_shape", (spec.resolution,))[0]
    expected = flops.count_spec_flops(
        spec, resolution=resolution, include_top=kwargs.get("include_top", True),
        classes=kwargs.get("classes", 1000),
        include_preprocessing=kwargs.get("include_preprocessing", True))
    assert flops.count_model_flops(model) == expected


@pytest.mark.parametrize("name", B0_TO_B7)
def test_b0_to_b7_within_5_percent_of_paper_with_exact_params(name):
    counted = flops.count_spec_flops(name)
    assert abs(counted.flops / flops.PAPER_FLOPS[name] - 1) < 0.05
    assert counted.params == KERAS_PARAMS[name][0]
    assert flops.count_spec_flops(name, include_top=False).params == KERAS_PARAMS[name][1]


def test_published_flops_grow_in_order():
    names = B0_TO_B7 + ["efficientnet-b8", "efficientnet-l2"]
    values = [flops.count_spec_flops(n).flops for n in names]
    assert values == sorted(values)
    lite = [flops.count_spec_flops(f"lite{i}") for i in range(5)]
    assert all(c.by_kind["se"] == 0 for c in lite)
    for count, paper in zip(lite, (4.7e6, 5.4e6, 6.1e6, 8.2e6, 13.0e6)):
        assert abs(count.params / paper - 1) < 0.02


def test_dynamic_input_and_unknown_layers_are_errors():
    with pytest.raises(ValueError, match="fixed input_shape"):
        flops.count_model_flops(build_model(scaling.compound_spec(-6.0), include_top=False))
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 1)(inputs)
    x = keras.layers.LayerNormalization(name="mystery")(x)
    with pytest.raises(ValueError, match="mystery"):
        flops.count_model_flops(keras.Model(inputs, x))


# -- compound scaling API (keras_effnet.scaling additions) ---------------------------------------

def test_scale_spec_of_b0_and_flops_ratio_against_2_to_phi():
    report = flops.scaling_report("b0", phi=1.0)
    assert (report.spec.width, report.spec.depth, report.spec.resolution) == (1.1, 1.2, 256)
    assert report.theoretical == pytest.approx(1.2 * 1.1 ** 2 * 1.15 ** 2)
    assert report.target == 2.0
    # Rounding of channels, repeats and pixels: 2.23x counted for 1.92x in theory.
    assert report.ratio == pytest.approx(flops.flops_ratio(report.spec, scaling.get_spec("b0")))
    assert 1.9 < report.ratio < 2.4
    assert report.ratio_vs_target == pytest.approx(report.ratio / 2)
    zero = flops.scaling_report("b0", phi=0.0)
    assert zero.ratio == 1.0 and zero.spec.resolution == 224


def test_scale_any_block_table():
    table = ["r1_k3_s11_e1_i32_o16_se0.25", "r2_k3_s22_e6_i16_o24", "r2_k5_s22_e6_i24_o40"]
    spec = scaling.scale_spec(table, phi=2.0, alpha=1.3, beta=1.05, gamma=1.1)
    assert spec.blocks == decode_blocks(table)
    assert spec.depth == pytest.approx(1.3 ** 2) and spec.width == pytest.approx(1.05 ** 2)
    assert spec.resolution == scaling.round_resolution(224 * 1.1 ** 2)
    assert [b.repeats for b in spec.scaled_blocks()] == [2, 4, 4]
    report = flops.scaling_report(table, phi=2.0, alpha=1.3, beta=1.05, gamma=1.1)
    assert report.ratio == pytest.approx(report.flops / report.base_flops)
    assert report.theoretical == pytest.approx((1.3 * 1.05 ** 2 * 1.1 ** 2) ** 2)


def test_multiply_spec_scales_one_dimension():
    base = scaling.get_spec("b0")
    wide = scaling.multiply_spec(base, width=2.0)
    assert (wide.width, wide.depth, wide.resolution) == (2.0, 1.0, 224)
    sharp = scaling.multiply_spec(base, resolution=1.5, resolution_divisor=1)
    assert sharp.resolution == 336 and sharp.width == 1.0
    with pytest.raises(ValueError, match="depth multiplier"):
        scaling.multiply_spec(base, depth=0)
    with pytest.raises(ValueError, match="alpha"):
        scaling.scale_spec(base, 1.0, alpha=0.9)
    with pytest.raises(ValueError, match="at least one stage"):
        scaling.spec_from_blocks([])


# -- the model table -----------------------------------------------------------------------------

def test_format_table_markdown_and_csv():
    rows = [flops.table_row("b0", count="spec"), flops.table_row("lite0", count="spec")]
    markdown = flops.format_table(rows)
    assert "| efficientnet-b0 | 1 | 1 | 224 | 5,330,571 | 0.386B (385,814,752) |" in markdown
    assert "-1.1%" in markdown
    parsed = list(csv.DictReader(io.StringIO(flops.format_table(rows, "csv"))))
    assert {"model", "params", "flops"} <= set(parsed[0])
    assert parsed[0]["flops"] == "385814752" and parsed[1]["model"] == "efficientnet-lite0"
    with pytest.raises(ValueError, match="format"):
        flops.format_table(rows, "xml")


def run_model_table(argv):
    from absl import flags

    from keras_effnet.cli import model_table

    model_table.define_flags()
    flags.FLAGS.unparse_flags()
    flags.FLAGS(["model_table"] + argv)
    try:
        model_table.main([])
    finally:
        flags.FLAGS.unparse_flags()


def test_model_table_tool_counts_built_models(capsys, tmp_path):
    out = tmp_path / "table.csv"
    run_model_table(["--models=b0", "--custom=0.5:0.5:64", "--format=csv", f"--output={out}"])
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [r["model"] for r in rows] == ["efficientnet-b0", "b0-w0.5-d0.5-r64"]
    assert rows[0]["params"] == "5330571" and rows[0]["flops"] == "385814752"
    assert rows[1]["resolution"] == "64"
    custom = scaling.multiply_spec("b0", 0.5, 0.5, 64 / 224, resolution_divisor=1,
                                   name="b0-w0.5-d0.5-r64")
    assert out.read_text() == flops.format_table(
        [flops.table_row("b0", count="spec"), flops.table_row(custom, count="spec")], "csv")
    run_model_table(["--models=", "--phi=-6,1", "--count=spec"])
    markdown = capsys.readouterr().out
    assert "| efficientnet-b0-phi1 | 1.1 | 1.2 | 256 | 9,177,569 |" in markdown
    assert "efficientnet-b0-phi-6" in markdown

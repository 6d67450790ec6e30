"""keras_effnet.list_models / list_weights / summary and the keras-effnet-info command."""

import json
import os
import re
import subprocess
import sys

import pytest
from absl import flags

import keras_effnet
from keras_effnet import flops
from keras_effnet.cli import info
from keras_effnet.plan import feature_info


def test_list_models_and_weights():
    names = keras_effnet.list_models()
    assert names[0] == "efficientnet-b0" and "efficientnet-lite4" in names and len(names) == 15
    assert keras_effnet.list_models("*lite*") == [f"efficientnet-lite{i}" for i in range(5)]
    assert "efficientnet-b8" in keras_effnet.list_models(pretrained=True)
    assert "imagenet" in keras_effnet.list_weights("b0")
    assert keras_effnet.list_weights()["efficientnet-lite0"] == ["imagenet"]


def test_summary_of_a_name_and_of_the_built_model_agree():
    by_name = keras_effnet.summary("b0", resolution=64)
    model = keras_effnet.build_model("b0", input_shape=(64, 64, 3))
    built = keras_effnet.summary(model)
    assert by_name.params == built.params == model.count_params()
    assert by_name.multiply_adds == built.multiply_adds == flops.count_model_flops(model).flops
    assert by_name.resolution == built.resolution == (64, 64)
    assert [(m.stride, m.channels, m.size) for m in by_name.feature_maps] == [
        (m.stride, m.channels, m.size) for m in built.feature_maps]
    assert [m.layer for m in by_name.feature_maps] == [i.layer_name for i in feature_info("b0")]
    assert [m.layer for m in built.feature_maps] == [i.layer_name for i in feature_info("b0")]
    assert built.trainable_params < built.params  # BN statistics
    text = str(keras_effnet.summary("lite0"))
    assert text.startswith("efficientnet-lite0: 4.69M parameters") and "stride_32 320ch 7x7" in text
    assert "weights: imagenet" in text


def test_summary_needs_a_fixed_size():
    model = keras_effnet.build_model("b0", include_top=False, input_shape=(None, None, 3))
    with pytest.raises(ValueError, match="input_shape"):
        keras_effnet.summary(model)


def _info(*args):
    return subprocess.run([sys.executable, "-m", "keras_effnet.cli.info", *args],
                          capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))


def test_info_command():
    result = _info("--help")
    assert result.returncode in (0, 1), result.stderr[-2000:]  # absl's --help exits 1
    for flag in ("model", "resolution", "list_models", "list_weights", "config_keys", "format"):
        assert re.search(rf"--(\[no\])?{flag}:", result.stdout), result.stdout
    result = _info("--model=lite0")
    assert result.returncode == 0, result.stderr
    assert "efficientnet-lite0: 4.69M parameters" in result.stdout


def _render(*args):
    info.define_flags()
    flags.FLAGS(["keras-effnet-info", *args])
    try:
        return info.render()
    finally:
        flags.FLAGS.unparse_flags()


def test_info_listings_and_config_keys():
    listing = _render("--list_models")
    assert "efficientnet-l2" in listing and "imagenet" in listing
    assert json.loads(_render("--list_weights=b0", "--format=json"))[0] == "imagenet"
    keys = _render("--config_keys")
    assert "| `model.new_head` | bool | `False` |" in keys
    assert "`runtime.eval_every_epochs`" in keys and "`data.validation_fraction`" in keys
    assert "| `model.phi` | float \\| None | `None` |" in keys  # pipes escaped in the table

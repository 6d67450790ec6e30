"""Converters: original TF checkpoints, lukemelas state_dicts, keras.applications legacy .h5.

Every source file is built here from a randomly initialised model: checkpoints are written with
TensorFlow's checkpoint writer under the original variable names, state_dicts with torch.save,
legacy .h5 files by tf_keras (Keras 2) itself.
"""

from __future__ import annotations

import tarfile

import h5py
import numpy as np
import pytest

from keras_effnet import build_model, weights
from keras_effnet.weights import ConversionError
from helpers import (layer_weights, lukemelas_state_dict, randomized_batch_norm, run_cli,
                     run_together, write_tpu_checkpoint)

B0 = "efficientnet-b0"


def _assert_same_weights(expected, actual, skip=("normalization",)):
    want, got = layer_weights(expected), layer_weights(actual)
    keys = [k for k in want if k.split("/")[0] not in skip]
    assert keys and set(keys) <= set(got)
    for key in keys:
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)


@pytest.fixture(scope="module")
def b0():
    model = build_model(B0, classifier_activation=None)
    model.set_weights(randomized_batch_norm(model))
    return model


@pytest.fixture(scope="module")
def checkpoint(b0, tmp_path_factory):
    """An original-format B0 checkpoint with EMA copies, raw copies and training state."""
    directory = tmp_path_factory.mktemp("ckpt") / "efficientnet-b0"
    raw_names = weights.tpu_checkpoint_names(B0, ema=False)
    extra = {
        # raw (non-EMA) copies must be ignored in favour of the EMA ones
        raw_names["stem_conv/kernel"]: np.full((3, 3, 3, 32), 7.0, np.float32),
        raw_names["block1a_bn/gamma"]: np.full((32,), 7.0, np.float32),
        f"{raw_names['stem_conv/kernel']}/RMSProp": np.zeros((3, 3, 3, 32), np.float32),
        "global_step": np.array(218750, np.int64),
    }
    return write_tpu_checkpoint(b0, B0, directory / "model.ckpt", extra=extra)


def _tar(directory, archive):
    with tarfile.open(archive, "w:gz", compresslevel=1) as tar:
        tar.add(directory, arcname=directory.name)
    return archive


def test_tpu_checkpoint_names_follow_the_original_scheme():
    names = weights.tpu_checkpoint_names(B0)
    assert names["block1a_dwconv/kernel"] == \
        "efficientnet-b0/blocks_0/depthwise_conv2d/depthwise_kernel/ExponentialMovingAverage"
    # no expansion in stage 1: conv2d is the projection, BN _1 the projection's
    assert names["block1a_project_conv/kernel"].startswith("efficientnet-b0/blocks_0/conv2d/")
    assert "blocks_0/tpu_batch_normalization_1/" in names["block1a_project_bn/gamma"]
    # with an expansion: conv2d expand, conv2d_1 project, BN, _1, _2
    assert "blocks_3/conv2d/kernel" in names["block3a_expand_conv/kernel"]
    assert "blocks_3/conv2d_1/kernel" in names["block3a_project_conv/kernel"]
    assert "blocks_3/tpu_batch_normalization_1/" in names["block3a_bn/moving_variance"]
    assert "blocks_3/tpu_batch_normalization_2/" in names["block3a_project_bn/beta"]
    assert names["block2b_se_expand/bias"] == \
        "efficientnet-b0/blocks_2/se/conv2d_1/bias/ExponentialMovingAverage"
    assert names["predictions/kernel"] == \
        "efficientnet-b0/head/dense/kernel/ExponentialMovingAverage"
    # B7's stage 1 has 4 blocks, all without expansion
    b7 = weights.tpu_checkpoint_names("efficientnet-b7", ema=False)
    assert b7["block1d_project_conv/kernel"] == "efficientnet-b7/blocks_3/conv2d/kernel"
    assert b7["block2a_expand_conv/kernel"] == "efficientnet-b7/blocks_4/conv2d/kernel"


def test_tpu_checkpoint_tar_gz_converts_with_ema_copies(b0, checkpoint, tmp_path):
    archive = _tar(checkpoint.parent, tmp_path / "efficientnet-b0.tar.gz")
    output = tmp_path / "b0.weights.h5"
    report = weights.convert("tpu-checkpoint", B0, archive, output)
    assert report.tensors == len(layer_weights(b0)) - 3  # everything but mean/variance/count
    loaded = build_model(B0, weights=str(output), classifier_activation=None)
    _assert_same_weights(b0, loaded)  # EMA values, not the raw 7.0 copies


def test_tpu_checkpoint_directory_without_top(b0, checkpoint, tmp_path):
    output = tmp_path / "notop.weights.h5"
    weights.convert_tpu_checkpoint(B0, checkpoint.parent, output, include_top=False)
    loaded = build_model(B0, include_top=False, weights=str(output))
    _assert_same_weights(b0, loaded, skip=("normalization", "predictions"))


def test_tpu_checkpoint_of_another_variant_is_refused(checkpoint, tmp_path):
    with pytest.raises(ConversionError, match=r"holds the weights of 'efficientnet-b0'.*"
                                              r"not 'efficientnet-b1'"):
        weights.convert_tpu_checkpoint("efficientnet-b1", checkpoint, tmp_path / "x.weights.h5")


def test_tpu_checkpoint_shape_mismatch_names_both_sides(b0, tmp_path):
    names = weights.tpu_checkpoint_names(B0)
    prefix = tmp_path / "bad" / "model.ckpt"
    write_tpu_checkpoint(b0, B0, prefix, extra={
        names["block2a_expand_conv/kernel"]: np.zeros((1, 1, 16, 99), np.float32)})
    with pytest.raises(ConversionError) as error:
        weights.convert_tpu_checkpoint(B0, prefix, tmp_path / "x.weights.h5")
    message = str(error.value)
    assert "efficientnet-b0/blocks_1/conv2d/kernel/ExponentialMovingAverage" in message
    assert "block2a_expand_conv" in message
    assert "(1, 1, 16, 99)" in message and "(1, 1, 16, 96)" in message


def test_tpu_checkpoint_unused_tensor_is_refused(b0, tmp_path):
    prefix = tmp_path / "extra" / "model.ckpt"
    stray = "efficientnet-b0/blocks_16/conv2d/kernel/ExponentialMovingAverage"
    write_tpu_checkpoint(b0, B0, prefix, extra={stray: np.zeros((1, 1, 2, 2), np.float32)})
    with pytest.raises(ConversionError, match="blocks_16/conv2d/kernel.*was not used"):
        weights.convert_tpu_checkpoint(B0, prefix, tmp_path / "x.weights.h5")


def test_tpu_checkpoint_missing_tensor_is_refused(b0, tmp_path):
    names = weights.tpu_checkpoint_names(B0)
    prefix = tmp_path / "partial" / "model.ckpt"
    write_tpu_checkpoint(b0, B0, prefix)
    # rewrite without the last block's projection BN beta
    import tensorflow as tf
    reader = tf.train.load_checkpoint(str(prefix))
    keep = {n: reader.get_tensor(n) for n in reader.get_variable_to_shape_map()
            if n != names["block7a_project_bn/beta"]}
    prefix2 = tmp_path / "partial2" / "model.ckpt"
    prefix2.parent.mkdir()
    tf.raw_ops.SaveV2(prefix=str(prefix2), tensor_names=sorted(keep),
                      shape_and_slices=[""] * len(keep),
                      tensors=[tf.constant(keep[n]) for n in sorted(keep)])
    with pytest.raises(ConversionError, match="no tensor for layer 'block7a_project_bn' "
                                              "variable 'beta'"):
        weights.convert_tpu_checkpoint(B0, prefix2, tmp_path / "x.weights.h5")


def test_truncated_archive_and_non_checkpoints_are_refused(checkpoint, tmp_path):
    archive = _tar(checkpoint.parent, tmp_path / "efficientnet-b0.tar.gz")
    data = archive.read_bytes()
    truncated = tmp_path / "truncated.tar.gz"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ConversionError, match="not a readable .tar.gz"):
        weights.convert_tpu_checkpoint(B0, truncated, tmp_path / "x.weights.h5")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConversionError, match=r"no TensorFlow checkpoint \(\*.index file\)"):
        weights.convert_tpu_checkpoint(B0, empty, tmp_path / "x.weights.h5")
    with pytest.raises(FileNotFoundError):
        weights.convert_tpu_checkpoint(B0, tmp_path / "nope", tmp_path / "x.weights.h5")


def test_output_must_be_a_keras_weights_file(checkpoint, tmp_path):
    with pytest.raises(ValueError, match=r"must end in \.weights\.h5"):
        weights.convert_tpu_checkpoint(B0, checkpoint, tmp_path / "x.h5")


# ---------------------------------------------------------------- lukemelas (PyTorch) state_dicts

def _save_state_dict(state, path):
    torch = pytest.importorskip("torch", reason="torch is needed to write .pth fixtures")
    torch.save({k: torch.from_numpy(np.asarray(v)) for k, v in state.items()}, path)
    return path


def test_lukemelas_state_dict_round_trip(b0, tmp_path):
    state = lukemelas_state_dict(b0, B0)
    assert state["_blocks.1._depthwise_conv.weight"].shape == (96, 1, 3, 3)
    assert state["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert state["_fc.weight"].shape == (1000, 1280)
    pth = _save_state_dict(state, tmp_path / "b0.pth")
    output = tmp_path / "b0.weights.h5"
    weights.convert_lukemelas(B0, pth, output)
    _assert_same_weights(b0, build_model(B0, weights=str(output), classifier_activation=None))


def test_lukemelas_wrong_variant_and_bad_tensors_are_refused(b0, tmp_path):
    state = lukemelas_state_dict(b0, B0)
    pth = _save_state_dict(state, tmp_path / "b0.pth")
    with pytest.raises(ConversionError, match=r"source has 16 blocks, efficientnet-b1 has 23"):
        weights.convert_lukemelas("efficientnet-b1", pth, tmp_path / "x.weights.h5")

    bad = dict(state)
    bad["_blocks.3._se_reduce.weight"] = np.zeros((6, 144, 3, 3), np.float32)
    pth = _save_state_dict(bad, tmp_path / "bad.pth")
    with pytest.raises(ConversionError) as error:
        weights.convert_lukemelas(B0, pth, tmp_path / "x.weights.h5")
    assert "'_blocks.3._se_reduce.weight'" in str(error.value)
    assert "block3a_se_reduce" in str(error.value)
    assert "(3, 3, 144, 6)" in str(error.value) and "(1, 1, 144, 6)" in str(error.value)

    extra = dict(state, **{"_blocks.0._extra.weight": np.zeros((2,), np.float32)})
    pth = _save_state_dict(extra, tmp_path / "extra.pth")
    with pytest.raises(ConversionError, match=r"'_blocks.0._extra.weight'.*was not used"):
        weights.convert_lukemelas(B0, pth, tmp_path / "x.weights.h5")


class NotAStateDict:
    """A pickled object: refused by torch.load(weights_only=True)."""


def test_lukemelas_refuses_pickled_code_and_other_files(tmp_path):
    pytest.importorskip("torch", reason="torch is needed to write .pth fixtures")
    import torch

    pickled = tmp_path / "object.pth"
    torch.save(NotAStateDict(), pickled)
    with pytest.raises(ConversionError, match="weights_only=True"):
        weights.convert_lukemelas(B0, pickled, tmp_path / "x.weights.h5")
    other = _save_state_dict({"conv1.weight": np.zeros((2, 2), np.float32)}, tmp_path / "r.pth")
    with pytest.raises(ConversionError, match="not a lukemelas"):
        weights.convert_lukemelas(B0, other, tmp_path / "x.weights.h5")


# ---------------------------------------------------------------- keras.applications legacy .h5

@pytest.fixture(scope="module")
def legacy_h5(tmp_path_factory):
    """A keras.applications B0 weight file written by tf_keras (Keras 2), as published:
    ImageNet mean in ``normalization/mean``, the std in ``normalization/variance``."""
    tf_keras = pytest.importorskip("tf_keras", reason="tf_keras writes the legacy .h5 fixture")
    tf_keras.backend.clear_session()  # layer names as published ("normalization", not "_1")
    model = tf_keras.applications.EfficientNetB0(weights=None, classifier_activation=None)
    rng = np.random.default_rng(1)
    model.set_weights([rng.normal(0, 0.1, w.shape).astype("float32") if w.ndim else w
                       for w in model.get_weights()])
    norm = model.get_layer("normalization")
    norm.set_weights([np.array([0.485, 0.456, 0.406], np.float32),
                      np.array([0.229, 0.224, 0.225], np.float32), np.array(0, np.int64)])
    path = tmp_path_factory.mktemp("legacy") / "efficientnetb0.h5"
    model.save_weights(str(path))
    weights = {f"{w.name.split(':')[0]}": w.numpy() for w in model.weights}
    return path, weights


def test_keras_h5_converts_by_name(legacy_h5, tmp_path):
    path, source = legacy_h5
    with h5py.File(path) as f:
        assert "block1a_dwconv/depthwise_kernel:0" in [
            name.decode() if isinstance(name, bytes) else name
            for name in f["block1a_dwconv"].attrs["weight_names"]]
    output = tmp_path / "b0.weights.h5"
    weights.convert_keras_h5(B0, path, output)
    model = build_model(B0, weights=str(output), classifier_activation=None)
    got = layer_weights(model)
    np.testing.assert_array_equal(got["block1a_dwconv/kernel"],
                                  source["block1a_dwconv/depthwise_kernel"])
    np.testing.assert_array_equal(got["block6d_project_bn/moving_variance"],
                                  source["block6d_project_bn/moving_variance"])
    np.testing.assert_array_equal(got["predictions/kernel"], source["predictions/kernel"])
    # the model keeps the right ImageNet variance (std squared), not the file's std
    np.testing.assert_allclose(got["normalization/variance"],
                               np.square([0.229, 0.224, 0.225]), rtol=1e-6)


def test_keras_h5_loads_directly_as_a_path_without_top(legacy_h5):
    path, source = legacy_h5
    model = build_model(B0, include_top=False, weights=str(path))
    np.testing.assert_array_equal(layer_weights(model)["top_bn/gamma"], source["top_bn/gamma"])


def test_keras_h5_of_another_variant_is_refused(legacy_h5, tmp_path):
    path, _ = legacy_h5
    with pytest.raises(ConversionError, match="block1b|shape mismatch"):
        weights.convert_keras_h5("efficientnet-b1", path, tmp_path / "x.weights.h5")
    not_h5 = tmp_path / "not.h5"
    not_h5.write_bytes(b"\x00" * 64)
    with pytest.raises(ConversionError, match="not a readable HDF5 file"):
        weights.convert_keras_h5(B0, not_h5, tmp_path / "x.weights.h5")


def test_unknown_source_format():
    with pytest.raises(ValueError, match="unknown source format 'onnx'"):
        weights.read_source("onnx", "x", B0)


def test_command_line_refuses_a_wrong_file(checkpoint, tmp_path, capsys):
    """keras-effnet-convert exits 1 with the converter's message (its main in this process,
    ``helpers.run_cli``; the --help test below runs the tools/ shim in a subprocess)."""
    output = tmp_path / "b2.weights.h5"
    capsys.readouterr()
    returncode = run_cli("convert_weights", ["--source", "tpu-checkpoint",
                                             "--model", "efficientnet-b2",
                                             "--input", str(checkpoint), "--output", str(output)])
    stderr = capsys.readouterr().err
    assert returncode == 1
    assert "error:" in stderr and "holds the weights of 'efficientnet-b0'" in stderr
    assert not output.exists()


def test_command_line_help_lists_its_flags():
    """--help of the tools/ shim and of ``python -m keras_effnet.cli.convert_weights`` lists the
    job's own flags (defined in ``run()``, not at import)."""
    import os
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    commands = ([os.path.join(root, "tools", "convert_weights.py")],
                ["-m", "keras_effnet.cli.convert_weights"])
    results = run_together([[sys.executable, *command, "--help"] for command in commands],
                           timeout=300, env=env, cwd=root)  # both at once
    for command, result in zip(commands, results):
        # (absl's --help exits with status 1)
        for flag in ("--source", "--model", "--input", "--output", "--[no]include_top",
                     "--normalization"):
            assert flag in result.stdout, (command, result.stdout, result.stderr[-2000:])

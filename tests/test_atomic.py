import json
import os

import keras
import numpy as np
import pytest

from keras_effnet import atomic


def test_write_json_replaces_whole_file(tmp_path):
    path = tmp_path / "sub" / "metrics.json"
    atomic.write_json(path, {"top1": 0.5})
    atomic.write_json(path, {"top1": 0.75})
    assert json.loads(path.read_text()) == {"top1": 0.75}
    assert os.listdir(path.parent) == ["metrics.json"]


def test_failed_write_keeps_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "metrics.json"
    atomic.write_json(path, {"ok": True})
    with pytest.raises(TypeError):
        atomic.write_json(path, {"bad": object()})
    assert json.loads(path.read_text()) == {"ok": True}
    assert os.listdir(tmp_path) == ["metrics.json"]


def test_save_keras_both_formats(tmp_path):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    atomic.save_keras(model, tmp_path / "m.keras")
    atomic.save_keras(model, tmp_path / "m.weights.h5")
    restored = keras.saving.load_model(tmp_path / "m.keras")
    np.testing.assert_array_equal(restored.layers[0].kernel.numpy(), model.layers[0].kernel.numpy())
    assert sorted(os.listdir(tmp_path)) == ["m.keras", "m.weights.h5"]
    with pytest.raises(ValueError, match=".keras or .weights.h5"):
        atomic.save_keras(model, tmp_path / "m.bin")


def test_atomic_directory_replaces_or_keeps_the_old_one(tmp_path):
    target = tmp_path / "export"
    with atomic.atomic_directory(target) as staging:
        assert os.path.dirname(staging) == str(tmp_path) and not os.listdir(staging)
        (tmp_path / os.path.basename(staging) / "a.txt").write_text("one")
    assert os.listdir(target) == ["a.txt"]
    with pytest.raises(RuntimeError):
        with atomic.atomic_directory(target) as staging:
            (tmp_path / os.path.basename(staging) / "b.txt").write_text("two")
            raise RuntimeError("converter failed")
    assert os.listdir(target) == ["a.txt"]
    with atomic.atomic_directory(target) as staging:
        (tmp_path / os.path.basename(staging) / "b.txt").write_text("two")
    assert os.listdir(target) == ["b.txt"] and os.listdir(tmp_path) == ["export"]

"""Weight-set registry, download/cache and loading, all offline.

A fake mirror in ``tmp_path`` is laid out like https://storage.googleapis.com and served
through ``$KERAS_EFFNET_BASE_URL``; the cache goes to ``$KERAS_EFFNET_HOME``. Checkpoints in
the mirror are written here with the original variable names from randomly initialised models.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import tarfile

import h5py
import numpy as np
import pytest

import keras_effnet
from keras_effnet import build_model, weights
from helpers import layer_weights, write_tpu_checkpoint

B0 = "efficientnet-b0"
NOISY_B0 = "cloud-tpu-checkpoints/efficientnet/noisystudent/noisy_student_efficientnet-b0.tar.gz"
ADVPROP_B0 = "cloud-tpu-checkpoints/efficientnet/advprop/efficientnet-b0.tar.gz"
KERAS_B0 = "keras-applications/efficientnetb0.h5"
KERAS_B0_NOTOP = "keras-applications/efficientnetb0_notop.h5"


def _assert_same(expected, actual, skip=("normalization",)):
    want, got = layer_weights(expected), layer_weights(actual)
    keys = [k for k in want if k.split("/")[0] not in skip and k in got]
    assert len(keys) > 300
    for key in keys:
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)


def _checkpoint_archive(model, spec, archive, folder):
    """An archive as published: <folder>/model.ckpt.{index,data-*} inside a .tar.gz."""
    prefix = archive.parent / f"_{folder}" / folder / "model.ckpt"
    write_tpu_checkpoint(model, spec, prefix,
                                 extra={"global_step": np.array(1, np.int64)})
    archive.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "w:gz", compresslevel=1) as tar:
        tar.add(prefix.parent, arcname=folder)
    return archive


def _legacy_h5(model, path, include_top=True):
    """A keras.applications-style legacy weight file (layer order, std in the variance slot)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        names = []
        for layer in model.layers:
            if not include_top and layer.name in ("avg_pool", "top_dropout", "predictions"):
                continue
            names.append(layer.name.encode())
            group = f.create_group(layer.name)
            weight_names = []
            for variable in layer.weights:
                short = "depthwise_kernel" if "dwconv" in layer.name else variable.name
                value = np.asarray(variable.numpy())
                if layer.name == "normalization" and variable.name == "variance":
                    value = np.array([0.229, 0.224, 0.225], np.float32)
                name = f"{layer.name}/{short}:0"
                group.create_dataset(name, data=value)
                weight_names.append(name.encode())
            group.attrs["weight_names"] = weight_names
        f.attrs["layer_names"] = names
        f.attrs["backend"] = b"tensorflow"
    return path


def _md5(path):
    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def source_model():
    model = build_model(B0, classifier_activation=None)
    rng = np.random.default_rng(3)
    for layer in model.layers:
        if layer.name != "normalization":
            for v in layer.weights:
                v.assign(rng.normal(0, 0.1, v.shape).astype("float32")
                         if "variance" not in v.name else
                         rng.uniform(0.5, 1.5, v.shape).astype("float32"))
    return model


@pytest.fixture(scope="module")
def mirror(source_model, tmp_path_factory):
    root = tmp_path_factory.mktemp("mirror")
    _checkpoint_archive(source_model, B0, root / NOISY_B0, "noisy-student-efficientnet-b0")
    (root / ADVPROP_B0).parent.mkdir(parents=True)
    (root / ADVPROP_B0).write_bytes((root / NOISY_B0).read_bytes())
    _legacy_h5(source_model, root / KERAS_B0)
    _legacy_h5(source_model, root / KERAS_B0_NOTOP, include_top=False)
    return root


@pytest.fixture
def env(mirror, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv(weights.BASE_URL_ENV, str(mirror))
    monkeypatch.setenv(weights.HOME_ENV, str(cache))
    return cache


@pytest.fixture
def keras_md5(mirror, monkeypatch):
    """Register the fixture's md5s for B0 'imagenet' (the real files are not downloadable here)."""
    key = (B0, "imagenet")
    row = dataclasses.replace(weights.WEIGHT_SETS[key],
                              checksum=f"md5:{_md5(mirror / KERAS_B0)}",
                              notop_checksum=f"md5:{_md5(mirror / KERAS_B0_NOTOP)}")
    monkeypatch.setitem(weights.WEIGHT_SETS, key, row)
    return row


# ------------------------------------------------------------------------------ registry

def test_registry_covers_the_published_sets():
    table = weights.available_weights()
    assert table[B0] == ["imagenet", "baseline", "autoaugment", "advprop", "noisy-student"]
    assert sorted(table["efficientnet-b8"]) == ["advprop"]
    assert table["efficientnet-l2"] == ["noisy-student", "noisy-student-475"]
    assert table["efficientnet-lite4"] == ["imagenet"]
    assert {m for m, n in weights.WEIGHT_SETS if n == "randaugment"} == {
        "efficientnet-b5", "efficientnet-b7"}
    assert {m for m, n in weights.WEIGHT_SETS if n == "noisy-student"} == {
        f"efficientnet-b{i}" for i in range(8)} | {"efficientnet-l2"}
    for (model, name), row in weights.WEIGHT_SETS.items():
        assert model in keras_effnet.VARIANTS and row.model == model and row.name == name
        assert row.url.startswith("https://storage.googleapis.com/")
        assert row.source in ("keras-h5", "tpu-checkpoint")


def test_registry_rows_carry_checksums_and_eval_settings():
    b0 = weights.get_weight_set("B0", "imagenet")
    assert b0.url == "https://storage.googleapis.com/keras-applications/efficientnetb0.h5"
    assert b0.checksum == "md5:902e53a9f72be733fc0bcb005b3ebbac"
    assert b0.notop_checksum == "md5:50bc09e76180e00e4465e1a485ddc09d"
    b7 = weights.get_weight_set("b7", "imagenet")
    assert b7.checksum == "md5:8c03f828fec3ef71311cd463b6759d99"
    b6 = weights.get_weight_set("efficientnet-b6", "noisy-student")
    assert b6.url.endswith("/efficientnet/noisystudent/noisy_student_efficientnet-b6.tar.gz")
    assert b6.checksum is None and b6.eval.resolution == 528
    assert weights.get_weight_set("b3", "advprop").eval.normalization == "inception"
    lite = weights.eval_preprocessing("lite0", "imagenet")
    # The original's TF1 resize_bicubic and S / (S + 32) crop (tensorflow/tpu preprocessing.py).
    assert (lite.normalization, lite.resolution, lite.resize_method) == ("lite", 224, "bicubic_tf1")
    assert lite.crop_fraction is None and lite.crop_padding == 32
    assert weights.eval_preprocessing("l2", "noisy-student-475").resolution == 475
    assert weights.eval_preprocessing("b2").resolution == 260  # no set: the variant's own


def test_every_set_names_the_evaluation_its_publisher_ran():
    """Each row: TF1 resize_bicubic, the S / (S + 32) crop, the set's normalisation; the later
    0.875 crop is a named rule, S / (S + round(S / 7)), not a guess."""
    from keras_effnet.eval_preprocessing import DEFAULT_RESIZE_METHOD  # noqa: PLC0415
    from keras_effnet.weights import registry  # noqa: PLC0415 (the registry's own tables)

    assert registry.RESIZE_METHOD == "bicubic_tf1" == DEFAULT_RESIZE_METHOD
    for (model, name), row in weights.WEIGHT_SETS.items():
        resize, crop_rule, normalization = registry.SET_EVALUATION[name]
        assert (row.eval.resize_method, crop_rule) == ("bicubic_tf1", "padding-32"), (model, name)
        assert (row.eval.crop_fraction, row.eval.crop_padding) == (None, 32), (model, name)
        expected = normalization or keras_effnet.get_spec(model).normalization
        assert row.eval.normalization == expected, (model, name)
        assert row.eval.resolution == (475 if name == "noisy-student-475"
                                       else keras_effnet.get_spec(model).resolution)
        assert row.top1 is not None and 75 < row.top1 < 89, (model, name)
    assert weights.get_weight_set("lite3", "imagenet").eval.normalization == "lite"
    later = {s: registry.evaluation_settings(s, "imagenet", "fraction-0.875") for s in (224, 240, 600)}
    assert {s: v.crop_padding for s, v in later.items()} == {224: 32, 240: 34, 600: 86}
    assert later[224].effective_crop_fraction == 0.875
    with pytest.raises(ValueError, match="unknown crop rule 'center'"):
        registry.evaluation_settings(224, "imagenet", "center")


def test_unknown_or_mismatched_weights_fail_before_building():
    spec = keras_effnet.get_spec(B0)
    with pytest.raises(ValueError, match=r"no weight set 'noisy' for efficientnet-b0; "
                                         r"available: imagenet, baseline"):
        weights.check_weights_argument("noisy", spec, True, 1000)
    with pytest.raises(ValueError, match="no weight set 'advprop' for efficientnet-lite0"):
        build_model("lite0", weights="advprop")
    with pytest.raises(ValueError, match="use include_top=False for a feature extractor, or classes=1000"):
        build_model(B0, weights="noisy-student", classes=10)
    with pytest.raises(FileNotFoundError, match="neither a weight-set name"):
        build_model(B0, weights="/no/such/file.weights.h5")
    weights.check_weights_argument("noisy-student", spec, False, 10)  # fine without the top


def test_normalization_follows_the_weight_set():
    b0, lite = keras_effnet.get_spec(B0), keras_effnet.get_spec("lite2")
    def normalization(spec, weight_source):
        return weights.eval_preprocessing(spec, weight_source).normalization

    assert normalization(b0, None) == "imagenet"
    assert normalization(b0, "advprop") == "inception"
    assert normalization(b0, "noisy-student") == "imagenet"
    assert normalization(lite, "imagenet") == "lite"
    assert normalization(b0, "some/file.weights.h5") == "imagenet"


def test_cache_dir_and_mirror_urls(monkeypatch, tmp_path):
    monkeypatch.delenv(weights.HOME_ENV, raising=False)
    monkeypatch.delenv(weights.BASE_URL_ENV, raising=False)
    assert str(weights.cache_dir()).endswith(os.path.join(".keras", "models"))
    url = weights.get_weight_set(B0, "noisy-student").url
    assert weights.resolve_url(url) == url
    monkeypatch.setenv(weights.HOME_ENV, str(tmp_path))
    assert weights.cache_dir() == tmp_path
    monkeypatch.setenv(weights.BASE_URL_ENV, "https://mirror.example/gcs/")
    assert weights.resolve_url(url) == f"https://mirror.example/gcs/{NOISY_B0}"
    monkeypatch.setenv(weights.BASE_URL_ENV, str(tmp_path))
    assert weights.resolve_url(url) == f"{tmp_path.as_uri()}/{NOISY_B0}"


# ------------------------------------------------------------------------------ end to end

def test_noisy_student_downloads_converts_caches_and_loads(source_model, env, tmp_path,
                                                          monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger="keras_effnet.weights")
    model = keras_effnet.EfficientNetB0(weights="noisy-student", classifier_activation=None)
    _assert_same(source_model, model)
    archive = env / "noisy_student_efficientnet-b0.tar.gz"
    converted = env / "efficientnet-b0_noisy-student.weights.h5"
    assert archive.exists() and converted.exists()
    assert (env / "noisy_student_efficientnet-b0.tar.gz.sha256").exists()
    assert not [p for p in env.iterdir() if "partial" in p.name]
    err = caplog.text
    assert "Downloading" in err and NOISY_B0 in err
    caplog.clear()

    # Second time: served from the cache, even with the mirror gone.
    monkeypatch.setenv(weights.BASE_URL_ENV, str(tmp_path / "empty"))
    notop = keras_effnet.EfficientNetB0(weights="noisy-student", include_top=False)
    _assert_same(source_model, notop, skip=("normalization", "predictions"))
    assert "Downloading" not in caplog.text


def test_advprop_weights_come_with_inception_normalisation(source_model, env):
    model = build_model(B0, weights="advprop", include_top=False)
    layer = model.get_layer("normalization")
    # x / 127.5 - 1: mean 0.5 and std 0.5 of images scaled to [0, 1]
    np.testing.assert_allclose(layer.mean.numpy(), [0.5] * 3)
    np.testing.assert_allclose(layer.variance.numpy(), [0.25] * 3)
    _assert_same(source_model, model, skip=("normalization", "predictions"))


def test_imagenet_keras_files_load_with_and_without_top(source_model, env, keras_md5):
    model = keras_effnet.EfficientNetB0(weights="imagenet", classifier_activation=None)
    _assert_same(source_model, model)
    # the file's std-in-variance slot is not copied: the model keeps the true ImageNet variance
    np.testing.assert_allclose(model.get_layer("normalization").variance.numpy(),
                               np.square([0.229, 0.224, 0.225]), rtol=1e-6)
    notop = keras_effnet.EfficientNetB0(weights="imagenet", include_top=False)
    _assert_same(source_model, notop, skip=("normalization", "predictions"))
    assert (env / "efficientnetb0.h5").exists() and (env / "efficientnetb0_notop.h5").exists()


def test_keras_archives_load_by_path(source_model, tmp_path):
    archive = tmp_path / "b0.keras"
    source_model.save(str(archive))
    _assert_same(source_model, build_model(B0, weights=str(archive), include_top=False),
                 skip=("normalization", "predictions"))


# ------------------------------------------------------------------------------ download cache

def test_wrong_checksum_caches_nothing(env, keras_md5, monkeypatch):
    row = dataclasses.replace(keras_md5, checksum="md5:" + "0" * 32)
    monkeypatch.setitem(weights.WEIGHT_SETS, (B0, "imagenet"), row)
    with pytest.raises(weights.ChecksumError, match="md5 .* expected 0000"):
        weights.weights_file(B0, "imagenet")
    assert not env.exists() or not list(env.iterdir())


def test_corrupt_cached_files_are_fetched_again(mirror, env, keras_md5, caplog):
    path = weights.weights_file(B0, "imagenet", progress=False)
    good = path.read_bytes()
    path.write_bytes(good[:1000])  # truncated
    assert weights.weights_file(B0, "imagenet", progress=False).read_bytes() == good
    assert "is bad (md5" in caplog.text
    caplog.clear()

    # No published checksum: the sha256 recorded at download time catches it.
    url = weights.get_weight_set(B0, "noisy-student").url
    archive = weights.fetch(url, env / "ns.tar.gz", None, progress=False)
    data = archive.read_bytes()
    archive.write_bytes(data[:-5000])
    assert weights.fetch(url, archive, None, progress=False).read_bytes() == data
    assert "recorded at download" in caplog.text
    caplog.clear()

    # A truncated archive put there by hand (no record) is caught by reading it.
    hand = env / "hand.tar.gz"
    hand.write_bytes(data[: len(data) // 2])
    assert weights.fetch(url, hand, None, progress=False).read_bytes() == data
    assert "unreadable archive" in caplog.text


def test_offline_error_names_the_url_and_the_cache_path(env, tmp_path, monkeypatch):
    monkeypatch.setenv(weights.BASE_URL_ENV, str(tmp_path / "offline"))
    with pytest.raises(weights.WeightsUnavailableError) as error:
        keras_effnet.EfficientNetB0(weights="noisy-student")
    message = str(error.value)
    assert f"{(tmp_path / 'offline').as_uri()}/{NOISY_B0}" in message
    assert str(env / "noisy_student_efficientnet-b0.tar.gz") in message
    assert isinstance(error.value, OSError)


def test_progress_callback(env, keras_md5):
    calls = []
    weights.weights_file(B0, "imagenet", include_top=False,
                         progress=lambda done, total: calls.append((done, total)))
    assert calls and calls[-1][0] == calls[-1][1]


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("KERAS_EFFNET_B6_CHECK"),
                    reason="builds B6 three times and moves ~350 MB (about 35 s of CPU); "
                           "run with KERAS_EFFNET_B6_CHECK=1 (docs/weights.md)")
def test_efficientnet_b6_noisy_student_from_a_local_mirror(tmp_path, monkeypatch):
    """The issue's acceptance check: EfficientNetB6(weights="noisy-student") gets the right
    weights. The mirror's checkpoint gives every tensor its own constant value (small archive,
    and any tensor that lands in the wrong variable is caught)."""
    spec = keras_effnet.get_spec("efficientnet-b6")
    shapes_from = build_model(spec, classifier_activation=None)
    names = weights.tpu_checkpoint_names(spec)
    marks = {}
    for index, layer_var in enumerate(
            (layer, v) for layer in shapes_from.layers if layer.name != "normalization"
            for v in layer.weights):
        layer, variable = layer_var
        key = f"{layer.name}/{variable.name}"
        marks[key] = float(index + 1)
        variable.assign(np.full(variable.shape, index + 1, np.float32))
    mirror = tmp_path / "mirror"
    archive = mirror / NOISY_B0.replace("b0", "b6")
    _checkpoint_archive(shapes_from, spec, archive, "noisy-student-efficientnet-b6")
    assert archive.stat().st_size < 5_000_000
    monkeypatch.setenv(weights.BASE_URL_ENV, str(mirror))
    monkeypatch.setenv(weights.HOME_ENV, str(tmp_path / "cache"))

    model = keras_effnet.EfficientNetB6(weights="noisy-student")
    assert model.count_params() == 43_265_143
    checked = 0
    for layer in model.layers:
        for variable in layer.weights:
            key = f"{layer.name}/{variable.name}"
            if key in marks:
                assert np.all(variable.numpy() == marks[key]), key
                checked += 1
    assert checked == len(marks) == len(names)


def test_files_of_unknown_format_fail_before_building(tmp_path):
    odd = tmp_path / "weights.onnx"
    odd.write_bytes(b"x")
    with pytest.raises(ValueError, match="cannot tell the format of weight file"):
        weights.check_weights_argument(str(odd), keras_effnet.get_spec(B0), True, 1000)

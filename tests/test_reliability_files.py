"""Issue 13, files side: export/convert outputs, weight cache, image folders, prediction inputs,
atomic writes, scaling guards, as a careless user meets them (the command lines' mains with
their flags, exit statuses and stderr, in this process: ``helpers.run_cli``)."""

import collections
import hashlib
import io
import os
import stat
import tarfile

import numpy as np
import pytest
import tensorflow as tf
from helpers import run_cli

from keras_effnet import atomic, predict, scaling, weights
from keras_effnet.applications import build_model
from keras_effnet.data.sources import list_folder
from keras_effnet.export import check_output
from keras_effnet.preprocessing import EvalPreprocessing

Result = collections.namedtuple("Result", "returncode stdout stderr")


def run_command_line(capsys, name, *argv):
    """``keras_effnet.cli.<name>`` with ``argv``: its exit status and what it printed."""
    capsys.readouterr()
    status = run_cli(name, argv)
    out, err = capsys.readouterr()
    return Result(status, out, err)


def assert_clear_error(result, *needles):
    assert result.returncode != 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    for needle in needles:
        assert needle in result.stderr, result.stderr


# 1. export --overwrite replaces only a previous export.
def test_export_overwrite_of_the_working_directory_is_refused(tmp_path, monkeypatch, capsys):
    (tmp_path / "notes.txt").write_text("keep me")
    monkeypatch.chdir(tmp_path)
    result = run_command_line(capsys, "export", "--model=efficientnet-b0", "--weights=imagenet",
                              "--format=saved_model", "--output=.", "--overwrite")
    assert_clear_error(result, "working directory")
    assert (tmp_path / "notes.txt").read_text() == "keep me"


def test_export_overwrite_refuses_runs_and_foreign_directories(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text("{}")
    with pytest.raises(ValueError, match="training run directory"):
        check_output(run, overwrite=True)
    other = tmp_path / "photos"
    other.mkdir()
    (other / "a.jpg").write_bytes(b"x")
    with pytest.raises(ValueError, match="not a previous export"):
        check_output(other, overwrite=True)
    source = tmp_path / "src" / "model.weights.h5"
    source.parent.mkdir()
    source.write_bytes(b"x")
    with pytest.raises(ValueError, match="contains the source"):
        check_output(tmp_path / "src", overwrite=True, protected=[source])
    previous = tmp_path / "export"
    previous.mkdir()
    (previous / "metadata.json").write_text("{}")
    assert check_output(previous, overwrite=True) == str(previous)
    assert (run / "run.json").exists() and (other / "a.jpg").exists()


# 7. convert_weights refuses to overwrite without --overwrite (export's rule).
def test_convert_weights_refuses_an_existing_output(tmp_path, capsys):
    output = tmp_path / "b0.weights.h5"
    output.write_bytes(b"precious")
    result = run_command_line(capsys, "convert_weights", "--source=lukemelas",
                              "--model=efficientnet-b0", f"--input={tmp_path / 'x.pth'}",
                              f"--output={output}")
    assert_clear_error(result, "already exists", "--overwrite")
    assert output.read_bytes() == b"precious"
    (tmp_path / "d.weights.h5").mkdir()
    with pytest.raises(ValueError, match="is a directory"):
        weights.convert("lukemelas", "efficientnet-b0", tmp_path / "x.pth",
                        tmp_path / "d.weights.h5")


def test_legacy_h5_as_lukemelas_is_named_and_never_advises_weights_only_false(tmp_path):
    legacy = tmp_path / "efficientnetb0.h5"
    legacy.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 64)
    with pytest.raises(weights.ConversionError, match="--source keras-h5") as error:
        weights.convert("lukemelas", "efficientnet-b0", legacy, tmp_path / "o.weights.h5")
    assert "weights_only=False" not in str(error.value)


def test_state_dict_with_a_non_tensor_is_named(tmp_path):
    torch = pytest.importorskip("torch")
    path = tmp_path / "odd.pth"
    torch.save({"_conv_stem.weight": "not a tensor"}, path)
    with pytest.raises(weights.ConversionError, match="not a tensor|not a PyTorch state_dict"):
        weights.convert("lukemelas", "efficientnet-b0", path, tmp_path / "o.weights.h5")


# 6. A stale .sha256 record never deletes an archive the user put there by hand.
def _archive(path):
    with tarfile.open(path, "w:gz") as tar:
        data = b"checkpoint bytes"
        info = tarfile.TarInfo("efficientnet-b0/model.ckpt.index")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return path


def test_stale_checksum_record_keeps_a_hand_placed_archive(tmp_path, monkeypatch):
    monkeypatch.setenv(weights.BASE_URL_ENV, str(tmp_path / "no-mirror"))
    archive = _archive(tmp_path / "efficientnet-b0.tar.gz")
    (tmp_path / "efficientnet-b0.tar.gz.sha256").write_text("0" * 64 + "\n")  # of a bad mirror file
    url = "https://storage.googleapis.com/cloud-tpu-checkpoints/efficientnet-b0.tar.gz"
    assert weights.fetch(url, archive, progress=False) == archive
    assert archive.exists()
    record = (tmp_path / "efficientnet-b0.tar.gz.sha256").read_text().strip()
    assert record == hashlib.sha256(archive.read_bytes()).hexdigest()


def test_bad_mirror_file_is_not_cached_or_trusted(tmp_path, monkeypatch):
    mirror = tmp_path / "mirror" / "keras-applications"
    mirror.mkdir(parents=True)
    (mirror / "efficientnetb0.h5").write_text("<html>Service unavailable</html>")
    monkeypatch.setenv(weights.BASE_URL_ENV, str(tmp_path / "mirror"))
    url = "https://storage.googleapis.com/keras-applications/efficientnetb0.h5"
    cache = tmp_path / "cache" / "efficientnetb0.h5"
    with pytest.raises(weights.ChecksumError, match="not an HDF5 file"):
        weights.fetch(url, cache, progress=False)
    assert not cache.exists()
    # An HTML page cached by an older version is not trusted either: moved aside, fetched again.
    cache.write_text("<html>Service unavailable</html>")
    with pytest.raises(weights.ChecksumError):
        weights.fetch(url, cache, progress=False)
    assert (tmp_path / "cache" / "efficientnetb0.h5.bad").exists()


def test_unwritable_cache_is_not_reported_as_a_network_failure(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("a regular file")
    monkeypatch.setenv(weights.HOME_ENV, str(blocker / "cache"))
    url = "https://storage.googleapis.com/keras-applications/efficientnetb0.h5"
    with pytest.raises(PermissionError, match=weights.HOME_ENV) as error:
        weights.fetch(url, weights.cache_dir() / "efficientnetb0.h5", progress=False)
    assert "download" not in str(error.value)


# 5. Symlink loops in an image folder are refused with the path; each real file counts once.
def _image(path):
    tf.io.write_file(str(path), tf.io.encode_png(np.zeros((8, 8, 3), np.uint8)))


def test_symlink_loop_in_an_image_folder_is_refused(tmp_path):
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        _image(tmp_path / name / "0.png")
    os.symlink("..", tmp_path / "a" / "up")
    with pytest.raises(ValueError, match=r"symbolic link.*a/up"):
        list_folder(str(tmp_path), "train", 0.2)


def test_linked_files_count_once(tmp_path):
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        for index in range(3):
            _image(tmp_path / name / f"{index}.png")
    os.symlink(tmp_path / "a" / "0.png", tmp_path / "a" / "again.png")
    files, labels, names = list_folder(str(tmp_path), "train", 0.0)
    assert len(files) == 6 and names == ["a", "b"]


# 9. Atomic writes honour the umask.
@pytest.mark.parametrize("mask", [0o022, 0o077])
def test_atomic_writes_honour_the_umask(tmp_path, mask):
    old = os.umask(mask)
    try:
        atomic.write_json(tmp_path / "m.json", {})
        with atomic.atomic_directory(tmp_path / "d") as staging:
            (open(os.path.join(staging, "x"), "w")).close()
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "m.json").st_mode) == 0o666 & ~mask
    assert stat.S_IMODE(os.stat(tmp_path / "d").st_mode) == 0o777 & ~mask


# Clear errors.
@pytest.mark.parametrize("phi", [1e4, float("nan"), float("inf"), 40, -40])
def test_compound_spec_guards(phi):
    with pytest.raises(ValueError, match="phi must be a finite number"):
        scaling.compound_spec(phi)


def test_numpy_phi_is_accepted():
    assert scaling.compound_spec(np.int64(1)).resolution == scaling.compound_spec(1).resolution


def test_weights_of_the_wrong_type():
    with pytest.raises(ValueError, match="weights must be None, a weight-set name"):
        build_model("efficientnet-b0", weights=5)


def test_b1_file_into_b0_names_the_variant(tmp_path):
    path = tmp_path / "b1.weights.h5"
    build_model("efficientnet-b1", include_top=False).save_weights(path)
    with pytest.raises(ValueError, match="this file holds efficientnet-b1"):
        build_model("efficientnet-b0", include_top=False, weights=str(path))


@pytest.mark.parametrize("content", [b"just some notes\n", "truncated"])
def test_predict_names_an_unreadable_image(tmp_path, content):
    if content == "truncated":
        data = tf.io.encode_jpeg(np.full((64, 64, 3), 128, np.uint8)).numpy()
        content = data[: len(data) - 40]
    path = tmp_path / "photo.jpg"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="photo.jpg"):
        predict.load_images([path], EvalPreprocessing(32))


# Data sources: garbage or unlabelled TFRecords, the recipe configs' ImageNet without its extras.
def test_garbage_tfrecords_are_named(tmp_path):
    from keras_effnet.data.sources import dataset_info  # noqa: PLC0415

    (tmp_path / "train-0.tfrecord").write_bytes(os.urandom(256))
    with pytest.raises(ValueError, match="not readable TFRecords"):
        dataset_info(f"tfrecord:{tmp_path}/train-*", "train")


def test_records_without_labels_are_not_advised_label_offset(tmp_path):
    from keras_effnet.data.sources import dataset_info  # noqa: PLC0415

    example = tf.train.Example(features=tf.train.Features(feature={
        "image/encoded": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"x"]))}))
    with tf.io.TFRecordWriter(str(tmp_path / "train-0.tfrecord")) as writer:
        writer.write(example.SerializeToString())
    with pytest.raises(ValueError, match="no image/class/label") as error:
        dataset_info(f"tfrecord:{tmp_path}/train-*", "train")
    assert "label_offset" not in str(error.value)


def test_imagenet_without_its_builder_dependencies_says_what_to_do(monkeypatch, tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    from keras_effnet.data.tfds_source import tfds_builder  # noqa: PLC0415

    class Builder:
        data_dir = "/nowhere/imagenet2012"
        data_dir_root = str(tmp_path)

        def is_prepared(self):
            return False

        def download_and_prepare(self, **kwargs):
            raise ModuleNotFoundError("No module named 'importlib_resources'",
                                      name="importlib_resources")

    monkeypatch.setattr(tfds, "builder", lambda name, data_dir=None: Builder())
    with pytest.raises(FileNotFoundError, match="importlib_resources.*folder:<path>"):
        tfds_builder("imagenet2012", None, True, None)


def test_numpy_integer_classes_are_accepted():
    import keras_effnet  # noqa: PLC0415

    model = keras_effnet.build_model("b0", input_shape=(32, 32, 3), classes=np.int64(3),
                                     weights=None)
    assert model.output_shape == (None, 3)
    with pytest.raises(ValueError, match="classes must be a positive integer"):
        keras_effnet.build_model("b0", input_shape=(32, 32, 3), classes=3.0)

"""keras_effnet.data: each source, bad data, the embedded digits dataset, distribution."""

import io
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from keras_effnet import data
from helpers import original_eval_of_bytes

SIZE = 24


def _encode(array, fmt, mode=None):
    image = Image.fromarray(array)
    if mode:
        image = image.convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


def _array(seed, height=40, width=36):
    return np.random.RandomState(seed).randint(0, 255, (height, width, 3)).astype(np.uint8)


GOOD = {
    "a.jpg": lambda s: _encode(_array(s), "JPEG"),
    "b.png": lambda s: _encode(_array(s), "PNG"),
    "gray.png": lambda s: _encode(_array(s), "PNG", "L"),
    "cmyk.jpg": lambda s: _encode(_array(s), "JPEG", "CMYK"),
    "anim.gif": lambda s: _encode(_array(s), "GIF"),
    "c.bmp": lambda s: _encode(_array(s), "BMP"),
    "tiny.png": lambda s: _encode(_array(s, 5, 4), "PNG"),
    "rgba.PNG": lambda s: _encode(_array(s), "PNG", "RGBA"),
}
BAD = {
    "garbage.jpg": lambda s: b"this is not a jpeg",
    "truncated.jpg": lambda s: _encode(_array(s), "JPEG")[:200],
    "truncated.png": lambda s: _encode(_array(s), "PNG")[:300],
    "empty.png": lambda s: b"",
}


def _write(folder, files, seed):
    os.makedirs(folder, exist_ok=True)
    for name, make in files.items():
        with open(os.path.join(folder, name), "wb") as f:
            f.write(make(seed))


def _count(ds):
    return sum(int(labels.shape[0]) for _, labels in ds)


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("folder")
    for i, name in enumerate(["cat", "dog"]):
        _write(root / "train" / name, {**GOOD, **BAD}, i)
        _write(root / "validation" / name, {"v.jpg": GOOD["a.jpg"], "w.png": GOOD["b.png"]}, i)
    (root / "train" / "cat" / "notes.txt").write_text("ignored: not an image")
    return str(root)


def test_folder_source_skips_and_counts_bad_images(image_folder, capfd):
    info = data.dataset_info(f"folder:{image_folder}", "train")
    assert info.class_names == ("cat", "dog") and info.num_classes == 2
    assert info.num_examples == 2 * (len(GOOD) + len(BAD))
    stats = data.InputStats()
    ds = data.make_dataset(f"folder:{image_folder}", "train", image_size=SIZE, batch_size=5,
                           training=False, stats=stats, deterministic=True)
    labels, produced = [], []
    for images, batch_labels in ds:
        assert images.dtype == tf.float32 and images.shape[1:] == (SIZE, SIZE, 3)
        produced.extend(images.numpy())
        labels.extend(batch_labels.numpy().tolist())
    assert len(labels) == 2 * len(GOOD)
    assert sorted(set(labels)) == [0, 1]
    assert stats.skipped == 2 * len(BAD) and stats.decode_errors == 0
    assert "skipping unreadable image" in capfd.readouterr().err
    # The evaluation path is the original's (crop, TF1 resize_bicubic, not clipped), recomputed
    # from the ops it called, file by file in the folder's order (classes, then sorted names).
    files = [os.path.join(image_folder, "train", name, file) for name in ("cat", "dog")
             for file in sorted(GOOD, key=lambda f: os.path.join(image_folder, "train", name, f))]
    expected = [original_eval_of_bytes(open(path, "rb").read(), SIZE) for path in files]
    np.testing.assert_array_equal(np.stack(produced), np.stack(expected))
    assert np.min(expected) < 0 or np.max(expected) > 255  # noise overshoots: nothing clips it
    # Clipped paths stay in [0, 255]: tf.image.resize's bicubic, and training with augmentation.
    clipped = data.make_dataset(
        f"folder:{image_folder}", "train", image_size=SIZE, batch_size=5, training=False,
        eval_preprocessing=data.eval_preprocessing_for("folder:x", SIZE).replace(resize_method="bicubic"))
    trained = data.make_dataset(f"folder:{image_folder}", "train", image_size=SIZE, batch_size=5,
                                training=True, augment="autoaugment", seed=0).take(3)
    for images, _ in list(clipped) + list(trained):
        assert float(tf.reduce_min(images)) >= 0 and float(tf.reduce_max(images)) <= 255


def test_folder_training_pipeline_with_augmentation(image_folder):
    ds = data.make_dataset(f"folder:{image_folder}", "validation", image_size=SIZE, batch_size=3,
                           training=True, augment="randaugment", seed=1)
    images, labels = next(iter(ds))  # repeats, drops the remainder
    assert images.shape == (3, SIZE, SIZE, 3) and labels.dtype == tf.int32


def test_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        data.make_dataset(f"folder:{tmp_path}/missing", "train", image_size=SIZE, batch_size=2, training=True)
    _write(tmp_path / "flat" / "one", {"a.png": GOOD["b.png"]}, 0)
    os.makedirs(tmp_path / "flat" / "two")
    with pytest.raises(ValueError, match="two.*no .* images"):
        data.make_dataset(f"folder:{tmp_path}/flat", "train", image_size=SIZE, batch_size=2, training=True)
    os.makedirs(tmp_path / "nothing")
    with pytest.raises(ValueError, match="No class subfolders"):
        data.dataset_info(f"folder:{tmp_path}/nothing", "train")
    with pytest.raises(ValueError, match="Unknown data source"):
        data.make_dataset("ftp:somewhere", "train", image_size=SIZE, batch_size=2, training=True)


def test_folder_hash_split_partitions_files(tmp_path):
    for c in ("x", "y"):
        _write(tmp_path / c, {f"{i}.png": GOOD["b.png"] for i in range(30)}, 0)
    train = data.dataset_info(f"folder:{tmp_path}", "train", validation_fraction=0.3)
    validation = data.dataset_info(f"folder:{tmp_path}", "validation", validation_fraction=0.3)
    assert train.num_examples + validation.num_examples == 60
    assert 6 <= validation.num_examples <= 30


def _write_records(path, labels, seed=0):
    with tf.io.TFRecordWriter(str(path)) as writer:
        for i, label in enumerate(labels):
            feature = {
                "image/encoded": tf.train.Feature(bytes_list=tf.train.BytesList(
                    value=[_encode(_array(seed + i), "JPEG")])),
                "image/class/label": tf.train.Feature(int64_list=tf.train.Int64List(value=[label])),
            }
            writer.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())


def test_tfrecord_source_with_one_based_labels(tmp_path):
    _write_records(tmp_path / "train-00000-of-00002", [1, 2, 3, 1])
    _write_records(tmp_path / "train-00001-of-00002", [2, 3], seed=10)
    source = f"tfrecord:{tmp_path}/{{split}}-*"
    info = data.dataset_info(source, "train", label_offset=-1)
    assert info.num_examples == 6 and info.num_classes == 3
    ds = data.make_dataset(source, "train", image_size=SIZE, batch_size=4, training=False, label_offset=-1,
                           num_classes=3)
    labels = np.concatenate([batch_labels.numpy() for _, batch_labels in ds])
    assert sorted(labels.tolist()) == [0, 0, 1, 1, 2, 2]
    # Forgetting the offset: label 3 is out of range for 3 classes -> a clear error, not a skip.
    ds = data.make_dataset(source, "train", image_size=SIZE, batch_size=6, training=False, num_classes=3)
    with pytest.raises(tf.errors.InvalidArgumentError, match="label out of range"):
        _count(ds)
    with pytest.raises(FileNotFoundError, match="No TFRecord files"):
        data.make_dataset(f"tfrecord:{tmp_path}/nope-*", "train", image_size=SIZE, batch_size=2, training=True)


def test_garbage_tfrecords_fail_when_the_dataset_is_built(tmp_path):
    """Unreadable records used to be dropped one by one: zero batches and no error (issue 13).
    The builder reads the first record of the first and the last file and names the bad one."""
    _write_records(tmp_path / "train-0", [0, 1])
    (tmp_path / "train-1").write_bytes(os.urandom(256))  # not TFRecord framing
    with tf.io.TFRecordWriter(str(tmp_path / "other-0")) as writer:
        writer.write(b"\x0a\xff\xff not a serialized Example")
    renamed = tf.train.Example(features=tf.train.Features(feature={
        "image/raw": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"pixels"])),
        "image/class/label": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"cat"]))}))
    with tf.io.TFRecordWriter(str(tmp_path / "renamed-0")) as writer:
        writer.write(renamed.SerializeToString())
    cases = {
        "train-*": ("train-1' holds no readable TFRecords of tf.train.Example "
                    r"\(DataLossError: corrupted record.*make the glob match only those"),
        "other-*": "first record of .*other-0' is not a tf.train.Example",
        "renamed-*": ("first record of .*renamed-0' has no image/encoded and no image/class/label "
                      r"feature as expected \(it has: image/class/label \(1 of bytes_list\), "
                      r"image/raw \(1 of bytes_list\)\)"),
    }
    for glob, message in cases.items():
        for training in (True, False):
            with pytest.raises(ValueError, match=message):
                data.make_dataset(f"tfrecord:{tmp_path}/{glob}", "train", image_size=SIZE, batch_size=2,
                                  training=training)
    # An empty shard among good ones is not an error; the good records all arrive.
    (tmp_path / "train-1").write_bytes(b"")
    _write_records(tmp_path / "train-2", [1])
    ds = data.make_dataset(f"tfrecord:{tmp_path}/train-*", "train", image_size=SIZE, batch_size=2,
                           training=False)
    assert _count(ds) == 3


@pytest.fixture(scope="module")
def digits_dir(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("tfds"))
    data.dataset_info("digits", "train", data_dir=path)  # builds effnet_digits offline
    return path


def test_digits_dataset(digits_dir):
    train = data.dataset_info("digits", "train", data_dir=digits_dir)
    validation = data.dataset_info("digits", "validation", data_dir=digits_dir)
    assert (train.num_examples, validation.num_examples, train.num_classes) == (1437, 360, 10)
    assert train.class_names == tuple(str(i) for i in range(10))
    ds = data.make_dataset("digits", "validation", image_size=32, batch_size=128, training=False,
                           data_dir=digits_dir)
    images, labels = [], []
    for batch_images, batch_labels in ds:
        images.append(batch_images.numpy())
        labels.append(batch_labels.numpy())
    images, labels = np.concatenate(images), np.concatenate(labels)
    assert images.shape == (360, 32, 32, 3) and np.bincount(labels, minlength=10).min() >= 20
    # crop_fraction 1.0 at the stored size reproduces the stored images (real digits, not noise).
    from keras_effnet.data import digits

    stored, stored_labels = digits.digit_images()
    validation_indices = digits.split_indices()["validation"]
    for image, label in zip(images[:5], labels[:5]):  # TFDS shuffles the order within a split
        match = [i for i in validation_indices if np.abs(stored[i] - image).max() < 1e-3]
        assert match and stored_labels[match[0]] == label


def test_tfds_source_errors_and_mixing(digits_dir):
    with pytest.raises(ValueError, match="no split"):
        data.make_dataset("tfds:effnet_digits", "test", image_size=32, batch_size=2, training=False,
                          data_dir=digits_dir)
    with pytest.raises(ValueError, match="has no dataset"):
        data.make_dataset("tfds:no_such_dataset_xyz", "train", image_size=32, batch_size=2, training=False,
                          data_dir=digits_dir)
    with pytest.raises(ValueError, match="num_classes=5"):
        data.make_dataset("digits", "train", image_size=32, batch_size=2, training=True, num_classes=5,
                          data_dir=digits_dir)
    ds = data.make_dataset("tfds:effnet_digits", "train", image_size=32, batch_size=8, training=True,
                           mixup_alpha=0.2, cutmix_alpha=1.0, seed=3, data_dir=digits_dir)
    images, labels = next(iter(ds))
    assert images.shape == (8, 32, 32, 3) and labels.shape == (8, 10) and labels.dtype == tf.float32
    np.testing.assert_allclose(labels.numpy().sum(-1), 1.0, atol=1e-5)


def test_deterministic_with_seed(digits_dir):
    def first_batches():
        ds = data.make_dataset("digits", "train", image_size=32, batch_size=16, training=True,
                               seed=7, deterministic=True, data_dir=digits_dir)  # crop + flip seeded
        return [b for b in ds.take(2)]

    one, two = first_batches(), first_batches()
    for (images_1, labels_1), (images_2, labels_2) in zip(one, two):
        np.testing.assert_array_equal(images_1.numpy(), images_2.numpy())
        np.testing.assert_array_equal(labels_1.numpy(), labels_2.numpy())


def test_pipeline_under_mirrored_strategy_two_cpus(digits_dir):
    """Two logical CPU devices must be configured before TF starts: run in a subprocess."""
    script = textwrap.dedent(f"""
        import tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        from keras_effnet import data
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        assert strategy.num_replicas_in_sync == 2
        for source, data_dir in (("digits", {digits_dir!r}),):
            def dataset_fn(context):
                return data.make_dataset(source, "train", image_size=16, batch_size=4, training=True,
                                         data_dir=data_dir, input_context=context)
            dist = strategy.distribute_datasets_from_function(dataset_fn)
            iterator = iter(dist)
            for _ in range(2):
                images, labels = next(iterator)
                shapes = [tuple(t.shape) for t in strategy.experimental_local_results(images)]
                assert shapes == [(4, 16, 16, 3)] * 2, shapes
                total = strategy.reduce("SUM", strategy.run(lambda x: tf.reduce_sum(tf.ones_like(x)), (labels,)),
                                        axis=None)
                assert int(total) == 8
        print("MIRRORED_OK")
    """)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = repo + os.pathsep + env.get("PYTHONPATH", "")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert "MIRRORED_OK" in result.stdout, result.stderr[-3000:]


def test_eval_preprocessing_for_and_the_crop_arguments(digits_dir):
    """The digits keep the whole image at evaluation; every other source the original crop rule."""
    digits_settings = data.eval_preprocessing_for("digits", 32)
    assert digits_settings.crop_fraction == 1.0 and digits_settings.resolution == 32
    assert data.eval_preprocessing_for("folder:/x", 224, "lite").crop_fraction is None
    assert data.eval_preprocessing_for("folder:/x", 224, "lite").normalization == "lite"
    assert data.train_defaults_for("digits") == {"area_range": (0.5, 1.0), "flip": False}
    assert data.train_defaults_for("tfds:cifar10") == {"area_range": (0.08, 1.0), "flip": True}
    assert [data.is_source(v) for v in ("digits", "folder:/x", "tfds:", "/some/dir", "ftp:x")] == [
        True, True, False, False, False]
    explicit = data.make_dataset("digits", "validation", image_size=32, batch_size=360, training=False,
                                 data_dir=digits_dir, eval_preprocessing=digits_settings)
    by_crop_args = data.make_dataset("digits", "validation", image_size=32, batch_size=360, training=False,
                                     data_dir=digits_dir, crop_fraction=1.0, deterministic=True)
    default = data.make_dataset("digits", "validation", image_size=32, batch_size=360, training=False,
                                data_dir=digits_dir, deterministic=True)
    first = lambda ds: next(iter(ds))[0].numpy()  # noqa: E731
    np.testing.assert_array_equal(first(by_crop_args), first(default))
    assert first(explicit).shape == (360, 32, 32, 3)
    with pytest.raises(ValueError, match="not both"):
        data.make_dataset("digits", "validation", image_size=32, batch_size=2, training=False,
                          data_dir=digits_dir, eval_preprocessing=digits_settings, crop_fraction=0.5)
    with pytest.raises(ValueError, match="resolution=32 differs"):
        data.make_dataset("digits", "validation", image_size=24, batch_size=2, training=False,
                          data_dir=digits_dir, eval_preprocessing=digits_settings)

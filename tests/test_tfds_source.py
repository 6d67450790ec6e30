"""TFDS sources (keras_effnet/data/tfds_source.py): the embedded dataset prepared once and quietly,
even by two processes that start preparing it at the same moment into an empty data directory
(parallel test workers or two jobs on a fresh machine)."""

import os
import subprocess
import sys

import pytest

pytest.importorskip("tensorflow_datasets")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PREPARE = ("import sys\n"
           "from keras_effnet.data.tfds_source import tfds_builder\n"
           "builder = tfds_builder('effnet_digits', sys.argv[1], True, None)\n"
           "print('examples', builder.info.splits['train'].num_examples,"
           " builder.info.splits['validation'].num_examples)\n")


def test_two_processes_prepare_the_embedded_dataset_once_and_quietly(tmp_path):
    data_dir = str(tmp_path / "tfds")
    workers = [subprocess.Popen([sys.executable, "-c", PREPARE, data_dir], cwd=ROOT, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
               for _ in range(2)]
    results = [worker.communicate(timeout=600) + (worker.returncode,) for worker in workers]
    for stdout, stderr, returncode in results:
        assert returncode == 0, stderr[-3000:]
        # Only the script's own line: no TFDS banner ("Downloading and preparing dataset ..."),
        # no progress bar, no warning about a half-written folder.
        assert stdout.splitlines() == ["examples 1437 360"], stdout
        assert "Generating" not in stderr and "Variant folder" not in stderr, stderr
    versions = os.listdir(os.path.join(data_dir, "effnet_digits"))
    assert versions == ["1.0.0"], versions  # no incomplete.* left behind


def test_a_prepared_dataset_is_reused(tmp_path):
    from keras_effnet.data.tfds_source import tfds_builder  # noqa: PLC0415

    data_dir = str(tmp_path / "tfds")
    first = tfds_builder("effnet_digits", data_dir, True, None)
    written = os.path.getmtime(first.data_dir)
    again = tfds_builder("effnet_digits", data_dir, False, None)
    assert again.data_dir == first.data_dir and os.path.getmtime(again.data_dir) == written
    assert again.info.splits["validation"].num_examples == 360


def test_an_unprepared_dataset_without_download_names_the_fix(tmp_path):
    from keras_effnet.data.tfds_source import tfds_builder  # noqa: PLC0415

    with pytest.raises(FileNotFoundError, match="not prepared.*download=True"):
        tfds_builder("effnet_digits", str(tmp_path / "empty"), False, None)
    with pytest.raises(ValueError, match="no dataset 'no_such_dataset_xyz'"):
        tfds_builder("no_such_dataset_xyz", str(tmp_path / "empty"), True, None)

"""keras-effnet-report-int8 --model_dir: each engine's validation top-1 for a trained run."""

import re

import numpy as np
import pytest
from helpers import randomized_batch_norm

from keras_effnet import data
from keras_effnet.cli import report_int8
from keras_effnet.config import demo_config, load_config, resolve_spec
from keras_effnet.export import load_source
from keras_effnet.model import EfficientNet
from keras_effnet.run_dir import RunDirectory, RunMetadata
from keras_effnet.training.run_files import write_final_model, write_run_start

SIZE = 32


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    """A finished run on the embedded digits (its validation split is what the report reads)."""
    run_dir = str(tmp_path_factory.mktemp("report") / "run")
    config = load_config(overrides=["model.phi=-8", f"model.resolution={SIZE}",
                                    f"data.image_size={SIZE}", f"runtime.model_dir={run_dir}"],
                         base=demo_config())
    spec = resolve_spec(config.model)
    model = EfficientNet(spec, input_shape=(SIZE, SIZE, 3), classes=10, classifier_activation=None)
    randomized_batch_norm(model)
    metadata = RunMetadata(spec, tuple(str(i) for i in range(10)),
                           data.eval_preprocessing_for("digits", SIZE, "imagenet"))
    write_run_start(RunDirectory(run_dir), config, metadata)
    write_final_model(RunDirectory(run_dir), model)
    return run_dir


def test_accuracy_table_gives_top1_and_its_change():
    labels = np.array([0, 1, 2, 1])
    reference = np.eye(3)[[0, 1, 2, 2]]          # 3 of 4 right
    worse = np.eye(3)[[0, 2, 2, 2]]              # 2 of 4 right
    table = report_int8.accuracy_table(labels, reference, {"worse": worse})
    assert "| keras float32 | 0.7500 | — | 1.000 |" in table
    assert "| worse | 0.5000 | -0.2500 | 0.750 |" in table


def test_run_report_scores_every_engine_on_the_runs_validation_split(digits_run, tmp_path):
    # Two TFLite exports keep the test short; the other runtimes go through the same
    # engine_outputs (tools/report_int8.py --model_dir runs them all).
    report = report_int8.run_report(digits_run, str(tmp_path), calibration_count=8,
                                    runtimes=("tflite",), tflite_quantizations=("float32", "int8"))
    source = load_source(model_dir=digits_run)
    images, labels = report_int8.validation_split(source, digits_run)
    assert len(images) == len(labels) > 100  # the digits validation split, every image
    expected = np.mean(np.argmax(source.model.predict(images, verbose=0), -1) == labels)
    keras_row = re.search(r"\| keras float32 \| ([0-9.]+) \|", report)
    assert keras_row and abs(float(keras_row.group(1)) - expected) < 1e-4
    # The float32 export keeps every prediction; the int8 engine has its own row.
    assert re.search(r"\| tflite float32 \| [0-9.]+ \| [+-]0\.0000 \| 1\.000 \|", report)
    assert re.search(r"\| tflite int8 \| [0-9.]+ \| [+-][0-9.]+ \| [0-9.]+ \|", report)
    assert "onnxruntime" not in report and "openvino" not in report

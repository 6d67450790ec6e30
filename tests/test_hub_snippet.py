"""TF-Hub modules load in user code that never imports keras_effnet (the TF-Hub docs' snippet).

``pip install "keras-effnet[hub]"`` must give an environment where ``import tensorflow_hub``
works on its own: tensorflow-hub 0.16 imports ``pkg_resources``, which setuptools >= 81 no
longer ships, so the extra pins ``setuptools<81``. Without it the test skips (set
KERAS_EFFNET_REQUIRE_HUB=1 to make that a failure, as CI does).
"""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import keras_effnet
from keras_effnet.export import export

# https://www.tensorflow.org/hub/tf2_saved_model ("Using SavedModels from TF Hub", Keras):
# hub.KerasLayer in a tf_keras model, fine-tuned with fit.
SNIPPET = textwrap.dedent("""
    import json, sys
    import numpy as np
    import tensorflow as tf
    import tensorflow_hub as hub
    import tf_keras

    model = tf_keras.Sequential([
        hub.KerasLayer(sys.argv[1], trainable=True),
        tf_keras.layers.Dense(4),
    ])
    model.build([None, 64, 64, 3])
    images = np.random.default_rng(0).uniform(0, 1, (4, 64, 64, 3)).astype("float32")
    model.compile(optimizer=tf_keras.optimizers.SGD(0.01),
                  loss=tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    before = [w.numpy().copy() for w in model.layers[0].trainable_weights]
    history = model.fit(images, np.arange(4), epochs=1, verbose=0)
    moved = any(not np.array_equal(a, w.numpy())
                for a, w in zip(before, model.layers[0].trainable_weights))
    print(json.dumps(dict(features=int(model.layers[0](images).shape[-1]), moved=moved,
                          loss=float(history.history["loss"][0]),
                          keras_effnet=[m for m in sys.modules if m.startswith("keras_effnet")])))
""")


def _plain_env():
    return dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")


@pytest.fixture(scope="module")
def hub_ready():
    probe = subprocess.run([sys.executable, "-c", "import tensorflow_hub"], capture_output=True,
                           text=True, timeout=300, env=_plain_env(), cwd="/")
    if probe.returncode:
        message = ("`import tensorflow_hub` fails in a plain process (" +
                   probe.stderr.strip().splitlines()[-1] + "): install the hub extra, "
                   "pip install 'keras-effnet[hub]' (it pins setuptools<81 for pkg_resources)")
        if os.environ.get("KERAS_EFFNET_REQUIRE_HUB"):
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="module")
def feature_vector(tmp_path_factory):
    model = keras_effnet.build_model("lite0", include_top=False, pooling="avg",
                                     input_shape=(None, None, 3))
    return export(model, "hub_feature_vector", tmp_path_factory.mktemp("hub") / "lite0_fv",
                  image_size=224)


@pytest.mark.slow
def test_tf_hub_docs_snippet_without_keras_effnet(hub_ready, feature_vector):
    done = subprocess.run([sys.executable, "-c", SNIPPET, feature_vector], capture_output=True,
                          text=True, timeout=600, env=_plain_env(), cwd="/")
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == dict(result, features=1280, moved=True, keras_effnet=[])
    assert np.isfinite(result["loss"])


def test_tfsm_layer_returns_a_dict_keyed_as_the_metadata_says(feature_vector):
    """keras.layers.TFSMLayer (Keras 3) loads the module for inference only: a dict output whose
    key is the output name metadata.json lists."""
    import keras

    layer = keras.layers.TFSMLayer(feature_vector, call_endpoint="serving_default",
                                   trainable=False)
    outputs = layer(np.zeros((1, 64, 64, 3), "float32"))
    assert isinstance(outputs, dict) and list(outputs) == ["feature_vector"]
    assert outputs["feature_vector"].shape == (1, 1280)
    with open(os.path.join(feature_vector, "metadata.json")) as handle:
        assert json.load(handle)["outputs"] == ["feature_vector"]

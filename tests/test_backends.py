"""The model on Keras' JAX and PyTorch backends: same weights, same outputs as TensorFlow.

Each backend runs in a subprocess (Keras picks its backend once per process). The TensorFlow
backend writes ``.weights.h5`` files and reference logits; the subprocess imports keras_effnet
(which must not pull in TensorFlow), builds the same models, loads the files (with Keras'
``load_weights`` and with ``build_model(weights=path)``) and compares the logits.
"""

import importlib.util
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

import keras_effnet
from helpers import randomized_batch_norm

VARIANTS = ("b0", "lite0")
SIZE = 64
CLASSES = 10

CHECK = r"""
import importlib.abc, json, sys, traceback


class WhoImportsTensorFlow(importlib.abc.MetaPathFinder):
    # Diagnostics only: which keras_effnet module looks TensorFlow up (finds nothing itself).
    culprits = []

    def find_spec(self, name, path=None, target=None):
        if name == "tensorflow":
            files = [f.filename for f in traceback.extract_stack() if "keras_effnet" in f.filename]
            self.culprits.append(files[-1] if files else "outside keras_effnet")
        return None


sys.meta_path.insert(0, WhoImportsTensorFlow())
import numpy as np
import keras
import keras_effnet

config = json.loads(sys.argv[1])
assert keras.backend.backend() == config["backend"], keras.backend.backend()
report = {"max_error": {}}
data = np.load(config["data"])
shape = (config["size"], config["size"], 3)
for variant in config["variants"]:
    path = config["weights"][variant]
    # Keras' own loading, and the package's (keras_effnet.weights, strict by layer name).
    native = keras_effnet.build_model(variant, input_shape=shape, classes=config["classes"],
                                      classifier_activation=None)
    native.load_weights(path)
    ours = keras_effnet.build_model(variant, weights=path, input_shape=shape,
                                    classes=config["classes"], classifier_activation=None)
    expected = data[variant]
    errors = []
    for model in (native, ours):
        # predict() compiles the whole graph once (jax.jit); eager calls compile op by op.
        logits = model.predict(data["images"], verbose=0)
        np.testing.assert_allclose(logits, expected, rtol=1e-4,
                                   atol=1e-4 * float(np.abs(expected).max()))
        errors.append(float(np.abs(logits - expected).max()))
    report["max_error"][variant] = max(errors)
report["tensorflow_imported"] = "tensorflow" in sys.modules
report["tensorflow_looked_up_by"] = WhoImportsTensorFlow.culprits
print("REPORT " + json.dumps(report))
"""


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """Weight files and logits of the TensorFlow backend, for every variant."""
    if keras.backend.backend() != "tensorflow":
        pytest.skip("the reference outputs come from the TensorFlow backend")
    folder = tmp_path_factory.mktemp("backends")
    images = np.random.default_rng(7).uniform(0, 255, (2, SIZE, SIZE, 3)).astype("float32")
    arrays, files = {"images": images}, {}
    for seed, variant in enumerate(VARIANTS):
        model = keras_effnet.build_model(variant, input_shape=(SIZE, SIZE, 3), classes=CLASSES,
                                         classifier_activation=None)
        model.set_weights(randomized_batch_norm(model, seed=seed))
        files[variant] = str(folder / f"{variant}.weights.h5")
        model.save_weights(files[variant])
        arrays[variant] = keras.ops.convert_to_numpy(model(images, training=False))
    data = str(folder / "reference.npz")
    np.savez(data, **arrays)
    return {"data": data, "weights": files}


@pytest.mark.parametrize("backend, module", [("jax", "jax"), ("torch", "torch")])
def test_backend_matches_tensorflow(reference, backend, module):
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not installed (pip install 'jax[cpu]' / torch)")
    config = dict(reference, backend=backend, variants=list(VARIANTS), size=SIZE,
                  classes=CLASSES)
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3",
               JAX_PLATFORMS="cpu", CUDA_VISIBLE_DEVICES="")
    if backend == "jax":
        # Each random initialiser of a new weight shape is an XLA compile on JAX (B0: 164 of
        # them, 45 of the check's 65 s of CPU, for values the weight files then replace);
        # unoptimised code compiles in half the time and runs these batches of 2 as fast.
        env["XLA_FLAGS"] = " ".join(filter(None, [os.environ.get("XLA_FLAGS"),
                                                  "--xla_backend_optimization_level=0"]))
    result = subprocess.run([sys.executable, "-c", CHECK, json.dumps(config)], env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    line = next(l for l in result.stdout.splitlines() if l.startswith("REPORT "))
    report = json.loads(line.removeprefix("REPORT "))
    assert set(report["max_error"]) == set(VARIANTS)
    assert not report["tensorflow_imported"], (
        f"on the {backend} backend TensorFlow was imported (looked up by "
        f"{report['tensorflow_looked_up_by']}); keras_effnet must import, build and load weights "
        "without it (guard the TensorFlow-only imports)")

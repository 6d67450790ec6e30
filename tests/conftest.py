"""Shared test settings: quiet TensorFlow logs and restore global Keras state after each test;
the tiny calibrated classifier that the export tests share (tests/helpers.py builds it)."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import helpers  # noqa: E402 (tests/ is on sys.path under pytest)
import keras  # noqa: E402
import pytest  # noqa: E402

# The test files that take the most CPU (measured on 2 cores), heaviest first. They are collected
# first, so pytest-xdist (``--dist loadfile``: a file stays in one worker) starts them early and
# hands the many light files to whichever worker is free: the workers finish together.
HEAVY_FILES_FIRST = ("test_export.py", "test_model.py", "test_benchmark.py", "test_finetune.py",
                     "test_remat.py", "test_distribute.py", "test_openvino.py", "test_resume.py",
                     "test_search.py", "test_training.py", "test_backends.py", "test_convert.py",
                     "test_console.py", "test_run_dir.py", "test_predict.py")


def pytest_collection_modifyitems(items):
    rank = {name: index for index, name in enumerate(HEAVY_FILES_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: a file's own order


@pytest.fixture(autouse=True)
def _restore_keras_policy():
    """Tests that switch to mixed precision must not leak the policy into other tests."""
    policy = keras.config.dtype_policy()
    yield
    keras.config.set_dtype_policy(policy)


@pytest.fixture(scope="session")
def tiny_images():
    """4 random float32 images [64, 64, 3] in [0, 255] (``helpers.tiny_images``)."""
    return helpers.tiny_images()


@pytest.fixture(scope="session")
def tiny_model(tiny_images):
    """A random-weight compound phi=-8 EfficientNet, 64 px, 10 classes, logits head, batch-norm
    statistics calibrated on ``tiny_images`` (``helpers.tiny_classifier``). Shared by
    tests/test_export.py and tests/test_openvino.py: do not change its weights."""
    return helpers.tiny_classifier(tiny_images)


@pytest.fixture(scope="session")
def tiny_logits(tiny_model, tiny_images):
    """``tiny_model``'s logits of ``tiny_images``: the reference the exported models must give."""
    return tiny_model.predict(tiny_images, verbose=0)

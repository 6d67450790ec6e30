"""Shared test settings: quiet TensorFlow logs and restore global Keras state after each test."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _restore_keras_policy():
    """Tests that switch to mixed precision must not leak the policy into other tests."""
    policy = keras.config.dtype_policy()
    yield
    keras.config.set_dtype_policy(policy)

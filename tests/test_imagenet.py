import numpy as np
import pytest

from keras_effnet.imagenet import class_index, class_names, decode_predictions, preprocess_input


def test_class_index_is_shipped_and_ordered():
    index = class_index()
    assert len(index) == 1000
    assert index[0] == ("n01440764", "tench")
    assert index[281] == ("n02123045", "tabby")
    assert index[967] == ("n07920052", "espresso")
    assert class_names()[999] == index[999][1]


def test_decode_predictions_top_k():
    preds = np.zeros((2, 1000), "float32")
    preds[0, 281], preds[0, 282] = 0.7, 0.2
    preds[1, 967] = 0.9
    decoded = decode_predictions(preds, top=2)
    assert decoded[0] == [("n02123045", "tabby", pytest.approx(0.7)),
                          ("n02123159", "tiger_cat", pytest.approx(0.2))]
    assert decoded[1][0][1] == "espresso" and len(decoded[1]) == 2


def test_decode_predictions_rejects_wrong_shape():
    with pytest.raises(ValueError, match=r"\(samples, 1000\)"):
        decode_predictions(np.zeros((2, 10)))
    with pytest.raises(ValueError, match="top"):
        decode_predictions(np.zeros((1, 1000)), top=0)


def test_preprocess_input_is_identity():
    x = np.arange(12, dtype="float32").reshape(1, 2, 2, 3)
    assert preprocess_input(x) is x

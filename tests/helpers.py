"""Helpers shared by several test modules (tests/ is on sys.path under pytest)."""

import contextlib
import importlib

import numpy as np


def layer_weights(model) -> dict[str, np.ndarray]:
    """Every weight of ``model`` as ``{"layer/weight": array}``."""
    return {f"{layer.name}/{v.name}": np.asarray(v.numpy())
            for layer in model.layers for v in layer.weights}


def randomized_batch_norm(model, seed=0) -> list[np.ndarray]:
    """Every weight of ``model`` with non-trivial BN statistics (gamma, beta, mean, variance), so
    parity checks exercise every weight. Returns the list for ``model.set_weights``."""
    rng = np.random.default_rng(seed)
    values = []
    for weight in model.weights:
        value = weight.numpy()
        if weight.path.endswith("moving_variance"):
            value = rng.uniform(0.5, 1.5, value.shape)
        elif weight.path.endswith(("moving_mean", "beta")):
            value = rng.normal(0, 0.1, value.shape)
        elif weight.path.endswith("project_bn/gamma"):
            # Damped residual branches keep deep variants (B7: 55 blocks) numerically tame,
            # as trained networks are; otherwise float rounding is amplified block after block.
            value = rng.uniform(0.1, 0.5, value.shape)
        elif weight.path.endswith("gamma"):
            value = rng.uniform(0.5, 1.5, value.shape)
        values.append(value.astype(weight.dtype))
    return values


PHOTO_NAMES = ("chelsea", "coffee", "astronaut", "rocket", "cat", "immunohistochemistry",
               "motorcycle_left", "retina")


def real_photos(count=len(PHOTO_NAMES), names=PHOTO_NAMES) -> list[np.ndarray]:
    """Real RGB photographs shipped by scikit-image (``skimage/data/``), uint8 [H, W, 3] each of
    its own size: chelsea is a cat, coffee an espresso."""
    from skimage import data  # noqa: PLC0415

    images = []
    for name in names[:count]:
        try:
            image = getattr(data, name)()
        except Exception:  # noqa: BLE001 (some need optional downloads)
            continue
        if image.ndim == 3 and image.shape[-1] == 3:
            images.append(image)
    return images


def write_tpu_checkpoint(model, spec, prefix, *, ema=True, extra=None):
    """Write ``model``'s weights as an original-format tensorflow/tpu checkpoint at ``prefix``.

    Variables get the original names (``efficientnet-b0/blocks_0/...``,
    ``keras_effnet.weights.tpu_checkpoint_names``), with the ``/ExponentialMovingAverage`` suffix
    when ``ema``; ``extra`` adds more named tensors (non-EMA copies, ``global_step``). Written
    with TensorFlow's checkpoint writer (SaveV2). Returns the prefix as a ``Path``.
    """
    from pathlib import Path  # noqa: PLC0415

    import tensorflow as tf  # noqa: PLC0415

    from keras_effnet.weights import tpu_checkpoint_names  # noqa: PLC0415

    names = tpu_checkpoint_names(spec, ema=ema)
    values = {key: value for key, value in layer_weights(model).items()
              if not key.startswith("normalization/")}
    tensors = {names[key]: value for key, value in values.items() if key in names}
    tensors.update(extra or {})
    prefix = Path(prefix)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    ordered = sorted(tensors)
    tf.raw_ops.SaveV2(prefix=str(prefix), tensor_names=ordered,
                      shape_and_slices=[""] * len(ordered),
                      tensors=[tf.constant(tensors[n]) for n in ordered])
    return prefix


def lukemelas_state_dict(model, spec) -> dict[str, np.ndarray]:
    """``model``'s weights as a lukemelas/EfficientNet-PyTorch state_dict (numpy arrays in torch
    layouts: conv HWIO -> OIHW, depthwise HW(O)1 -> O1HW, dense (in, out) -> (out, in)), with the
    ``num_batches_tracked`` counters PyTorch writes beside every BatchNorm."""
    from keras_effnet.weights import lukemelas_names  # noqa: PLC0415

    values = layer_weights(model)
    state: dict[str, np.ndarray] = {}
    for keras_key, torch_name in lukemelas_names(spec).items():
        if keras_key not in values:
            continue
        value = values[keras_key]
        if value.ndim == 4:
            depthwise = "_depthwise_conv." in torch_name
            value = np.transpose(value, (2, 3, 0, 1) if depthwise else (3, 2, 0, 1))
        elif value.ndim == 2:
            value = value.T
        state[torch_name] = np.ascontiguousarray(value)
        if torch_name.endswith(".running_var"):
            counter = torch_name.replace(".running_var", ".num_batches_tracked")
            state[counter] = np.array(0, np.int64)
    return state


@contextlib.contextmanager
def restored_flags():
    """Undo every absl flag definition made inside the block (new flags removed, redefined ones
    put back), so one test's command line cannot change another's flag defaults."""
    from absl import flags  # noqa: PLC0415

    before = {name: flags.FLAGS[name] for name in flags.FLAGS}
    try:
        yield flags.FLAGS
    finally:
        flags.FLAGS.unparse_flags()
        for name in list(flags.FLAGS):
            if name not in before:
                delattr(flags.FLAGS, name)
            elif flags.FLAGS[name] is not before[name]:
                delattr(flags.FLAGS, name)
                flags.FLAGS[name] = before[name]


def run_cli(name, argv):
    """Run ``keras_effnet.cli.<name>``'s main in this process with ``argv`` flags; its exit status.

    The main's flags are defined first, as its ``run()`` does, and removed again afterwards
    (``restored_flags``), so several command lines can run in one test process.
    """
    module = importlib.import_module(f"keras_effnet.cli.{name}")
    with restored_flags() as values:
        module.define_flags()
        values.unparse_flags()
        values([name] + list(argv))
        return module.main([name])


def original_eval_of_pixels(array, image_size, crop_padding=32):
    """The original's evaluation of decoded pixels, computed from the ops it called
    (tensorflow/tpu ``efficientnet/preprocessing.py``: the centre crop of S / (S + 32) in float32,
    TF1 ``resize_bicubic``, no clipping) -> float32 [S, S, 3]."""
    import tensorflow as tf  # noqa: PLC0415

    array = np.asarray(array)
    height, width = array.shape[:2]
    crop = int(np.float32(image_size / (image_size + crop_padding)) * np.float32(min(height, width)))
    top, left = ((height - crop) + 1) // 2, ((width - crop) + 1) // 2
    window = array[None, top:top + crop, left:left + crop]
    return tf.compat.v1.image.resize_bicubic(window, [image_size, image_size])[0].numpy()


def original_eval_of_bytes(image_bytes, image_size, crop_padding=32):
    """The original's ``_decode_and_center_crop`` + ``preprocess_for_eval`` of encoded bytes: the
    fused JPEG decode-and-crop and TF1 ``resize_bicubic`` (float32, not clipped). Other formats,
    which the original did not read, are decoded first and get the same crop and resize."""
    import tensorflow as tf  # noqa: PLC0415

    image_bytes = tf.convert_to_tensor(image_bytes)
    if bytes(image_bytes.numpy()[:2]) != b"\xff\xd8":
        pixels = tf.io.decode_image(image_bytes, channels=3, expand_animations=False)
        return original_eval_of_pixels(pixels.numpy(), image_size, crop_padding)
    shape = tf.image.extract_jpeg_shape(image_bytes)
    height, width = shape[0], shape[1]
    crop = tf.cast((image_size / (image_size + crop_padding))
                   * tf.cast(tf.minimum(height, width), tf.float32), tf.int32)
    window = tf.stack([((height - crop) + 1) // 2, ((width - crop) + 1) // 2, crop, crop])
    image = tf.image.decode_and_crop_jpeg(image_bytes, window, channels=3)
    image = tf.compat.v1.image.resize_bicubic([image], [image_size, image_size])[0]
    return tf.reshape(image, [image_size, image_size, 3]).numpy()


def calibrate_batch_norm(model, images) -> None:
    """Set every BN layer's moving statistics to the batch statistics of ``images`` (one pass),
    so a random model's outputs are O(1)."""
    import keras  # noqa: PLC0415

    layers = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    for layer in layers:
        layer.momentum = 0.0
    model(images, training=True)
    for layer in layers:
        layer.momentum = 0.99


def require_module(module: str, install: str):
    """``import module`` for the real-weights tests; skip without it, or fail when
    KERAS_EFFNET_REQUIRE_REAL_WEIGHTS is set (CI), naming what to ``pip install``."""
    import importlib  # noqa: PLC0415
    import os  # noqa: PLC0415

    import pytest  # noqa: PLC0415

    try:
        return importlib.import_module(module)
    except ImportError as error:
        message = f"{module} is not installed ({error}); pip install {install}"
        if os.environ.get("KERAS_EFFNET_REQUIRE_REAL_WEIGHTS"):
            pytest.fail(message)
        pytest.skip(message)


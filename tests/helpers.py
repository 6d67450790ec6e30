"""Helpers shared by several test modules (tests/ is on sys.path under pytest)."""

import contextlib
import importlib
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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


@contextlib.contextmanager
def restored_logging(names=("keras_effnet", "tensorflow", "absl", "h5py", "jax")):
    """Put back the root logger's handlers and level, and the level, handlers and propagation
    of the loggers ``names``, as they were before the block (a main's ``logs.configure``
    attaches a handler to the stream that is ``sys.stderr`` at the time: in a test, its
    capture)."""
    import logging  # noqa: PLC0415

    loggers = [logging.getLogger()] + [logging.getLogger(name) for name in names]
    saved = [(logger, logger.level, list(logger.handlers), logger.propagate) for logger in loggers]
    try:
        yield
    finally:
        for logger, level, handlers, propagate in saved:
            logger.setLevel(level)
            logger.handlers[:] = handlers
            logger.propagate = propagate


def run_cli(name, argv):
    """Run ``keras_effnet.cli.<name>``'s main in this process with ``argv`` (flags and positional
    arguments); its exit status.

    The main's flags are defined first, as its ``run()`` does, and removed again afterwards
    (``restored_flags``), as is its logging set-up (``restored_logging``), so several command
    lines can run in one test process. Flags are parsed as ``absl.app.run`` parses them: a bad
    flag prints absl's message on stderr and gives exit status 1, as the command line's process
    does. Saves the ~8 s of CPU a subprocess spends importing TensorFlow.
    """
    from absl import app  # noqa: PLC0415

    module = importlib.import_module(f"keras_effnet.cli.{name}")
    with restored_flags() as values, restored_logging():
        module.define_flags()
        values.unparse_flags()
        try:
            remaining = app.parse_flags_with_usage([name] + list(argv))
        except SystemExit as exit_status:
            return exit_status.code
        return module.main(remaining)  # the program name and the positional arguments


def make_folder_dataset(root, classes=4, per_class=(12, 4), size=32):
    """A tiny image-folder dataset: train/ and validation/ with one PNG folder per class, whose
    dominant colour channel encodes the class. Returns ``root`` as a string."""
    import tensorflow as tf  # noqa: PLC0415

    rng = np.random.default_rng(0)
    for split, count in zip(("train", "validation"), per_class):
        for label in range(classes):
            directory = os.path.join(root, split, f"class{label}")
            os.makedirs(directory, exist_ok=True)
            for index in range(count):
                image = rng.uniform(0, 60, (size, size, 3))
                image[..., label % 3] += 120 + 60 * (label // 3)
                tf.io.write_file(os.path.join(directory, f"{index}.png"),
                                 tf.io.encode_png(image.astype("uint8")))
    return str(root)


def train_command(data_root, model_dir, *extra):
    """``tools/train.py`` on ``make_folder_dataset``'s data: compound phi=-8 at 32 px, batch 8,
    2 epochs of 6 steps, a checkpoint every 2 steps, deterministic, progress lines on stderr."""
    return [sys.executable, os.path.join(ROOT, "tools", "train.py"), f"--model_dir={model_dir}",
            f"--dataset=folder:{data_root}", "--image_size=32", "--batch_size=8", "--epochs=2",
            "--set=model.phi=-8", "--set=model.resolution=32", "--set=augmentation.name=none",
            "--set=data.cache=false", "--set=runtime.checkpoint_every_steps=2",
            "--set=runtime.keep_checkpoints=20", "--set=runtime.deterministic=true",
            "--set=runtime.progress_bar=false", "--set=optimizer.ema_decay=0.9",
            "--verbosity=1", *extra]  # -v 1: progress lines ("resumed from ...") on stderr


def subprocess_env(**extra):
    """The environment of a command line in a subprocess: quiet TensorFlow, this checkout first."""
    return dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT, **extra)


def run_together(commands, timeout=300, **popen_kwargs):
    """Run the command lines (argument lists) at the same time and wait for all of them; their
    ``subprocess.CompletedProcess`` results (text stdout and stderr), in order. A command line's
    start is mostly a single-threaded TensorFlow import (~8 s of CPU): the 2 CI cores run two
    at once. Like ``subprocess.run``, a command still running after ``timeout`` seconds is
    killed and ``subprocess.TimeoutExpired`` raised."""
    import subprocess  # noqa: PLC0415

    processes = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True, **popen_kwargs) for command in commands]
    try:
        results = []
        for command, process in zip(commands, processes):
            stdout, stderr = process.communicate(timeout=timeout)
            results.append(subprocess.CompletedProcess(command, process.returncode, stdout,
                                                       stderr))
        return results
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.communicate()


def start(command, log, **env):
    """Start ``command`` (a training command line) in ``ROOT``, stdout and stderr to ``log``."""
    import subprocess  # noqa: PLC0415

    return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                            env=subprocess_env(**env), cwd=ROOT)


def latest_step(model_dir):
    """The step of the latest checkpoint in ``model_dir`` (-1 without one)."""
    import tensorflow as tf  # noqa: PLC0415

    path = tf.train.latest_checkpoint(str(model_dir))
    return int(path.rsplit("-", 1)[1]) if path else -1


def wait_for_step(process, model_dir, at_least, timeout=240):
    """Wait until ``process`` has a checkpoint at step >= ``at_least``; fail if it exits first."""
    import time  # noqa: PLC0415

    import pytest  # noqa: PLC0415

    deadline = time.time() + timeout
    while time.time() < deadline:
        if latest_step(model_dir) >= at_least:
            return latest_step(model_dir)
        if process.poll() is not None:
            pytest.fail(f"training exited early with {process.returncode}")
        time.sleep(0.05)
    process.kill()
    pytest.fail(f"no checkpoint at step >= {at_least} within {timeout}s")


def checkpoint_values(path):
    """Every tensor of the checkpoint at ``path`` but the object graph, by name."""
    import tensorflow as tf  # noqa: PLC0415

    reader = tf.train.load_checkpoint(path)
    return {name: reader.get_tensor(name) for name, _ in tf.train.list_variables(path)
            if not name.startswith("_CHECKPOINTABLE_OBJECT_GRAPH")}


TINY_SIZE = 64
TINY_CLASSES = 10


def tiny_images(count=4, size=TINY_SIZE, seed=0) -> np.ndarray:
    """float32 [count, size, size, 3] uniform in [0, 255]."""
    return np.random.RandomState(seed).uniform(0, 255, (count, size, size, 3)).astype("float32")


def tiny_classifier(images, classes=TINY_CLASSES):
    """A random-weight compound phi=-8 EfficientNet (7 blocks) with a logits head for
    ``images``' size, its batch-norm statistics calibrated on ``images`` so outputs are O(1)
    and tolerances mean something."""
    import keras  # noqa: PLC0415

    from keras_effnet.applications import build_model  # noqa: PLC0415
    from keras_effnet.scaling import compound_spec  # noqa: PLC0415

    keras.utils.set_random_seed(0)
    net = build_model(compound_spec(-8), input_shape=images.shape[1:], classes=classes,
                      classifier_activation=None)
    calibrate_batch_norm(net, images)
    return net


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


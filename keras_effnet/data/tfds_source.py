"""TFDS datasets as sources: a prepared builder (prepared once, even by processes racing for it)
and its splits checked.

TFDS prepares a dataset in ``<data_dir>/<name>/incomplete.*`` and renames it into place; two
processes preparing the same dataset at once (parallel test workers, two jobs started together
on a fresh machine) both generate it and the second rename fails. :func:`tfds_builder` holds an
exclusive ``fcntl`` lock on ``<data_dir>/.<name>.prepare.lock`` while it prepares, and looks again
once it has the lock.

The embedded dataset (:data:`DIGITS_BUILDER`, built offline in seconds) is prepared without TFDS's
console output: its "Downloading and preparing dataset Unknown size" banner, progress bars and a
warning about the half-written folder would be the first lines of the demo on a new machine.
Other datasets keep TFDS's banner and progress bars, which say what is being downloaded.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import logging
import os
from collections.abc import Iterator

logger = logging.getLogger(__name__)

DIGITS_BUILDER = "effnet_digits"


@contextlib.contextmanager
def _prepare_lock(root: str, name: str) -> Iterator[None]:
    """An exclusive lock on ``<root>/.<name>.prepare.lock`` (blocks until it is free)."""
    os.makedirs(root, exist_ok=True)
    with open(os.path.join(root, f".{name}.prepare.lock"), "a", encoding="utf-8") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


@contextlib.contextmanager
def _quiet_tfds(quiet: bool) -> Iterator[None]:
    """Swallow TFDS's prints, progress bars and absl warnings inside the block, if ``quiet``."""
    if not quiet:
        yield
        return
    absl_logger = logging.getLogger("absl")
    level = absl_logger.level
    absl_logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        absl_logger.setLevel(level)


def _prepare(builder, name: str, manual_dir: str | None) -> None:
    import tensorflow_datasets as tfds  # noqa: PLC0415  (seconds to import: only TFDS sources pay)

    config = tfds.download.DownloadConfig(manual_dir=manual_dir)
    logger.info("preparing TFDS dataset %r in %s", name, builder.data_dir)
    try:
        builder.download_and_prepare(download_config=config)
    except ImportError as error:  # imagenet2012's builder needs importlib_resources
        raise FileNotFoundError(
            f"TFDS dataset {name!r} cannot be prepared here: its builder needs the Python "
            f"package {getattr(error, 'name', None) or error} (pip install it), and "
            "imagenet2012 also needs the ILSVRC2012 archives you download yourself in "
            f"manual_dir (now {manual_dir or builder.data_dir + '/downloads/manual'}). Without "
            "ImageNet, train on your own images: --dataset folder:<path> or "
            "tfrecord:<glob>") from None
    except AssertionError as error:  # tfds asserts on missing manual files (imagenet2012)
        raise FileNotFoundError(
            f"TFDS dataset {name!r} needs files you download yourself: {error} "
            f"Put them in manual_dir (now {manual_dir or builder.data_dir + '/downloads/manual'})."
        ) from error


def tfds_builder(name: str, data_dir: str | None, download: bool, manual_dir: str | None):
    """A prepared TFDS builder for ``name`` (prepared now when ``download``).

    Raises:
        ValueError: TFDS has no dataset ``name``.
        FileNotFoundError: not prepared and ``download`` is false, or it cannot be prepared here
            (what is missing is named).
    """
    import tensorflow_datasets as tfds  # noqa: PLC0415

    if name == DIGITS_BUILDER:
        # Defining the builder class registers it with TFDS.
        from keras_effnet.data.digits import EffnetDigits  # noqa: F401, PLC0415
    with _quiet_tfds(name == DIGITS_BUILDER):
        try:
            builder = tfds.builder(name, data_dir=data_dir)
        except Exception as error:  # DatasetNotFoundError and friends
            raise ValueError(f"TFDS has no dataset {name!r} ({error}). "
                             "Check the name: 'tfds:<name>'.") from error
        if builder.is_prepared():
            return builder
        if not download:
            raise FileNotFoundError(
                f"TFDS dataset {name!r} is not prepared in {builder.data_dir!r}; pass download=True "
                "or run tfds.builder(name).download_and_prepare()."
            )
        # data_dir_root: the TFDS directory the builder writes under (given, or TFDS's default).
        root = getattr(builder, "data_dir_root", None) or data_dir or os.path.dirname(
            os.path.dirname(builder.data_dir))
        with _prepare_lock(os.fspath(root), name):
            # Another process may have prepared it while this one waited: a new builder reads
            # the split sizes it wrote.
            if builder.is_prepared():
                return tfds.builder(name, data_dir=data_dir)
            _prepare(builder, name, manual_dir)
    return builder


def check_tfds_split(builder, name: str, split: str) -> None:
    """Refuse a split the builder lacks or that is empty, naming the ones it has."""
    base = split.split("[")[0].split("+")[0]
    if base not in builder.info.splits:
        raise ValueError(f"TFDS dataset {name!r} has no split {split!r}; it has {sorted(builder.info.splits)}.")
    if builder.info.splits[split].num_examples == 0:
        raise ValueError(f"Split {split!r} of TFDS dataset {name!r} is empty.")

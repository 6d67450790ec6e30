"""Pretrained weight sets: one registry table, download and cache, loading into a model.

``weights=`` of every model function accepts ``None``, a file path (``.weights.h5``, ``.keras``,
keras.applications legacy ``.h5``, a lukemelas ``.pth``, an original TensorFlow checkpoint or
its ``.tar.gz``) or a weight-set name from ``WEIGHT_SETS``:

=================  =============================  ==========================================
name               variants                       source
=================  =============================  ==========================================
``imagenet``       B0..B7 / Lite0..4              keras.applications ``.h5`` (md5-checked) /
                                                  tensorflow/tpu ``lite/`` checkpoints
``autoaugment``    B0..B7                         tensorflow/tpu ``ckptsaug/``
``baseline``       B0..B5                         tensorflow/tpu ``ckpts/``
``randaugment``    B5, B7                         tensorflow/tpu ``randaug/``
``advprop``        B0..B8                         tensorflow/tpu ``advprop/`` (inputs in [-1, 1])
``noisy-student``  B0..B7, L2                     tensorflow/tpu ``noisystudent/``
``noisy-student-475``  L2                         the L2 checkpoint trained at 475 pixels
=================  =============================  ==========================================

Files are cached in ``$KERAS_EFFNET_HOME`` (default ``~/.keras/models``). Original checkpoints
are converted once into ``<variant>_<set>.weights.h5`` beside the downloaded archive.
``$KERAS_EFFNET_BASE_URL`` replaces ``https://storage.googleapis.com`` in every URL (a mirror,
or a local directory laid out like the bucket), see docs/weights.md.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import sys
import tarfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Callable

from keras_effnet.scaling import ModelSpec, canonical_name, get_spec

HOME_ENV = "KERAS_EFFNET_HOME"
BASE_URL_ENV = "KERAS_EFFNET_BASE_URL"
ORIGIN = "https://storage.googleapis.com"
_KERAS_BASE = f"{ORIGIN}/keras-applications"
_TPU_BASE = f"{ORIGIN}/cloud-tpu-checkpoints/efficientnet"

# Eval preprocessing of the published checkpoints (tensorflow/tpu preprocessing.py): centre crop
# of image_size / (image_size + 32) of the short side, bicubic resize.
CROP_PADDING = 32


@dataclasses.dataclass(frozen=True)
class EvalSettings:
    """How images must be prepared for a weight set (``preprocessing.preprocess_for_eval``).

    Attributes:
        resolution: square input size in pixels.
        crop_fraction: centre-crop fraction of the short side; ``None`` means
            ``resolution / (resolution + crop_padding)``, the original rule.
        crop_padding: see ``crop_fraction``.
        resize_method: ``tf.image.resize`` method.
        normalization: what the model's ``normalization`` layer does to [0, 255] inputs:
            ``imagenet`` (mean/std), ``lite`` ((x - 127) / 128) or ``inception`` ([-1, 1]).
    """

    resolution: int
    crop_fraction: float | None = None
    crop_padding: int = CROP_PADDING
    resize_method: str = "bicubic"
    normalization: str = "imagenet"


@dataclasses.dataclass(frozen=True)
class WeightSet:
    """One row of the registry: a published weight file for one variant.

    Attributes:
        model: canonical variant name (``efficientnet-b0``).
        name: weight-set name (``imagenet``, ``noisy-student`` ...).
        url: where the publisher serves the file.
        checksum: ``"md5:<hex>"`` / ``"sha256:<hex>"``, or ``None`` where none is published
            (then the archive must read to its end and every tensor must match the model).
        source: ``keras-h5`` (loads directly) or ``tpu-checkpoint`` (converted once, cached).
        eval: preprocessing that goes with the weights.
        notop_url / notop_checksum: the file without the classifier, where one is published.
        top1: published ImageNet top-1 accuracy (%), for reference.
    """

    model: str
    name: str
    url: str
    checksum: str | None
    source: str
    eval: EvalSettings
    notop_url: str | None = None
    notop_checksum: str | None = None
    top1: float | None = None


# keras.applications EfficientNet files: md5 of (with top, without top).
_KERAS_MD5 = {
    0: ("902e53a9f72be733fc0bcb005b3ebbac", "50bc09e76180e00e4465e1a485ddc09d"),
    1: ("1d254153d4ab51201f1646940f018540", "74c4e6b3e1f6a1eea24c589628592432"),
    2: ("b15cce36ff4dcbd00b6dd88e7857a6ad", "111f8e2ac8aa800a7a99e3239f7bfb39"),
    3: ("ffd1fdc53d0ce67064dc6a9c7960ede0", "af6d107764bb5b1abb91932881670226"),
    4: ("18c95ad55216b8f92d7e70b3a046e2fc", "ebc24e6d6c33eaebbd558eafbeedf1ba"),
    5: ("ace28f2a6363774853a83a0b21b9421a", "38879255a25d3c92d5e44e04ae6cec6f"),
    6: ("165f6e37dce68623721b423839de8be5", "9ecce42647a20130c1f39a5d4cb75743"),
    7: ("8c03f828fec3ef71311cd463b6759d99", "cbcfe4450ddf6f3ad90b1b398090fe4a"),
}

# Published top-1 (tensorflow/tpu README): set -> accuracies from B0 on.
_TOP1 = {
    "baseline": (76.7, 78.7, 79.8, 81.1, 82.5, 83.1),
    "autoaugment": (77.1, 79.1, 80.1, 81.6, 82.9, 83.6, 84.0, 84.3),
    "advprop": (77.6, 79.6, 80.5, 81.9, 83.3, 84.3, 84.8, 85.2, 85.5),
    "noisy-student": (78.8, 81.5, 82.4, 84.1, 85.3, 86.1, 86.4, 86.9),
}
_LITE_TOP1 = (75.1, 76.7, 77.6, 79.8, 81.5)


def _eval(model: str, normalization: str, resolution: int | None = None) -> EvalSettings:
    return EvalSettings(resolution=resolution or get_spec(model).resolution,
                        normalization=normalization)


def _tpu(model: str, name: str, path: str, normalization: str = "imagenet",
         top1: float | None = None, resolution: int | None = None) -> WeightSet:
    return WeightSet(model, name, f"{_TPU_BASE}/{path}", None, "tpu-checkpoint",
                     _eval(model, normalization, resolution), top1=top1)


def _registry() -> list[WeightSet]:
    sets = []
    for i, (md5_top, md5_notop) in _KERAS_MD5.items():
        model = f"efficientnet-b{i}"
        sets.append(WeightSet(
            model, "imagenet", f"{_KERAS_BASE}/efficientnetb{i}.h5", f"md5:{md5_top}",
            "keras-h5", _eval(model, "imagenet"),
            notop_url=f"{_KERAS_BASE}/efficientnetb{i}_notop.h5",
            notop_checksum=f"md5:{md5_notop}", top1=_TOP1["autoaugment"][i]))
    for i in range(6):
        sets.append(_tpu(f"efficientnet-b{i}", "baseline", f"ckpts/efficientnet-b{i}.tar.gz",
                         top1=_TOP1["baseline"][i]))
    for i in range(8):
        sets.append(_tpu(f"efficientnet-b{i}", "autoaugment", f"ckptsaug/efficientnet-b{i}.tar.gz",
                         top1=_TOP1["autoaugment"][i]))
    for i, top1 in ((5, 83.7), (7, 84.7)):
        sets.append(_tpu(f"efficientnet-b{i}", "randaugment",
                         f"randaug/efficientnet-b{i}-randaug.tar.gz", top1=top1))
    for i in range(9):
        # AdvProp checkpoints expect Inception-style inputs in [-1, 1] (tensorflow/tpu README).
        sets.append(_tpu(f"efficientnet-b{i}", "advprop", f"advprop/efficientnet-b{i}.tar.gz",
                         normalization="inception", top1=_TOP1["advprop"][i]))
    for i in range(8):
        sets.append(_tpu(f"efficientnet-b{i}", "noisy-student",
                         f"noisystudent/noisy_student_efficientnet-b{i}.tar.gz",
                         top1=_TOP1["noisy-student"][i]))
    sets.append(_tpu("efficientnet-l2", "noisy-student",
                     "noisystudent/noisy_student_efficientnet-l2.tar.gz", top1=88.4))
    sets.append(_tpu("efficientnet-l2", "noisy-student-475",
                     "noisystudent/noisy_student_efficientnet-l2_475.tar.gz", top1=88.2,
                     resolution=475))
    for i in range(5):
        sets.append(_tpu(f"efficientnet-lite{i}", "imagenet", f"lite/efficientnet-lite{i}.tar.gz",
                         normalization="lite", top1=_LITE_TOP1[i]))
    return sets


WEIGHT_SETS: dict[tuple[str, str], WeightSet] = {(w.model, w.name): w for w in _registry()}
SET_NAMES: tuple[str, ...] = tuple(dict.fromkeys(name for _, name in WEIGHT_SETS))


class WeightsUnavailableError(OSError):
    """A weight file could not be downloaded (names the URL and where to put it by hand)."""


class ChecksumError(ValueError):
    """A downloaded or cached file does not have the published checksum."""


# --------------------------------------------------------------------------------------------
# Registry queries.

def available_weights(model: ModelSpec | str | None = None) -> list[str] | dict[str, list[str]]:
    """Weight-set names for one variant, or ``{variant: [names]}`` for all."""
    if model is None:
        table: dict[str, list[str]] = {}
        for variant, name in WEIGHT_SETS:
            table.setdefault(variant, []).append(name)
        return table
    variant = _variant(model)
    return [name for v, name in WEIGHT_SETS if v == variant]


def get_weight_set(model: ModelSpec | str, name: str) -> WeightSet:
    """The registry row for (variant, set name); ValueError listing the alternatives."""
    variant = _variant(model)
    key = (variant, name.lower())
    if key not in WEIGHT_SETS:
        known = available_weights(variant)
        raise ValueError(
            f"no weight set {name!r} for {variant}; available: {', '.join(known) or 'none'} "
            "(or pass a path to a weight file)")
    return WEIGHT_SETS[key]


def eval_settings(model: ModelSpec | str, weights: str | os.PathLike | None = None) -> EvalSettings:
    """Preprocessing for a variant with the given weights (registry settings for a named set,
    else the variant's own resolution and normalisation with the original crop rule)."""
    spec = get_spec(model)
    if isinstance(weights, str) and _is_set_name(weights):
        return get_weight_set(spec, weights).eval
    return EvalSettings(resolution=spec.resolution, normalization=spec.normalization)


def _variant(model: ModelSpec | str) -> str:
    return model.name if isinstance(model, ModelSpec) else canonical_name(model)



def _is_set_name(weights) -> bool:
    """Whether ``weights`` names a set rather than a file.

    Known set names always do (a folder called ``imagenet`` in the working directory does not
    shadow them); other strings do when they look like no path (no separator, no suffix) and
    no such file exists, so that a typo gets "no weight set ..." rather than "no file ...".
    """
    if not isinstance(weights, str):
        return False
    text = weights.lower()
    if text in SET_NAMES:
        return True
    return (os.sep not in text and "/" not in text and not Path(text).suffix
            and not Path(weights).exists())


# --------------------------------------------------------------------------------------------
# What the model builder calls.

def check_weights_argument(weights, spec: ModelSpec, include_top: bool, classes: int) -> None:
    """Validate ``weights=`` before a model is built (fail fast, before building anything).

    Raises:
        ValueError: unknown set name for this variant, or a named set with
            ``include_top=True`` and ``classes != 1000``.
        FileNotFoundError: a path that does not exist.
    """
    if weights is None:
        return
    if isinstance(weights, str) and _is_set_name(weights):
        get_weight_set(spec, weights)
        if include_top and classes != 1000:
            raise ValueError(
                f"weights={weights!r} has a 1000-class ImageNet classifier; with "
                f"include_top=True use classes=1000, or include_top=False for {classes} classes")
        return
    path = Path(weights)
    if not path.exists() and not Path(f"{path}.index").exists():  # checkpoint prefixes
        raise FileNotFoundError(
            f"weights={weights!r} is neither a weight-set name for {spec.name} "
            f"({', '.join(available_weights(spec)) or 'none published'}) nor an existing file")
    _file_format(path)  # an unknown format fails here, before the model is built


def normalization_for(spec: ModelSpec, weights) -> str:
    """The input normalisation a model needs for ``weights``.

    A named set gives its own (``advprop`` -> ``inception``, Lite -> ``lite``); files and
    ``None`` keep the variant's (a ``.weights.h5`` carries its normalisation anyway).
    """
    if isinstance(weights, str) and _is_set_name(weights):
        key = (spec.name, weights.lower())
        if key in WEIGHT_SETS:
            return WEIGHT_SETS[key].eval.normalization
    return spec.normalization


def load_weights_into(model, weights, spec: ModelSpec, include_top: bool) -> None:
    """Load a named set or a file into ``model`` (built by ``keras_effnet.model``).

    Tensors are matched by layer name with full shape and completeness checks
    (``convert.assign``); the classifier is skipped when ``include_top`` is False.
    """
    from keras_effnet import convert  # noqa: PLC0415

    del include_top  # the model's own layers decide (no ``predictions`` -> top is dropped)
    if isinstance(weights, str) and _is_set_name(weights):
        weight_set = get_weight_set(spec, weights)
        has_top = _has_layer(model, "predictions")
        path = weights_file(spec, weights, include_top=has_top)
        if weight_set.source == "keras-h5":
            tensors = convert.read_keras_h5(path)
        else:
            tensors = convert.read_keras_weights(path, model)
        convert.assign(model, tensors, source=f"{weights!r} weights ({path})")
        return
    path = Path(weights)
    source = _file_format(path)
    if source == "keras-weights":
        tensors = convert.read_keras_weights(path, model)
    else:
        tensors = convert.read_source(source, path, spec)
    convert.assign(model, tensors, source=str(path),
                   hint=convert.variant_hint(tensors, spec, source))


def _has_layer(model, name: str) -> bool:
    return any(layer.name == name for layer in model.layers)


def _file_format(path: Path) -> str:
    name = path.name.lower()
    if name.endswith((".weights.h5", ".keras")):
        return "keras-weights"
    if name.endswith((".h5", ".hdf5")):
        return "keras-h5"
    if name.endswith((".pth", ".pt")):
        return "lukemelas"
    if path.is_dir() or name.endswith((".tar.gz", ".tgz", ".tar", ".index")) or ".ckpt" in name:
        return "tpu-checkpoint"
    raise ValueError(
        f"cannot tell the format of weight file {path}: expected .weights.h5, .keras, a legacy "
        ".h5, a PyTorch .pth, or a TensorFlow checkpoint (directory, prefix, .index, .tar.gz)")


# --------------------------------------------------------------------------------------------
# Cache and download.

def cache_dir() -> Path:
    """``$KERAS_EFFNET_HOME``, else ``~/.keras/models``."""
    home = os.environ.get(HOME_ENV)
    return Path(home).expanduser() if home else Path.home() / ".keras" / "models"


def resolve_url(url: str) -> str:
    """``url`` with ``https://storage.googleapis.com`` replaced by ``$KERAS_EFFNET_BASE_URL``.

    The override may be an http(s) or file URL, or a local directory; the bucket path is kept
    (``<base>/keras-applications/efficientnetb0.h5``).
    """
    base = os.environ.get(BASE_URL_ENV)
    if not base or not url.startswith(ORIGIN + "/"):
        return url
    relative = url[len(ORIGIN) + 1:]
    if "://" not in base:
        base = Path(base).expanduser().resolve().as_uri()
    return base.rstrip("/") + "/" + relative


def weights_file(model: ModelSpec | str, name: str, include_top: bool = True,
                 progress: bool | Callable[[int, int | None], None] = True) -> Path:
    """Local path of a named set's Keras-loadable file, downloading/converting when needed.

    keras.applications files are used as downloaded (with or without the classifier);
    original checkpoints are downloaded, then converted once to
    ``<cache>/<variant>_<set>.weights.h5`` (with the classifier; it is dropped at load time).
    """
    spec = get_spec(model)
    weight_set = get_weight_set(spec, name)
    if weight_set.source == "keras-h5":
        url, checksum = weight_set.url, weight_set.checksum
        if not include_top and weight_set.notop_url:
            url, checksum = weight_set.notop_url, weight_set.notop_checksum
        return fetch(url, cache_dir() / _file_name(url), checksum, progress=progress)

    converted = cache_dir() / f"{spec.name}_{weight_set.name}.weights.h5"
    if converted.exists():
        if _readable_h5(converted):
            return converted
        _warn(f"cached {converted} is unreadable (corrupt?); converting again")
        converted.unlink()
    archive = fetch(weight_set.url, cache_dir() / _file_name(weight_set.url), weight_set.checksum,
                    progress=progress)
    from keras_effnet import convert  # noqa: PLC0415

    _info(f"converting {archive.name} to {converted.name}")
    convert.convert(weight_set.source, spec, archive, converted,
                    normalization=weight_set.eval.normalization)
    return converted


def _file_name(url: str) -> str:
    return Path(urllib.parse.urlparse(url).path).name


def _readable_h5(path: Path) -> bool:
    import h5py  # noqa: PLC0415
    try:
        with h5py.File(path, "r") as f:
            return "layers" in f
    except OSError:
        return False


def fetch(url: str, destination: str | os.PathLike, checksum: str | None = None,
          progress: bool | Callable[[int, int | None], None] = True) -> Path:
    """Download ``url`` (after ``resolve_url``) to ``destination`` unless a good copy is there.

    A cached file is verified first: against ``checksum`` when given, else against the sha256
    recorded beside it (``<file>.sha256``) when it was downloaded, else by reading it
    (archives must read to the end). A bad copy is deleted and fetched again. Downloads go to
    a temporary file in the same directory, are verified, then renamed into place.

    Raises:
        WeightsUnavailableError: no network (or the mirror lacks the file); the message names
            the URL and the exact path where the file can be put by hand.
        ChecksumError: the downloaded file has the wrong checksum.
    """
    destination = Path(destination)
    if destination.exists():
        problem = _verify(destination, checksum)
        if problem is None:
            return destination
        _warn(f"cached {destination} is bad ({problem}); downloading it again")
        destination.unlink()
    destination.parent.mkdir(parents=True, exist_ok=True)
    source = resolve_url(url)
    tmp = destination.with_name(f".{destination.name}.{os.getpid()}.partial")
    digest = _Digests(checksum)
    try:
        _download(source, tmp, destination, digest, progress)
        problem = digest.mismatch()
        if problem is None and checksum is None:
            problem = _structure_problem(tmp, destination.name)
        if problem is not None:
            raise ChecksumError(f"downloaded {source} is bad: {problem}. Nothing was cached; "
                                "retry, and check the mirror if it happens again")
        os.replace(tmp, destination)
    finally:
        if tmp.exists():
            tmp.unlink()
    Path(f"{destination}.sha256").write_text(digest.sha256.hexdigest() + "\n")
    return destination


class _Digests:
    """sha256 always (recorded beside downloads), plus the published md5/sha256 if any."""

    def __init__(self, checksum: str | None):
        self.checksum = checksum
        self.sha256 = hashlib.sha256()
        self.expected = self.algorithm = self.other = None
        if checksum:
            algorithm, _, self.expected = checksum.partition(":")
            if algorithm not in ("md5", "sha256") or not self.expected:
                raise ValueError(
                    f"checksum must be 'md5:<hex>' or 'sha256:<hex>', got {checksum!r}")
            self.algorithm = algorithm
            self.other = hashlib.md5() if algorithm == "md5" else None

    def update(self, chunk: bytes) -> None:
        self.sha256.update(chunk)
        if self.checksum and self.other is not None:
            self.other.update(chunk)

    def mismatch(self) -> str | None:
        if not self.checksum:
            return None
        got = (self.other or self.sha256).hexdigest()
        if got != self.expected.lower():
            return f"{self.algorithm} {got}, expected {self.expected}"
        return None


def _download(source: str, tmp: Path, destination: Path, digest: _Digests,
              progress: bool | Callable[[int, int | None], None]) -> None:
    report = _progress_printer(source) if progress is True else (progress or None)
    try:
        with urllib.request.urlopen(source, timeout=60) as response, open(tmp, "wb") as out:
            total = response.headers.get("Content-Length")
            total = int(total) if total and total.isdigit() else None
            done = 0
            while chunk := response.read(1 << 20):
                out.write(chunk)
                digest.update(chunk)
                done += len(chunk)
                if report:
                    report(done, total)
            if total is not None and done != total:
                raise ChecksumError(f"download of {source} stopped at {done} of {total} bytes")
    except (urllib.error.URLError, OSError, ValueError) as error:
        if isinstance(error, ChecksumError):
            raise
        raise WeightsUnavailableError(
            f"could not download {source}: {getattr(error, 'reason', error)}.\n"
            f"Without network access, fetch that file on another machine and put it at\n"
            f"  {destination}\n"
            f"(or set {BASE_URL_ENV} to a mirror or a local directory laid out like "
            f"{ORIGIN}, or {HOME_ENV} to another cache directory)") from None


def _progress_printer(source: str) -> Callable[[int, int | None], None]:
    state = {"last": 0.0, "started": False}

    def report(done: int, total: int | None) -> None:
        now = time.monotonic()
        finished = total is not None and done >= total
        if not state["started"]:
            print(f"Downloading {source}", file=sys.stderr)
            state["started"] = True
        if now - state["last"] < 0.5 and not finished:
            return
        state["last"] = now
        size = f"{done / 1e6:.1f}" + (f"/{total / 1e6:.1f} MB ({100 * done // total}%)"
                                      if total else " MB")
        print(f"\r  {size}", end="\n" if finished else "", file=sys.stderr, flush=True)

    return report


def _verify(path: Path, checksum: str | None) -> str | None:
    """Why the cached ``path`` is bad, or None when it is good."""
    digest = _Digests(checksum)
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    if checksum:
        return digest.mismatch()
    record = Path(f"{path}.sha256")
    if record.exists():
        expected = record.read_text().strip()
        got = digest.sha256.hexdigest()
        return None if got == expected else f"sha256 {got}, recorded at download {expected}"
    problem = _structure_problem(path, path.name)
    if problem is None:  # a file put there by hand: remember it as good
        record.write_text(digest.sha256.hexdigest() + "\n")
    return problem


def _structure_problem(path: Path, name: str) -> str | None:
    """Read an archive to its end (catches truncation when no checksum is published)."""
    name = name.lower()
    if name.endswith((".tar.gz", ".tgz", ".tar")):
        try:
            with tarfile.open(path) as tar:
                for member in tar:
                    if member.isfile():
                        handle = tar.extractfile(member)
                        while handle and handle.read(1 << 20):
                            pass
        except Exception as error:  # noqa: BLE001 (tarfile, gzip, zlib and EOF errors)
            return f"unreadable archive ({type(error).__name__}: {error})"
    return None


def _warn(message: str) -> None:
    print(f"keras_effnet.weights: {message}", file=sys.stderr)


def _info(message: str) -> None:
    print(f"keras_effnet.weights: {message}", file=sys.stderr)


# --------------------------------------------------------------------------------------------
# Inference with a weight set's own preprocessing (tools/predict.py).

def classify_files(paths, model: ModelSpec | str, weights=None, top: int = 5,
                   settings: EvalSettings | None = None):
    """Top-``top`` ImageNet classes of image files, preprocessed as ``weights`` expects.

    Uses ``eval_settings(model, weights)`` (resolution, crop, resize) with
    ``keras_effnet.preprocessing.preprocess_for_eval``; the model normalises inside itself.

    Returns:
        one list of (synset, class name, probability) per file, best first.
    """
    import numpy as np  # noqa: PLC0415
    import tensorflow as tf  # noqa: PLC0415

    from keras_effnet.imagenet import decode_predictions  # noqa: PLC0415
    from keras_effnet.model import build_model  # noqa: PLC0415
    from keras_effnet.preprocessing import preprocess_for_eval  # noqa: PLC0415

    missing = [str(p) for p in paths if not Path(p).is_file()]
    if missing:
        raise FileNotFoundError(f"image files not found: {', '.join(missing)}")
    spec = get_spec(model)
    settings = settings or eval_settings(spec, weights)
    net = build_model(spec, weights=weights, input_shape=(settings.resolution,) * 2 + (3,))
    images = []
    for path in paths:
        data = tf.io.read_file(str(path))
        images.append(preprocess_for_eval(data, settings.resolution,
                                          crop_fraction=settings.crop_fraction,
                                          crop_padding=settings.crop_padding,
                                          resize_method=settings.resize_method))
    probabilities = net.predict(np.stack(images), verbose=0)
    return decode_predictions(probabilities, top=top)

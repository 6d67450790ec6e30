"""The download cache: cache directory, mirror URLs, verified atomic downloads.

Files are cached in ``$KERAS_EFFNET_HOME`` (default ``~/.keras/models``).
``$KERAS_EFFNET_BASE_URL`` replaces ``https://storage.googleapis.com`` in every URL (a mirror, or
a local directory laid out like the bucket), see docs/weights.md. Progress is reported through
this module's logger at INFO level (shown by the command lines with ``-v``).
"""

from __future__ import annotations

import hashlib
import logging
import os
import tarfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Callable

from keras_effnet.weights.registry import ORIGIN

logger = logging.getLogger(__name__)

HOME_ENV = "KERAS_EFFNET_HOME"
BASE_URL_ENV = "KERAS_EFFNET_BASE_URL"

# Seconds between two progress records of one download.
PROGRESS_INTERVAL_S = 5.0

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"

Progress = Callable[[int, "int | None"], None]


class WeightsUnavailableError(OSError):
    """A weight file could not be downloaded (names the URL and where to put it by hand)."""


class ChecksumError(ValueError):
    """A downloaded or cached file does not have the published checksum."""


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


def file_name(url: str) -> str:
    """The last path component of ``url`` (the name the file is cached under)."""
    return Path(urllib.parse.urlparse(url).path).name


def fetch(url: str, destination: str | os.PathLike, checksum: str | None = None,
          progress: bool | Progress = True) -> Path:
    """Download ``url`` (after ``resolve_url``) to ``destination`` unless a good copy is there.

    A cached file is verified first: against ``checksum`` (the registry's) when given, else by
    reading it (archives must read to the end, HDF5 files must start with the HDF5 signature).
    The sha256 recorded beside it (``<file>.sha256``) only caches that verdict: a stale record
    never condemns a file the user put there by hand (issue 13, item 6). A copy that fails the
    published checksum is moved aside to ``<file>.bad`` (not deleted) and fetched again.
    Downloads go to a temporary file in the same directory, are verified, then renamed into place.

    Args:
        progress: ``True`` logs progress at INFO level; a callable gets ``(bytes done, total
            bytes or None)`` after every chunk; ``False`` reports nothing.

    Raises:
        WeightsUnavailableError: no network (or the mirror lacks the file); the message names
            the URL and the exact path where the file can be put by hand.
        ChecksumError: the downloaded file has the wrong checksum.
        PermissionError: the cache directory cannot be created or written (not a network
            problem: the message names the directory and ``$KERAS_EFFNET_HOME``).
    """
    destination = Path(destination)
    if destination.exists():
        problem = _verify(destination, checksum)
        if problem is None:
            return destination
        aside = destination.with_name(destination.name + ".bad")
        logger.warning("cached %s is bad (%s); moved to %s, downloading it again", destination,
                       problem, aside)
        os.replace(destination, aside)
        Path(f"{destination}.sha256").unlink(missing_ok=True)
    _check_cache_writable(destination.parent)
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


def _check_cache_writable(directory: Path) -> None:
    """Create ``directory`` and prove a file can be written there, or raise PermissionError."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe = directory / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise PermissionError(
            f"the weights cache directory {str(directory)!r} cannot be written "
            f"({error.strerror or error}); set {HOME_ENV} to a directory you can write to "
            "(it must not lie under a regular file)") from None


def _download(source: str, tmp: Path, destination: Path, digest: _Digests,
              progress: bool | Progress) -> None:
    report = _progress_logger(source) if progress is True else (progress or None)
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


def _progress_logger(source: str) -> Progress:
    """INFO records: one when the download starts, then at most one per PROGRESS_INTERVAL_S."""
    state = {"last": None}

    def report(done: int, total: int | None) -> None:
        now = time.monotonic()
        finished = total is not None and done >= total
        if state["last"] is None:
            logger.info("Downloading %s", source)
            state["last"] = now
        elif now - state["last"] < PROGRESS_INTERVAL_S and not finished:
            return
        state["last"] = now
        size = f"{done / 1e6:.1f}" + (f"/{total / 1e6:.1f} MB ({100 * done // total}%)"
                                      if total else " MB")
        logger.info("  %s", size)

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
    got = digest.sha256.hexdigest()
    expected = record.read_text().strip() if record.exists() else None
    if expected == got:
        return None
    # No record, or one of another file (e.g. a bad mirror copy this one replaced by hand): the
    # record is only a cache of the structural check, so run that check again.
    problem = _structure_problem(path, path.name)
    if problem is not None and expected is not None:
        problem += f"; sha256 {got}, recorded at download {expected}"
    if problem is None:
        try:
            record.write_text(got + "\n")
        except OSError:  # a read-only cache is fine for reading
            pass
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
    elif name.endswith(".h5"):
        with open(path, "rb") as stream:
            if stream.read(len(HDF5_SIGNATURE)) != HDF5_SIGNATURE:
                return "not an HDF5 file (an error page from a mirror?)"
    return None

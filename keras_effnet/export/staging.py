"""Where an export is written: output checks and atomic, un-nested staging beside the output.

Files go through ``keras_effnet.atomic.atomic_path``. A directory (SavedModel, an export folder) is
written into ``.<name>.<random>.partial`` beside the output and renamed into place, so an
interrupted export leaves the previous output (or nothing). ``keras_effnet.atomic`` has no
directory helper yet; ``staged_directory`` is that helper until it does.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from typing import Iterable, Iterator

logger = logging.getLogger(__name__)


class ExportError(RuntimeError):
    """A converter failed (tf2onnx, the TFLite converter); the message holds its output."""


def check_output(output: str | os.PathLike, overwrite: bool, protected: Iterable[str] = ()) -> str:
    """Absolute ``output`` after refusing an existing one (without ``overwrite``) or one inside
    (or containing) a ``protected`` source path; creates the parent directory."""
    output = os.path.abspath(os.fspath(output))
    for path in protected:
        path = os.path.abspath(os.fspath(path))
        if output == path or output.startswith(path.rstrip(os.sep) + os.sep):
            raise ValueError(f"output {output!r} is inside the source {path!r}; write exports "
                             "elsewhere (the source must never be overwritten or mixed with them)")
        if path.startswith(output.rstrip(os.sep) + os.sep):
            raise ValueError(f"output {output!r} contains the source {path!r}; replacing it would "
                             "delete the source")
    if os.path.lexists(output) and not overwrite:
        raise FileExistsError(f"output {output!r} already exists; pass overwrite=True "
                              "(--overwrite) to replace it, or choose another path")
    os.makedirs(os.path.dirname(output), exist_ok=True)
    return output


def _remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.lexists(path):
        os.remove(path)


@contextlib.contextmanager
def staged_directory(output: str | os.PathLike, overwrite: bool = False,
                     protected: Iterable[str] = ()) -> Iterator[str]:
    """Yield an empty directory beside ``output``; on success it becomes ``output``.

    An existing ``output`` (with ``overwrite``) is moved aside first and deleted once the new
    one is in place; on failure the staging directory is removed and the old output kept.

    Raises:
        FileExistsError, ValueError: see ``check_output``.
        ExportError: the body wrote nothing.
    """
    output = check_output(output, overwrite, protected)
    parent, name = os.path.split(output)
    staging = tempfile.mkdtemp(prefix=f".{name}.", suffix=".partial", dir=parent)
    try:
        yield staging
        if not os.listdir(staging):
            raise ExportError(f"the export wrote nothing to {staging}")
        aside = None
        if os.path.lexists(output):
            aside = f"{staging}.old"
            os.replace(output, aside)
        try:
            os.replace(staging, output)
        except OSError:
            if aside is not None:
                os.replace(aside, output)
            raise
        if aside is not None:
            _remove(aside)
        logger.info("wrote %s", output)
    finally:
        _remove(staging)

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
from typing import Iterable, Iterator

from keras_effnet import atomic

logger = logging.getLogger(__name__)


class ExportError(RuntimeError):
    """A converter failed (tf2onnx, the TFLite converter); the message holds its output."""


def check_output(output: str | os.PathLike, overwrite: bool, protected: Iterable[str] = (),
                 *, only_exports: bool = True) -> str:
    """Absolute ``output`` after refusing an existing one (without ``overwrite``), one inside
    (or containing) a ``protected`` source path, and (see ``check_replaceable``) one that
    ``overwrite`` must not replace; creates the parent directory."""
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
    if os.path.lexists(output):
        check_replaceable(output, only_exports=only_exports)
    os.makedirs(os.path.dirname(output), exist_ok=True)
    return output


# What marks a directory as a previous export of this project (export.metadata.METADATA_FILE)
# and what marks a training run (run_dir.METADATA_FILE, run_dir.CONFIG_FILE).
EXPORT_MARKERS = ("metadata.json", "saved_model.pb")
RUN_MARKERS = ("run.json", "config.yaml", "checkpoint")


def check_replaceable(output: str, *, only_exports: bool = True) -> None:
    """Refuse replacing ``output`` unless it is a previous export of this project.

    ``overwrite`` replaces an export directory (its ``metadata.json`` or ``saved_model.pb``
    present) or a single file; never the working directory or one of its parents, a training
    run, or (with ``only_exports``, as ``export`` and the command line check) a directory
    holding anything else (issue 13, item 1).
    """
    output = os.path.realpath(output)
    cwd = os.path.realpath(os.getcwd())
    if not os.path.isdir(output):
        return
    if output == cwd or cwd.startswith(output.rstrip(os.sep) + os.sep):
        raise ValueError(f"refusing to replace {output!r}: it is the working directory or one of "
                         "its parents; choose a new output directory")
    names = set(os.listdir(output))
    run_files = sorted(names.intersection(RUN_MARKERS))
    if run_files:
        raise ValueError(f"refusing to replace {output!r}: it is a training run directory (it "
                         f"holds {', '.join(run_files)}); choose a new output directory")
    if only_exports and names and not names.intersection(EXPORT_MARKERS):
        raise ValueError(f"refusing to replace {output!r}: it is not a previous export (no "
                         f"metadata.json) and holds {len(names)} entries; --overwrite only "
                         "replaces an earlier export. Choose a new output directory, or empty "
                         "this one yourself")


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
    # The export's own check_output (metadata.json present) ran first; here the floor: never
    # the working directory or a run directory.
    output = check_output(output, overwrite, protected, only_exports=False)
    with atomic.atomic_directory(output) as staging:
        yield staging
        if not os.listdir(staging):
            raise ExportError(f"the export wrote nothing to {staging}")
    logger.info("wrote %s", output)

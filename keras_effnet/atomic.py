"""Atomic writes: write to a temporary name in the target's folder, then ``os.replace``.

Readers see either the old file (or directory) or the complete new one, never half of it; a
failed write leaves the old one untouched and removes the temporary one. Temporaries are
``.<name>.<random>.partial`` siblings of the target, never nested inside it. What lands at the
target gets the permissions of an ordinary ``open``/``mkdir`` under the process umask (temporary
files start at 0600, which would otherwise leak into the result).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from typing import Any, Iterator


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def honour_umask(path: str | os.PathLike) -> None:
    """Give ``path`` the mode a plain ``open`` (file) or ``mkdir`` (directory) would have."""
    path = os.fspath(path)
    if os.path.islink(path) or not os.path.exists(path):
        return
    base = 0o777 if os.path.isdir(path) else 0o666
    os.chmod(path, base & ~_umask())


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[str]:
    """Yield a temporary path beside ``path``; on success it replaces ``path``.

    ``suffix`` keeps the file ending that writers such as ``model.save`` insist on
    (``.keras``, ``.weights.h5``, ``.png``).
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=f".partial{suffix}",
                                   dir=directory)
    os.close(handle)
    try:
        yield tmp
        honour_umask(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike) -> Iterator[str]:
    """Yield an empty directory beside ``path``; on success it becomes ``path``.

    An existing ``path`` is moved aside first and deleted once the new directory is in place
    (two renames: a reader may find ``path`` missing for that instant, never half-written).
    On failure the staging directory is removed and the old ``path`` kept.
    """
    path = os.path.abspath(os.fspath(path))
    parent, name = os.path.split(path)
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{name}.", suffix=".partial", dir=parent)
    try:
        yield staging
        honour_umask(staging)
        aside = None
        if os.path.lexists(path):
            aside = f"{staging}.old"
            os.replace(path, aside)
        try:
            os.replace(staging, path)
        except OSError:
            if aside is not None:
                os.replace(aside, path)
            raise
        if aside is not None:
            _remove(aside)
    finally:
        _remove(staging)


def _remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.lexists(path):
        os.remove(path)


def write_text(path: str | os.PathLike, text: str, suffix: str = "") -> None:
    """Write ``text`` (UTF-8), atomically and fsync-ed: a reader never sees half a file."""
    with atomic_path(path, suffix) as tmp:
        with open(tmp, "w", encoding="utf-8") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())


def write_json(path: str | os.PathLike, payload: Any) -> None:
    """Write ``payload`` as indented JSON, atomically and fsync-ed."""
    write_text(path, json.dumps(payload, indent=2, sort_keys=True) + "\n", ".json")


def save_keras(model, path: str | os.PathLike) -> None:
    """``model.save`` (``.keras``) or ``model.save_weights`` (``.weights.h5``), atomically."""
    path = os.fspath(path)
    if path.endswith(".weights.h5"):
        with atomic_path(path, ".weights.h5") as tmp:
            model.save_weights(tmp, overwrite=True)
    elif path.endswith(".keras"):
        with atomic_path(path, ".keras") as tmp:
            model.save(tmp, overwrite=True)
    else:
        raise ValueError(f"cannot tell how to save {path!r}: use a .keras or .weights.h5 name")

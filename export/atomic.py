"""Folders that appear whole or not at all.

Everything is written into a hidden staging folder beside the target and renamed into place only when the
block finishes without error; on any error the staging folder is removed, so an interrupted or failed export
never leaves a half-written folder. Replacing an existing folder is a rename too.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from export.errors import OutputExistsError, OutputNotWritableError

_NOT_WRITABLE = {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR}


def _not_writable(out: Path, exc: OSError) -> OutputNotWritableError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        reason = "the disk is full"
    elif not out.parent.is_dir():
        reason = f"{out.parent} is not a folder"
    else:
        reason = exc.strerror or str(exc)
    return OutputNotWritableError(f"cannot write {out}: {reason}; free space or choose another folder")


@contextmanager
def staged_folder(out: str | os.PathLike[str], *, overwrite: bool = False) -> Iterator[Path]:
    """Yield an empty staging folder; on success it becomes ``out``.

    Raises OutputExistsError when ``out`` exists (unless ``overwrite``) and OutputNotWritableError when the
    folder cannot be created or filled (permissions, read-only file system, disk full).
    """
    target = Path(out)
    if target.exists() and not overwrite:
        raise OutputExistsError(f"{target} already exists; choose another folder or overwrite it")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent))
    except OSError as exc:
        if exc.errno in _NOT_WRITABLE or not target.parent.is_dir():
            raise _not_writable(target, exc) from exc
        raise
    try:
        try:
            yield staging
        except OSError as exc:
            if exc.errno in _NOT_WRITABLE:
                raise _not_writable(target, exc) from exc
            raise
        if target.exists():
            trash = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent))
            target.rename(trash / target.name)
            staging.rename(target)
            shutil.rmtree(trash)
        else:
            staging.rename(target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


@contextmanager
def exclusive_lock(path: str | os.PathLike[str]) -> Iterator[None]:
    """Hold an exclusive lock on the file ``path`` (created, with its folder) for the block, so one process at a
    time fills a shared cache; the others wait, then find it filled. Where ``fcntl`` is missing (Windows) the
    atomic renames alone keep the cache whole."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    lock = Path(path)
    lock.parent.mkdir(parents=True, exist_ok=True)
    with lock.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)

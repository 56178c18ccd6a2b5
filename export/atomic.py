"""Folders that appear whole or not at all.

Everything is written into a hidden staging folder beside the target and renamed into place only when the
block finishes without error; on any error the staging folder is removed, so an interrupted or failed export
never leaves a half-written folder. Replacing an existing folder is a rename too.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from edge_runtime.errors import DiskFullError, StorageError
from edge_runtime.storage import disk_full, looks_full, require_space, storage_error
from export.errors import OutputExistsError


@contextmanager
def staged_folder(
    out: str | os.PathLike[str], *, overwrite: bool = False, needed_bytes: int | None = None,
    what: str = "the output",
) -> Iterator[Path]:
    """Yield an empty staging folder; on success it becomes ``out``.

    Raises OutputExistsError when ``out`` exists (unless ``overwrite``). A machine fault raises the shared
    ``edge_runtime.errors.StorageError`` family naming ``out``: DiskFullError at once when ``needed_bytes``
    (an estimate of what the block writes, staging and scratch files included) does not fit, or when the disk
    fills up during the block (whatever the block raised then: a child process may just exit);
    ReadOnlyStorageError, StoragePermissionError or NotAFolderError when the folder cannot be made or filled.
    """
    target = Path(out)
    if target.exists() and not overwrite:
        raise OutputExistsError(f"{target} already exists; choose another folder or overwrite it")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        if needed_bytes is not None:
            require_space(target, needed_bytes, what)
        staging = _fresh_folder(target.parent, f".{target.name}.", ".partial")
    except OSError as exc:
        error = storage_error(exc, target, needed_bytes=needed_bytes, what=what)
        if error is None or error is exc:
            raise
        raise error from exc
    try:
        try:
            yield staging
        except Exception as exc:
            error = _fault(exc, staging, needed_bytes, what)
            if isinstance(error, DiskFullError):  # reported for the folder asked for, not its staging name
                error = disk_full(target, needed_bytes=needed_bytes, what=what, code=error.errno,
                                  free=error.free_bytes)
            if error is None or error is exc:
                raise
            raise error from exc
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
def scratch_folder(parent: str | os.PathLike[str], prefix: str = ".scratch-") -> Iterator[Path]:
    """A temporary folder in ``parent`` (a staging folder: the output's own disk), removed after the block.
    A failure while the disk is full raises DiskFullError, judged before the removal frees the space."""
    folder = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    try:
        try:
            yield folder
        except Exception as exc:
            error = _fault(exc, folder, None, "the scratch files")
            if error is None or error is exc:
                raise
            raise error from exc
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _fresh_folder(parent: Path, prefix: str, suffix: str) -> Path:
    """A new, empty folder in ``parent`` with the user's usual permissions (``mkdtemp`` makes it 0700, and the
    folder becomes the output: a bundle others cannot read)."""
    while True:
        folder = parent / f"{prefix}{secrets.token_hex(4)}{suffix}"
        try:
            folder.mkdir()
        except FileExistsError:
            continue
        return folder


def _fault(exc: Exception, folder: Path, needed_bytes: int | None, what: str) -> StorageError | None:
    """The machine fault behind ``exc``, raised while filling ``folder``; judged while the folder still holds
    what was written (once it is removed, the disk has room again)."""
    if isinstance(exc, OSError):
        return storage_error(exc, folder, needed_bytes=needed_bytes, what=what)
    return disk_full(folder, needed_bytes=needed_bytes, what=what, code=None) if looks_full(folder) else None


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
    try:
        lock.parent.mkdir(parents=True, exist_ok=True)
        handle = lock.open("a")
    except OSError as exc:
        error = storage_error(exc, lock.parent, what="the cache")
        if error is None:
            raise
        raise error from exc
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)

"""Machine faults while writing files, as plain errors: a full disk, a read-only file system, a missing
permission, a folder that is not there.

    require_space(target, needed_bytes, "the bundle")   # DiskFullError before any work starts
    try:
        write(target)
    except OSError as exc:
        raise storage_error(exc, target) or exc          # a StorageError that says what to do, if it is one

Every package that writes (the export tool's staged folders, bundle downloads, the demo's caches) uses these,
so a user meets one wording.
"""

from __future__ import annotations

import errno
import getpass
import os
import re
import shutil
from pathlib import Path

from edge_runtime.errors import (
    DiskFullError,
    MissingFolderError,
    NotAFolderError,
    ReadOnlyStorageError,
    StorageError,
    StoragePermissionError,
)

FULL_MARGIN_BYTES = 256 * 1024
"""A file system with less free space than this counts as full. Some writers report a full disk without an
errno (numpy's ``tofile``: "8192 requested and 3152 written"; a child process that just exits), so a failure on a
file system this close to full is taken for a full disk."""

_NO_SPACE = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
_PERMISSION = {errno.EACCES, errno.EPERM}


def existing_ancestor(path: str | os.PathLike[str]) -> Path:
    """``path`` itself if it exists, else its nearest ancestor that does (the folder whose rules apply)."""
    here = Path(os.path.abspath(path))
    while not here.exists() and here != here.parent:
        here = here.parent
    return here


def mount_point(path: str | os.PathLike[str]) -> Path:
    """The mount point of the file system that holds (or would hold) ``path``: the longest mount listed in
    /proc/self/mounts that contains it (a folder bound onto itself is one, which ``os.path.ismount`` misses);
    elsewhere, the nearest ancestor ``ismount`` names."""
    here = existing_ancestor(path).resolve()
    try:
        lines = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        lines = []
    mounts = [Path(_unescape(line.split()[1])) for line in lines if len(line.split()) > 1]
    inside = [mount for mount in mounts if here == mount or mount in here.parents]
    if inside:
        return max(inside, key=lambda mount: len(mount.parts))
    while not os.path.ismount(here) and here != here.parent:
        here = here.parent
    return here


def _unescape(field: str) -> str:
    """A /proc/self/mounts field with its octal escapes (``\\040`` for a space) decoded."""
    return re.sub(r"\\([0-7]{3})", lambda match: chr(int(match.group(1), 8)), field)


def free_bytes(path: str | os.PathLike[str]) -> int | None:
    """Bytes this user may still write on the file system of ``path``; None when the system cannot tell."""
    try:
        return shutil.disk_usage(existing_ancestor(path)).free
    except OSError:
        return None


def looks_full(path: str | os.PathLike[str]) -> bool:
    """Whether the file system of ``path`` has less than ``FULL_MARGIN_BYTES`` free."""
    free = free_bytes(path)
    return free is not None and free < FULL_MARGIN_BYTES


def size_text(count: int) -> str:
    """``12.3 MB (12,345,678 bytes)``: readable, and exact for a reader who compares with ``df``."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if count >= scale:
            return f"{count / scale:.1f} {unit} ({count:,} bytes)"
    return f"{count:,} bytes"


def disk_full(
    path: str | os.PathLike[str], *, needed_bytes: int | None = None, what: str = "the files",
    code: int | None = errno.ENOSPC, free: int | None = None,
) -> DiskFullError:
    """The error for ``path`` not fitting on its file system, with the space needed (when known) and free
    (``free``: as measured when the write failed; else measured now)."""
    free = free if free is not None else free_bytes(path)
    mount = mount_point(path)
    free_text = f"{mount} has {size_text(free)} free" if free is not None else f"{mount} is full"
    need = f"{what} needs about {size_text(needed_bytes)}, and " if needed_bytes is not None else ""
    return DiskFullError(
        f"Not enough space to write {path}: {need}{free_text}. Free some space there, or choose a folder on a "
        "disk with more room.",
        path=str(path), errno=code, needed_bytes=needed_bytes, free_bytes=free,
    )


def storage_error(
    exc: BaseException, path: str | os.PathLike[str], *, needed_bytes: int | None = None, what: str = "the files"
) -> StorageError | None:
    """The plain error for ``exc`` raised while writing ``path`` (a file or the folder being filled), or None
    when ``exc`` is not a machine fault (a bug, or a failure of the work itself on a disk with room)."""
    if isinstance(exc, StorageError):
        return exc
    code = exc.errno if isinstance(exc, OSError) else None
    where = Path(os.path.abspath(path))
    if code in _NO_SPACE or (code is None and looks_full(where)):
        return disk_full(where, needed_bytes=needed_bytes, what=what, code=code)
    if not isinstance(exc, OSError):
        return None
    folder = existing_ancestor(where)
    if code == errno.EROFS:
        mount = mount_point(where)
        return ReadOnlyStorageError(
            f"Cannot write {where}: {mount} is a read-only file system. Choose a folder on a writable disk, or "
            f"remount {mount} read-write.", path=str(where), errno=code,
        )
    if code in _PERMISSION:
        blocked = Path(exc.filename) if isinstance(exc.filename, str) else folder
        blocked = blocked if blocked.is_dir() else existing_ancestor(blocked.parent)
        return StoragePermissionError(
            f"Cannot write {where}: user {_user()} has no write permission on {blocked}. Choose a folder this "
            f"user can write, or give it write access (chown or chmod {blocked}).", path=str(where), errno=code,
        )
    if code == errno.EEXIST:  # mkdir of a folder where a file is: the file is the one to name
        existing = Path(exc.filename) if isinstance(exc.filename, str) else folder
        if existing.is_dir() or not existing.exists():
            return None
        folder = existing
    if code in (errno.ENOTDIR, errno.EEXIST) or (folder != where and not folder.is_dir()):
        return NotAFolderError(
            f"Cannot write {where}: {folder} is a file, not a folder. Choose another path, or move that file "
            "away.", path=str(where), errno=code,
        )
    if code == errno.ENOENT:
        return MissingFolderError(
            f"Cannot write {where}: the folder {where.parent} does not exist (it was removed while writing?). "
            "Create it, or choose an existing folder.", path=str(where), errno=code,
        )
    return None


def fault_of(exc: OSError) -> StorageError | None:
    """The StorageError that ``exc`` is, or stands for by the path it names; None when it is no machine fault
    (or names no path): for a command's last line of defence, which knows no better path."""
    if isinstance(exc, StorageError):
        return exc
    return storage_error(exc, exc.filename) if isinstance(exc.filename, str) else None


def require_space(path: str | os.PathLike[str], needed_bytes: int, what: str = "the files") -> None:
    """Raise DiskFullError when the file system that would hold ``path`` has less than ``needed_bytes`` free,
    before any of it is written (a known shortfall fails at once, not after minutes of work)."""
    free = free_bytes(path)
    if free is not None and free < needed_bytes:
        raise disk_full(path, needed_bytes=needed_bytes, what=what, free=free)


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry for this uid (a container's random user)
        return f"uid {os.getuid()}"

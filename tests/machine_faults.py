"""Real machine faults for tests: a tiny file system that fills up, a read-only folder, a folder this process
may not write. Each needs what the machine allows (mounting needs root; denying root a write needs dropping its
override capability with ``setpriv``) and skips the test, saying why, where it cannot."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

PAGE = 4096


def _mount(*args: str) -> None:
    done = subprocess.run(["mount", *args], capture_output=True, text=True)
    if done.returncode:
        pytest.skip(f"cannot mount here ({done.stderr.strip() or done.returncode}): needs root")


@contextmanager
def small_disk(folder: Path, size_bytes: int) -> Iterator[Path]:
    """A tmpfs of ``size_bytes`` (rounded up to pages) mounted on the new folder ``folder``."""
    folder.mkdir(parents=True)
    _mount("-t", "tmpfs", "-o", f"size={-(-size_bytes // PAGE) * PAGE}", "tmpfs", str(folder))
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


@contextmanager
def read_only_folder(folder: Path) -> Iterator[Path]:
    """The new folder ``folder``, bound read-only onto itself (writes fail with EROFS, for root too)."""
    folder.mkdir(parents=True)
    _mount("--bind", "-o", "ro", str(folder), str(folder))
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def fill(folder: Path) -> None:
    """Write into ``folder`` until its file system has no space left."""
    with (folder / "filler").open("wb") as handle:
        try:
            while True:
                handle.write(b"\0" * PAGE)
                handle.flush()
        except OSError:
            pass


def without_write_override() -> list[str]:
    """The argv prefix that runs a command unable to write where its user has no permission: nothing for an
    ordinary user; for root, ``setpriv`` without the capabilities that let root ignore permissions."""
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: a folder's permissions cannot deny this process a write")
    caps = "-dac_override,-dac_read_search"
    return ["setpriv", "--bounding-set", caps, f"--inh-caps={caps}", "--"]

"""edge_runtime.storage: real OSErrors (a full tmpfs, a read-only bind, a path through a file) become the typed,
plain StorageError family; everything else is left alone."""

from __future__ import annotations

import errno

import pytest

from edge_runtime.errors import DiskFullError, NotAFolderError, ReadOnlyStorageError, StoragePermissionError
from edge_runtime.storage import mount_point, require_space, size_text, storage_error
from tests.machine_faults import read_only_folder, small_disk


def _raised(action) -> OSError:
    with pytest.raises(OSError) as caught:
        action()
    return caught.value


def test_a_full_disk_is_a_disk_full_error_with_the_space_free(tmp_path):
    with small_disk(tmp_path / "disk", 8192) as disk:
        target = disk / "big.bin"
        exc = _raised(lambda: target.write_bytes(b"x" * 65536))
        error = storage_error(exc, target, needed_bytes=65536, what="the file")
        assert isinstance(error, DiskFullError) and error.errno == errno.ENOSPC
        assert error.free_bytes is not None and error.free_bytes < 8192
        assert str(error).startswith(f"Not enough space to write {target}: the file needs about 65.5 kB (65,536 "
                                     f"bytes), and {disk} has")
        with pytest.raises(DiskFullError, match="needs about 1.0 MB"):
            require_space(disk / "later", 10**6, "the rest")


def test_a_short_write_without_an_errno_on_a_full_disk_is_a_full_disk(tmp_path):
    with small_disk(tmp_path / "disk", 8192) as disk:
        (disk / "filler").write_bytes(b"\0" * 8192)
        error = storage_error(OSError("2048 requested and 624 written"), disk / "model.gguf")
        assert isinstance(error, DiskFullError) and error.errno is None
    assert storage_error(OSError("2048 requested and 624 written"), tmp_path / "model.gguf") is None


def test_a_read_only_bind_is_named_by_its_own_mount_point(tmp_path):
    with read_only_folder(tmp_path / "ro") as folder:
        assert mount_point(folder / "a" / "b") == folder
        error = storage_error(_raised(lambda: (folder / "x").write_text("x")), folder / "x")
        assert isinstance(error, ReadOnlyStorageError) and f"{folder} is a read-only file system" in str(error)


def test_a_path_through_a_file_and_a_denied_folder(tmp_path):
    (tmp_path / "file").write_text("x")
    error = storage_error(_raised(lambda: (tmp_path / "file" / "sub").mkdir(parents=True)), tmp_path / "file" / "sub")
    assert isinstance(error, NotAFolderError) and f"{tmp_path / 'file'} is a file, not a folder" in str(error)
    denied = storage_error(PermissionError(errno.EACCES, "Permission denied", str(tmp_path)), tmp_path / "out")
    assert isinstance(denied, StoragePermissionError) and f"no write permission on {tmp_path}." in str(denied)


def test_what_is_not_a_machine_fault_is_left_alone(tmp_path):
    assert storage_error(ValueError("bad"), tmp_path / "x") is None
    assert storage_error(OSError(errno.EIO, "I/O error"), tmp_path / "x") is None
    assert size_text(999) == "999 bytes" and size_text(1_234_567) == "1.2 MB (1,234,567 bytes)"

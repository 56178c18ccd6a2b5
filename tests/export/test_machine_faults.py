"""Machine faults met by an export, made for real: a disk that is too small from the start or fills up during
the work (a tmpfs), a read-only file system (a read-only bind), a folder this user may not write (permissions,
with root's override dropped), a path through a file. Each gives one paragraph naming the path and what to do,
exit status 1 from the CLI or a typed StorageError from the API, and leaves nothing half-written."""

from __future__ import annotations

import subprocess
import sys

import pytest

from edge_runtime.errors import DiskFullError, NotAFolderError, ReadOnlyStorageError, StorageError
from export.gguf.pipeline import build_gguf_bundle
from export.source import SourceModel
from export.toy_models import ToyModelSpec, build_toy_model
from tests.machine_faults import PAGE, read_only_folder, small_disk, without_write_override
from tests.support import REPO


def _tandem(*args: str, prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*prefix, sys.executable, "-m", "tandem", *args], capture_output=True, text=True, cwd=REPO, timeout=300,
        env={"PATH": "/usr/bin:/bin", "COLUMNS": "400", "HOME": str(REPO)},
    )


def _message(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 1, (done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, done.stderr
    return lines[0]


def test_a_disk_too_small_for_the_bundle_fails_before_the_work_saying_how_much_it_needs(tiny_llama, tmp_path,
                                                                                       signing_key):
    with small_disk(tmp_path / "disk", 64 * 1024) as disk:
        with pytest.raises(DiskFullError) as caught:
            build_gguf_bundle(SourceModel.open(tiny_llama), disk / "out", "f16", signing_key, evaluation=None)
        assert caught.value.needed_bytes > caught.value.free_bytes
        assert caught.value.path == str(disk / "out")
        assert f"needs about {caught.value.needed_bytes / 1e3:.1f} kB" in str(caught.value)
        assert list(disk.iterdir()) == []


def test_a_disk_that_fills_up_during_the_conversion_is_reported_as_full_and_nothing_stays(tiny_llama, tmp_path,
                                                                                         signing_key):
    """Room for the estimate, not for the converter's actual file: llama.cpp's converter (a child process,
    numpy's short write without an errno) runs out of space half-way."""
    source = SourceModel.open(tiny_llama)
    with small_disk(tmp_path / "probe", PAGE) as probe, pytest.raises(DiskFullError) as caught:
        build_gguf_bundle(source, probe / "out", "f16", signing_key, evaluation=None)
    needed = caught.value.needed_bytes
    with small_disk(tmp_path / "disk", needed + PAGE) as disk:
        with pytest.raises(DiskFullError) as caught:
            build_gguf_bundle(source, disk / "out", "f16", signing_key, evaluation=None)
        message = str(caught.value)
        assert message.startswith(f"Not enough space to write {disk / 'out'}: the f16 GGUF bundle needs about")
        assert f"{disk} has" in message and "Free some space there" in message
        assert list(disk.iterdir()) == []


def test_the_cli_says_the_disk_is_full_with_exit_status_1(tmp_path):
    with small_disk(tmp_path / "disk", 64 * 1024) as disk:
        line = _message(_tandem("export", "toy-model", str(disk / "toy")))
        assert line.startswith(f"error: Not enough space to write {disk / 'toy'}:")
        assert f"{disk} has" in line and "choose a folder on a disk with more room" in line
        assert list(disk.iterdir()) == []


def test_a_read_only_file_system_is_named_with_what_to_do(tmp_path):
    with read_only_folder(tmp_path / "ro") as folder:
        with pytest.raises(ReadOnlyStorageError) as caught:
            build_toy_model(ToyModelSpec.tiny("llama"), folder / "toy")
        assert str(caught.value) == (
            f"Cannot write {folder / 'toy'}: {folder} is a read-only file system. Choose a folder on a writable "
            f"disk, or remount {folder} read-write."
        )
        assert _message(_tandem("export", "toy-model", str(folder / "toy"))) == f"error: {caught.value}"
        assert list(folder.iterdir()) == []


def test_a_folder_this_user_may_not_write_is_named_with_what_to_do(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        denied = tuple(without_write_override())
        line = _message(_tandem("export", "toy-model", str(locked / "sub" / "toy"), prefix=denied))
    finally:
        locked.chmod(0o755)
    assert line.startswith(f"error: Cannot write {locked / 'sub' / 'toy'}: user ")
    assert line.endswith(f"has no write permission on {locked}. Choose a folder this user can write, or give it "
                         f"write access (chown or chmod {locked}).")
    assert list(locked.iterdir()) == []


def test_a_path_through_a_file_is_named(tmp_path):
    (tmp_path / "notes.txt").write_text("a file\n")
    with pytest.raises(NotAFolderError, match=r"notes\.txt is a file, not a folder"):
        build_toy_model(ToyModelSpec.tiny("llama"), tmp_path / "notes.txt" / "toy")
    line = _message(_tandem("export", "keygen", str(tmp_path / "notes.txt" / "team")))
    assert "notes.txt is a file, not a folder" in line


def test_every_fault_is_an_os_error_and_a_storage_error():
    for kind in (DiskFullError, ReadOnlyStorageError, NotAFolderError):
        assert issubclass(kind, StorageError) and issubclass(kind, OSError)


def test_the_demo_names_a_read_only_cache_folder(tmp_path):
    with read_only_folder(tmp_path / "ro") as folder:
        line = _message(_tandem("demo", "--smoke", "--cache-dir", str(folder / "cache")))
    assert line == (f"error: Cannot write {folder / 'cache' / 'tasks'}: {folder} is a read-only file system. Choose "
                    f"a folder on a writable disk, or remount {folder} read-write.")

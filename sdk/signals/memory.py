"""Available memory: psutil's ``available``, capped by the container's memory limit when there is one.

A process in a container (Docker on an IoT box, a Kubernetes pod) sees the host's free memory through
psutil, but the kernel kills it at its cgroup's limit; so the reading is the smaller of the two. The cgroup
headroom is ``limit - (usage - inactive_file)`` (page cache the kernel can drop does not count, as the
kubelet's working set), the least over the process's cgroup and its ancestors. Works with cgroup v2 and v1.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable

from sdk.signals.log import warn_once

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_SELF_CGROUP = Path("/proc/self/cgroup")
CGROUP_V2_MARKER = "cgroup.controllers"
"""Present at the root of a cgroup v2 (unified) mount."""
CGROUP_V2_UNLIMITED = "max"


@runtime_checkable
class MemoryProvider(Protocol):
    def read_available_memory(self) -> int | None:
        """Bytes this process can still allocate without swapping; None when unknown."""
        ...


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _stat_value(path: Path, names: tuple[str, ...]) -> int:
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return 0
    values = dict(line.split(maxsplit=1) for line in lines if " " in line)
    for name in names:
        if values.get(name, "").strip().isdigit():
            return int(values[name])
    return 0


class CgroupMemoryLimit:
    """The memory left under this process's cgroup limits (v2 or v1), read from the cgroup filesystem.

    ``root`` and ``proc_cgroup`` point elsewhere in tests (a folder laid out like /sys/fs/cgroup).
    """

    def __init__(self, root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_SELF_CGROUP) -> None:
        self.version, self.folders = self._resolve(Path(root), Path(proc_cgroup))

    @staticmethod
    def _resolve(root: Path, proc_cgroup: Path) -> tuple[int, list[Path]]:
        """The cgroup version and the folders from this process's cgroup up to the mount root."""
        try:
            entries = [line.split(":", 2) for line in proc_cgroup.read_text().splitlines() if line.count(":") >= 2]
        except OSError:
            entries = []
        v1_path = next((path for _, controllers, path in entries if "memory" in controllers.split(",")), None)
        if v1_path is not None and (root / "memory").is_dir():
            version, base, own = 1, root / "memory", v1_path
        elif (root / CGROUP_V2_MARKER).exists():
            own = next((path for number, controllers, path in entries if number == "0" and not controllers), "/")
            version, base = 2, root
        else:
            return 0, []
        folder = base / own.lstrip("/")
        if not folder.is_dir():  # a cgroup namespace: our own cgroup is the mount root
            folder = base
        folders = [folder]
        while folder != base and base in folder.parents:
            folder = folder.parent
            folders.append(folder)
        return version, folders

    def headroom_bytes(self) -> int | None:
        """The least ``limit - working set`` over the cgroup and its ancestors; None when nothing is limited."""
        least: int | None = None
        for folder in self.folders:
            if self.version == 2:
                limit = _read_int(folder / "memory.max")  # "max" (no limit) reads as None
                usage = _read_int(folder / "memory.current")
                inactive = _stat_value(folder / "memory.stat", ("inactive_file",))
            else:
                limit = _read_int(folder / "memory.limit_in_bytes")
                usage = _read_int(folder / "memory.usage_in_bytes")
                inactive = _stat_value(folder / "memory.stat", ("total_inactive_file", "inactive_file"))
            if limit is None or usage is None:
                continue
            headroom = max(0, limit - max(0, usage - inactive))
            least = headroom if least is None else min(least, headroom)
        return least


class PsutilMemory:
    """The default memory provider: ``psutil.virtual_memory().available``, capped by the cgroup headroom."""

    def __init__(self, cgroup: CgroupMemoryLimit | None = None) -> None:
        self.cgroup = cgroup if cgroup is not None else CgroupMemoryLimit()

    def read_available_memory(self) -> int | None:
        try:
            import psutil

            available = int(psutil.virtual_memory().available)
        except Exception:  # psutil missing or the OS refused: unknown, not a crash of the refresh thread
            warn_once("memory", "cannot read available memory", exc_info=True)
            return None
        headroom = self.cgroup.headroom_bytes()
        return available if headroom is None else min(available, headroom)

"""The default providers on this machine, and their mapping of synthetic readings: sensors fed through the
providers' own source arguments, cgroup and thermal-zone files laid out in a temporary folder."""

from __future__ import annotations

import math
from collections import namedtuple
from pathlib import Path

import psutil
import pytest

from sdk.signals import (
    MAINS,
    BatteryReading,
    CgroupMemoryLimit,
    PsutilBattery,
    PsutilMemory,
    PsutilThermal,
    SysfsThermal,
    SystemThermal,
    TemperatureSensor,
    Thermal,
)
from sdk.signals.thermal import DEFAULT_CRITICAL_C, DEFAULT_SERIOUS_C, FAIR_MARGIN_C, MARK_GAP_C

# psutil's own reading shape (psutil._common.sbattery), rebuilt here rather than imported from a private module.
Battery = namedtuple("Battery", "percent secsleft power_plugged")


# -- memory ----------------------------------------------------------------------------------------------------

def test_psutil_memory_reads_a_sane_value_on_this_machine() -> None:
    available = PsutilMemory().read_available_memory()
    assert isinstance(available, int)
    assert 0 < available <= psutil.virtual_memory().total


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_cgroup_v2_headroom_is_the_least_over_the_cgroup_and_its_ancestors(tmp_path: Path) -> None:
    root = tmp_path / "cgroup"
    _write(root / "cgroup.controllers", "cpu memory\n")
    _write(root / "pod" / "memory.max", "800000\n")
    _write(root / "pod" / "memory.current", "700000\n")
    _write(root / "pod" / "app" / "memory.max", "1000000\n")
    _write(root / "pod" / "app" / "memory.current", "600000\n")
    _write(root / "pod" / "app" / "memory.stat", "anon 400000\ninactive_file 100000\n")
    proc = tmp_path / "proc-cgroup"
    _write(proc, "0::/pod/app\n")
    limit = CgroupMemoryLimit(root, proc)
    assert limit.version == 2
    # app: 1000000 - (600000 - 100000) = 500000; pod: 800000 - 700000 = 100000
    assert limit.headroom_bytes() == 100_000
    assert PsutilMemory(limit).read_available_memory() == 100_000

    _write(root / "pod" / "memory.max", "max\n")  # the pod lifts its limit: the app's own applies
    assert limit.headroom_bytes() == 500_000


def test_cgroup_v1_and_a_namespaced_view(tmp_path: Path) -> None:
    root = tmp_path / "cgroup"
    base = root / "memory"
    _write(base / "memory.limit_in_bytes", "2000000\n")
    _write(base / "memory.usage_in_bytes", "1500000\n")
    _write(base / "memory.stat", "cache 0\ntotal_inactive_file 300000\n")
    proc = tmp_path / "proc-cgroup"
    _write(proc, "5:cpu:/\n4:memory:/docker/abc\n0::/\n")  # that path is not visible inside the container
    limit = CgroupMemoryLimit(root, proc)
    assert (limit.version, limit.folders) == (1, [base])
    assert limit.headroom_bytes() == 2_000_000 - (1_500_000 - 300_000)


def test_no_cgroup_limit_leaves_psutil_alone(tmp_path: Path) -> None:
    limit = CgroupMemoryLimit(tmp_path / "nothing", tmp_path / "no-proc-file")
    assert limit.headroom_bytes() is None
    assert PsutilMemory(limit).read_available_memory() == pytest.approx(psutil.virtual_memory().available, rel=0.5)


# -- battery ---------------------------------------------------------------------------------------------------

def test_psutil_battery_on_this_machine() -> None:
    reading = PsutilBattery().read_battery()
    if psutil.sensors_battery() is None:
        assert reading == MAINS
    else:
        assert 0 <= reading.percent <= 100


@pytest.mark.parametrize(("raw", "expected"), [
    (None, MAINS),
    (Battery(42.5, 1000, False), BatteryReading(42.5, False)),
    (Battery(99.0, -2, True), BatteryReading(99.0, True)),
    (Battery(100.4, -2, None), BatteryReading(100.0, None)),  # clamped; the charger state unknown
    (Battery(math.nan, -2, True), MAINS),
])
def test_battery_readings(raw, expected: BatteryReading) -> None:
    assert PsutilBattery(lambda: raw).read_battery() == expected


def test_a_battery_source_that_raises_reads_as_mains() -> None:
    def broken():
        raise OSError("the ACPI driver refused")

    assert PsutilBattery(broken).read_battery() == MAINS


def test_a_psutil_without_sensors_battery_reads_as_mains(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(psutil, "sensors_battery", raising=False)  # as on platforms psutil has none for
    assert PsutilBattery().read_battery() == MAINS


# -- thermal ---------------------------------------------------------------------------------------------------

def _state(*sensors: TemperatureSensor, chip: str = "coretemp") -> Thermal:
    return PsutilThermal(lambda: {chip: list(sensors)}).read_thermal()


@pytest.mark.parametrize(("current", "expected"), [
    (30.0, Thermal.NOMINAL), (80.0 - FAIR_MARGIN_C - 0.1, Thermal.NOMINAL), (80.0 - FAIR_MARGIN_C, Thermal.FAIR),
    (80.0, Thermal.SERIOUS), (99.9, Thermal.SERIOUS), (100.0, Thermal.CRITICAL), (120.0, Thermal.CRITICAL),
])
def test_thermal_states_relative_to_the_sensors_marks(current: float, expected: Thermal) -> None:
    assert _state(TemperatureSensor("Package id 0", current, high=80.0, critical=100.0)) is expected


def test_a_sensor_with_one_mark_gets_the_other_at_the_named_gap() -> None:
    assert _state(TemperatureSensor("acpitz", 90.0 - MARK_GAP_C, critical=90.0)) is Thermal.SERIOUS
    assert _state(TemperatureSensor("acpitz", 90.0 - MARK_GAP_C - 0.5, critical=90.0)) is Thermal.FAIR
    assert _state(TemperatureSensor("nvme", 70.0 + MARK_GAP_C, high=70.0)) is Thermal.CRITICAL
    assert _state(TemperatureSensor("nvme", 75.0, high=70.0)) is Thermal.SERIOUS


def test_a_sensor_without_usable_marks_uses_the_defaults() -> None:
    for placeholders in ({}, {"high": 0.0, "critical": -273.15}, {"high": 1e6, "critical": None}):
        assert _state(TemperatureSensor("soc", DEFAULT_SERIOUS_C - 1, **placeholders)) is Thermal.FAIR
        assert _state(TemperatureSensor("soc", DEFAULT_SERIOUS_C, **placeholders)) is Thermal.SERIOUS
        assert _state(TemperatureSensor("soc", DEFAULT_CRITICAL_C, **placeholders)) is Thermal.CRITICAL
    # a high mark at or over the critical one is ignored
    assert _state(TemperatureSensor("odd", 86.0, high=100.0, critical=100.0)) is Thermal.SERIOUS


def test_the_device_state_is_the_worst_sensor_and_faulty_readings_are_skipped() -> None:
    chips = {
        "coretemp": [TemperatureSensor("core0", 40.0, 80.0, 100.0), TemperatureSensor("core1", 85.0, 80.0, 100.0)],
        "nvme": [TemperatureSensor("Composite", 30.0, 75.0, 85.0)],
        "broken": [TemperatureSensor("x", -273.0), TemperatureSensor("y", math.nan)],
    }
    assert PsutilThermal(lambda: chips).read_thermal() is Thermal.SERIOUS
    assert PsutilThermal(lambda: {"broken": chips["broken"]}).read_thermal() is Thermal.UNKNOWN
    assert PsutilThermal(dict).read_thermal() is Thermal.UNKNOWN


def test_a_sensor_source_that_raises_reads_as_unknown() -> None:
    def broken():
        raise OSError("EIO")

    assert PsutilThermal(broken).read_thermal() is Thermal.UNKNOWN


def test_psutil_thermal_on_this_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    assert isinstance(PsutilThermal().read_thermal(), Thermal)
    assert isinstance(SystemThermal().read_thermal(), Thermal)
    monkeypatch.delattr(psutil, "sensors_temperatures", raising=False)  # as on macOS and Windows
    assert PsutilThermal().read_thermal() is Thermal.UNKNOWN


def _zone(root: Path, number: int, temp_c: float, trips: dict[str, float], mode: str | None = None) -> Path:
    zone = root / f"thermal_zone{number}"
    _write(zone / "temp", f"{int(temp_c * 1000)}\n")
    for index, (kind, temp) in enumerate(trips.items()):
        _write(zone / f"trip_point_{index}_type", f"{kind}\n")
        _write(zone / f"trip_point_{index}_temp", f"{int(temp * 1000)}\n")
    if mode is not None:
        _write(zone / "mode", f"{mode}\n")
    return zone


@pytest.mark.parametrize(("temp_c", "expected"), [
    (45.0, Thermal.NOMINAL), (90.0 - FAIR_MARGIN_C, Thermal.FAIR), (90.0, Thermal.SERIOUS),
    (100.0, Thermal.CRITICAL),
])
def test_sysfs_zones_map_through_their_trip_points(tmp_path: Path, temp_c: float, expected: Thermal) -> None:
    _zone(tmp_path, 0, temp_c, {"active": 50.0, "passive": 90.0, "hot": 100.0, "critical": 105.0})
    assert SysfsThermal(tmp_path).read_thermal() is expected


def test_sysfs_skips_disabled_and_unreadable_zones(tmp_path: Path) -> None:
    _zone(tmp_path, 0, 99.0, {"passive": 60.0}, mode="disabled")
    broken = _zone(tmp_path, 1, 20.0, {"passive": 60.0})
    (broken / "temp").write_text("garbage\n")
    _zone(tmp_path, 2, 55.0, {"passive": 60.0, "critical": 0.0})  # a 0 trip: the driver's "none"
    assert SysfsThermal(tmp_path).read_thermal() is Thermal.FAIR
    assert SysfsThermal(tmp_path / "absent").read_thermal() is Thermal.UNKNOWN


def test_system_thermal_asks_each_source_in_turn(tmp_path: Path) -> None:
    _zone(tmp_path, 0, 95.0, {"passive": 90.0})
    nothing = PsutilThermal(dict)
    assert SystemThermal([nothing, SysfsThermal(tmp_path)]).read_thermal() is Thermal.SERIOUS
    hot = PsutilThermal(lambda: {"cpu": [TemperatureSensor("cpu", 101.0, 80.0, 100.0)]})
    assert SystemThermal([hot, SysfsThermal(tmp_path)]).read_thermal() is Thermal.CRITICAL
    assert SystemThermal([nothing, SysfsThermal(tmp_path / "absent")]).read_thermal() is Thermal.UNKNOWN

"""The device's thermal state, where the OS reports temperatures; ``Thermal.UNKNOWN`` elsewhere.

Each sensor's reading is placed against three marks and the device's state is the worst over its sensors:

    current >= critical_c                       CRITICAL   (the sensor's critical mark: shutdown territory)
    current >= serious_c                        SERIOUS    (its high mark / passive trip: the OS throttles)
    current >= serious_c - FAIR_MARGIN_C        FAIR
    otherwise                                   NOMINAL

The marks come from the sensor where it gives them (psutil's ``high`` / ``critical``; Linux thermal-zone
trip points ``passive``, ``hot``, ``critical``). A sensor that gives only one mark gets the other
``MARK_GAP_C`` away; one that gives none gets ``DEFAULT_SERIOUS_C`` / ``DEFAULT_CRITICAL_C``, typical
throttling and shutdown points of CPU packages and phone SoCs. Placeholder values some drivers report for
"no mark" (0, negative, absurdly high) are ignored.

Sources: ``PsutilThermal`` (``psutil.sensors_temperatures()``: Linux hwmon, FreeBSD) and ``SysfsThermal``
(``/sys/class/thermal``: Linux, Android). ``SystemThermal`` asks each in turn. Both take their reading source
as an argument, so tests feed synthetic sensors.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, Protocol, runtime_checkable

from sdk.signals.log import warn_once
from sdk.signals.types import Thermal

FAIR_MARGIN_C = 10.0
"""FAIR starts this many degrees below the serious mark."""
MARK_GAP_C = 15.0
"""A sensor with only a critical mark gets its serious mark this far below it (and the reverse)."""
DEFAULT_SERIOUS_C = 85.0
DEFAULT_CRITICAL_C = 100.0
PLAUSIBLE_MARK_C = (30.0, 150.0)
"""Marks outside this range are drivers' placeholders for "none"."""
PLAUSIBLE_READING_C = (-40.0, 150.0)
"""Readings outside this range are sensor faults, not temperatures."""
MILLIDEGREES_PER_DEGREE = 1000.0
SYSFS_THERMAL_ROOT = Path("/sys/class/thermal")
SERIOUS_TRIP_TYPES = ("passive",)
CRITICAL_TRIP_TYPES = ("hot", "critical")

SEVERITY = {Thermal.NOMINAL: 0, Thermal.FAIR: 1, Thermal.SERIOUS: 2, Thermal.CRITICAL: 3}


@runtime_checkable
class ThermalProvider(Protocol):
    def read_thermal(self) -> Thermal:
        """The device's thermal state now; ``Thermal.UNKNOWN`` when the OS does not say."""
        ...


class TemperatureSensor(NamedTuple):
    """One sensor reading in psutil's shape (``shwtemp``): degrees Celsius, marks None when not given."""

    label: str
    current: float
    high: float | None = None
    critical: float | None = None


@dataclass(frozen=True)
class ThermalMarks:
    serious_c: float
    critical_c: float

    @property
    def fair_c(self) -> float:
        return self.serious_c - FAIR_MARGIN_C


def _plausible(value: object, bounds: tuple[float, float]) -> float | None:
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        return None
    low, high = bounds
    return float(value) if low <= value <= high else None


def marks_from(serious_c: float | None, critical_c: float | None) -> ThermalMarks:
    """The marks of a sensor from the ones it gives (None or a placeholder: not given)."""
    serious = _plausible(serious_c, PLAUSIBLE_MARK_C)
    critical = _plausible(critical_c, PLAUSIBLE_MARK_C)
    if serious is not None and critical is not None and serious >= critical:
        serious = None  # a high mark at or over the critical one says nothing more
    if serious is None and critical is None:
        return ThermalMarks(DEFAULT_SERIOUS_C, DEFAULT_CRITICAL_C)
    if critical is None:
        return ThermalMarks(serious, serious + MARK_GAP_C)  # type: ignore[operator]
    if serious is None:
        return ThermalMarks(critical - MARK_GAP_C, critical)
    return ThermalMarks(serious, critical)


def classify(current_c: float, marks: ThermalMarks) -> Thermal:
    """The thermal state of one sensor reading."""
    if current_c >= marks.critical_c:
        return Thermal.CRITICAL
    if current_c >= marks.serious_c:
        return Thermal.SERIOUS
    if current_c >= marks.fair_c:
        return Thermal.FAIR
    return Thermal.NOMINAL


def worst(states: Iterable[Thermal]) -> Thermal:
    """The most severe known state; UNKNOWN when there is none."""
    known = [state for state in states if state in SEVERITY]
    return max(known, key=SEVERITY.__getitem__) if known else Thermal.UNKNOWN


SensorReader = Callable[[], Mapping[str, Sequence[Any]]]
"""Returns what ``psutil.sensors_temperatures()`` returns: chip name -> readings with current/high/critical."""


def _psutil_sensors() -> Mapping[str, Sequence[Any]]:
    import psutil

    read = getattr(psutil, "sensors_temperatures", None)  # absent on macOS and Windows
    return read() if read is not None else {}


class PsutilThermal:
    """Thermal state from ``psutil.sensors_temperatures()`` (or ``source``, same shape)."""

    def __init__(self, source: SensorReader | None = None) -> None:
        self.source = source or _psutil_sensors

    def read_thermal(self) -> Thermal:
        try:
            chips = self.source()
            states = []
            for readings in chips.values():
                for reading in readings:
                    current = _plausible(reading.current, PLAUSIBLE_READING_C)
                    if current is not None:
                        states.append(classify(current, marks_from(reading.high, reading.critical)))
        except Exception:  # a sensor the OS refuses is no thermal reading, not a crash
            warn_once("thermal.psutil", "cannot read temperature sensors through psutil", exc_info=True)
            return Thermal.UNKNOWN
        return worst(states)


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:  # zones whose driver answers EIO/ENODATA while the device sleeps
        return None


def _millidegrees(path: Path) -> float | None:
    text = _read_text(path)
    try:
        return float(text) / MILLIDEGREES_PER_DEGREE if text else None
    except ValueError:
        return None


class SysfsThermal:
    """Thermal state from Linux thermal zones (``/sys/class/thermal/thermal_zone*``) and their trip points."""

    def __init__(self, root: Path = SYSFS_THERMAL_ROOT) -> None:
        self.root = Path(root)

    def zone_state(self, zone: Path) -> Thermal:
        if _read_text(zone / "mode") == "disabled":
            return Thermal.UNKNOWN
        current = _plausible(_millidegrees(zone / "temp"), PLAUSIBLE_READING_C)
        if current is None:
            return Thermal.UNKNOWN
        serious: list[float] = []
        critical: list[float] = []
        for trip_type in zone.glob("trip_point_*_type"):
            kind = _read_text(trip_type)
            temp = _plausible(_millidegrees(zone / trip_type.name.replace("_type", "_temp")), PLAUSIBLE_MARK_C)
            if temp is None:
                continue
            if kind in SERIOUS_TRIP_TYPES:
                serious.append(temp)
            elif kind in CRITICAL_TRIP_TYPES:
                critical.append(temp)
        marks = marks_from(min(serious, default=None), min(critical, default=None))
        return classify(current, marks)

    def read_thermal(self) -> Thermal:
        try:
            zones = sorted(self.root.glob("thermal_zone*"))
            return worst(self.zone_state(zone) for zone in zones)
        except OSError:
            warn_once("thermal.sysfs", "cannot read %s", self.root, exc_info=True)
            return Thermal.UNKNOWN


class SystemThermal:
    """The default thermal provider: the first source that knows (psutil, then Linux thermal zones)."""

    def __init__(self, sources: Sequence[ThermalProvider] | None = None) -> None:
        self.sources = list(sources) if sources is not None else [PsutilThermal(), SysfsThermal()]

    def read_thermal(self) -> Thermal:
        for source in self.sources:
            state = source.read_thermal()
            if state is not Thermal.UNKNOWN:
                return state
        return Thermal.UNKNOWN

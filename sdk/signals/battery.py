"""Battery level and charging, from psutil; no battery means mains power.

psutil has no ``sensors_battery`` on some platforms, returns None where there is no battery, and can raise
where the OS refuses; all three read as mains (percent None, charging None), which routes as if plugged in.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from sdk.signals.log import warn_once
from sdk.signals.types import BATTERY_MAX_PERCENT, BATTERY_MIN_PERCENT, check_battery_percent, check_optional_bool


@dataclass(frozen=True)
class BatteryReading:
    percent: float | None
    """0..100; None = no battery (mains powered)."""
    charging: bool | None
    """None = no battery, or the OS does not say whether the charger is plugged in."""

    def __post_init__(self) -> None:
        check_battery_percent(self.percent)
        check_optional_bool("charging", self.charging)
        if self.percent is not None:
            object.__setattr__(self, "percent", float(self.percent))


MAINS = BatteryReading(None, None)
"""The reading of a device without a battery."""


@runtime_checkable
class BatteryProvider(Protocol):
    def read_battery(self) -> BatteryReading:
        """The battery now; ``MAINS`` when there is none."""
        ...


class PsutilBattery:
    """The default battery provider: ``psutil.sensors_battery()``.

    ``source`` replaces that call (tests, or a platform reading of the same shape: an object with
    ``percent`` and ``power_plugged``, or None for no battery).
    """

    def __init__(self, source: Callable[[], Any] | None = None) -> None:
        self.source = source

    def read_battery(self) -> BatteryReading:
        try:
            read = self.source
            if read is None:
                import psutil

                read = getattr(psutil, "sensors_battery", None)
            reading = read() if read is not None else None
            if reading is None or reading.percent is None or not math.isfinite(float(reading.percent)):
                return MAINS
            percent = min(BATTERY_MAX_PERCENT, max(BATTERY_MIN_PERCENT, float(reading.percent)))
            plugged = reading.power_plugged
        except Exception:  # psutil missing or the OS refused: treat as mains, as the docstring says
            warn_once("battery", "cannot read the battery; treating the device as mains powered", exc_info=True)
            return MAINS
        return BatteryReading(percent, bool(plugged) if plugged is not None else None)

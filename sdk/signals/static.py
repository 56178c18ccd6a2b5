"""Fixed readings a host app passes in place of the psutil providers (a mobile back end that receives the
phone's battery level, an IoT daemon that knows its own power source, tests).

    readings = StaticSignals(available_memory_bytes=3 << 30, battery_percent=40.0, charging=False)
    hub = SignalHub.from_static(readings, link=monitor)

It is a memory, battery and thermal provider at once. To change readings while the hub runs, use
``hub.override(...)``.
"""

from __future__ import annotations

from dataclasses import dataclass

from sdk.signals.battery import BatteryReading
from sdk.signals.types import Thermal, as_thermal, check_memory_bytes


@dataclass(frozen=True)
class StaticSignals:
    available_memory_bytes: int | None = None
    """None = unknown."""
    battery_percent: float | None = None
    """None = no battery (mains powered)."""
    charging: bool | None = None
    thermal: Thermal = Thermal.UNKNOWN
    """A ``Thermal`` or its value ("serious")."""

    def __post_init__(self) -> None:
        check_memory_bytes(self.available_memory_bytes)
        BatteryReading(self.battery_percent, self.charging)  # validates both
        object.__setattr__(self, "thermal", as_thermal(self.thermal))

    def read_available_memory(self) -> int | None:
        return self.available_memory_bytes

    def read_battery(self) -> BatteryReading:
        return BatteryReading(self.battery_percent, self.charging)

    def read_thermal(self) -> Thermal:
        return self.thermal

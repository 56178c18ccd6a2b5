"""The signals a routing decision reads: device memory, battery, thermal state, metered network, cloud link.

    Signals(available_memory_bytes=2 << 30, battery_percent=64.0, charging=False, thermal=Thermal.NOMINAL,
            metered=False, cloud=CloudLink(Link.UP, rtt_ms=42.0, consecutive_failures=0), taken_at=...)

Every value is validated where it is built (``__post_init__``), so injected readings fail early with a
``SignalError`` naming the field. ``None`` means unknown (memory) or no battery (mains powered).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from sdk.signals.errors import SignalError

BATTERY_MIN_PERCENT = 0.0
BATTERY_MAX_PERCENT = 100.0


class Thermal(StrEnum):
    """The device's thermal state, in the four levels mobile OSes report (Apple's ProcessInfo.ThermalState)."""

    NOMINAL = "nominal"
    """Within normal limits."""
    FAIR = "fair"
    """Slightly elevated: fans on, nearing the point where the OS throttles."""
    SERIOUS = "serious"
    """At or past the throttling point: local inference runs slower and heats the device further."""
    CRITICAL = "critical"
    """At the shutdown mark: the device should shed work."""
    UNKNOWN = "unknown"
    """The OS reports no temperature this package can read."""


class Link(StrEnum):
    """The cloud link after hysteresis."""

    UP = "up"
    DOWN = "down"
    UNKNOWN = "unknown"
    """Not checked yet, or no link monitor (``local_only``)."""


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def check_memory_bytes(value: object) -> None:
    if value is None:
        return
    if not isinstance(value, int) or isinstance(value, bool):
        raise SignalError("available_memory_bytes", f"must be an int number of bytes or None, not {value!r}")
    if value < 0:
        raise SignalError("available_memory_bytes", f"must be >= 0, not {value}")


def check_battery_percent(value: object) -> None:
    if value is None:
        return
    if not _is_number(value) or not math.isfinite(value):  # type: ignore[arg-type]
        raise SignalError("battery_percent", f"must be a number from 0 to 100 or None (no battery), not {value!r}")
    if not BATTERY_MIN_PERCENT <= value <= BATTERY_MAX_PERCENT:  # type: ignore[operator]
        raise SignalError("battery_percent", f"must be from 0 to 100, not {value}")


def check_optional_bool(field: str, value: object) -> None:
    if value is not None and not isinstance(value, bool):
        raise SignalError(field, f"must be True, False or None, not {value!r}")


def check_bool(field: str, value: object) -> None:
    if not isinstance(value, bool):
        raise SignalError(field, f"must be True or False, not {value!r}")


def check_thermal(value: object) -> None:
    if not isinstance(value, Thermal):
        raise SignalError("thermal", f"must be one of {', '.join(t.value for t in Thermal)}, not {value!r}")


def check_cloud(value: object) -> None:
    if not isinstance(value, CloudLink):
        raise SignalError("cloud", f"must be a CloudLink, not {type(value).__name__}")


def as_thermal(value: object) -> Thermal:
    """``Thermal`` from itself or its string value ("serious"); SignalError otherwise."""
    if isinstance(value, str):
        try:
            return Thermal(value)
        except ValueError:
            pass
    check_thermal(value)
    return value  # type: ignore[return-value]


@dataclass(frozen=True)
class CloudLink:
    """The cloud endpoint as the link monitor sees it."""

    state: Link
    """After hysteresis: a single failed check does not turn an UP link DOWN."""
    rtt_ms: float | None
    """EWMA-smoothed health-check round trip; None before the first success."""
    consecutive_failures: int
    last_error: str | None = None
    """Why the latest check failed (a gRPC status name, "NOT_SERVING", ...); None after a success."""

    def __post_init__(self) -> None:
        if not isinstance(self.state, Link):
            raise SignalError("cloud.state", f"must be one of {', '.join(s.value for s in Link)}, not {self.state!r}")
        if self.rtt_ms is not None and (not _is_number(self.rtt_ms) or not math.isfinite(self.rtt_ms)
                                        or self.rtt_ms < 0):
            raise SignalError("cloud.rtt_ms", f"must be a finite number >= 0 or None, not {self.rtt_ms!r}")
        if not isinstance(self.consecutive_failures, int) or isinstance(self.consecutive_failures, bool) \
                or self.consecutive_failures < 0:
            raise SignalError("cloud.consecutive_failures", f"must be an int >= 0, not {self.consecutive_failures!r}")


NO_CLOUD_LINK = CloudLink(Link.UNKNOWN, None, 0)
"""The link of a hub without a link monitor (``local_only``, or before the first check)."""


FIELD_CHECKS: dict[str, Callable[[Any], None]] = {
    "available_memory_bytes": check_memory_bytes,
    "battery_percent": check_battery_percent,
    "charging": lambda value: check_optional_bool("charging", value),
    "thermal": check_thermal,
    "metered": lambda value: check_bool("metered", value),
    "cloud": check_cloud,
}
"""The validation of each field a host app may inject (everything but ``taken_at``)."""


@dataclass(frozen=True)
class Signals:
    """One snapshot of everything the routing decision reads."""

    available_memory_bytes: int | None
    """Bytes the OS can hand out without swapping (within the container's limit); None = unknown."""
    battery_percent: float | None
    """0..100; None = no battery (mains powered)."""
    charging: bool | None
    """None = no battery, or the OS does not say."""
    thermal: Thermal
    metered: bool
    """The host app says the network costs money."""
    cloud: CloudLink
    taken_at: float
    """``time.monotonic()`` when this snapshot was assembled."""

    def __post_init__(self) -> None:
        for field, check in FIELD_CHECKS.items():
            check(getattr(self, field))
        if not _is_number(self.taken_at):
            raise SignalError("taken_at", f"must be a time.monotonic() value, not {self.taken_at!r}")

    @property
    def on_battery(self) -> bool:
        """True when the device has a battery and is not known to be charging."""
        return self.battery_percent is not None and self.charging is not True

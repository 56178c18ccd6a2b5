"""The signal hub: one cached ``Signals`` snapshot for the routing decision, refreshed off the request path.

    with SignalHub(link=LinkMonitor("cloud:443", tls=...)) as hub:   # psutil providers by default
        signals = hub.current()            # O(1): returns the cached snapshot, never reads a sensor
        hub.override(battery_percent=12, charging=False)   # the host app's own reading, applied at once

Readings come from three providers (memory, battery, thermal; psutil and the OS by default, a host app's
own or ``StaticSignals`` otherwise), a daemon thread re-reads them every ``refresh_s``, and the link
monitor's checks update the cloud part as they land. A provider that fails reads as unknown (memory None,
battery mains, thermal UNKNOWN) and is logged once; an override always wins over its provider until cleared.
The hub owns the link monitor it is given: ``start()`` starts it and ``close()`` closes it.
"""

from __future__ import annotations

import threading
import time
from enum import Enum
from types import TracebackType
from typing import Any

from sdk.signals.battery import MAINS, BatteryProvider, BatteryReading, PsutilBattery
from sdk.signals.errors import SignalError, SignalsClosedError
from sdk.signals.link import LinkMonitor
from sdk.signals.log import log, warn_once
from sdk.signals.memory import MemoryProvider, PsutilMemory
from sdk.signals.static import StaticSignals
from sdk.signals.thermal import SystemThermal, ThermalProvider
from sdk.signals.types import (
    FIELD_CHECKS,
    NO_CLOUD_LINK,
    CloudLink,
    Signals,
    Thermal,
    as_thermal,
    check_bool,
    check_memory_bytes,
)

DEFAULT_REFRESH_S = 1.0
"""How often the providers are read: memory moves fastest, and psutil reads it in tens of microseconds."""
CLOSE_JOIN_TIMEOUT_S = 2.0
OVERRIDABLE = tuple(FIELD_CHECKS)
"""The fields a host app may override: every field of ``Signals`` but ``taken_at``."""


class _Unset(Enum):
    UNSET = "unset"


UNSET = _Unset.UNSET
"""``override()``'s "leave this field alone" (None is a reading: unknown memory, no battery)."""


def _check_refresh(value: object) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool) or not 0 < value < float("inf"):
        raise SignalError("refresh_s", f"must be a number of seconds > 0, not {value!r}")
    return float(value)


class SignalHub:
    def __init__(self, *, memory: MemoryProvider | None = None, battery: BatteryProvider | None = None,
                 thermal: ThermalProvider | None = None, link: LinkMonitor | None = None, metered: bool = False,
                 refresh_s: float = DEFAULT_REFRESH_S) -> None:
        """Providers left None use psutil / the OS; ``link`` None: no cloud link (``local_only``: the cloud part
        stays ``NO_CLOUD_LINK``); ``metered``: the host app's setting until overridden. Reads the providers
        once, so ``current()`` holds real readings before ``start()``."""
        check_bool("metered", metered)
        if link is not None and not isinstance(link, LinkMonitor):
            raise SignalError("link", f"must be a LinkMonitor or None, not {type(link).__name__}")
        self.refresh_s = _check_refresh(refresh_s)
        self.memory = memory if memory is not None else PsutilMemory()
        self.battery = battery if battery is not None else PsutilBattery()
        self.thermal = thermal if thermal is not None else SystemThermal()
        self.link = link
        self._lock = threading.Lock()
        self._readings: dict[str, Any] = {
            "available_memory_bytes": None, "battery_percent": None, "charging": None, "thermal": Thermal.UNKNOWN,
        }
        self._metered = metered
        self._overrides: dict[str, Any] = {}
        self._stop = threading.Event()
        self._closed = False
        self._thread: threading.Thread | None = None
        self._snapshot = self._assemble()
        self.refresh_now()
        if link is not None:
            link.add_listener(self._on_link)

    @classmethod
    def from_static(cls, readings: StaticSignals, *, link: LinkMonitor | None = None, metered: bool = False,
                    refresh_s: float = DEFAULT_REFRESH_S) -> SignalHub:
        """A hub whose memory, battery and thermal readings are fixed (change them with ``override``)."""
        return cls(memory=readings, battery=readings, thermal=readings, link=link, metered=metered,
                   refresh_s=refresh_s)

    # -- the request path ----------------------------------------------------------------------------------

    def current(self) -> Signals:
        """The cached snapshot: an attribute read, no lock, no sensor, no network."""
        return self._snapshot

    # -- host-app injection --------------------------------------------------------------------------------

    def override(self, *, available_memory_bytes: int | _Unset | None = UNSET,
                 battery_percent: float | _Unset | None = UNSET, charging: bool | _Unset | None = UNSET,
                 thermal: Thermal | str | _Unset = UNSET, metered: bool | _Unset = UNSET,
                 cloud: CloudLink | _Unset = UNSET) -> Signals:
        """Replace the named readings with the host app's own, from now until ``clear_override``; the new
        snapshot. Values are validated first (``SignalError`` naming the field; nothing changes then)."""
        given = {
            "available_memory_bytes": available_memory_bytes, "battery_percent": battery_percent,
            "charging": charging, "thermal": thermal, "metered": metered, "cloud": cloud,
        }
        values = {name: value for name, value in given.items() if value is not UNSET}
        if "thermal" in values:
            values["thermal"] = as_thermal(values["thermal"])
        if isinstance(values.get("battery_percent"), int) and not isinstance(values["battery_percent"], bool):
            values["battery_percent"] = float(values["battery_percent"])
        for name, value in values.items():
            FIELD_CHECKS[name](value)
        with self._lock:
            self._overrides.update(values)
            self._snapshot = self._assemble()
            return self._snapshot

    def clear_override(self, *fields: str) -> Signals:
        """Go back to the providers' readings for ``fields`` (all overrides when none is named)."""
        unknown = [name for name in fields if name not in OVERRIDABLE]
        if unknown:
            raise SignalError(unknown[0], f"is not an overridable signal; use one of {', '.join(OVERRIDABLE)}")
        with self._lock:
            for name in fields or OVERRIDABLE:
                self._overrides.pop(name, None)
            self._snapshot = self._assemble()
            return self._snapshot

    @property
    def overrides(self) -> dict[str, Any]:
        """The readings the host app injected, by field."""
        return dict(self._overrides)

    # -- refreshing ----------------------------------------------------------------------------------------

    def refresh_now(self) -> Signals:
        """Read every provider now (on the calling thread) and return the new snapshot."""
        readings = self._read_providers()
        with self._lock:
            self._readings = readings
            self._snapshot = self._assemble()
            return self._snapshot

    def start(self) -> SignalHub:
        """Start the refresh thread and the link monitor; idempotent."""
        if self._closed:
            raise SignalsClosedError("this signal hub was closed; create a new SignalHub")
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="tandem-signal-hub", daemon=True)
            self._thread.start()
        if self.link is not None:
            self.link.start()
        return self

    def close(self) -> None:
        """Stop the refresh thread and close the link monitor; idempotent. ``current()`` keeps answering."""
        self._closed = True
        self._stop.set()
        if self.link is not None:
            self.link.remove_listener(self._on_link)
            self.link.close()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(CLOSE_JOIN_TIMEOUT_S)

    def __enter__(self) -> SignalHub:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    # -- internals -----------------------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.wait(self.refresh_s):
            try:
                self.refresh_now()
            except Exception:  # never let the thread die: the snapshot would silently go stale
                log.exception("refreshing the device signals failed")

    def _read_providers(self) -> dict[str, Any]:
        memory = self._call("memory", self.memory.read_available_memory, None)
        try:
            check_memory_bytes(memory)
        except SignalError as exc:
            warn_once(f"memory.invalid.{type(self.memory).__name__}", "memory provider %s: %s",
                      type(self.memory).__name__, exc)
            memory = None
        battery = self._call("battery", self.battery.read_battery, MAINS)
        if not isinstance(battery, BatteryReading):
            warn_once(f"battery.invalid.{type(self.battery).__name__}", "battery provider %s returned %r, not a "
                      "BatteryReading; treating the device as mains powered", type(self.battery).__name__, battery)
            battery = MAINS
        thermal = self._call("thermal", self.thermal.read_thermal, Thermal.UNKNOWN)
        try:
            thermal = as_thermal(thermal)
        except SignalError as exc:
            warn_once(f"thermal.invalid.{type(self.thermal).__name__}", "thermal provider %s: %s",
                      type(self.thermal).__name__, exc)
            thermal = Thermal.UNKNOWN
        return {"available_memory_bytes": memory, "battery_percent": battery.percent, "charging": battery.charging,
                "thermal": thermal}

    @staticmethod
    def _call(kind: str, read: Any, unknown: Any) -> Any:
        try:
            return read()
        except Exception:
            warn_once(f"{kind}.raised.{getattr(read, '__qualname__', kind)}", "the %s provider failed; reading "
                      "it as unknown", kind, exc_info=True)
            return unknown

    def _on_link(self, _link: CloudLink) -> None:
        if self.link is None:
            return
        with self._lock:
            self._snapshot = self._assemble()

    def _assemble(self) -> Signals:
        """The snapshot from the readings, the metered setting, the link and the overrides (under the lock)."""
        values = dict(self._readings)
        values["metered"] = self._metered
        values["cloud"] = self.link.link if self.link is not None else NO_CLOUD_LINK
        values.update(self._overrides)
        return Signals(**values, taken_at=time.monotonic())

"""Device and network signals for the routing decision: memory, battery, thermal state, metered network and
the cloud link, cached and refreshed off the request path.

    from sdk.signals import LinkMonitor, SignalHub

    with SignalHub(link=LinkMonitor("cloud.example.com:443", tls=tls, api_key=key)) as hub:
        signals = hub.current()                       # O(1), never blocks
        hub.override(battery_percent=12.0, charging=False)   # a host app's own reading

The modules, one concern each: ``types`` (the snapshot), ``memory`` / ``battery`` / ``thermal`` (providers on
psutil and the OS), ``static`` (fixed readings a host app passes in), ``link_state`` (hysteresis and EWMA),
``link`` (the gRPC health-check thread), ``http_link`` (the same for an OpenAI-compatible server: GET /models),
``hub`` (the cache), ``errors``. Importing this package opens no socket, starts no thread and imports no gRPC:
that happens when a ``LinkMonitor`` runs its first check.
"""

from sdk.signals.battery import MAINS, BatteryProvider, BatteryReading, PsutilBattery
from sdk.signals.errors import SignalError, SignalsClosedError
from sdk.signals.http_link import HttpLinkMonitor
from sdk.signals.hub import DEFAULT_REFRESH_S, UNSET, SignalHub
from sdk.signals.link import DEFAULT_PROBE_INTERVAL_S, DEFAULT_PROBE_TIMEOUT_S, LinkMonitor
from sdk.signals.link_state import (
    DEFAULT_DOWN_AFTER_FAILURES,
    DEFAULT_RTT_EWMA_ALPHA,
    DEFAULT_UP_AFTER_SUCCESSES,
    LinkTracker,
)
from sdk.signals.memory import CgroupMemoryLimit, MemoryProvider, PsutilMemory
from sdk.signals.static import StaticSignals
from sdk.signals.thermal import PsutilThermal, SysfsThermal, SystemThermal, TemperatureSensor, ThermalProvider
from sdk.signals.types import NO_CLOUD_LINK, CloudLink, Link, Signals, Thermal

__all__ = [
    "DEFAULT_DOWN_AFTER_FAILURES",
    "DEFAULT_PROBE_INTERVAL_S",
    "DEFAULT_PROBE_TIMEOUT_S",
    "DEFAULT_REFRESH_S",
    "DEFAULT_RTT_EWMA_ALPHA",
    "DEFAULT_UP_AFTER_SUCCESSES",
    "MAINS",
    "NO_CLOUD_LINK",
    "UNSET",
    "BatteryProvider",
    "BatteryReading",
    "CgroupMemoryLimit",
    "CloudLink",
    "HttpLinkMonitor",
    "Link",
    "LinkMonitor",
    "LinkTracker",
    "MemoryProvider",
    "PsutilBattery",
    "PsutilMemory",
    "PsutilThermal",
    "SignalError",
    "SignalHub",
    "Signals",
    "SignalsClosedError",
    "StaticSignals",
    "SysfsThermal",
    "SystemThermal",
    "TemperatureSensor",
    "Thermal",
    "ThermalProvider",
]

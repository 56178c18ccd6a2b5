"""The routing decision: a pure function of the mode, the signals, the request's difficulty and each side's
health. Same inputs, same decision; no I/O, so it takes microseconds (``benchmarks/sdk.py``).

Order of the rules in ``auto`` mode (the first that applies wins):

1. A side that cannot take the request (no bundle, memory short, breaker open / no cloud, cloud down) is out.
2. Battery low and not charging, or the device running hot: the cloud.
3. A hard request goes to the cloud, unless the network is metered (and the policy avoids that) or the
   cloud is slow: then it stays on the device.
4. Everything else runs on the device.

``prefer_local`` / ``prefer_cloud`` take their side whenever it can answer; ``local_only`` / ``cloud_only``
take nothing else. Unless the mode forbids it, the other side is the fallback.
"""

from __future__ import annotations

from dataclasses import dataclass

from sdk.difficulty import Difficulty
from sdk.policy import Mode, RoutingSettings
from sdk.reasons import Reason, Side
from sdk.signals.types import Link, Signals, Thermal

MIB = 1 << 20
THERMAL_RANK = {Thermal.UNKNOWN: -1, Thermal.NOMINAL: 0, Thermal.FAIR: 1, Thermal.SERIOUS: 2, Thermal.CRITICAL: 3}


@dataclass(frozen=True)
class DeviceHealth:
    configured: bool
    present: bool
    """The bundle is on disk (a provisioned one may still be downloading)."""
    failed: bool
    """Verification or loading failed; the device stays out until the bundle changes."""
    loaded: bool
    memory_need_bytes: int | None
    breaker_open: bool


@dataclass(frozen=True)
class CloudHealth:
    configured: bool
    breaker_open: bool


@dataclass(frozen=True)
class Decision:
    target: Side | None
    """None: neither side can take the request (``reasons`` say why)."""
    fallback: Side | None
    reasons: tuple[Reason, ...]
    blocked: tuple[tuple[Side, Reason], ...] = ()
    """Each side that was ruled out, and why."""


def device_blocker(health: DeviceHealth, signals: Signals, routing: RoutingSettings) -> Reason | None:
    if not health.configured or not health.present:
        return Reason.NO_BUNDLE
    if health.failed:
        return Reason.DEVICE_UNUSABLE
    if health.breaker_open:
        return Reason.DEVICE_BREAKER_OPEN
    available, need = signals.available_memory_bytes, health.memory_need_bytes
    if available is None:
        return None
    if health.loaded:
        if available < routing.min_free_memory_mib * MIB:
            return Reason.DEVICE_MEMORY_SHORT
    elif need is not None and available < need * routing.memory_headroom:
        return Reason.DEVICE_MEMORY_SHORT
    return None


def cloud_blocker(health: CloudHealth, signals: Signals) -> Reason | None:
    if not health.configured:
        return Reason.NO_CLOUD
    if health.breaker_open:
        return Reason.CLOUD_BREAKER_OPEN
    if signals.cloud.state is Link.DOWN:
        return Reason.CLOUD_DOWN
    return None


def _battery_low(signals: Signals, routing: RoutingSettings) -> bool:
    percent = signals.battery_percent
    return percent is not None and not signals.charging and percent < routing.min_battery_percent


def decide(mode: Mode, signals: Signals, difficulty: Difficulty, device: DeviceHealth, cloud: CloudHealth,
           routing: RoutingSettings) -> Decision:
    device_out = device_blocker(device, signals, routing) if mode is not Mode.CLOUD_ONLY else None
    cloud_out = cloud_blocker(cloud, signals) if mode is not Mode.LOCAL_ONLY else None
    blocked = tuple((side, why) for side, why in ((Side.DEVICE, device_out), (Side.CLOUD, cloud_out)) if why)
    if mode is Mode.LOCAL_ONLY:
        reasons = (Reason.MODE_LOCAL_ONLY, *((device_out,) if device_out else ()))
        return Decision(None if device_out else Side.DEVICE, None, reasons, blocked)
    if mode is Mode.CLOUD_ONLY:
        reasons = (Reason.MODE_CLOUD_ONLY, *((cloud_out,) if cloud_out else ()))
        return Decision(None if cloud_out else Side.CLOUD, None, reasons, blocked)
    if device_out and cloud_out:
        return Decision(None, None, (device_out, cloud_out), blocked)
    if device_out:
        return Decision(Side.CLOUD, None, (device_out,), blocked)
    if cloud_out:
        return Decision(Side.DEVICE, None, (cloud_out,), blocked)
    if mode is Mode.PREFER_LOCAL:
        return Decision(Side.DEVICE, Side.CLOUD, (Reason.MODE_PREFER_LOCAL,))
    if mode is Mode.PREFER_CLOUD:
        return Decision(Side.CLOUD, Side.DEVICE, (Reason.MODE_PREFER_CLOUD,))
    if _battery_low(signals, routing):
        return Decision(Side.CLOUD, Side.DEVICE, (Reason.BATTERY_LOW,))
    if THERMAL_RANK[signals.thermal] >= THERMAL_RANK[routing.max_thermal]:
        return Decision(Side.CLOUD, Side.DEVICE, (Reason.THERMAL_HIGH,))
    if difficulty.hard:
        if signals.metered and routing.avoid_metered:
            return Decision(Side.DEVICE, Side.CLOUD, (Reason.DIFFICULTY_HIGH, Reason.METERED_NETWORK))
        rtt = signals.cloud.rtt_ms
        if rtt is not None and rtt > routing.max_cloud_rtt_ms:
            return Decision(Side.DEVICE, Side.CLOUD, (Reason.DIFFICULTY_HIGH, Reason.CLOUD_SLOW))
        return Decision(Side.CLOUD, Side.DEVICE, (Reason.DIFFICULTY_HIGH,))
    return Decision(Side.DEVICE, Side.CLOUD, (Reason.DIFFICULTY_LOW,))

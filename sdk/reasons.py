"""Why a request went where it went: short, stable codes (they label metrics, so they are few and fixed).

A route carries the decision's reasons and, for each fallback or failover, the reason of the switch.
"""

from __future__ import annotations

from enum import StrEnum


class Side(StrEnum):
    DEVICE = "device"
    CLOUD = "cloud"

    @property
    def other(self) -> Side:
        return Side.CLOUD if self is Side.DEVICE else Side.DEVICE


class Reason(StrEnum):
    # The mode decided.
    MODE_LOCAL_ONLY = "mode_local_only"
    MODE_CLOUD_ONLY = "mode_cloud_only"
    MODE_PREFER_LOCAL = "mode_prefer_local"
    MODE_PREFER_CLOUD = "mode_prefer_cloud"
    # A side cannot take the request.
    NO_BUNDLE = "no_bundle"
    """No device bundle is configured or it is not on disk (yet)."""
    DEVICE_MEMORY_SHORT = "device_memory_short"
    DEVICE_UNUSABLE = "device_unusable"
    """The bundle failed verification or loading; see the route's steps for the error."""
    DEVICE_BREAKER_OPEN = "device_breaker_open"
    NO_CLOUD = "no_cloud"
    """No cloud target is configured."""
    CLOUD_DOWN = "cloud_down"
    CLOUD_BREAKER_OPEN = "cloud_breaker_open"
    # Device state pushes work to the cloud.
    BATTERY_LOW = "battery_low"
    THERMAL_HIGH = "thermal_high"
    # The request itself.
    DIFFICULTY_HIGH = "difficulty_high"
    DIFFICULTY_LOW = "difficulty_low"
    # The network pushes hard work back to the device.
    METERED_NETWORK = "metered_network"
    CLOUD_SLOW = "cloud_slow"
    # Switches during a request.
    CLOUD_FAILED = "cloud_failed"
    DEVICE_FAILED = "device_failed"
    STREAM_BROKEN = "stream_broken"
    LOW_CONFIDENCE = "low_confidence"
    """The confidence cascade escalated a device answer to the cloud."""

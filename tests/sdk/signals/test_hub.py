"""The signal hub: cached snapshots (current() reads no provider), background refresh, host-app overrides,
failing providers, the link monitor's updates, and a prompt, idempotent close."""

from __future__ import annotations

import threading
import time

import pytest

from sdk.signals import (
    MAINS,
    NO_CLOUD_LINK,
    BatteryReading,
    CloudLink,
    Link,
    LinkMonitor,
    SignalError,
    SignalHub,
    SignalsClosedError,
    StaticSignals,
    Thermal,
)
from tests.sdk.signals.health_server import HealthServer, wait_until

PLUGGED_IN = BatteryReading(80.0, True)
QUICK_CLOSE_S = 1.5
"""close() must end well before the hub's refresh interval (60 s in those tests)."""


class CountingReadings:
    """A host app's provider: fixed readings that count how often the hub asks."""

    def __init__(self, memory: int = 4 << 30, battery: BatteryReading = PLUGGED_IN,
                 thermal: Thermal = Thermal.NOMINAL) -> None:
        self.memory, self.battery, self.thermal = memory, battery, thermal
        self.calls = 0
        self._lock = threading.Lock()

    def _count(self) -> None:
        with self._lock:
            self.calls += 1

    def read_available_memory(self) -> int:
        self._count()
        return self.memory

    def read_battery(self) -> BatteryReading:
        return self.battery

    def read_thermal(self) -> Thermal:
        return self.thermal


def _hub(readings: CountingReadings, **kwargs) -> SignalHub:
    return SignalHub(memory=readings, battery=readings, thermal=readings, **kwargs)


def test_the_default_hub_reads_this_machine_without_any_network() -> None:
    with SignalHub() as hub:
        signals = hub.current()
    assert signals.available_memory_bytes is not None and signals.available_memory_bytes > 0
    assert isinstance(signals.thermal, Thermal)
    assert signals.cloud == NO_CLOUD_LINK
    assert signals.metered is False


def test_current_returns_the_cached_snapshot_without_reading_providers() -> None:
    readings = CountingReadings()
    hub = _hub(readings)
    assert readings.calls == 1  # the hub read once when built, so current() is real before start()
    first = hub.current()
    assert all(hub.current() is first for _ in range(1000))
    assert readings.calls == 1
    readings.memory = 1 << 30
    refreshed = hub.refresh_now()
    assert readings.calls == 2
    assert hub.current() is refreshed
    assert refreshed.available_memory_bytes == 1 << 30
    assert refreshed.taken_at >= first.taken_at


def test_a_daemon_thread_refreshes_off_the_request_path() -> None:
    readings = CountingReadings()
    with _hub(readings, refresh_s=0.02) as hub:
        readings.thermal = Thermal.SERIOUS
        assert wait_until(lambda: hub.current().thermal is Thermal.SERIOUS)
        assert readings.calls >= 2
        assert hub._thread is not None and hub._thread.daemon


def test_overrides_apply_at_once_and_clear_back_to_the_providers() -> None:
    readings = CountingReadings()
    hub = _hub(readings)
    signals = hub.override(battery_percent=12, charging=False, thermal="serious", metered=True)
    assert hub.current() is signals
    assert (signals.battery_percent, signals.charging, signals.thermal, signals.metered) == (
        12.0, False, Thermal.SERIOUS, True)
    assert readings.calls == 1  # an override reads no provider
    hub.refresh_now()  # a refresh does not undo an override
    assert hub.current().battery_percent == 12.0
    assert hub.overrides == {"battery_percent": 12.0, "charging": False, "thermal": Thermal.SERIOUS, "metered": True}

    cleared = hub.clear_override("battery_percent", "charging")
    assert (cleared.battery_percent, cleared.charging, cleared.thermal) == (80.0, True, Thermal.SERIOUS)
    assert hub.clear_override().thermal is Thermal.NOMINAL  # no names: all of them
    assert hub.current().metered is False
    assert hub.overrides == {}


def test_a_mains_powered_override_and_the_cloud_link_can_be_injected() -> None:
    hub = _hub(CountingReadings())
    mains = hub.override(battery_percent=None, charging=None, available_memory_bytes=0)
    assert (mains.battery_percent, mains.charging, mains.available_memory_bytes) == (None, None, 0)
    offline = CloudLink(Link.DOWN, None, 3, "airplane mode")
    assert hub.override(cloud=offline).cloud == offline


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"battery_percent": 101}, "battery_percent"),
    ({"battery_percent": -1}, "battery_percent"),
    ({"available_memory_bytes": -5}, "available_memory_bytes"),
    ({"charging": "yes"}, "charging"),
    ({"thermal": "lava"}, "thermal"),
    ({"metered": None}, "metered"),
    ({"cloud": Link.UP}, "cloud"),
])
def test_invalid_overrides_name_the_field_and_change_nothing(kwargs: dict, field: str) -> None:
    hub = _hub(CountingReadings())
    before = hub.current()
    with pytest.raises(SignalError) as raised:
        hub.override(**{"metered": True, **kwargs})  # a valid field alongside is not applied either
    assert raised.value.field == field
    assert hub.current() is before
    assert hub.overrides == {}


def test_clearing_an_unknown_field_is_an_error() -> None:
    with pytest.raises(SignalError, match="battery_level") as raised:
        _hub(CountingReadings()).clear_override("battery_level")
    assert raised.value.field == "battery_level"


def test_static_readings_replace_the_psutil_providers() -> None:
    hub = SignalHub.from_static(StaticSignals(available_memory_bytes=512 << 20, battery_percent=30.0,
                                              charging=False, thermal=Thermal.FAIR), metered=True)
    signals = hub.current()
    assert (signals.available_memory_bytes, signals.battery_percent, signals.charging, signals.thermal,
            signals.metered) == (512 << 20, 30.0, False, Thermal.FAIR, True)
    assert signals.on_battery


class BrokenReadings:
    """A host app's provider that fails in every way it can."""

    def read_available_memory(self) -> int:
        return -1  # invalid

    def read_battery(self) -> BatteryReading:
        raise OSError("the battery service is gone")

    def read_thermal(self) -> str:
        return "toasty"  # not a Thermal value


def test_failing_providers_read_as_unknown_and_the_hub_keeps_working() -> None:
    broken = BrokenReadings()
    hub = SignalHub(memory=broken, battery=broken, thermal=broken)
    signals = hub.current()
    assert (signals.available_memory_bytes, signals.battery_percent, signals.charging, signals.thermal) == (
        None, MAINS.percent, MAINS.charging, Thermal.UNKNOWN)
    assert hub.refresh_now().thermal is Thermal.UNKNOWN
    assert hub.override(thermal=Thermal.FAIR).thermal is Thermal.FAIR


def test_close_joins_the_thread_quickly_and_is_idempotent() -> None:
    hub = _hub(CountingReadings(), refresh_s=60.0).start()
    assert hub.start() is hub  # starting twice is harmless
    started = time.monotonic()
    hub.close()
    assert time.monotonic() - started < QUICK_CLOSE_S
    assert hub._thread is not None and not hub._thread.is_alive()
    hub.close()
    assert hub.current().available_memory_bytes == 4 << 30  # the last snapshot stays readable
    with pytest.raises(SignalsClosedError):
        hub.start()


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"refresh_s": 0}, "refresh_s"), ({"metered": "no"}, "metered"), ({"link": "cloud:443"}, "link"),
])
def test_hub_settings_are_validated(kwargs: dict, field: str) -> None:
    with pytest.raises(SignalError) as raised:
        _hub(CountingReadings(), **kwargs)
    assert raised.value.field == field


def test_the_link_monitors_results_reach_current_as_they_land(health_server: HealthServer) -> None:
    monitor = LinkMonitor(health_server.target, down_after=2)
    hub = _hub(CountingReadings(), link=monitor)
    try:
        assert hub.current().cloud.state is Link.UNKNOWN
        assert not monitor.connected  # building the hub checked nothing
        monitor.probe_now()
        assert hub.current().cloud.state is Link.UP
        monitor.report_failure("UNAVAILABLE")  # a real request failed: no refresh needed to see it
        assert hub.current().cloud.consecutive_failures == 1
        monitor.report_failure("UNAVAILABLE")
        assert hub.current().cloud.state is Link.DOWN
        assert hub.override(battery_percent=5).cloud.state is Link.DOWN
    finally:
        hub.close()
    assert not monitor.connected  # the hub owns its monitor: closed with it


def test_a_started_hub_starts_its_monitor(health_server: HealthServer) -> None:
    monitor = LinkMonitor(health_server.target, interval_s=0.05)
    with SignalHub.from_static(StaticSignals(), link=monitor, refresh_s=60.0) as hub:
        assert wait_until(lambda: hub.current().cloud.state is Link.UP)
        assert hub.current().cloud.rtt_ms is not None

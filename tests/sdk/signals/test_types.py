"""The snapshot types validate where they are built: a typed SignalError naming the field."""

from __future__ import annotations

import math
import time

import pytest

from sdk.signals import NO_CLOUD_LINK, CloudLink, Link, SignalError, Signals, StaticSignals, Thermal


def _signals(**changes) -> Signals:
    values = dict(available_memory_bytes=1 << 30, battery_percent=50.0, charging=False, thermal=Thermal.NOMINAL,
                  metered=False, cloud=NO_CLOUD_LINK, taken_at=time.monotonic())
    values.update(changes)
    return Signals(**values)


def test_enums_have_the_contract_values() -> None:
    assert [t.value for t in Thermal] == ["nominal", "fair", "serious", "critical", "unknown"]
    assert [s.value for s in Link] == ["up", "down", "unknown"]
    assert Thermal("serious") is Thermal.SERIOUS


def test_a_valid_snapshot_builds_and_says_whether_it_runs_on_battery() -> None:
    assert _signals().on_battery
    assert not _signals(charging=True).on_battery
    assert not _signals(battery_percent=None, charging=None).on_battery  # mains


@pytest.mark.parametrize(("field", "value"), [
    ("available_memory_bytes", -1),
    ("available_memory_bytes", 1.5),
    ("available_memory_bytes", True),
    ("battery_percent", 100.5),
    ("battery_percent", -0.1),
    ("battery_percent", math.nan),
    ("battery_percent", "50"),
    ("charging", 1),
    ("thermal", "hot"),
    ("metered", None),
    ("cloud", "up"),
    ("taken_at", None),
])
def test_invalid_fields_are_named(field: str, value: object) -> None:
    with pytest.raises(SignalError, match=field) as raised:
        _signals(**{field: value})
    assert raised.value.field == field


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"state": "up"}, "cloud.state"),
    ({"rtt_ms": -1.0}, "cloud.rtt_ms"),
    ({"rtt_ms": math.inf}, "cloud.rtt_ms"),
    ({"consecutive_failures": -1}, "cloud.consecutive_failures"),
])
def test_cloud_link_validates(kwargs: dict, field: str) -> None:
    values = {"state": Link.UP, "rtt_ms": 10.0, "consecutive_failures": 0, **kwargs}
    with pytest.raises(SignalError) as raised:
        CloudLink(**values)
    assert raised.value.field == field


def test_static_signals_validate_and_accept_thermal_by_value() -> None:
    readings = StaticSignals(available_memory_bytes=123, battery_percent=7, charging=False, thermal="critical")
    assert readings.read_thermal() is Thermal.CRITICAL
    assert readings.read_battery().percent == 7
    assert readings.read_available_memory() == 123
    with pytest.raises(SignalError, match="battery_percent"):
        StaticSignals(battery_percent=101)
    with pytest.raises(SignalError, match="thermal"):
        StaticSignals(thermal="toasty")

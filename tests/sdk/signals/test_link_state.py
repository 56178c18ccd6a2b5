"""Hysteresis and the EWMA of the link state machine, step by step (no network: the monitor tests add it)."""

from __future__ import annotations

import pytest

from sdk.signals import DEFAULT_DOWN_AFTER_FAILURES, DEFAULT_UP_AFTER_SUCCESSES, Link, LinkTracker, SignalError


def test_defaults_need_more_than_one_result_to_flip() -> None:
    assert DEFAULT_DOWN_AFTER_FAILURES >= 2
    assert DEFAULT_UP_AFTER_SUCCESSES >= 2


def test_unknown_goes_up_on_the_first_success_and_down_after_n_failures() -> None:
    assert LinkTracker().record_success(5.0).state is Link.UP
    tracker = LinkTracker(down_after=2)
    assert tracker.record_failure("UNAVAILABLE").state is Link.UNKNOWN
    assert tracker.record_failure("UNAVAILABLE").state is Link.DOWN


def test_hysteresis_both_ways() -> None:
    tracker = LinkTracker(down_after=2, up_after=3)
    tracker.record_success(10.0)
    blip = tracker.record_failure("DEADLINE_EXCEEDED")
    assert (blip.state, blip.consecutive_failures, blip.last_error) == (Link.UP, 1, "DEADLINE_EXCEEDED")
    assert tracker.record_success(10.0).consecutive_failures == 0  # a success resets the count
    assert tracker.record_failure("UNAVAILABLE").state is Link.UP
    down = tracker.record_failure("UNAVAILABLE")
    assert (down.state, down.consecutive_failures) == (Link.DOWN, 2)
    assert tracker.record_success(10.0).state is Link.DOWN
    assert tracker.record_failure("UNAVAILABLE").state is Link.DOWN  # a failure restarts the count to UP
    assert [tracker.record_success(10.0).state for _ in range(3)] == [Link.DOWN, Link.DOWN, Link.UP]


def test_rtt_is_an_ewma_seeded_by_the_first_sample_and_kept_while_down() -> None:
    tracker = LinkTracker(rtt_alpha=0.25, down_after=1)
    assert tracker.snapshot.rtt_ms is None
    assert tracker.record_success(100.0).rtt_ms == 100.0
    assert tracker.record_success(20.0).rtt_ms == pytest.approx(0.25 * 20 + 0.75 * 100)
    assert tracker.record_success(None).rtt_ms == pytest.approx(80.0)  # a success without a round trip
    assert tracker.record_failure("UNAVAILABLE").rtt_ms == pytest.approx(80.0)


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"down_after": 0}, "down_after"), ({"up_after": 1.5}, "up_after"), ({"rtt_alpha": 0}, "rtt_alpha"),
    ({"rtt_alpha": 1.5}, "rtt_alpha"),
])
def test_settings_are_validated(kwargs: dict, field: str) -> None:
    with pytest.raises(SignalError) as raised:
        LinkTracker(**kwargs)
    assert raised.value.field == field


def test_reported_round_trips_are_validated() -> None:
    with pytest.raises(SignalError, match="rtt_ms"):
        LinkTracker().record_success(-3.0)

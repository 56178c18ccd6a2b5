"""The routing decision as a pure function: property tests over any signal values, and each rule alone."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from cloud_service.backoff import backoff_delay
from edge_runtime.types import Message
from sdk.breaker import BreakerState, CircuitBreaker
from sdk.decision import CloudHealth, DeviceHealth, decide
from sdk.difficulty import Difficulty, heuristic_score
from sdk.policy import Mode, RoutingSettings
from sdk.reasons import Reason, Side
from sdk.signals import CloudLink, Link, Signals, Thermal

GIB = 1 << 30

signals_st = st.builds(
    Signals,
    available_memory_bytes=st.one_of(st.none(), st.integers(0, 64 * GIB)),
    battery_percent=st.one_of(st.none(), st.floats(0, 100)),
    charging=st.one_of(st.none(), st.booleans()),
    thermal=st.sampled_from(list(Thermal)),
    metered=st.booleans(),
    cloud=st.builds(CloudLink, state=st.sampled_from(list(Link)),
                    rtt_ms=st.one_of(st.none(), st.floats(0, 10_000)), consecutive_failures=st.integers(0, 9)),
    taken_at=st.just(0.0),
)
device_st = st.builds(DeviceHealth, configured=st.booleans(), present=st.booleans(), failed=st.booleans(),
                      loaded=st.booleans(), memory_need_bytes=st.one_of(st.none(), st.integers(0, 16 * GIB)),
                      breaker_open=st.booleans())
cloud_st = st.builds(CloudHealth, configured=st.booleans(), breaker_open=st.booleans())
difficulty_st = st.builds(Difficulty, score=st.floats(0, 1), hard=st.booleans(), source=st.just("heuristic"))
routing_st = st.builds(RoutingSettings, min_battery_percent=st.floats(0, 100),
                       max_thermal=st.sampled_from([Thermal.FAIR, Thermal.SERIOUS, Thermal.CRITICAL]),
                       max_cloud_rtt_ms=st.floats(1, 5000), avoid_metered=st.booleans())


@settings(max_examples=400, deadline=None)
@given(mode=st.sampled_from(list(Mode)), signals=signals_st, device=device_st, cloud=cloud_st,
       difficulty=difficulty_st, routing=routing_st)
def test_the_decision_is_deterministic_and_respects_the_mode(mode, signals, device, cloud, difficulty, routing):
    decision = decide(mode, signals, difficulty, device, cloud, routing)
    assert decision == decide(mode, signals, difficulty, device, cloud, routing)
    blocked = dict(decision.blocked)
    chosen = {decision.target, decision.fallback} - {None}
    assert not chosen & blocked.keys(), "a side that cannot take the request is never chosen"
    assert decision.reasons, "every decision says why"
    if mode is Mode.LOCAL_ONLY:
        assert chosen <= {Side.DEVICE} and decision.fallback is None
        assert Side.CLOUD not in blocked  # the cloud is not even looked at
    if mode is Mode.CLOUD_ONLY:
        assert chosen <= {Side.CLOUD} and decision.fallback is None
        assert Side.DEVICE not in blocked
    if mode is Mode.PREFER_LOCAL and Side.DEVICE not in blocked:
        assert decision.target is Side.DEVICE
    if mode is Mode.PREFER_CLOUD and Side.CLOUD not in blocked:
        assert decision.target is Side.CLOUD
    if decision.target is None:
        assert blocked


def _signals(**changes) -> Signals:
    base = dict(available_memory_bytes=8 * GIB, battery_percent=80.0, charging=False, thermal=Thermal.NOMINAL,
                metered=False, cloud=CloudLink(Link.UP, 20.0, 0), taken_at=0.0)
    return Signals(**(base | changes))


READY = DeviceHealth(True, True, False, False, 1 * GIB, False)
CLOUD = CloudHealth(True, False)
EASY, HARD = Difficulty(0.1, False, "heuristic"), Difficulty(0.9, True, "heuristic")


def test_each_rule_of_auto_mode_alone():
    def where(signals=None, difficulty=EASY, device=READY, cloud=CLOUD):
        decision = decide(Mode.AUTO, signals or _signals(), difficulty, device, cloud, RoutingSettings())
        return decision.target, decision.reasons

    assert where() == (Side.DEVICE, (Reason.DIFFICULTY_LOW,))
    assert where(difficulty=HARD) == (Side.CLOUD, (Reason.DIFFICULTY_HIGH,))
    assert where(_signals(battery_percent=10.0)) == (Side.CLOUD, (Reason.BATTERY_LOW,))
    assert where(_signals(battery_percent=10.0, charging=True)) == (Side.DEVICE, (Reason.DIFFICULTY_LOW,))
    assert where(_signals(thermal=Thermal.SERIOUS)) == (Side.CLOUD, (Reason.THERMAL_HIGH,))
    assert where(_signals(available_memory_bytes=GIB)) == (Side.CLOUD, (Reason.DEVICE_MEMORY_SHORT,))
    loaded = DeviceHealth(True, True, False, True, 1 * GIB, False)  # a loaded model needs no new memory
    assert where(_signals(available_memory_bytes=GIB), device=loaded) == (Side.DEVICE, (Reason.DIFFICULTY_LOW,))
    assert where(_signals(available_memory_bytes=1 << 20), device=loaded) == (
        Side.CLOUD, (Reason.DEVICE_MEMORY_SHORT,))  # under memory pressure even a loaded model yields
    assert where(_signals(metered=True), HARD) == (Side.DEVICE, (Reason.DIFFICULTY_HIGH, Reason.METERED_NETWORK))
    assert where(_signals(cloud=CloudLink(Link.UP, 5000.0, 0)), HARD) == (
        Side.DEVICE, (Reason.DIFFICULTY_HIGH, Reason.CLOUD_SLOW))
    assert where(_signals(cloud=CloudLink(Link.DOWN, None, 3)), HARD) == (Side.DEVICE, (Reason.CLOUD_DOWN,))
    assert where(device=DeviceHealth(True, False, False, False, None, False)) == (Side.CLOUD, (Reason.NO_BUNDLE,))
    assert where(cloud=CloudHealth(True, True), difficulty=HARD) == (Side.DEVICE, (Reason.CLOUD_BREAKER_OPEN,))


def test_difficulty_heuristic_orders_requests():
    short = heuristic_score([Message("user", "Hi there")], 16)
    code = heuristic_score([Message("user", "Fix this:\n```python\ndef f(x):\n    return x +\n```")], 512)
    math = heuristic_score([Message("user", "Solve 48213 * 99172 - 381 = ? and prove it")], 256)
    assert 0 <= short < 0.5 < min(code, math) <= 1


def test_breaker_opens_after_failures_lets_one_trial_through_and_closes():
    now = [0.0]
    breaker = CircuitBreaker(failures=2, reset_s=10, clock=lambda: now[0])
    breaker.failure()
    assert breaker.state is BreakerState.CLOSED and breaker.allow()
    breaker.failure()
    assert breaker.state is BreakerState.OPEN and not breaker.allow() and breaker.blocks
    now[0] = 10.0
    assert breaker.state is BreakerState.HALF_OPEN and not breaker.blocks
    assert breaker.allow() and not breaker.allow()  # one trial only
    breaker.failure()
    assert breaker.state is BreakerState.OPEN  # the trial failed: open for another reset_s
    now[0] = 20.0
    assert breaker.allow()
    breaker.success()
    assert breaker.state is BreakerState.CLOSED and breaker.allow()


def test_backoff_grows_is_capped_and_jittered():
    rng = random.Random(7)
    delays = [[backoff_delay(n, base_s=0.1, cap_s=1.0, rng=rng) for _ in range(200)] for n in range(6)]
    assert all(0 <= d <= min(1.0, 0.1 * 2**n) for n, row in enumerate(delays) for d in row)
    assert max(delays[5]) > 0.9 and len(set(delays[0])) > 150

"""The one backoff of the cloud's client side: capped exponential steps, ``jitter`` the random share of each."""

from __future__ import annotations

import random

import pytest

from cloud_service.backoff import backoff_delay
from cloud_service.gateway.retry import INITIAL_RETRY_DELAY_S, MAX_RETRY_DELAY_S, retry_delay


def test_steps_double_from_the_first_retry_up_to_the_cap():
    steps = [backoff_delay(n, base_s=0.1, cap_s=1.0, jitter=0.0) for n in range(6)]
    assert steps == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0])


@pytest.mark.parametrize("jitter", [1.0, 0.5, 0.25])
def test_jitter_is_the_share_of_the_step_drawn_at_random(jitter):
    rng = random.Random(0)
    delays = [backoff_delay(2, base_s=0.1, cap_s=10.0, jitter=jitter, rng=rng) for _ in range(2000)]
    assert all((1 - jitter) * 0.4 <= d <= 0.4 for d in delays)
    assert min(delays) < (1 - jitter) * 0.4 + 0.01 and max(delays) > 0.39  # the whole range is used


def test_full_jitter_draws_uniform_from_zero_to_the_step():
    """jitter=1.0 is uniform(0, min(cap, base x 2^n)): the same draw, from the same rng, as ``uniform`` itself."""
    ours, theirs = random.Random(7), random.Random(7)
    for retry in range(8):
        assert backoff_delay(retry, base_s=0.05, cap_s=2.0, rng=ours) == theirs.uniform(0.0, min(2.0, 0.05 * 2**retry))


def test_the_gateway_waits_at_least_half_of_each_step():
    rng = random.Random(1)
    for retry in range(6):
        step = min(MAX_RETRY_DELAY_S, INITIAL_RETRY_DELAY_S * 2**retry)
        assert step / 2 <= retry_delay(retry, rng) <= step


@pytest.mark.parametrize(("retry", "jitter"), [(-1, 1.0), (0, 1.5), (0, -0.1)])
def test_nonsense_is_refused(retry, jitter):
    with pytest.raises(ValueError):
        backoff_delay(retry, base_s=0.1, cap_s=1.0, jitter=jitter)

"""Capped exponential backoff with jitter, for every retry loop on the cloud's client side.

Retry ``n`` (0 = the first retry) waits a random time in ``[(1 - jitter) x step, step]`` with
``step = min(cap_s, base_s x 2^n)``: ``jitter`` is the fraction of the step drawn at random. 1.0 is "full
jitter" (uniform in [0, step]: callers that retry in step spread out the most); 0.5 keeps at least half the
step (the gateway, whose retries go to another replica and should not come back at once); 0.0 waits the step.
"""

from __future__ import annotations

import random

BACKOFF_MULTIPLIER = 2.0


def backoff_delay(retry: int, *, base_s: float, cap_s: float, jitter: float = 1.0,
                  rng: random.Random | None = None) -> float:
    """Seconds to wait before retry number ``retry`` (0 = the first retry); see the module docstring."""
    if retry < 0:
        raise ValueError(f"retry counts from 0 (the first retry), got {retry}")
    if not 0.0 <= jitter <= 1.0:
        raise ValueError(f"jitter is a fraction of the step in [0, 1], got {jitter}")
    step = min(cap_s, base_s * BACKOFF_MULTIPLIER**retry)
    return (rng or random).uniform((1.0 - jitter) * step, step)


__all__ = ["BACKOFF_MULTIPLIER", "backoff_delay"]

"""Exponential backoff with full jitter, capped: attempt n waits uniform(0, min(cap, base x 2^n))."""

from __future__ import annotations

import random

BACKOFF_MULTIPLIER = 2.0


def backoff_delay(attempt: int, base_s: float, cap_s: float, rng: random.Random | None = None) -> float:
    """Seconds to wait before retry number ``attempt`` (0 = the first retry)."""
    ceiling = min(cap_s, base_s * BACKOFF_MULTIPLIER**attempt)
    return (rng or random).uniform(0.0, ceiling)

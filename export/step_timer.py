"""Wall time per named step of a pipeline, passed on to the caller's progress callback."""

from __future__ import annotations

import time
from collections.abc import Callable


class StepTimer:
    """Call ``step(name)`` as each step starts; ``finish()`` returns seconds per step, in order."""

    def __init__(self, on_step: Callable[[str], None] = lambda step: None) -> None:
        self._on_step = on_step
        self._seconds: dict[str, float] = {}
        self._current: str | None = None
        self._started = 0.0

    def step(self, name: str) -> None:
        self._close()
        self._current, self._started = name, time.perf_counter()
        self._on_step(name)

    def _close(self) -> None:
        if self._current is not None:
            self._seconds[self._current] = self._seconds.get(self._current, 0.0) + time.perf_counter() - self._started
            self._current = None

    def finish(self) -> dict[str, float]:
        self._close()
        return dict(self._seconds)

"""Stop sequences over a text stream: text that could still begin a stop string is held back, and the
match itself (and anything after it) is never released."""

from __future__ import annotations

from collections.abc import Sequence


class StopMatcher:
    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = tuple(stops)
        self._longest = max((len(s) for s in self.stops), default=0)
        self._pending = ""

    def feed(self, text: str) -> tuple[str, bool]:
        """(text safe to release, whether a stop string matched). After a match, stop feeding."""
        if not self.stops:
            return text, False
        pending = self._pending + text
        hits = [i for i in (pending.find(s) for s in self.stops) if i >= 0]
        if hits:
            self._pending = ""
            return pending[: min(hits)], True
        hold = self._held_suffix(pending)
        self._pending = pending[len(pending) - hold :] if hold else ""
        return pending[: len(pending) - hold], False

    def flush(self) -> str:
        """Release what was held back (the stream ended without a match)."""
        pending, self._pending = self._pending, ""
        return pending

    def _held_suffix(self, text: str) -> int:
        """Length of the longest suffix of ``text`` that is a proper prefix of some stop string."""
        for length in range(min(len(text), self._longest - 1), 0, -1):
            tail = text[-length:]
            if any(stop.startswith(tail) for stop in self.stops):
                return length
        return 0

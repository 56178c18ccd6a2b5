"""Why one side could not answer, or stopped answering mid-stream, typed by what the orchestrator does.

    SideFailure             the side failed; ``retryable`` says whether trying it again may work
    └── LinkFailure         the cloud could not be reached or did not answer in time: the link monitor
                            hears of it (a refusal or an engine error says nothing about the link)
"""

from __future__ import annotations

from sdk.reasons import Reason, Side


class SideFailure(Exception):
    def __init__(self, side: Side, reason: Reason, detail: str, *, retryable: bool, code: str = "",
                 retry_after_s: float | None = None) -> None:
        super().__init__(f"{side}: {detail}")
        self.side = side
        self.reason = reason
        self.detail = detail
        self.retryable = retryable
        """Trying the same side again may work (a timeout, a busy engine, UNAVAILABLE)."""
        self.code = code
        """The error's short name (a gRPC status, "HTTP_<status>" or an edge-runtime error class), for the route
        and metrics."""
        self.retry_after_s = retry_after_s
        """How long the side asked to be left alone before a retry (an HTTP 429's retry-after); None: no ask."""


class LinkFailure(SideFailure):
    """The cloud was unreachable, or its first token or its deadline passed."""

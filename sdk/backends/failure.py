"""SideFailure: one side could not answer, or stopped answering mid-stream."""

from __future__ import annotations

from sdk.reasons import Reason, Side


class SideFailure(Exception):
    def __init__(self, side: Side, reason: Reason, detail: str, *, retryable: bool, code: str = "") -> None:
        super().__init__(f"{side}: {detail}")
        self.side = side
        self.reason = reason
        self.detail = detail
        self.retryable = retryable
        """Trying the same side again may work (a timeout, a busy engine, UNAVAILABLE)."""
        self.code = code
        """The error's short name (a gRPC status or an edge-runtime error class), for the route and metrics."""

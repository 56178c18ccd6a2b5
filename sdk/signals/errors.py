"""Errors of the signals package, in the SDK's tree (``sdk.errors``: every one is a TandemError).

    SignalError (ValueError)            an injected reading or a setting is invalid; ``field`` names which: fix it
    SignalsClosedError (ClosedError)    the hub or link monitor was closed; create a new one

Providers that fail while the hub refreshes raise nothing to the caller: the reading becomes unknown and
the failure is logged (``tandem.signals``).
"""

from __future__ import annotations

from sdk.errors import ClosedError, TandemError


class SignalError(TandemError, ValueError):
    """An injected reading or a monitor setting is out of range or of the wrong type."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


class SignalsClosedError(ClosedError):
    """``start()`` on a hub or link monitor that was already closed."""

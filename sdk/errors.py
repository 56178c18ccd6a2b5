"""Errors of the SDK (``sdk.signals`` included), split by what the caller can do about them.

    TandemError                             base of every SDK error
    ├── PolicyError (ValueError)            a policy file or value is invalid; ``field`` names it: fix it
    ├── RequestError (ValueError)           a request is invalid (empty messages, unknown role, absurd
    │                                       max_tokens...): fix the call
    ├── SignalError (ValueError)            an injected reading or a signal setting is invalid; ``field`` names
    │                                       it (sdk.signals.errors): fix it
    ├── NoRouteError                        neither the device nor the cloud could answer; ``reasons`` has each
    │                                       side's: retry later, or change the policy
    └── ClosedError (RuntimeError)          the object was closed: create a new one
        ├── ClientClosedError               the client
        └── SignalsClosedError              a signal hub or link monitor (sdk.signals.errors)

Failures of one side are not raised to the caller while the other side can still answer: they become
fallbacks recorded in the response's route.
"""

from __future__ import annotations

from collections.abc import Mapping


class TandemError(Exception):
    pass


class PolicyError(TandemError, ValueError):
    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


class RequestError(TandemError, ValueError):
    pass


class NoRouteError(TandemError):
    """Neither side could give an answer. ``reasons`` maps "device" and "cloud" to why not; ``codes`` maps each
    side that was tried to its last attempt's failure code (``PromptTooLongError``, ``UNAVAILABLE``,
    ``BREAKER_OPEN``...: the route's attempt codes), so a caller can tell a request no side can take from an
    outage without the route."""

    def __init__(self, reasons: Mapping[str, str], codes: Mapping[str, str] | None = None) -> None:
        self.reasons = dict(reasons)
        self.codes = dict(codes or {})
        listed = "; ".join(f"{side}: {why}" for side, why in self.reasons.items())
        super().__init__(f"no side could answer ({listed})")


class ClosedError(TandemError, RuntimeError):
    """Used after close()."""


class ClientClosedError(ClosedError):
    def __init__(self) -> None:
        super().__init__("the client is closed; create a new HybridClient")

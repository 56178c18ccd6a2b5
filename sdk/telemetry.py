"""Per-request records and counters, with no prompt or answer text in either.

    client = HybridClient(policy, on_record=lambda record: log.info("tandem %s", record.as_dict()))
    client.telemetry.counters()            # {"requests": {("device", "difficulty_low"): 12, ...}, ...}
    registry.register(client.telemetry.prometheus_collector())    # needs prometheus_client

A record is delivered to the callback after the request ends (successfully or not); a callback that raises
is logged and ignored, never breaking the caller's request.
"""

from __future__ import annotations

import collections
import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

from sdk.route import Route

log = logging.getLogger("tandem.sdk")


@dataclass(frozen=True)
class RequestRecord:
    request_id: str
    mode: str
    ok: bool
    side: str | None
    """Where the answer finished; None when no side answered."""
    model: str
    version: str
    reasons: tuple[str, ...]
    switches: tuple[str, ...]
    """Each switch as "kind:from->to:reason", e.g. "failover:cloud->device:stream_broken"."""
    ttft_s: float | None
    total_s: float
    completion_tokens: int
    tokens_per_s: float | None
    difficulty: float
    error: str = ""
    """The error class when no side answered."""

    @classmethod
    def of(cls, request_id: str, mode: str, route: Route | None, error: BaseException | None) -> RequestRecord:
        if route is None:
            return cls(request_id, mode, False, None, "", "", (), (), None, 0.0, 0, None, 0.0,
                       type(error).__name__ if error else "")
        return cls(
            request_id, mode, error is None, str(route.side) if route.attempts else None, route.model, route.version,
            tuple(str(r) for r in route.reasons),
            tuple(f"{s.kind}:{s.from_side}->{s.to_side}:{s.reason}" for s in route.switches),
            route.timings.ttft_s, route.timings.total_s, route.tokens, route.timings.tokens_per_s,
            route.difficulty.score, type(error).__name__ if error else "",
        )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Telemetry:
    def __init__(self, on_record: Callable[[RequestRecord], None] | None = None) -> None:
        self.on_record = on_record
        self._lock = threading.Lock()
        self._requests: collections.Counter[tuple[str, str]] = collections.Counter()
        self._switches: collections.Counter[tuple[str, str, str, str]] = collections.Counter()
        self._failures: collections.Counter[str] = collections.Counter()

    def record(self, record: RequestRecord) -> None:
        with self._lock:
            if record.ok and record.side is not None:
                for reason in record.reasons or ("",):
                    self._requests[(record.side, reason)] += 1
            else:
                self._failures[record.error or "unknown"] += 1
            for switch in record.switches:
                kind, sides, reason = switch.split(":")
                self._switches[(kind, *sides.split("->"), reason)] += 1
        if self.on_record is not None:
            try:
                self.on_record(record)
            except Exception:
                log.exception("the on_record callback failed; the request itself was not affected")

    def counters(self) -> dict[str, dict[tuple[str, ...], int]]:
        """requests by (side, reason), switches by (kind, from, to, reason), failed requests by error."""
        with self._lock:
            return {
                "requests": dict(self._requests),
                "switches": dict(self._switches),
                "failures": {(k,): v for k, v in self._failures.items()},
            }

    def prometheus_collector(self) -> Any:
        """A prometheus_client collector of the counters (register it in your registry)."""
        from prometheus_client.core import CounterMetricFamily

        telemetry = self

        class _Collector:
            def collect(self) -> Iterator[Any]:
                counters = telemetry.counters()
                requests = CounterMetricFamily("tandem_sdk_requests", "Answered requests by side and reason",
                                               labels=["side", "reason"])
                for (side, reason), value in counters["requests"].items():
                    requests.add_metric([side, reason], value)
                switches = CounterMetricFamily(
                    "tandem_sdk_switches", "Fallbacks, failovers, retries and escalations",
                    labels=["kind", "from_side", "to_side", "reason"])
                for labels, value in counters["switches"].items():
                    switches.add_metric(list(labels), value)
                failures = CounterMetricFamily("tandem_sdk_failed_requests", "Requests no side could answer",
                                               labels=["error"])
                for (error,), value in counters["failures"].items():
                    failures.add_metric([error], value)
                yield from (requests, switches, failures)

        return _Collector()

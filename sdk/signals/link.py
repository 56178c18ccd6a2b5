"""The cloud link monitor: checks the endpoint's ``grpc.health.v1`` service on an interval, on its own thread.

    monitor = LinkMonitor("cloud.example.com:443", tls=ClientTls(ca=Path("ca.pem")), api_key=key)
    monitor.start()
    monitor.link                  # CloudLink(state=Link.UP, rtt_ms=38.2, consecutive_failures=0)
    monitor.report_failure("UNAVAILABLE")   # a real request failed: counts now, and checks again at once
    monitor.close()

A check succeeds when ``Check(service)`` answers SERVING within ``timeout_s``; its round trip feeds the EWMA
and hysteresis of ``link_state``. It uses grpc's *sync* API on a daemon thread, so it works whether or not
the app runs an event loop. Nothing touches the network before the first check: the channel is created
then (``start()`` or ``probe_now()``), and importing this module or building a monitor opens no socket, so a
``local_only`` policy that builds none never connects. TLS files are read when the monitor is built, so a
missing certificate fails at once (``SignalError`` naming it).
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any

from sdk.signals.errors import SignalError, SignalsClosedError
from sdk.signals.link_state import (
    DEFAULT_DOWN_AFTER_FAILURES,
    DEFAULT_RTT_EWMA_ALPHA,
    DEFAULT_UP_AFTER_SUCCESSES,
    LinkTracker,
)
from sdk.signals.log import log
from sdk.signals.types import CloudLink

if TYPE_CHECKING:
    import grpc

    from cloud_service.channel import ClientTls

DEFAULT_PROBE_INTERVAL_S = 5.0
DEFAULT_PROBE_TIMEOUT_S = 1.0
"""A health check is tiny: an endpoint that needs longer than this is too slow to route to anyway."""
MIN_WAKE_SPACING_S = 0.25
"""Checks woken by ``report_failure`` start at least this long after the previous check (or one interval,
when that is shorter), so a burst of failing requests does not turn into a burst of checks."""
MIN_RECONNECT_BACKOFF_MS = 100
"""gRPC's reconnect backoff, capped at one probe interval (its default climbs to 120 s), so a recovered
endpoint is seen within about one interval."""
CLOSE_JOIN_TIMEOUT_S = 2.0
FAILURE_REPORTED = "reported"
"""``last_error`` of a failure the app reported without a reason."""

LinkListener = Callable[[CloudLink], None]


def _check_seconds(field: str, value: object) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value) or value <= 0:
        raise SignalError(field, f"must be a number of seconds > 0, not {value!r}")
    return float(value)


class LinkMonitor:
    """Health-checks one cloud endpoint and keeps a ``CloudLink`` (``link``) with hysteresis and smoothed RTT.

    ``tls`` is a ``cloud_service.client.ClientTls`` (server CA, and for mutual TLS the client's cert and key);
    None dials in plaintext. ``api_key`` is sent as ``authorization: Bearer <key>``, as ``CloudClient`` does
    (replicas let health checks through without one; a gateway in front may not). ``service`` "" asks about
    the whole server; name ``tandem.v1.Inference`` to follow a replica's readiness (NOT_SERVING while it drains).
    """

    def __init__(self, target: str, *, service: str = "", api_key: str | None = None, tls: ClientTls | None = None,
                 interval_s: float = DEFAULT_PROBE_INTERVAL_S, timeout_s: float = DEFAULT_PROBE_TIMEOUT_S,
                 down_after: int = DEFAULT_DOWN_AFTER_FAILURES, up_after: int = DEFAULT_UP_AFTER_SUCCESSES,
                 rtt_alpha: float = DEFAULT_RTT_EWMA_ALPHA) -> None:
        if not isinstance(target, str) or not target.strip() or any(c.isspace() for c in target):
            raise SignalError("target", f"must be a gRPC target such as 'host:port', not {target!r}")
        if not isinstance(service, str):
            raise SignalError("service", f"must be a health service name ('' = the whole server), not {service!r}")
        self.target = target
        self.service = service
        self.interval_s = _check_seconds("interval_s", interval_s)
        self.timeout_s = _check_seconds("timeout_s", timeout_s)
        self._tracker = LinkTracker(down_after=down_after, up_after=up_after, rtt_alpha=rtt_alpha)
        from cloud_service.channel import bearer_metadata
        from cloud_service.errors import TlsFileError

        self._metadata = bearer_metadata(api_key)
        self._tls = tls
        try:
            self._credentials = tls.credentials() if tls is not None else None
        except TlsFileError as exc:
            raise SignalError(exc.field, f"cannot read {exc.path}: {exc.reason}; pass the PEM file's path") from exc
        self._channel: grpc.Channel | None = None
        self._check: Any = None
        self._channel_lock = threading.Lock()
        self._listeners: list[LinkListener] = []
        self._wake = threading.Event()
        self._closed = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_probe_at = -math.inf

    # -- reading -------------------------------------------------------------------------------------------

    @property
    def link(self) -> CloudLink:
        """The latest ``CloudLink`` (an attribute read; never blocks)."""
        return self._tracker.snapshot

    @property
    def connected(self) -> bool:
        """Whether the channel exists yet (it is created by the first check)."""
        return self._channel is not None

    def add_listener(self, listener: LinkListener) -> None:
        """Call ``listener(link)`` after every check and report (on the thread that made it). Under concurrent
        updates the argument may be one step stale; read ``monitor.link`` for the latest."""
        self._listeners.append(listener)

    def remove_listener(self, listener: LinkListener) -> None:
        with contextlib.suppress(ValueError):
            self._listeners.remove(listener)

    # -- what requests observed ----------------------------------------------------------------------------

    def report_failure(self, reason: str = FAILURE_REPORTED) -> CloudLink:
        """A real request to the endpoint failed: count it as a failed check, and check again soon (the check
        confirms it or clears it, so one failed request alone does not take an UP link DOWN)."""
        link = self._publish(self._tracker.record_failure(reason))
        self._wake.set()
        return link

    def report_success(self, rtt_ms: float | None = None) -> CloudLink:
        """A real request succeeded; ``rtt_ms`` (optional) feeds the smoothed round trip."""
        return self._publish(self._tracker.record_success(rtt_ms))

    # -- checking ------------------------------------------------------------------------------------------

    def probe_now(self) -> CloudLink:
        """Run one health check on the calling thread (bounded by ``timeout_s``); the resulting link."""
        outcome = self._probe()
        if outcome is None:  # closed meanwhile: the result means nothing
            return self.link
        ok, rtt_ms, reason = outcome
        return self._publish(self._tracker.record_success(rtt_ms) if ok else self._tracker.record_failure(reason))

    def start(self) -> LinkMonitor:
        """Start checking every ``interval_s`` on a daemon thread (the first check runs at once)."""
        if self._closed.is_set():
            raise SignalsClosedError("this link monitor was closed; create a new LinkMonitor")
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"tandem-link-monitor:{self.target}", daemon=True)
            self._thread.start()
        return self

    def close(self) -> None:
        """Stop checking and close the channel (ending a check in flight); idempotent."""
        self._closed.set()
        self._wake.set()
        with self._channel_lock:
            channel, self._channel, self._check = self._channel, None, None
        if channel is not None:
            channel.close()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(CLOSE_JOIN_TIMEOUT_S)

    def __enter__(self) -> LinkMonitor:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    # -- internals -----------------------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._closed.is_set():
            try:
                self.probe_now()
            except Exception:  # never let the monitor die: the link would freeze at its last state
                log.exception("link check of %s failed unexpectedly", self.target)
            woken = self._wake.wait(self.interval_s)
            self._wake.clear()
            if woken and not self._closed.is_set():
                spacing = min(self.interval_s, MIN_WAKE_SPACING_S) - (time.monotonic() - self._last_probe_at)
                if spacing > 0:
                    self._closed.wait(spacing)

    def _connect(self) -> Any:
        """The health ``Check`` callable, creating the channel on first use; None once closed."""
        with self._channel_lock:
            if self._closed.is_set():
                return None
            if self._check is None:
                from grpc_health.v1 import health_pb2_grpc

                from cloud_service.channel import open_sync_channel

                backoff_ms = max(MIN_RECONNECT_BACKOFF_MS, int(self.interval_s * 1000))
                options: list[tuple[str, Any]] = [
                    ("grpc.initial_reconnect_backoff_ms", MIN_RECONNECT_BACKOFF_MS),
                    ("grpc.min_reconnect_backoff_ms", MIN_RECONNECT_BACKOFF_MS),
                    ("grpc.max_reconnect_backoff_ms", backoff_ms),
                ]
                self._channel = open_sync_channel(self.target, self._tls, options=options,
                                                  credentials=self._credentials)
                self._check = health_pb2_grpc.HealthStub(self._channel).Check
            return self._check

    def _probe(self) -> tuple[bool, float | None, str] | None:
        """One check: (served, round trip in ms, why not); None when the monitor closed meanwhile (whatever the
        check raised then: a closed channel or client fails the call that was under way)."""
        check = self._connect()
        if check is None:
            return None
        self._last_probe_at = time.monotonic()
        started = time.perf_counter()
        try:
            why = self._ask(check)
        except Exception as exc:
            if self._closed.is_set():
                return None
            why = self._failure(exc)
            return False, None, why
        rtt_ms = (time.perf_counter() - started) * 1000
        if self._closed.is_set():
            return None
        return (False, None, why) if why else (True, rtt_ms, "")

    def _ask(self, check: Any) -> str:
        """Run one check with what ``_connect`` gave: "" when served, else why not (the serving status)."""
        from grpc_health.v1 import health_pb2

        response = check(health_pb2.HealthCheckRequest(service=self.service), timeout=self.timeout_s,
                         metadata=self._metadata)
        if response.status != health_pb2.HealthCheckResponse.SERVING:
            return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
        return ""

    def _failure(self, exc: Exception) -> str:
        """Why a check that raised ``exc`` failed (its status code); anything but a failed call is raised."""
        import grpc

        if not isinstance(exc, grpc.RpcError):
            raise exc
        code = exc.code() if isinstance(exc, grpc.Call) else None
        return code.name if code is not None else type(exc).__name__

    def _publish(self, link: CloudLink) -> CloudLink:
        for listener in list(self._listeners):
            try:
                listener(link)
            except Exception:
                log.exception("a cloud link listener failed")
        return link

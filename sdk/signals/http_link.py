"""The cloud link monitor for an OpenAI-compatible server: ``GET {base_url}/models`` on an interval.

    monitor = HttpLinkMonitor("http://127.0.0.1:8080/v1", api_key=key)
    monitor.start()
    monitor.link                  # CloudLink(state=Link.UP, rtt_ms=3.1, consecutive_failures=0)

A ``LinkMonitor`` (same thread, hysteresis, smoothed RTT, ``report_failure`` / ``report_success``, listeners)
whose check is an HTTP GET instead of ``grpc.health.v1``: ``/models`` is the one route every OpenAI-compatible
server has (vLLM, llama.cpp's servers, Tandem's endpoint, hosted APIs), it is cheap, and it passes the same
authentication as a completion, so a refused key reads as a failed check (``HTTP_401``) as it would fail every
request. A check succeeds on any 2xx within ``timeout_s``. The HTTP client (sync httpx, on the monitor's
thread) is created by the first check: building a monitor opens no socket.
"""

from __future__ import annotations

import ssl
from typing import TYPE_CHECKING, Any

from sdk.signals.link import DEFAULT_PROBE_INTERVAL_S, DEFAULT_PROBE_TIMEOUT_S, LinkMonitor
from sdk.signals.link_state import DEFAULT_DOWN_AFTER_FAILURES, DEFAULT_RTT_EWMA_ALPHA, DEFAULT_UP_AFTER_SUCCESSES

if TYPE_CHECKING:
    import httpx

MODELS_PATH = "models"


class HttpLinkMonitor(LinkMonitor):
    """Checks an OpenAI-compatible API root (``base_url``, e.g. "http://127.0.0.1:8080/v1") by listing its
    models. ``api_key`` goes out as ``authorization: Bearer <key>``; ``verify`` is httpx's (True: the system's
    CAs, or an ``ssl.SSLContext`` with a private CA and a client certificate)."""

    def __init__(self, base_url: str, *, api_key: str | None = None, verify: ssl.SSLContext | bool = True,
                 interval_s: float = DEFAULT_PROBE_INTERVAL_S, timeout_s: float = DEFAULT_PROBE_TIMEOUT_S,
                 down_after: int = DEFAULT_DOWN_AFTER_FAILURES, up_after: int = DEFAULT_UP_AFTER_SUCCESSES,
                 rtt_alpha: float = DEFAULT_RTT_EWMA_ALPHA) -> None:
        super().__init__(base_url, interval_s=interval_s, timeout_s=timeout_s, down_after=down_after,
                         up_after=up_after, rtt_alpha=rtt_alpha)
        self.base_url = base_url.rstrip("/")
        self._headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
        self._verify = verify

    def _connect(self) -> Any:
        """The GET of the models list, creating the HTTP client on first use; None once closed."""
        with self._channel_lock:
            if self._closed.is_set():
                return None
            if self._check is None:
                import httpx

                # LinkMonitor.close() closes whatever ``_channel`` holds: here the HTTP client.
                client: httpx.Client = httpx.Client(base_url=self.base_url + "/", headers=self._headers,
                                                    verify=self._verify, timeout=self.timeout_s)
                self._channel = client  # type: ignore[assignment]
                self._check = client.get
            return self._check

    def _ask(self, check: Any) -> str:
        """One GET of the models list: "" on a 2xx, else ``HTTP_<status>``."""
        response: httpx.Response = check(MODELS_PATH)
        return "" if response.is_success else f"HTTP_{response.status_code}"

    def _failure(self, exc: Exception) -> str:
        """A transport failure by its type (``ConnectError``, ``ReadTimeout``...); anything else is raised."""
        import httpx

        if not isinstance(exc, httpx.HTTPError):
            raise exc
        return type(exc).__name__

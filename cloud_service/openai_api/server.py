"""The OpenAI-compatible HTTP server of a front door: uvicorn serving ``OpenAIApp`` in the gRPC server's event
loop, its calls going to the server's own gRPC port over loopback.

    http = HttpFrontDoor(grpc_target="127.0.0.1:<hop port>", limits=..., draining=lambda: admission.draining)
    port = await http.start(host, port, tls)     # HTTPS with the front door's certificate when tls is set
    ...
    await http.stop()

uvicorn would install its own SIGTERM/SIGINT handlers while it serves; the front door's server keeps them
(SIGTERM drains gRPC and HTTP alike), so this server does not capture signals.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import Callable, Iterator

import grpc
import uvicorn

from cloud_service.front_door.config import Limits, TlsConfig
from cloud_service.openai_api.app import OpenAIApp

START_TIMEOUT_S = 10.0
HOP_OPTIONS = [("grpc.max_receive_message_length", 64 << 20), ("grpc.max_send_message_length", 64 << 20)]
"""The loopback hop carries what the front door itself bounds (limits.max_message_bytes)."""


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:  # the front door's own handlers stay in charge
        yield


class HttpFrontDoor:
    def __init__(self, grpc_target: str, *, limits: Limits, draining: Callable[[], bool]) -> None:
        self.channel = grpc.aio.insecure_channel(grpc_target, options=HOP_OPTIONS)
        self.openai = OpenAIApp(self.channel, max_body_bytes=2 * limits.max_message_bytes, draining=draining)
        self._server: _Server | None = None
        self._task: asyncio.Task[None] | None = None
        self.port = 0

    async def start(self, host: str, port: int, tls: TlsConfig | None = None) -> int:
        """Bind ``host:port`` (0: any free port) and serve; returns the bound port."""
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        self.port = sock.getsockname()[1]
        options: dict[str, object] = {}
        if tls is not None:
            options = {"ssl_certfile": str(tls.cert), "ssl_keyfile": str(tls.key)}
            if tls.client_ca is not None:
                options |= {"ssl_ca_certs": str(tls.client_ca), "ssl_cert_reqs": ssl.CERT_REQUIRED}
        config = uvicorn.Config(self.openai.app, log_level="warning", access_log=False, lifespan="off",
                                timeout_graceful_shutdown=1, **options)  # type: ignore[arg-type]
        self._server = _Server(config)
        self._task = asyncio.get_running_loop().create_task(self._server.serve(sockets=[sock]))
        async with asyncio.timeout(START_TIMEOUT_S):
            while not self._server.started:
                if self._task.done():
                    self._task.result()  # raises what stopped it
                    raise RuntimeError("the HTTP server stopped before it started")
                await asyncio.sleep(0.01)
        return self.port

    async def stop(self) -> None:
        """Stop serving (open streams get uvicorn's graceful second) and close the loopback channel."""
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.channel.close()


__all__ = ["HttpFrontDoor"]

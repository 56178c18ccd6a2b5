"""The replica server: engines from the config behind the front door (``cloud_service.front_door``: the
Inference and ModelDistribution services, health and reflection, auth, metrics, optional (m)TLS, graceful
drain).

    server = ReplicaServer(config)            # or ReplicaServer(config, models=[ServedModel(...)]) in tests
    port = await server.start()
    ...
    await server.drain()                      # readiness NOT_SERVING, refuse new calls, let streams finish
    await server.stop()

``serve(config)`` runs one until SIGTERM or SIGINT, drains, and returns (the CLI then exits 0).
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Sequence

from cloud_service.config import ModelConfig, ServerConfig
from cloud_service.front_door.listener import DISTRIBUTION_SERVICE, INFERENCE_SERVICE, Listener
from cloud_service.metrics import ServerMetrics
from cloud_service.servicer import InferenceServicer, ServedEngine, ServedModel

log = logging.getLogger("tandem.replica")


def build_engine(model: ModelConfig) -> ServedEngine:
    """The engine a [[models]] entry asks for."""
    if model.engine == "vllm":
        from cloud_service.engines.vllm import VllmEngine, VllmEngineOptions

        return VllmEngine(model.path, name=model.name, version=model.version,  # type: ignore[return-value]
                          options=VllmEngineOptions(**model.engine_options))
    if model.engine == "llamacpp":
        from cloud_service.engines.llamacpp import LlamaCppEngine, LlamaCppEngineOptions

        return LlamaCppEngine(model.path, name=model.name, version=model.version,
                              options=LlamaCppEngineOptions(**model.engine_options))
    if model.engine == "simulator":
        from cloud_service.engines.simulator import SimulatorEngine, SimulatorOptions

        return SimulatorEngine(name=model.name, version=model.version,
                               options=SimulatorOptions.from_table(model.engine_options))
    from cloud_service.engines.cpu import CpuEngine, CpuEngineOptions

    return CpuEngine(model.path, name=model.name, version=model.version,
                     options=CpuEngineOptions(**model.engine_options))


class ReplicaServer:
    def __init__(self, config: ServerConfig, models: Sequence[ServedModel] | None = None) -> None:
        self.config = config
        self.models = list(models) if models is not None else [
            ServedModel(m.name, m.version, build_engine(m)) for m in config.models
        ]
        self.metrics = ServerMetrics()
        for model in self.models:
            engine = model.engine
            self.metrics.watch_engine(model.name, lambda e=engine: e.running, lambda e=engine: e.waiting)
        front_door = config.front_door
        self.inference = InferenceServicer(
            self.models, limits=front_door.limits, metrics=self.metrics, log_prompts=front_door.log_prompts
        )
        self.listener = Listener(front_door, self.inference, self.inference.admission,
                                 distribution=config.distribution, metrics=self.metrics, log=log)

    @property
    def port(self) -> int:
        """The bound port (0 before ``start``)."""
        return self.listener.port

    @property
    def metrics_port(self) -> int:
        return self.listener.metrics_port

    async def start(self) -> int:
        """Bind, start serving and mark every service SERVING; returns the bound port."""
        port = await self.listener.start()
        log.info("serving", extra={"fields": {
            "port": port, "metrics_port": self.metrics_port, "http_port": self.listener.http_port,
            "tls": self.config.front_door.tls is not None,
            "models": [f"{m.name}@{m.version}" for m in self.models],
        }})
        return port

    async def drain(self, timeout_s: float | None = None) -> bool:
        """Stop taking work (readiness NOT_SERVING, new Generate calls UNAVAILABLE) and wait for in-flight
        streams to finish, up to ``timeout_s``; True when all finished in time. Liveness stays SERVING."""
        return await self.listener.drain(timeout_s)

    async def stop(self, grace_s: float = 1.0, *, close_engines: bool = True) -> None:
        """Cancel what is left, stop the server and (unless told not to) close the engines."""
        await self.listener.stop(grace_s)
        if close_engines:
            for model in self.models:
                await asyncio.to_thread(model.engine.close)


async def serve(config: ServerConfig, *, models: Sequence[ServedModel] | None = None) -> None:
    """Run a replica until SIGTERM/SIGINT, then drain (up to drain_timeout_s) and stop."""
    server = ReplicaServer(config, models)
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("signal received: draining", extra={"fields": {"timeout_s": config.front_door.drain_timeout_s}})
    await server.drain()
    await server.stop()


__all__ = ["DISTRIBUTION_SERVICE", "INFERENCE_SERVICE", "ReplicaServer", "build_engine", "serve"]

"""The device side: the local bundle behind a LocalEngine, verified and loaded only when first needed.

The bundle's manifest is read (unverified, a few kB) when the side is built and whenever the bundle changes,
for the routing decision's memory estimate. Verification (signature + every file's hash) and loading happen
on the first request that runs here, in worker threads. A bundle that fails verification or loading keeps
the device out of routing until the bundle changes (``reload``), with the error in the route.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from edge_runtime.errors import (
    BundleError,
    EdgeRuntimeError,
    EngineBusyError,
    InsufficientMemoryError,
    PromptTooLongError,
)
from edge_runtime.types import GenerationRequest, TokenEvent
from sdk.backends.failure import SideFailure
from sdk.backends.stream import SideStream
from sdk.decision import DeviceHealth
from sdk.policy import DeviceSettings
from sdk.reasons import Reason, Side

if TYPE_CHECKING:
    from edge_runtime.local_engine import LocalEngine
    from edge_runtime.router import DifficultyRouter

log = logging.getLogger(__name__)


class EdgeSide:
    side = Side.DEVICE

    def __init__(self, settings: DeviceSettings) -> None:
        self.settings = settings
        self._engine: LocalEngine | None = None
        self._load_lock: asyncio.Lock | None = None
        self._memory_need: int | None = None
        self._present = False
        self.failure: str | None = None
        """Why the bundle cannot be used (verification or load error); None while it can."""
        self.model = ""
        """The bundle's model name (from its manifest), then the loaded engine's."""
        self.version = ""
        self.vocabulary = ""
        """The loaded engine's vocabulary fingerprint ("" until loaded); each stream carries its own."""
        self.loads = 0
        """Engines built so far: a new one (after provisioning replaced the bundle) may carry another router."""
        self.refresh()

    # -- state the decision reads (no I/O) ----------------------------------------------------------------

    def refresh(self) -> None:
        """Re-read the bundle's manifest (after it appeared or changed on disk); clears a previous failure."""
        self._memory_need, self._present, self.failure = None, False, None
        bundle = self.settings.bundle
        if bundle is None:
            return
        try:
            from edge_runtime.bundle import Manifest
            from edge_runtime.memory import memory_needed

            manifest = Manifest.from_json((bundle / "manifest.json").read_bytes())
        except FileNotFoundError:
            return
        except (OSError, ValueError, EdgeRuntimeError) as exc:
            self._present, self.failure = True, f"the bundle's manifest is unreadable: {exc}"
            return
        self._present = True
        self.model = manifest.name
        context = min(self.settings.context_length or manifest.context_length, manifest.context_length)
        self._memory_need = memory_needed(manifest, context)

    @property
    def loaded(self) -> bool:
        """The bundle was verified and its engine built (the model itself may load on the first request)."""
        return self._engine is not None

    def health(self, breaker_open: bool) -> DeviceHealth:
        return DeviceHealth(
            configured=self.settings.configured, present=self._present, failed=self.failure is not None,
            loaded=self._engine is not None and self._engine.loaded, memory_need_bytes=self._memory_need,
            breaker_open=breaker_open,
        )

    def router(self) -> DifficultyRouter | None:
        """The bundle's calibrated router, when it carries one (read after verification)."""
        if self._engine is None or self.settings.bundle is None:
            return None
        try:
            from edge_runtime.router import RouterNotFoundError, load_router
        except ImportError:
            return None
        try:
            return load_router(self.settings.bundle, manifest=self._engine.manifest)
        except RouterNotFoundError:
            return None
        except (OSError, ValueError, EdgeRuntimeError) as exc:
            log.warning("the bundle's router is unusable (%s: %s); routing on the text heuristic instead",
                        type(exc).__name__, exc)
            return None

    # -- running ------------------------------------------------------------------------------------------

    async def engine(self) -> LocalEngine:
        if self._engine is not None:
            return self._engine
        if self._load_lock is None:
            self._load_lock = asyncio.Lock()
        async with self._load_lock:
            if self._engine is None:
                self._engine = await asyncio.to_thread(self._open)
                self.loads += 1
        return self._engine

    def _open(self) -> LocalEngine:
        from edge_runtime.bundle import load_public_key
        from edge_runtime.loading import EngineOptions, load_bundle

        settings = self.settings
        if settings.bundle is None or not self._present:
            raise SideFailure(self.side, Reason.NO_BUNDLE, "no device bundle on disk", retryable=False)
        try:
            keys = [load_public_key(path) for path in settings.trusted_keys]
            engine = load_bundle(settings.bundle, trusted_keys=keys, options=EngineOptions(
                context_length=settings.context_length, threads=settings.threads,
                allow_insufficient_memory=settings.allow_insufficient_memory))
        except InsufficientMemoryError as exc:
            raise SideFailure(self.side, Reason.DEVICE_MEMORY_SHORT, str(exc), retryable=False,
                              code=type(exc).__name__) from exc
        except (BundleError, EdgeRuntimeError, OSError, ValueError) as exc:
            self.failure = f"{type(exc).__name__}: {exc}"
            raise SideFailure(self.side, Reason.DEVICE_UNUSABLE, self.failure, retryable=False,
                              code=type(exc).__name__) from exc
        self.model, self.version, self.vocabulary = engine.info.model, engine.info.version, engine.info.vocabulary
        return engine

    def generate(self, request: GenerationRequest) -> SideStream:
        """The device's answer, from the engine loaded when it starts (the stream keeps that engine's model)."""
        return SideStream(self.side, self.model, self.version, lambda stream: self._events(request, stream),
                          self.vocabulary)

    async def _events(self, request: GenerationRequest, serving: SideStream) -> AsyncIterator[TokenEvent]:
        engine = await self.engine()
        info = engine.info
        serving.serving(info.model, info.version, info.vocabulary)
        try:
            async for event in engine.generate(request):
                yield event
        except EngineBusyError as exc:
            raise SideFailure(self.side, Reason.DEVICE_FAILED, str(exc), retryable=True,
                              code="EngineBusyError") from exc
        except PromptTooLongError as exc:
            raise SideFailure(self.side, Reason.DEVICE_FAILED, str(exc), retryable=False,
                              code="PromptTooLongError") from exc
        except InsufficientMemoryError as exc:
            raise SideFailure(self.side, Reason.DEVICE_MEMORY_SHORT, str(exc), retryable=False,
                              code=type(exc).__name__) from exc
        except EdgeRuntimeError as exc:
            if isinstance(exc, BundleError):
                self.failure = f"{type(exc).__name__}: {exc}"
            raise SideFailure(self.side, Reason.DEVICE_FAILED, f"{type(exc).__name__}: {exc}",
                              retryable=not isinstance(exc, BundleError), code=type(exc).__name__) from exc

    async def reload(self) -> None:
        """Drop the engine and re-read the bundle (it was replaced on disk, e.g. by provisioning)."""
        engine, self._engine = self._engine, None
        if engine is not None:
            await asyncio.to_thread(engine.close)
        self.refresh()

    def close(self) -> None:
        engine, self._engine = self._engine, None
        if engine is not None:
            engine.close()

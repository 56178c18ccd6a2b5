"""LocalEngine: one loaded model on the device, one generation at a time, callers served first come first served.

A single worker thread owns the Decoder (native libraries release the GIL while they compute, so the
caller's event loop stays responsive); where a core is free for it, a second one turns each token into its
event while the worker runs the next decode step (``run_generation``'s overlap). ``generate`` queues a job
and streams its events back through the caller's loop; leaving the stream early, task cancellation or
``abort(id)`` cancel the job, which stops within one decode step (or is dropped from the queue before it
starts). The model is loaded lazily on the first request (or by ``load()``) and can be unloaded and reloaded;
``close()`` frees it for good.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor

from edge_runtime.bundle import Manifest
from edge_runtime.channel import END, RequestChannel, abort_request
from edge_runtime.chat import ChatTemplate
from edge_runtime.decoder import Decoder
from edge_runtime.engine import EngineInfo
from edge_runtime.errors import EdgeRuntimeError, EngineBusyError, EngineClosedError, GenerationError
from edge_runtime.generation import run_generation
from edge_runtime.types import FinishReason, GenerationRequest, TokenEvent

log = logging.getLogger(__name__)

DEFAULT_MAX_WAITING = 32
"""Requests that may wait behind the running one before new ones get EngineBusyError."""

class LocalEngine:
    """An Engine over a Decoder; build one with ``edge_runtime.load_bundle``."""

    def __init__(
        self,
        info: EngineInfo,
        open_decoder: Callable[[], Decoder],
        template: ChatTemplate | None,
        *,
        manifest: Manifest | None = None,
        max_waiting: int = DEFAULT_MAX_WAITING,
        overlap_events: bool = False,
    ) -> None:
        self._info = info
        self.manifest = manifest
        """The verified manifest of the bundle this engine runs."""
        self._open_decoder = open_decoder
        self.template = template
        self.max_waiting = max_waiting
        self._decoder: Decoder | None = None
        self._decoder_lock = threading.Lock()
        self._jobs: collections.deque[RequestChannel] = collections.deque()
        self._wake = threading.Condition()
        self._running: RequestChannel | None = None
        self._closed = False
        self._worker: threading.Thread | None = None
        self._overlap = overlap_events
        """Make each token's event on a second thread during the next decode step (EngineOptions.overlap_events)."""
        self._events: ThreadPoolExecutor | None = None

    @property
    def info(self) -> EngineInfo:
        return self._info

    @property
    def loaded(self) -> bool:
        return self._decoder is not None

    @property
    def waiting(self) -> int:
        return len(self._jobs)

    @property
    def running(self) -> int:
        return int(self._running is not None)

    # -- loading ------------------------------------------------------------------------------------------

    def load(self) -> None:
        """Load the model now (otherwise the first request does). Blocks while a generation runs."""
        self._check_open()
        with self._decoder_lock:
            self._ensure_decoder()

    def unload(self) -> None:
        """Free the model's native memory; the next request loads it again. Waits for a running generation."""
        with self._decoder_lock:
            decoder, self._decoder = self._decoder, None
            if decoder is not None:
                decoder.close()

    def close(self) -> None:
        """Cancel queued and running requests, stop the worker and free the model. Idempotent."""
        with self._wake:
            if self._closed:
                return
            self._closed = True
            waiting, self._jobs = list(self._jobs), collections.deque()
            if self._running is not None:
                self._running.cancelled.set()
            self._wake.notify_all()
        for job in waiting:
            job.send(EngineClosedError(f"{self._info.model}: the engine was closed before this request ran"))
            job.send(END)
        if self._worker is not None and self._worker is not threading.current_thread():
            self._worker.join()
        if self._events is not None:
            self._events.shutdown(wait=self._worker is not threading.current_thread())
        self.unload()

    def __enter__(self) -> LocalEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise EngineClosedError(f"{self._info.model}: the engine is closed; load the bundle again")

    def _ensure_decoder(self) -> Decoder:
        if self._decoder is None:
            self._decoder = self._open_decoder()
        return self._decoder

    # -- the Engine protocol ---------------------------------------------------------------------------------

    async def generate(self, request: GenerationRequest) -> AsyncIterator[TokenEvent]:
        stream = self._submit(request, asyncio.get_running_loop()).stream(self._left)
        try:
            async for event in stream:
                yield event
        finally:
            await stream.aclose()

    async def _left(self, job: RequestChannel) -> None:
        """The caller left: drop the job from the queue, or wait (one decode step) until it stopped and the
        model is free, so that whoever comes next starts at once."""
        with self._wake:
            if job in self._jobs:
                self._jobs.remove(job)
                return
        await job.wait_until_end()

    async def abort(self, request_id: str) -> bool:
        return abort_request(self._wake, request_id, self._jobs, lambda: [self._running] if self._running else [])

    def _submit(self, request: GenerationRequest, loop: asyncio.AbstractEventLoop) -> RequestChannel:
        with self._wake:
            self._check_open()
            if len(self._jobs) >= self.max_waiting:
                raise EngineBusyError(
                    f"{self._info.model}: {len(self._jobs)} requests are already waiting (max_waiting="
                    f"{self.max_waiting}); retry later or send this one to the cloud"
                )
            job = RequestChannel(request, loop)
            self._jobs.append(job)
            if self._worker is None:
                name = f"tandem-edge-{self._info.model}"
                if self._overlap:
                    self._events = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"{name}-events")
                self._worker = threading.Thread(target=self._serve, name=name, daemon=True)
                self._worker.start()
            self._wake.notify()
        return job

    # -- the worker thread -------------------------------------------------------------------------------

    def _serve(self) -> None:
        while True:
            with self._wake:
                while not self._jobs and not self._closed:
                    self._wake.wait()
                if self._closed:
                    return
                job = self._running = self._jobs.popleft()
            try:
                if not job.cancelled.is_set():
                    self._run(job)
            finally:
                with self._wake:
                    self._running = None
                job.send(END)

    def _run(self, job: RequestChannel) -> None:
        try:
            with self._decoder_lock:
                decoder = self._ensure_decoder()
                usage = run_generation(decoder, self.template, job.request, job.send, job.cancelled.is_set,
                                       self._events)
            if job.aborted:
                job.send(TokenEvent("", None, None, FinishReason.ABORT, usage))
            elif self._closed and job.cancelled.is_set():
                job.send(EngineClosedError(f"{self._info.model}: the engine was closed during this request"))
        except EdgeRuntimeError as exc:
            job.send(exc)
        except Exception as exc:  # a native library's own error: report it, keep serving
            log.exception("generation failed for request %s", job.request.request_id)
            job.send(GenerationError(f"{self._info.backend} failed during generation: {exc}"))

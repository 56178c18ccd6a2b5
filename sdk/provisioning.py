"""Model provisioning: fetch the device bundle from the cloud's ModelDistribution service in the background.

When the policy names ``device.provision_bundle``, the client starts this task with its first request (or
``await client.start()``). It asks the cloud for the bundle's latest signed manifest; if the folder
``device.bundle`` does not hold exactly that bundle, it downloads it (resumable: an interrupted transfer
continues where it stopped, next attempt or next app start), verifies every hash and the signature against
the policy's trusted keys, installs it atomically and switches the device side to it. Until then requests
are served by the cloud (the decision sees no bundle). Failures are retried with capped backoff until the
client closes; ``status`` tells where it stands.
"""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from cloud_service.backoff import backoff_delay
from sdk.backends.cloud import CloudSide
from sdk.backends.edge import EdgeSide

log = logging.getLogger("tandem.sdk")

RETRY_BASE_S = 1.0
RETRY_CAP_S = 60.0
STALL_TIMEOUT_S = 60.0
"""Longest wait for any one chunk before the attempt counts as failed (and is resumed later)."""


class ProvisionState(StrEnum):
    IDLE = "idle"
    DOWNLOADING = "downloading"
    READY = "ready"
    """The bundle on disk is the cloud's latest and the device side uses it."""
    RETRYING = "retrying"


@dataclass
class ProvisionStatus:
    state: ProvisionState = ProvisionState.IDLE
    bytes_done: int = 0
    bytes_total: int = 0
    attempts: int = 0
    resumed_bytes: int = 0
    """Bytes already on disk when the last attempt started (an earlier, interrupted transfer)."""
    last_error: str = ""
    error: Exception | None = None
    """The last attempt's exception, typed (e.g. ``edge_runtime.errors.DiskFullError`` with ``needed_bytes`` and
    ``free_bytes`` when the device has no room for the bundle); None once an attempt succeeds."""


class Provisioner:
    def __init__(self, bundle: str, edge: EdgeSide, cloud: CloudSide, rng: random.Random | None = None) -> None:
        self.bundle = bundle
        self.edge = edge
        self.cloud = cloud
        self.status = ProvisionStatus()
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self._rng = rng or random.Random()
        self._first_progress = True

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="tandem-provisioning")

    async def wait_ready(self, timeout: float | None = None) -> bool:
        """Wait until the bundle is installed and in use; False on timeout."""
        try:
            await asyncio.wait_for(self._ready.wait(), timeout)
        except TimeoutError:
            return False
        return True

    def _progress(self, done: int, total: int) -> None:
        if self._first_progress:
            self._first_progress, self.status.resumed_bytes = False, done
        self.status.bytes_done, self.status.bytes_total = done, total

    async def _run(self) -> None:
        while True:
            self.status.attempts += 1
            try:
                await self._attempt()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.status.state, self.status.last_error = ProvisionState.RETRYING, f"{type(exc).__name__}: {exc}"
                self.status.error = exc
                log.warning("bundle %r: provisioning failed (%s); retrying", self.bundle, self.status.last_error)
                await asyncio.sleep(backoff_delay(self.status.attempts - 1, base_s=RETRY_BASE_S, cap_s=RETRY_CAP_S,
                                                  rng=self._rng))
                continue
            self.status.state, self.status.error = ProvisionState.READY, None
            self._ready.set()
            return

    async def _attempt(self) -> None:
        from cloud_service.distribution.download import download_bundle
        from edge_runtime.bundle import load_public_key

        dest = self.edge.settings.bundle
        assert dest is not None
        keys = [load_public_key(path) for path in self.edge.settings.trusted_keys]
        before = await asyncio.to_thread(_read_manifest, dest)
        client = self.cloud.client()
        self.status.state, self._first_progress = ProvisionState.DOWNLOADING, True
        await download_bundle(client.channel, self.bundle, dest, keys, metadata=client.metadata,
                              timeout=STALL_TIMEOUT_S, on_progress=self._progress)
        if await asyncio.to_thread(_read_manifest, dest) != before or not self.edge.health(False).present:
            log.info("bundle %r installed in %s", self.bundle, dest)
            await self.edge.reload()

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


def _read_manifest(folder: Path) -> bytes | None:
    try:
        return (folder / "manifest.json").read_bytes()
    except OSError:
        return None

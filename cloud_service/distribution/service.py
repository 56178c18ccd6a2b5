"""The ModelDistribution gRPC service (protos/tandem/v1/distribution.proto) over a BundleCatalog.

    server = grpc.aio.server()
    add_to_server(server, BundleCatalog(config.bundles, trusted_keys))

GetManifest returns manifest.json and manifest.sig byte for byte plus the manifest's file list; DownloadBundle
streams one listed file from an offset in CHUNK_BYTES chunks, each carrying the sha256 of the file so far.
Files are read and hashed in worker threads, so a large download never blocks the event loop.

Status codes: an unknown bundle, version or file -> NOT_FOUND; an empty name or a path that is not a plain
relative path ("../x", "/x", "a\\b") -> INVALID_ARGUMENT; offset past the end -> OUT_OF_RANGE; a file on the
server's disk that no longer matches the manifest it was loaded with -> DATA_LOSS. Messages name the field.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from pathlib import Path
from typing import IO, TYPE_CHECKING

import grpc

from cloud_service.distribution.catalog import BundleCatalog, CatalogEntry
from cloud_service.distribution.errors import UnknownBundleError
from cloud_service.wire.v1 import distribution_pb2, distribution_pb2_grpc
from edge_runtime.bundle import MANIFEST_FILE, SIGNATURE_FILE, FileEntry

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from cloud_service.config import DistributionConfig

log = logging.getLogger(__name__)

CHUNK_BYTES = 256 * 1024
"""Payload of one BundleChunk (well under gRPC's default 4 MiB message limit)."""

SERVICE_NAME = distribution_pb2.DESCRIPTOR.services_by_name["ModelDistribution"].full_name
""""tandem.v1.ModelDistribution", for health checks and reflection."""

_HASH_BLOCK = 1 << 20


class _ChangedOnDisk(Exception):
    """The served file no longer has the size or content the manifest gives."""


class DistributionServicer(distribution_pb2_grpc.ModelDistributionServicer):
    def __init__(self, catalog: BundleCatalog) -> None:
        self.catalog = catalog

    async def GetManifest(
        self, request: distribution_pb2.ManifestRequest, context: grpc.aio.ServicerContext
    ) -> distribution_pb2.ManifestResponse:
        entry = await _entry(self.catalog, request.bundle, request.version, context)
        files = [
            distribution_pb2.BundleFile(path=path, size=file.size, sha256=file.sha256)
            for path, file in sorted(entry.manifest.files.items())
        ]
        return distribution_pb2.ManifestResponse(
            bundle=entry.bundle, version=entry.version, manifest=entry.manifest_bytes, signature=entry.signature,
            files=files,
        )

    async def DownloadBundle(
        self, request: distribution_pb2.DownloadRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[distribution_pb2.BundleChunk]:
        entry = await _entry(self.catalog, request.bundle, request.version, context)
        file = await _file(entry, request.path, context)
        if request.offset > file.size:
            await context.abort(
                grpc.StatusCode.OUT_OF_RANGE,
                f"field 'offset' ({request.offset}) is past the end of {request.path!r} ({file.size} bytes)",
            )
        path = entry.folder / request.path
        try:
            handle, digest = await asyncio.to_thread(_open_at, path, request.offset, file.size)
        except (OSError, _ChangedOnDisk) as exc:
            await _data_loss(context, entry, request.path, exc)
            return  # unreachable: abort raises
        try:
            position = request.offset
            while True:
                size = min(CHUNK_BYTES, file.size - position)
                data = await asyncio.to_thread(_read_hashed, handle, digest, size) if size else b""
                if len(data) != size:
                    shorter = _ChangedOnDisk("it is shorter than its manifest says")
                    await _data_loss(context, entry, request.path, shorter)
                position += size
                last = position == file.size
                running = digest.hexdigest()
                if last and running != file.sha256:
                    await _data_loss(context, entry, request.path, _ChangedOnDisk("its sha256 no longer matches"))
                yield distribution_pb2.BundleChunk(
                    offset=position - size, data=data, running_sha256=running, last=last
                )
                if last:
                    return
        finally:
            handle.close()


def add_to_server(server: grpc.aio.Server, catalog: BundleCatalog) -> DistributionServicer:
    """Register a DistributionServicer over ``catalog`` on ``server``; return it."""
    servicer = DistributionServicer(catalog)
    distribution_pb2_grpc.add_ModelDistributionServicer_to_server(servicer, server)
    return servicer


def serve_catalog(server: grpc.aio.Server, config: DistributionConfig) -> DistributionServicer:
    """Verify a [distribution] config's bundles against its trusted keys and serve them on ``server``."""
    from edge_runtime.bundle import load_public_key

    keys = [load_public_key(path) for path in config.trusted_keys]
    return add_to_server(server, BundleCatalog(config.bundles, keys))


async def _entry(catalog: BundleCatalog, bundle: str, version: str, context: grpc.aio.ServicerContext) -> CatalogEntry:
    if not bundle:
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "field 'bundle' is empty; name the bundle to fetch")
    try:
        return catalog.get(bundle, version)
    except UnknownBundleError as exc:
        field = "version" if bundle in catalog else "bundle"
        await context.abort(grpc.StatusCode.NOT_FOUND, f"field {field!r}: {exc}")
        raise  # unreachable: abort raises


async def _file(entry: CatalogEntry, path: str, context: grpc.aio.ServicerContext) -> FileEntry:
    if not path:
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "field 'path' is empty; name a file of the manifest")
    parts = path.split("/")
    if path.startswith("/") or "\\" in path or "\0" in path or any(part in ("", ".", "..") for part in parts):
        await context.abort(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"field 'path' must be a '/'-separated path inside the bundle, as the manifest lists it; got {path!r}",
        )
    if path in (MANIFEST_FILE, SIGNATURE_FILE):
        await context.abort(
            grpc.StatusCode.NOT_FOUND,
            f"field 'path': {path} is not downloaded file by file; GetManifest returns it",
        )
    file = entry.manifest.files.get(path)
    if file is None:
        await context.abort(
            grpc.StatusCode.NOT_FOUND,
            f"field 'path': bundle {entry.bundle!r} version {entry.version} has no file {path!r}",
        )
    return file


async def _data_loss(context: grpc.aio.ServicerContext, entry: CatalogEntry, path: str, exc: Exception) -> None:
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    log.error("bundle %s version %s: %s in %s cannot be served: %s", entry.bundle, entry.version, path,
              entry.folder, reason)
    await context.abort(
        grpc.StatusCode.DATA_LOSS,
        f"the server's copy of {path!r} (bundle {entry.bundle!r} version {entry.version}) no longer matches its "
        f"signed manifest: {reason}",
    )


def _open_at(path: Path, offset: int, size: int) -> tuple[IO[bytes], hashlib._Hash]:
    """Open ``path`` positioned at ``offset`` with the sha256 of bytes [0, offset) already taken."""
    handle = path.open("rb")
    try:
        actual = os.fstat(handle.fileno()).st_size
        if actual != size:
            raise _ChangedOnDisk(f"it is {actual} bytes, the manifest says {size}")
        digest = hashlib.sha256()
        remaining = offset
        while remaining:
            block = handle.read(min(_HASH_BLOCK, remaining))
            if not block:
                raise _ChangedOnDisk("it is shorter than its manifest says")
            digest.update(block)
            remaining -= len(block)
    except BaseException:
        handle.close()
        raise
    return handle, digest


def _read_hashed(handle: IO[bytes], digest: hashlib._Hash, size: int) -> bytes:
    data = handle.read(size)
    digest.update(data)
    return data

"""download_bundle: fetch a signed bundle over ModelDistribution, resumably, and verify it before it appears.

    async with open_channel("models.example.com:443", ClientTls()) as channel:      # cloud_service.channel
        manifest = await download_bundle(channel, "assistant-q4", Path("bundles/assistant-q4"),
                                         [load_public_key("tandem.pub")], metadata=bearer_metadata(api_key))

Order of work:

1. GetManifest, then check the manifest's signature against ``trusted_keys`` before a single file is fetched
   (nothing is written to disk for an untrusted manifest).
2. If ``dest`` already holds exactly this manifest and verifies, return at once (nothing is downloaded).
3. Download every listed file into ``partial_folder(dest)`` (``dest.parent / ".<name>.partial"``), in order.
   A file already there whole with the right sha256 is skipped; a shorter one is resumed from its size. Every
   chunk is checked against the server's running sha256 before it is written, so the partial file always
   holds a prefix the server vouched for; a resumed file whose local prefix disagrees with the server is
   fetched again from byte 0. At the end each file must match the size and sha256 of the signed manifest.
4. Write manifest.json and manifest.sig, run ``verify_bundle`` on the partial folder, and rename it to
   ``dest``. An existing ``dest`` is renamed away first and deleted after the new one is in place.

A failed, cancelled or interrupted download never creates or changes ``dest``. It leaves the partial folder
behind on purpose: calling download_bundle again with the same ``dest`` resumes from it. A full disk is the
exception: the download fails at once when the missing bytes do not fit, and a disk that fills up during it
ends it with the partial folder deleted, giving the device its space back. (Delete it to free
the space instead; one download per ``dest`` at a time.) A file that fails its checks is deleted from the
partial folder, and the whole partial folder is deleted when the final verify_bundle fails. (Cancelling during
that last step, which runs in a worker thread, may still let the verified bundle land in ``dest``.)
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING

import grpc

from cloud_service.distribution.errors import (
    BundleUnavailableError,
    DownloadDeniedError,
    DownloadError,
    DownloadIntegrityError,
)
from cloud_service.wire.v1 import distribution_pb2, distribution_pb2_grpc
from edge_runtime.bundle import (
    MANIFEST_FILE,
    SIGNATURE_FILE,
    FileEntry,
    Manifest,
    file_sha256,
    verify_bundle,
    verify_signature,
)
from edge_runtime.errors import BundleError, DiskFullError, ManifestError
from edge_runtime.storage import require_space, storage_error

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

ProgressCallback = Callable[[int, int], None]

_UNAVAILABLE = {
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}
_DENIED = {grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED}
_HASH_BLOCK = 1 << 20


def partial_folder(dest: str | os.PathLike[str]) -> Path:
    """Where a download into ``dest`` is staged (and resumed from): ``dest.parent / ".<dest.name>.partial"``."""
    dest = Path(dest)
    return dest.parent / f".{dest.name}.partial"


async def download_bundle(
    channel: grpc.aio.Channel,
    bundle: str,
    dest: str | os.PathLike[str],
    trusted_keys: Iterable[Ed25519PublicKey],
    *,
    version: str = "",
    metadata: Sequence[tuple[str, str]] = (),
    timeout: float | None = 60.0,
    on_progress: ProgressCallback | None = None,
) -> Manifest:
    """Download ``bundle`` (its latest version, or ``version``) into the folder ``dest``; return its manifest.

    ``metadata`` goes with every call (e.g. ``cloud_service.channel.bearer_metadata(api_key)``). ``timeout`` is the
    deadline of GetManifest and the longest wait for any one chunk of a file (a stall, not the whole
    download, which may take as long as it takes); None waits forever. ``on_progress(bytes_done,
    bytes_total)`` is called once before downloading (counting what is already present) and after every
    chunk; the totals cover every file of the bundle but the manifest and its signature.

    Raises BundleUnavailableError (no such bundle or version, server unreachable or stalled),
    DownloadDeniedError (credentials refused), DownloadIntegrityError (bytes that do not match the signed
    manifest or the server's running hashes), DownloadError (any other gRPC failure), the edge runtime's
    StorageError family when ``dest`` cannot be written (DiskFullError with the bytes needed and free,
    ReadOnlyStorageError, StoragePermissionError, NotAFolderError), and its
    SignatureError / ManifestError / BundleIntegrityError unchanged when the manifest or the finished bundle
    does not verify.
    """
    keys = list(trusted_keys)
    dest = Path(dest)
    stub = distribution_pb2_grpc.ModelDistributionStub(channel)
    call_metadata = tuple(metadata) or None
    try:
        response = await stub.GetManifest(
            distribution_pb2.ManifestRequest(bundle=bundle, version=version), metadata=call_metadata,
            timeout=timeout,
        )
    except grpc.aio.AioRpcError as exc:
        raise _rpc_error(exc, f"bundle {bundle!r}: GetManifest failed") from exc
    # Trust first: nothing is downloaded or written for a manifest no trusted key signed.
    verify_signature(response.manifest, response.signature, keys)
    manifest = Manifest.from_json(response.manifest)
    if version and response.version != version:
        raise DownloadIntegrityError(
            f"bundle {bundle!r}: asked for version {version}, the server sent {response.version}"
        )
    for path in manifest.files:
        _check_path(path)
    progress = _Progress(sum(entry.size for entry in manifest.files.values()), on_progress)

    if await asyncio.to_thread(_up_to_date, dest, response.manifest, keys):
        progress.start(progress.total)
        return manifest

    partial = partial_folder(dest)
    what = f"bundle {bundle!r}"
    try:
        starts = await asyncio.to_thread(_prepare, partial, manifest)
        missing = sum(manifest.files[path].size - start for path, start in starts.items())
        # A known shortfall fails before a byte is fetched (the manifest and its signature included).
        require_space(dest, missing + len(response.manifest) + len(response.signature), what)
        progress.start(progress.total - missing)
        fetcher = _Fetcher(stub, bundle, response.version, partial, call_metadata, timeout, progress)
        for path, start in sorted(starts.items()):
            await fetcher.fetch(path, manifest.files[path], start)

        def finish() -> Manifest:
            _write_durably(partial / MANIFEST_FILE, response.manifest)
            _write_durably(partial / SIGNATURE_FILE, response.signature)
            try:
                verified = verify_bundle(partial, keys)
            except BundleError:
                shutil.rmtree(partial, ignore_errors=True)
                raise
            _install(partial, dest)
            return verified

        return await asyncio.to_thread(finish)
    except OSError as exc:
        fault = storage_error(exc, dest, needed_bytes=progress.total, what=what)
        if fault is None:
            raise
        if isinstance(fault, DiskFullError):
            # The disk is full: the space this download took is worth more to the device than a resume.
            await asyncio.to_thread(shutil.rmtree, partial, True)
        if fault is exc:
            raise
        raise fault from exc


class _Progress:
    def __init__(self, total: int, callback: ProgressCallback | None) -> None:
        self.total, self.done, self._callback = total, 0, callback

    def start(self, done: int) -> None:
        self.done = done
        self._report()

    def add(self, count: int) -> None:
        self.done += count
        self._report()

    def _report(self) -> None:
        if self._callback is not None:
            self._callback(self.done, self.total)


class _PrefixMismatch(Exception):
    """The resumed file's local prefix is not what the server has."""


class _Fetcher:
    def __init__(
        self, stub: distribution_pb2_grpc.ModelDistributionStub, bundle: str, version: str, partial: Path,
        metadata: tuple[tuple[str, str], ...] | None, timeout: float | None, progress: _Progress,
    ) -> None:
        self.stub, self.bundle, self.version, self.partial = stub, bundle, version, partial
        self.metadata, self.timeout, self.progress = metadata, timeout, progress

    async def fetch(self, path: str, entry: FileEntry, offset: int) -> None:
        try:
            await self._stream(path, entry, offset)
        except _PrefixMismatch:
            # The bytes kept from an earlier attempt are not the server's: start this file over.
            self.progress.done -= offset
            await self._stream(path, entry, 0)

    async def _stream(self, path: str, entry: FileEntry, offset: int) -> None:
        target = self.partial / path
        handle, digest = await asyncio.to_thread(_open_for_append, target, offset)
        call = self.stub.DownloadBundle(
            distribution_pb2.DownloadRequest(bundle=self.bundle, version=self.version, path=path, offset=offset),
            metadata=self.metadata,
        )
        position = offset
        try:
            while True:
                chunk = await self._next(call, path)
                if chunk is grpc.aio.EOF:
                    raise DownloadIntegrityError(
                        f"{path}: the server ended the stream at byte {position} of {entry.size} without a last chunk"
                    )
                end = position + len(chunk.data)
                if chunk.offset != position or end > entry.size:
                    raise DownloadIntegrityError(
                        f"{path}: the server sent bytes [{chunk.offset}, {chunk.offset + len(chunk.data)}) where "
                        f"[{position}, ...) of a {entry.size}-byte file was expected"
                    )
                candidate = digest.copy()
                candidate.update(chunk.data)
                if candidate.hexdigest() != chunk.running_sha256:
                    if position == offset and offset > 0:
                        raise _PrefixMismatch
                    raise DownloadIntegrityError(
                        f"{path}: bytes [0, {end}) do not match the server's running sha256: corrupted in transit"
                    )
                await asyncio.to_thread(handle.write, chunk.data)
                digest, position = candidate, end
                self.progress.add(len(chunk.data))
                if chunk.last:
                    break
            if position != entry.size or digest.hexdigest() != entry.sha256:
                raise DownloadIntegrityError(
                    f"{path}: the {position} bytes received do not match the size ({entry.size}) and sha256 in the "
                    "signed manifest: the server's copy is altered"
                )
            await asyncio.to_thread(_sync, handle)
        except DownloadIntegrityError:
            handle.close()
            await asyncio.to_thread(target.unlink, missing_ok=True)
            raise
        finally:
            call.cancel()
            handle.close()

    async def _next(self, call: grpc.aio.UnaryStreamCall, path: str) -> distribution_pb2.BundleChunk:
        try:
            return await asyncio.wait_for(call.read(), self.timeout)
        except TimeoutError:
            call.cancel()
            raise BundleUnavailableError(
                f"bundle {self.bundle!r}: no data for {path} in {self.timeout} s; the server stalled",
                code=grpc.StatusCode.DEADLINE_EXCEEDED,
            ) from None
        except grpc.aio.AioRpcError as exc:
            raise _rpc_error(exc, f"bundle {self.bundle!r}: downloading {path} failed") from exc


def _rpc_error(exc: grpc.aio.AioRpcError, what: str) -> DownloadError:
    code = exc.code()
    message = f"{what}: {code.name}: {exc.details() or 'no details'}"
    if code in _UNAVAILABLE:
        return BundleUnavailableError(message, code=code)
    if code in _DENIED:
        return DownloadDeniedError(message, code=code)
    if code == grpc.StatusCode.DATA_LOSS:
        return DownloadIntegrityError(message, code=code)
    return DownloadError(message, code=code)


def _check_path(path: str) -> None:
    """Refuse manifest paths that would land outside the bundle folder or on the manifest itself."""
    parts = path.split("/")
    if (
        path.startswith("/") or "\\" in path or "\0" in path or any(part in ("", ".", "..") for part in parts)
        or path in (MANIFEST_FILE, SIGNATURE_FILE)
    ):
        raise ManifestError(f"{MANIFEST_FILE} lists the file {path!r}, which is not a plain path inside the bundle")


def _up_to_date(dest: Path, manifest_bytes: bytes, keys: list[Ed25519PublicKey]) -> bool:
    try:
        if (dest / MANIFEST_FILE).read_bytes() != manifest_bytes:
            return False
        verify_bundle(dest, keys)
    except (OSError, BundleError):
        return False
    return True


def _prepare(partial: Path, manifest: Manifest) -> dict[str, int]:
    """Make the partial folder hold only files of this manifest; return the files to fetch and their starts.

    A file already there, whole and with the right sha256, is left out; a shorter one starts at its size.
    """
    if partial.is_symlink() or (partial.exists() and not partial.is_dir()):
        partial.unlink()
    partial.mkdir(parents=True, exist_ok=True)
    for found in sorted(partial.rglob("*"), reverse=True):
        relative = found.relative_to(partial).as_posix()
        if found.is_symlink() or (found.is_file() and relative not in manifest.files):
            found.unlink()
        elif found.is_dir() and relative in manifest.files:
            shutil.rmtree(found)
    starts: dict[str, int] = {}
    for path, entry in manifest.files.items():
        local = partial / path
        size = local.stat().st_size if local.is_file() else 0
        if size == entry.size and local.is_file() and file_sha256(local) == entry.sha256:
            continue
        if 0 < size < entry.size:
            starts[path] = size
        else:
            local.unlink(missing_ok=True)
            starts[path] = 0
    return starts


def _open_for_append(target: Path, offset: int) -> tuple[IO[bytes], hashlib._Hash]:
    """Open ``target`` for writing at ``offset``, with the sha256 of its first ``offset`` bytes taken."""
    target.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    if not offset:
        return target.open("wb"), digest
    handle = target.open("r+b")
    try:
        remaining = offset
        while remaining:
            block = handle.read(min(_HASH_BLOCK, remaining))
            if not block:
                raise _PrefixMismatch
            digest.update(block)
            remaining -= len(block)
        handle.truncate(offset)
    except BaseException:
        handle.close()
        raise
    return handle, digest


def _sync(handle: IO[bytes]) -> None:
    handle.flush()
    os.fsync(handle.fileno())


def _write_durably(path: Path, data: bytes) -> None:
    with path.open("wb") as handle:
        handle.write(data)
        _sync(handle)


def _install(partial: Path, dest: Path) -> None:
    """Rename the verified partial folder to ``dest``; an existing ``dest`` is moved away first, then deleted."""
    if not (dest.exists() or dest.is_symlink()):
        partial.rename(dest)
    else:
        trash = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".old", dir=dest.parent))
        dest.rename(trash / dest.name)
        try:
            partial.rename(dest)
        except BaseException:
            (trash / dest.name).rename(dest)
            trash.rmdir()
            raise
        shutil.rmtree(trash, ignore_errors=True)
    try:
        directory = os.open(dest.parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(directory)
    except OSError:
        pass
    finally:
        os.close(directory)

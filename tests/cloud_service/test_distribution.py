"""ModelDistribution over a real grpc.aio server on localhost: the catalog refuses bad bundles at startup, a
download verifies and matches the source byte for byte, resumes where it stopped, refetches a corrupt prefix,
and refuses tampered, untrusted, unknown or unreachable bundles with typed errors, leaving no dest behind."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import shutil
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cloud_service.distribution import (
    BundleUnavailableError,
    CatalogError,
    DownloadDeniedError,
    DownloadIntegrityError,
    UnknownBundleError,
    download_bundle,
    partial_folder,
    service,
)
from cloud_service.distribution.catalog import BundleCatalog, version_id
from cloud_service.distribution.service import DistributionServicer, add_to_server
from cloud_service.wire.v1 import distribution_pb2, distribution_pb2_grpc
from edge_runtime.bundle import MANIFEST_FILE, SIGNATURE_FILE, Manifest, bundle_files
from edge_runtime.errors import DiskFullError, ReadOnlyStorageError, SignatureError
from export.bundle_writer import seal_bundle
from tests.machine_faults import fill, read_only_folder, small_disk

# The signed toy bundles of the edge runtime's tests (built once per session).

NAME = "assistant"


@pytest.fixture(scope="module")
def source(bundles) -> Path:
    return bundles("llama", "gguf", "f32")


@pytest.fixture(scope="module")
def newer(source, signing_key, tmp_path_factory) -> Path:
    """A second version of the bundle: one more file and another tool_version, signed by the same key."""
    folder = tmp_path_factory.mktemp("newer") / "assistant-v2"
    shutil.copytree(source, folder)
    (folder / "NOTES.txt").write_text("version two\n")
    manifest = Manifest.from_json((folder / MANIFEST_FILE).read_bytes())
    seal_bundle(folder, dataclasses.replace(manifest, tool_version="v2"), signing_key)
    return folder


@pytest.fixture(scope="module")
def catalog(source, newer, trusted) -> BundleCatalog:
    return BundleCatalog({NAME: [source, newer], "solo": source}, trusted)


def _manifest(folder: Path) -> Manifest:
    return Manifest.from_json((folder / MANIFEST_FILE).read_bytes())


def _flip(path: Path, at: int) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0xFF
    path.write_bytes(bytes(data))


def _same_files(a: Path, b: Path) -> bool:
    names = bundle_files(a) | {MANIFEST_FILE, SIGNATURE_FILE}
    return names == bundle_files(b) | {MANIFEST_FILE, SIGNATURE_FILE} and all(
        (a / name).read_bytes() == (b / name).read_bytes() for name in names
    )


class Recording(DistributionServicer):
    """Records every DownloadBundle request and the bytes the server sent for it."""

    def __init__(self, catalog: BundleCatalog) -> None:
        super().__init__(catalog)
        self.requests: list[dict] = []

    async def DownloadBundle(self, request, context):
        record = {"path": request.path, "offset": request.offset, "sent": 0}
        self.requests.append(record)
        async for chunk in super().DownloadBundle(request, context):
            record["sent"] += len(chunk.data)
            yield chunk

    def sent(self) -> int:
        return sum(record["sent"] for record in self.requests)

    def offsets(self, path: str) -> list[int]:
        return [record["offset"] for record in self.requests if record["path"] == path]


@asynccontextmanager
async def serving(catalog: BundleCatalog, servicer: DistributionServicer | None = None) -> AsyncIterator:
    """(channel, servicer) of a real server on a free localhost port."""
    server = grpc.aio.server()
    if servicer is None:
        servicer = add_to_server(server, catalog)
    else:
        distribution_pb2_grpc.add_ModelDistributionServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield channel, servicer
    finally:
        await server.stop(None)


def _download(catalog, dest, keys, servicer=None, **options):
    """Run one download against a fresh server; return (manifest, servicer, progress reports)."""
    reports: list[tuple[int, int]] = []

    async def main():
        async with serving(catalog, servicer or Recording(catalog)) as (channel, used):
            manifest = await download_bundle(
                channel, options.pop("bundle", NAME), dest, keys, on_progress=lambda *r: reports.append(r), **options
            )
            return manifest, used

    manifest, used = asyncio.run(main())
    return manifest, used, reports


def test_the_catalog_keeps_versions_in_order_and_refuses_unknown_names(catalog, source, newer):
    old, new = version_id((source / MANIFEST_FILE).read_bytes()), version_id((newer / MANIFEST_FILE).read_bytes())
    assert new == hashlib.sha256((newer / MANIFEST_FILE).read_bytes()).hexdigest()[:16]
    assert catalog.versions(NAME) == (old, new)
    assert catalog.get(NAME).version == new == catalog.latest(NAME).version
    assert catalog.get(NAME, old).folder == source.absolute()
    assert catalog.get("solo").version == old
    with pytest.raises(UnknownBundleError, match="no bundle named 'nope'"):
        catalog.get("nope")
    with pytest.raises(UnknownBundleError, match="no version 'deadbeef'"):
        catalog.get(NAME, "deadbeef")


def test_a_bad_bundle_is_refused_at_startup_naming_its_folder(source, tmp_path, trusted):
    copy = tmp_path / "tampered"
    shutil.copytree(source, copy)
    _flip(copy / _manifest(copy).model_file, 5000)
    with pytest.raises(CatalogError, match=r"refusing .*tampered.*sha256"):
        BundleCatalog({NAME: [source, copy]}, trusted)
    with pytest.raises(CatalogError, match=r"refusing .*not among the trusted keys"):
        BundleCatalog({NAME: [source]}, [Ed25519PrivateKey.generate().public_key()])
    with pytest.raises(CatalogError, match="same version"):
        BundleCatalog({NAME: [source, source]}, trusted)


def test_get_manifest_returns_the_signed_bytes_and_the_file_list(catalog, source):
    async def main():
        async with serving(catalog) as (channel, _):
            stub = distribution_pb2_grpc.ModelDistributionStub(channel)
            request = distribution_pb2.ManifestRequest(bundle=NAME, version=catalog.versions(NAME)[0])
            return await stub.GetManifest(request)

    response = asyncio.run(main())
    assert response.bundle == NAME
    assert response.manifest == (source / MANIFEST_FILE).read_bytes()
    assert response.signature == (source / SIGNATURE_FILE).read_bytes()
    assert response.version == hashlib.sha256(response.manifest).hexdigest()[:16]
    files = {f.path: (f.size, f.sha256) for f in response.files}
    assert files == {path: (e.size, e.sha256) for path, e in _manifest(source).files.items()}
    assert MANIFEST_FILE not in files and SIGNATURE_FILE not in files


def test_a_full_download_verifies_and_equals_the_source(catalog, source, tmp_path, trusted):
    dest = tmp_path / "device" / "assistant"
    manifest, servicer, reports = _download(catalog, dest, trusted, version=catalog.versions(NAME)[0])
    assert manifest == _manifest(source)
    assert _same_files(source, dest)
    total = sum(entry.size for entry in manifest.files.values())
    assert reports[0] == (0, total) and reports[-1] == (total, total)
    assert servicer.sent() == total
    assert sorted(path.name for path in dest.parent.iterdir()) == ["assistant"]  # no partial or old folder left


def test_a_new_version_replaces_dest_and_an_up_to_date_dest_is_not_fetched_again(catalog, source, newer, tmp_path,
                                                                               trusted):
    dest = tmp_path / "assistant"
    _download(catalog, dest, trusted, version=catalog.versions(NAME)[0])
    manifest, _, _ = _download(catalog, dest, trusted)
    assert manifest.tool_version == "v2" and _same_files(newer, dest)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["assistant"]
    _, again, reports = _download(catalog, dest, trusted)
    assert again.requests == [] and reports[-1][0] == reports[-1][1]


def test_a_partial_file_is_resumed_from_its_size(catalog, source, tmp_path, trusted):
    dest, model = tmp_path / "assistant", _manifest(source).model_file
    partial = partial_folder(dest)
    partial.mkdir()
    half = (source / model).stat().st_size // 2
    (partial / model).write_bytes((source / model).read_bytes()[:half])
    shutil.copy(source / "tokenizer.json", partial / "tokenizer.json")  # complete: skipped
    (partial / "stale.bin").write_bytes(b"from an older download")  # not in the manifest: removed

    manifest, servicer, reports = _download(catalog, dest, trusted, bundle="solo")
    total = sum(entry.size for entry in manifest.files.values())
    present = half + manifest.files["tokenizer.json"].size
    assert reports[0] == (present, total)
    assert servicer.offsets(model) == [half] and servicer.offsets("tokenizer.json") == []
    assert servicer.sent() == total - present
    assert _same_files(source, dest) and not partial.exists()


def test_a_cancelled_download_leaves_no_dest_and_the_next_one_continues(catalog, source, tmp_path, trusted,
                                                                       monkeypatch):
    monkeypatch.setattr(service, "CHUNK_BYTES", 16 * 1024)
    dest, model = tmp_path / "assistant", _manifest(source).model_file

    async def interrupted():
        async with serving(catalog, Recording(catalog)) as (channel, _):
            far_enough = asyncio.Event()

            def progress(done: int, total: int) -> None:
                if done > total // 3:
                    far_enough.set()

            task = asyncio.create_task(download_bundle(channel, "solo", dest, trusted, on_progress=progress))
            await far_enough.wait()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

    asyncio.run(interrupted())
    assert not dest.exists() and (partial_folder(dest) / model).is_file()
    _, servicer, reports = _download(catalog, dest, trusted, bundle="solo")
    resumed_from, total = reports[0]
    assert resumed_from > total // 3
    assert servicer.sent() == total - resumed_from
    assert servicer.offsets(model)[0] > 0  # cancelled inside the model file: it continues from there
    assert _same_files(source, dest)


def test_a_whole_size_partial_file_with_a_wrong_byte_is_fetched_from_zero(catalog, source, tmp_path,
                                                                          trusted):
    dest, model = tmp_path / "assistant", _manifest(source).model_file
    partial = partial_folder(dest)
    partial.mkdir()
    shutil.copy(source / model, partial / model)
    _flip(partial / model, 100)
    _, servicer, _ = _download(catalog, dest, trusted, bundle="solo")
    assert servicer.offsets(model) == [0] and _same_files(source, dest)


def test_a_corrupt_partial_prefix_is_detected_and_the_file_fetched_again(catalog, source, tmp_path,
                                                                         trusted):
    dest, model = tmp_path / "assistant", _manifest(source).model_file
    partial = partial_folder(dest)
    partial.mkdir()
    half = (source / model).stat().st_size // 2
    (partial / model).write_bytes((source / model).read_bytes()[:half])
    _flip(partial / model, 100)
    _, servicer, _ = _download(catalog, dest, trusted, bundle="solo")
    assert servicer.offsets(model) == [half, 0]
    assert _same_files(source, dest)


def test_a_file_altered_on_the_server_fails_the_download_and_leaves_no_dest(source, tmp_path, trusted):
    served = tmp_path / "served"
    shutil.copytree(source, served)
    altered = BundleCatalog({NAME: served}, trusted)
    _flip(served / _manifest(served).model_file, 1234)  # after the catalog checked it
    dest = tmp_path / "assistant"
    with pytest.raises(DownloadIntegrityError, match="DATA_LOSS.*no longer matches its signed manifest"):
        _download(altered, dest, trusted)
    assert not dest.exists()
    assert not (partial_folder(dest) / _manifest(served).model_file).exists()


class Tampering(Recording):
    """A man in the middle: flips a byte of the second chunk; with ``rehash`` it also forges running_sha256."""

    def __init__(self, catalog: BundleCatalog, *, rehash: bool) -> None:
        super().__init__(catalog)
        self.rehash = rehash

    async def DownloadBundle(self, request, context):
        digest, index = hashlib.sha256(), 0
        async for chunk in super().DownloadBundle(request, context):
            data = bytearray(chunk.data)
            if index == 1 and data:
                data[0] ^= 0xFF
            digest.update(data)
            running = digest.hexdigest() if self.rehash else chunk.running_sha256
            yield distribution_pb2.BundleChunk(offset=chunk.offset, data=bytes(data), running_sha256=running,
                                               last=chunk.last)
            index += 1


@pytest.mark.parametrize(("rehash", "caught_by"), [(False, "running sha256"), (True, "signed manifest")])
def test_bytes_altered_in_transit_are_caught(catalog, source, tmp_path, trusted, monkeypatch, rehash,
                                             caught_by):
    monkeypatch.setattr(service, "CHUNK_BYTES", 64 * 1024)
    dest = tmp_path / "assistant"
    with pytest.raises(DownloadIntegrityError, match=caught_by):
        _download(catalog, dest, trusted, servicer=Tampering(catalog, rehash=rehash), bundle="solo")
    assert not dest.exists()
    assert not (partial_folder(dest) / _manifest(source).model_file).exists()


def test_an_untrusted_manifest_fails_before_any_file_is_fetched(catalog, tmp_path):
    servicer = Recording(catalog)
    dest = tmp_path / "assistant"
    with pytest.raises(SignatureError, match="not among the trusted keys"):
        _download(catalog, dest, [Ed25519PrivateKey.generate().public_key()], servicer=servicer)
    assert servicer.requests == []
    assert list(tmp_path.iterdir()) == []


def test_an_unknown_bundle_or_version_is_unavailable(catalog, tmp_path, trusted):
    with pytest.raises(BundleUnavailableError, match="NOT_FOUND.*no bundle named 'nope'") as caught:
        _download(catalog, tmp_path / "x", trusted, bundle="nope")
    assert caught.value.code == grpc.StatusCode.NOT_FOUND
    with pytest.raises(BundleUnavailableError, match="field 'version'"):
        _download(catalog, tmp_path / "x", trusted, version="0123456789abcdef")
    assert list(tmp_path.iterdir()) == []


def test_the_server_refuses_bad_offsets_and_paths_outside_the_manifest(catalog, source):
    model = _manifest(source).model_file
    size = (source / model).stat().st_size

    async def attempt(path: str, offset: int = 0):
        async with serving(catalog) as (channel, _):
            stub = distribution_pb2_grpc.ModelDistributionStub(channel)
            request = distribution_pb2.DownloadRequest(bundle="solo", path=path, offset=offset)
            try:
                return [chunk async for chunk in stub.DownloadBundle(request)]
            except grpc.aio.AioRpcError as exc:
                return exc.code(), exc.details()

    code, details = asyncio.run(attempt(model, size + 1))
    assert code == grpc.StatusCode.OUT_OF_RANGE and "offset" in details
    for path in ("../" + model, "../../etc/passwd", "/etc/passwd", "./" + model, "a/../" + model,
                 MANIFEST_FILE, SIGNATURE_FILE, "nope.bin", ""):
        code, details = asyncio.run(attempt(path))
        assert code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND), path
        assert "field 'path'" in details, path
    [chunk] = asyncio.run(attempt(model, size))  # nothing left: one empty last chunk, hash of the whole file
    assert (chunk.offset, chunk.data, chunk.last) == (size, b"", True)
    assert chunk.running_sha256 == _manifest(source).files[model].sha256


def test_the_running_hash_of_a_resumed_stream_covers_the_whole_prefix(catalog, source, monkeypatch):
    monkeypatch.setattr(service, "CHUNK_BYTES", 100_000)
    model = _manifest(source).model_file
    data = (source / model).read_bytes()

    async def main():
        async with serving(catalog) as (channel, _):
            stub = distribution_pb2_grpc.ModelDistributionStub(channel)
            request = distribution_pb2.DownloadRequest(bundle="solo", path=model, offset=1000)
            return [chunk async for chunk in stub.DownloadBundle(request)]

    chunks = asyncio.run(main())
    assert [c.offset for c in chunks] == list(range(1000, len(data), 100_000))
    assert [c.last for c in chunks] == [False] * (len(chunks) - 1) + [True]
    assert b"".join(c.data for c in chunks) == data[1000:]
    for chunk in chunks:
        assert chunk.running_sha256 == hashlib.sha256(data[: chunk.offset + len(chunk.data)]).hexdigest()


class NeedsKey(Recording):
    async def _check(self, context):
        if ("authorization", "Bearer secret") not in context.invocation_metadata():
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or unknown API key")

    async def GetManifest(self, request, context):
        await self._check(context)
        return await super().GetManifest(request, context)

    async def DownloadBundle(self, request, context):
        await self._check(context)
        async for chunk in super().DownloadBundle(request, context):
            yield chunk


def test_metadata_goes_with_every_call_and_a_refused_key_is_denied(catalog, source, tmp_path, trusted):
    dest = tmp_path / "assistant"
    with pytest.raises(DownloadDeniedError, match="UNAUTHENTICATED"):
        _download(catalog, dest, trusted, servicer=NeedsKey(catalog), bundle="solo")
    _, servicer, _ = _download(catalog, dest, trusted, servicer=NeedsKey(catalog), bundle="solo",
                               metadata=[("authorization", "Bearer secret")])
    assert servicer.requests and _same_files(source, dest)


def test_a_dead_server_is_unavailable_quickly(tmp_path, trusted):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again: nothing listens there

    async def main():
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            await download_bundle(channel, NAME, tmp_path / "assistant", trusted, timeout=2.0)

    started = time.monotonic()
    with pytest.raises(BundleUnavailableError, match="UNAVAILABLE|DEADLINE_EXCEEDED"):
        asyncio.run(main())
    assert time.monotonic() - started < 5
    assert list(tmp_path.iterdir()) == []


# Machine faults on the device, made for real (tests.machine_faults): nothing appears at dest, the space is given
# back, and the error says how much the bundle needs, how much is free and what to do.


def _bundle_bytes(source: Path) -> int:
    return sum(entry.size for entry in _manifest(source).files.values())


def test_a_disk_too_small_for_the_bundle_fails_before_a_byte_is_fetched(catalog, source, tmp_path, trusted):
    with small_disk(tmp_path / "device", _bundle_bytes(source) // 2) as disk:
        dest = disk / "bundles" / "assistant"
        with pytest.raises(DiskFullError) as caught:
            _download(catalog, dest, trusted, bundle="solo")
        message = str(caught.value)
        assert message.startswith(f"Not enough space to write {dest}: bundle 'solo' needs about")
        assert caught.value.needed_bytes > _bundle_bytes(source) > caught.value.free_bytes
        assert not dest.exists() and not partial_folder(dest).exists()


def test_a_disk_that_fills_up_during_the_download_ends_it_and_frees_the_partial_folder(catalog, source, tmp_path,
                                                                                        trusted, monkeypatch):
    monkeypatch.setattr(service, "CHUNK_BYTES", 16 * 1024)
    with small_disk(tmp_path / "device", 2 * _bundle_bytes(source)) as disk:
        dest, filled = disk / "assistant", []

        def progress(done: int, total: int) -> None:
            if done > total // 3 and not filled:  # another app takes the rest of the disk mid-download
                filled.append(done)
                fill(disk / "other-app")

        (disk / "other-app").mkdir()

        async def main() -> None:
            async with serving(catalog, Recording(catalog)) as (channel, _):
                await download_bundle(channel, "solo", dest, trusted, on_progress=progress)

        with pytest.raises(DiskFullError) as caught:
            asyncio.run(main())
        assert filled and str(caught.value).startswith(f"Not enough space to write {dest}: bundle 'solo' needs")
        assert "Free some space there" in str(caught.value)
        assert not dest.exists() and not partial_folder(dest).exists()


def test_a_read_only_device_folder_is_named(catalog, tmp_path, trusted):
    with read_only_folder(tmp_path / "ro") as folder, pytest.raises(ReadOnlyStorageError) as caught:
        _download(catalog, folder / "assistant", trusted, bundle="solo")
    assert f"{folder} is a read-only file system" in str(caught.value)

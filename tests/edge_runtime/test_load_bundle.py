"""load_bundle refuses what it must (tampered, unsigned, untrusted, unsupported, corrupt, too big for memory)
with typed errors, loads lazily, unloads and reloads, and closes for good."""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_runtime import (
    BundleIntegrityError,
    BundleNotFoundError,
    EngineClosedError,
    EngineOptions,
    GenerationRequest,
    InsufficientMemoryError,
    InvalidRequestError,
    ModelLoadError,
    PromptTooLongError,
    SamplingParams,
    SignatureError,
    SyncEngine,
    UnsupportedBundleError,
    collect,
    load_bundle,
)
from edge_runtime.bundle import MANIFEST_FILE, SIGNATURE_FILE, Manifest
from edge_runtime.memory import memory_needed, runtime_allowance
from export.bundle_writer import seal_bundle

FORMATS = [("gguf", "f32"), ("onnx", "fp32")]
REQUEST = GenerationRequest(prompt="Hello there", sampling=SamplingParams(temperature=0, max_tokens=4, ignore_eos=True))


@pytest.fixture(params=FORMATS, ids=lambda p: p[0])
def bundle(request, bundles) -> Path:
    return bundles("llama", *request.param)


def _copy(bundle: Path, tmp_path: Path) -> Path:
    copy = tmp_path / bundle.name
    shutil.copytree(bundle, copy)
    return copy


def _reseal(folder: Path, key, **changes) -> None:
    manifest = Manifest.from_json((folder / MANIFEST_FILE).read_bytes())
    seal_bundle(folder, dataclasses.replace(manifest, **changes), key)


def _complete(engine) -> str:
    return asyncio.run(collect(engine.generate(REQUEST))).text


def test_a_missing_bundle_or_a_plain_model_folder_is_not_found(tmp_path, trusted, tiny_llama):
    with pytest.raises(BundleNotFoundError, match="does not exist"):
        load_bundle(tmp_path / "nowhere", trusted_keys=trusted)
    with pytest.raises(BundleNotFoundError, match="no manifest.json"):
        load_bundle(tiny_llama, trusted_keys=trusted)


def test_an_altered_model_byte_is_caught_before_loading(bundle, tmp_path, trusted):
    copy = _copy(bundle, tmp_path)
    model = copy / Manifest.from_json((copy / MANIFEST_FILE).read_bytes()).model_file
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model.write_bytes(bytes(data))
    with pytest.raises(BundleIntegrityError, match="sha256"):
        load_bundle(copy, trusted_keys=trusted)


def test_a_truncated_model_file_is_caught(bundle, tmp_path, trusted):
    copy = _copy(bundle, tmp_path)
    model = copy / Manifest.from_json((copy / MANIFEST_FILE).read_bytes()).model_file
    model.write_bytes(model.read_bytes()[:1000])
    with pytest.raises(BundleIntegrityError, match="truncated"):
        load_bundle(copy, trusted_keys=trusted)


def test_unsigned_and_untrusted_bundles_are_refused(bundle, tmp_path, trusted):
    with pytest.raises(SignatureError):
        load_bundle(bundle, trusted_keys=[Ed25519PrivateKey.generate().public_key()])
    copy = _copy(bundle, tmp_path)
    (copy / SIGNATURE_FILE).unlink()
    with pytest.raises(SignatureError, match="unsigned"):
        load_bundle(copy, trusted_keys=trusted)


def test_an_architecture_the_backend_lacks_is_unsupported(bundle, tmp_path, trusted, signing_key):
    copy = _copy(bundle, tmp_path)
    _reseal(copy, signing_key, architecture="mamba")
    with pytest.raises(UnsupportedBundleError, match="'mamba'.*runs .*llama, mistral, .*qwen2"):
        load_bundle(copy, trusted_keys=trusted)


def test_a_corrupt_but_signed_model_file_fails_to_load_with_a_typed_error(bundle, tmp_path, trusted, signing_key):
    copy = _copy(bundle, tmp_path)
    model = copy / Manifest.from_json((copy / MANIFEST_FILE).read_bytes()).model_file
    model.write_bytes(model.read_bytes()[:4] + b"\x00garbage" * 64)
    _reseal(copy, signing_key)
    engine = load_bundle(copy, trusted_keys=trusted)  # lazy: verification passes, nothing parsed yet
    assert not engine.loaded
    for _ in range(2):  # the engine stays usable: each request gets the same clear error
        with pytest.raises(ModelLoadError, match="cannot load"):
            _complete(engine)
    engine.close()
    with pytest.raises(ModelLoadError):
        load_bundle(copy, trusted_keys=trusted, options=EngineOptions(lazy=False))


def test_memory_refusal_names_what_is_needed_and_available_and_can_be_overridden(bundle, trusted):
    tiny = lambda: 1 << 20  # noqa: E731 - a probe reporting 1 MiB free
    with pytest.raises(InsufficientMemoryError, match=r"needs \d+ MiB .* only 1 MiB is available") as caught:
        load_bundle(bundle, trusted_keys=trusted, memory_probe=tiny)
    manifest = Manifest.from_json((bundle / MANIFEST_FILE).read_bytes())
    assert caught.value.needed_bytes == memory_needed(manifest, manifest.context_length)
    assert caught.value.needed_bytes > manifest.memory.weight_bytes + runtime_allowance(manifest)
    assert caught.value.available_bytes == 1 << 20
    engine = load_bundle(
        bundle, trusted_keys=trusted, memory_probe=tiny, options=EngineOptions(allow_insufficient_memory=True)
    )
    assert _complete(engine)
    engine.close()


def test_memory_is_checked_again_when_the_lazy_load_happens(bundle, trusted):
    free = [1 << 40]
    engine = load_bundle(bundle, trusted_keys=trusted, memory_probe=lambda: free[0])
    free[0] = 1 << 20  # memory went away between load_bundle and the first request
    with pytest.raises(InsufficientMemoryError):
        _complete(engine)
    free[0] = 1 << 40
    assert _complete(engine)
    engine.close()


def test_loading_is_lazy_unload_frees_and_the_next_request_reloads(bundle, trusted):
    with load_bundle(bundle, trusted_keys=trusted) as engine:
        assert not engine.loaded
        first = _complete(engine)
        assert engine.loaded
        engine.unload()
        assert not engine.loaded
        assert _complete(engine) == first
    eager = load_bundle(bundle, trusted_keys=trusted, options=EngineOptions(lazy=False))
    assert eager.loaded
    eager.close()


def test_a_closed_engine_refuses_new_requests(bundle, trusted):
    engine = load_bundle(bundle, trusted_keys=trusted)
    assert _complete(engine)
    engine.close()
    engine.close()  # idempotent
    assert not engine.loaded
    with pytest.raises(EngineClosedError, match="load the bundle again"):
        _complete(engine)


def test_context_length_and_threads_are_configurable_and_checked(bundle, trusted):
    manifest = Manifest.from_json((bundle / MANIFEST_FILE).read_bytes())
    with pytest.raises(InvalidRequestError, match="exceeds"):
        load_bundle(bundle, trusted_keys=trusted, options=EngineOptions(context_length=manifest.context_length * 2))
    with pytest.raises(InvalidRequestError, match="threads"):
        EngineOptions(threads=0)
    with load_bundle(bundle, trusted_keys=trusted, options=EngineOptions(context_length=64, threads=1)) as engine:
        assert engine.info.context_length == 64
        long_prompt = GenerationRequest(prompt="word " * 100, sampling=SamplingParams(max_tokens=4))
        with pytest.raises(PromptTooLongError, match="context holds 64") as caught:
            asyncio.run(collect(engine.generate(long_prompt)))
        assert caught.value.prompt_tokens > 64
        assert _complete(engine)  # still usable
        # max_tokens beyond the room left in the context ends with "length" at the context's end
        near_full = GenerationRequest(prompt="word " * 10, sampling=SamplingParams(max_tokens=500, ignore_eos=True))
        completion = asyncio.run(collect(engine.generate(near_full)))
        assert completion.usage.prompt_tokens + completion.usage.completion_tokens == 64


def test_messages_need_a_chat_template(bundle, tmp_path, trusted, signing_key):
    from edge_runtime import Message

    copy = _copy(bundle, tmp_path)
    (copy / "chat_template.jinja").unlink()
    _reseal(copy, signing_key, chat_template=None)
    with SyncEngine(load_bundle(copy, trusted_keys=trusted)) as engine:
        with pytest.raises(InvalidRequestError, match="no chat template"):
            engine.complete(GenerationRequest(messages=[Message("user", "hi")]))
        assert engine.complete(REQUEST).usage.completion_tokens == 4


def test_the_sync_wrapper_streams_and_cancels_when_the_iterator_is_closed(bundle, trusted):
    with SyncEngine(load_bundle(bundle, trusted_keys=trusted)) as engine:
        stream = engine.generate(
            GenerationRequest(prompt="Hello", sampling=SamplingParams(temperature=0, max_tokens=300, ignore_eos=True))
        )
        next(stream)
        stream.close()
        assert engine.complete(REQUEST).usage.completion_tokens == 4
        assert engine.engine.running == 0
        assert engine.info.backend in ("llama.cpp", "onnxruntime")


def test_engine_info_describes_the_bundle(bundle, trusted):
    with load_bundle(bundle, trusted_keys=trusted) as engine:
        manifest = engine.manifest
        assert engine.info.model == manifest.name
        assert engine.info.context_length == manifest.context_length
        assert engine.info.details["quantization"] == manifest.quantization
        assert engine.info.version == manifest.files[manifest.model_file].sha256[:12]

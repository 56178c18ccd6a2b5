"""Tandem's edge runtime: runs signed bundles on the device behind one Engine interface.

    from edge_runtime import GenerationRequest, Message, SamplingParams, load_bundle
    from edge_runtime.bundle import load_public_key

    engine = load_bundle("assistant-q4/", trusted_keys=[load_public_key("tandem.pub")])
    request = GenerationRequest(messages=[Message("user", "Hi!")], sampling=SamplingParams(max_tokens=32))
    async for event in engine.generate(request):
        print(event.text, end="")

It owns the types every engine speaks (a generation request and a stream of token events) and imports no
other Tandem package. Installs with the ``edge`` extra only: importing it never loads torch or transformers.
"""

from edge_runtime.engine import Engine, EngineInfo
from edge_runtime.errors import (
    BackendUnavailableError,
    BundleError,
    BundleIntegrityError,
    BundleNotFoundError,
    DiskFullError,
    EdgeRuntimeError,
    EngineBusyError,
    EngineClosedError,
    GenerationError,
    InsufficientMemoryError,
    InvalidRequestError,
    ManifestError,
    ModelLoadError,
    PromptTooLongError,
    SignatureError,
    StorageError,
    UnsupportedBundleError,
)
from edge_runtime.loading import EngineOptions, load_bundle
from edge_runtime.local_engine import LocalEngine
from edge_runtime.loop_thread import LoopThread
from edge_runtime.sync import SyncEngine, collect
from edge_runtime.types import (
    Completion,
    FinishReason,
    GenerationRequest,
    Message,
    PrefixTokens,
    SamplingParams,
    TokenEvent,
    Usage,
)

__all__ = [
    "BackendUnavailableError",
    "BundleError",
    "BundleIntegrityError",
    "BundleNotFoundError",
    "Completion",
    "DiskFullError",
    "EdgeRuntimeError",
    "Engine",
    "EngineBusyError",
    "EngineClosedError",
    "EngineInfo",
    "EngineOptions",
    "FinishReason",
    "GenerationError",
    "GenerationRequest",
    "InsufficientMemoryError",
    "InvalidRequestError",
    "LocalEngine",
    "LoopThread",
    "ManifestError",
    "Message",
    "ModelLoadError",
    "PrefixTokens",
    "PromptTooLongError",
    "SamplingParams",
    "SignatureError",
    "StorageError",
    "SyncEngine",
    "TokenEvent",
    "UnsupportedBundleError",
    "Usage",
    "collect",
    "load_bundle",
]

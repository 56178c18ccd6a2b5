"""The Engine protocol: the one seam under the SDK and the gateway.

Every engine (llama.cpp and ONNX Runtime here; vLLM and the CPU batching engine in the cloud tier) turns a
``GenerationRequest`` into an async stream of ``TokenEvent``. Closing the stream early (``break``, task
cancellation, ``aclose()``) cancels the request and frees the engine for the next one; ``abort(id)`` does the
same from elsewhere and ends that stream with ``FinishReason.ABORT``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from edge_runtime.types import GenerationRequest, TokenEvent


@dataclass(frozen=True)
class EngineInfo:
    """What an engine serves, for routes, logs and ``ListModels``."""

    model: str
    """The model (bundle) name."""
    backend: str
    """"llama.cpp", "onnxruntime", "vllm", "cpu"..."""
    context_length: int
    version: str = ""
    """The model version (e.g. the bundle manifest's signing key id and digest, or a cloud version tag)."""
    details: dict[str, Any] = field(default_factory=dict)
    vocabulary: str = ""
    """Fingerprint of the model's vocabulary (``edge_runtime.tokenizer.vocabulary_fingerprint``); "" unknown."""


@runtime_checkable
class Engine(Protocol):
    @property
    def info(self) -> EngineInfo: ...

    def generate(self, request: GenerationRequest) -> AsyncIterator[TokenEvent]:
        """Stream the request's tokens; the last event carries ``finish_reason`` and ``usage``."""
        ...

    async def abort(self, request_id: str) -> bool:
        """Cancel a queued or running request; False when no such request is known."""
        ...

    def close(self) -> None:
        """Free native resources; later calls raise EngineClosedError."""
        ...

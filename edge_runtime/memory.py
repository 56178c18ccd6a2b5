"""The memory check before a model is loaded: weights + KV cache for the asked context must fit.

need = weight_bytes + kv_bytes_per_token x context + runtime allowance (compute buffers, allocator arenas,
logits, tokenizer): a fixed part plus a share of the weights, 128 MiB + weights / 4, which covers the peak RSS
growth of loading the benchmark model's bundles (``python -m benchmarks.edge`` without ``--skip-rss``;
BENCHMARKS.md, "Edge runtime").
"""

from __future__ import annotations

from collections.abc import Callable

from edge_runtime.bundle import Manifest
from edge_runtime.errors import InsufficientMemoryError

RUNTIME_BASE_BYTES = 128 << 20
RUNTIME_WEIGHT_SHARE = 0.25

MemoryProbe = Callable[[], int]


def available_memory() -> int:
    """Bytes the OS can hand out without swapping (psutil's ``available``)."""
    import psutil

    return int(psutil.virtual_memory().available)


def runtime_allowance(manifest: Manifest) -> int:
    return RUNTIME_BASE_BYTES + int(manifest.memory.weight_bytes * RUNTIME_WEIGHT_SHARE)


def memory_needed(manifest: Manifest, context_length: int) -> int:
    return manifest.memory.bytes_for(context_length) + runtime_allowance(manifest)


def _mib(count: int) -> str:
    return f"{count / (1 << 20):,.0f} MiB"


def check_memory(manifest: Manifest, context_length: int, probe: MemoryProbe = available_memory) -> int:
    """Raise InsufficientMemoryError when the model would not fit; return the bytes needed."""
    needed = memory_needed(manifest, context_length)
    available = probe()
    if needed > available:
        raise InsufficientMemoryError(
            f"{manifest.name} needs {_mib(needed)} (weights {_mib(manifest.memory.weight_bytes)} + KV cache for "
            f"{context_length} tokens {_mib(manifest.memory.kv_bytes_per_token * context_length)} + runtime "
            f"{_mib(runtime_allowance(manifest))}) but only {_mib(available)} is available: free memory, load with a "
            "shorter context_length, or pass allow_insufficient_memory=True to load anyway",
            needed_bytes=needed,
            available_bytes=available,
        )
    return needed

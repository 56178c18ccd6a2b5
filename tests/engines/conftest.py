"""The engines of the contract suite: one fixture ``engine`` over every Engine implementation, each started on
a tiny real model (the session's toy llama, as is or exported to a signed bundle), and ``CAPABILITIES``, the one
table of the points where an engine's documented behaviour differs from the others'.

All engines run with the same 512-token context (the toy model's own), so "max_tokens beyond the context" is
cheap to reach. Every test drives its engine through the module's one ``asyncio.Runner``: vLLM's AsyncLLM
belongs to the event loop it starts on, and the other engines do not mind.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from edge_runtime import Engine

CONTEXT = 512
"""Tokens of context of every engine under test (the toy models' max_position_embeddings)."""


@dataclass(frozen=True)
class Capabilities:
    """Where an engine departs from the full contract; each field is a reason ("" when the point holds)."""

    no_stop_strings: str = ""
    """Why the engine never ends a stream with STOP on a stop string."""
    no_vocabulary: str = ""
    """Why the engine takes no ``prefix_tokens`` (it has no token vocabulary)."""
    no_greedy_continuation: str = ""
    """Why a greedy answer continued from its own prefix may differ from the uninterrupted one."""


SIMULATOR_HAS_NO_MODEL = "the load simulator runs no model (cloud_service/engines/simulator.py)"
CAPABILITIES: dict[str, Capabilities] = {
    "gguf": Capabilities(),
    "onnx": Capabilities(),
    "cpu": Capabilities(),
    "llamacpp": Capabilities(),
    "simulator": Capabilities(
        no_stop_strings=f"{SIMULATOR_HAS_NO_MODEL} and does not simulate stop strings",
        no_vocabulary=f"{SIMULATOR_HAS_NO_MODEL}: EngineInfo.vocabulary is empty, prefix_tokens cannot name it",
        no_greedy_continuation=f"{SIMULATOR_HAS_NO_MODEL}: its filler is seeded by the whole prompt text, so a "
                               "continued answer restarts the filler",
    ),
    # vLLM rejects out-of-vocabulary prompt ids itself ("out of vocabulary", a ValueError or VLLMValidationError
    # that translate_vllm_error makes InvalidRequestError); like the rest of this row, only checked on a GPU.
    "vllm": Capabilities(),
}
ENGINES = ["gguf", "onnx", "cpu", "llamacpp", "simulator", pytest.param("vllm", marks=pytest.mark.gpu)]


async def _built(build: Callable[[], Engine]) -> Engine:
    return build()


async def _closed(engine: Engine) -> None:
    engine.close()


@pytest.fixture(scope="module")
def runner() -> Iterator[asyncio.Runner]:
    """The one event loop of the module's engines and tests."""
    with asyncio.Runner() as runner:
        yield runner


@pytest.fixture(scope="module", params=ENGINES)
def engine_name(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="module")
def caps(engine_name: str) -> Capabilities:
    return CAPABILITIES[engine_name]


@pytest.fixture(scope="module")
def make_engine(request: pytest.FixtureRequest, engine_name: str, runner: asyncio.Runner) -> Callable[[], Engine]:
    """``make_engine()``: a new started engine of this kind (built in the module's loop; the caller closes it)."""
    if engine_name in ("gguf", "onnx"):
        from edge_runtime import EngineOptions, load_bundle

        bundle = request.getfixturevalue("bundles")("llama", engine_name, "f32" if engine_name == "gguf" else "fp32")
        trusted = request.getfixturevalue("trusted")
        options = EngineOptions(context_length=CONTEXT, lazy=False)

        def build() -> Engine:
            return load_bundle(bundle, trusted_keys=trusted, options=options)
    elif engine_name == "cpu":
        from cloud_service.engines.cpu import CpuEngine, CpuEngineOptions

        folder = request.getfixturevalue("tiny_llama")

        def build() -> Engine:
            return CpuEngine(folder, options=CpuEngineOptions(context_length=CONTEXT))
    elif engine_name == "llamacpp":
        from cloud_service.engines.llamacpp import LlamaCppEngine, LlamaCppEngineOptions

        bundle = request.getfixturevalue("bundles")("llama", "gguf", "f32")

        def build() -> Engine:
            return LlamaCppEngine(bundle, options=LlamaCppEngineOptions(context_length=CONTEXT, max_running=4,
                                                                       batch_tokens=128))
    elif engine_name == "simulator":
        from cloud_service.engines.simulator import SimulatorEngine, SimulatorOptions

        options = SimulatorOptions(decode_step_s=0.0005, decode_s_per_sequence=0.0, prefill_s_per_token=0.0,
                                   context_length=CONTEXT, kv_capacity_tokens=16 * CONTEXT)

        def build() -> Engine:
            return SimulatorEngine(options=options)
    else:
        pytest.importorskip("vllm")
        from cloud_service.engines.vllm import VllmEngine, VllmEngineOptions

        folder = request.getfixturevalue("tiny_llama")
        options = VllmEngineOptions(dtype="float32", gpu_memory_utilization=0.2, max_model_len=CONTEXT,
                                    max_num_seqs=8, extra_engine_args={"enforce_eager": True})

        def build() -> Engine:
            return VllmEngine(folder, options=options)

    return lambda: runner.run(_built(build))


@pytest.fixture(scope="module")
def engine(make_engine: Callable[[], Engine], runner: asyncio.Runner) -> Iterator[Engine]:
    """A started engine of each kind on the toy llama, shared by the module's tests and closed after them."""
    engine = make_engine()
    yield engine
    runner.run(_closed(engine))

"""Export a toy model to a GGUF and an ONNX bundle, then run both through the edge runtime's one Engine API.

    python examples/edge_engine.py [FOLDER]

Shows: verified loading with a trusted key, chat formatting with the bundle's own template, streaming with
per-token logprobs, continuing from an assistant prefix, and cancelling a stream early. The toy model has
random weights, so the words are noise; every step is the real one.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_runtime import GenerationRequest, LocalEngine, Message, SamplingParams, collect, load_bundle
from export.gguf.pipeline import build_gguf_bundle
from export.onnx.bundle import build_onnx_bundle
from export.source import SourceModel
from export.toy_models import ToyModelSpec, cached_toy_model


async def run(engine: LocalEngine) -> None:
    chat = [Message("system", "You answer briefly."), Message("user", "Name three colours.")]
    greedy = SamplingParams(temperature=0.0, max_tokens=16)

    print(f"{engine.info.model} ({engine.info.backend}):")
    async for event in engine.generate(GenerationRequest(messages=chat, sampling=greedy)):
        print(f"  token {event.token_id:>4}  logprob {event.logprob:7.3f}  text {event.text!r}")

    answer = await collect(engine.generate(GenerationRequest(messages=chat, sampling=greedy)))
    prefix = answer.text[:10]
    rest = await collect(engine.generate(GenerationRequest(messages=chat, sampling=greedy, assistant_prefix=prefix)))
    print(f"  continued after {prefix!r}: {rest.text!r}")

    stream = engine.generate(GenerationRequest(messages=chat, sampling=SamplingParams(max_tokens=500, seed=1)))
    async for _ in stream:
        break  # leaving the stream cancels the request; the engine is free at once
    await stream.aclose()
    print(f"  after a cancelled stream: running={engine.running}, waiting={engine.waiting}")


def main() -> None:
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(scratch)
        key = Ed25519PrivateKey.generate()  # in production: `tandem export keygen` and a .pub on the device
        source = SourceModel.open(cached_toy_model(ToyModelSpec.tiny("llama"), work / "toys"))
        bundles = [
            build_gguf_bundle(source, work / "toy-gguf", "f16", key, evaluation=None, overwrite=True).path,
            build_onnx_bundle(source, work / "toy-onnx", "fp32", key, evaluation=None, overwrite=True).path,
        ]
        for bundle in bundles:
            with load_bundle(bundle, trusted_keys=[key.public_key()]) as engine:
                asyncio.run(run(engine))


if __name__ == "__main__":
    main()

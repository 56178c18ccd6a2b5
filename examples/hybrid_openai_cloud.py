"""A hybrid client whose cloud is a plain OpenAI-compatible URL: a signed toy bundle on the device, and for the
cloud Tandem's own gateway spoken to over HTTP only, all on loopback (any OpenAI-compatible server would do:
vLLM, llama.cpp's servers, a hosted API).

    python examples/hybrid_openai_cloud.py [FOLDER]

The policy, as a file would hold it:

    [device]
    bundle = "bundle"
    trusted_keys = ["tandem.pub"]
    [cloud]
    api = "openai"
    base_url = "http://127.0.0.1:8080/v1"
    model = "toy"
    api_key_env = "OPENAI_API_KEY"

Shows: an easy request answered on the device, a hard one in the cloud, and an answer continued in the cloud
from an assistant prefix, with the route saying how (the server honours ``continue_final_message``, which the
SDK measures once). The toy model has random weights, so the words are noise; every step is the real one.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from export.gguf.pipeline import build_gguf_bundle
from export.source import SourceModel
from export.toy_models import ToyModelSpec, cached_toy_model
from sdk import AsyncHybridClient, CloudSettings, DeviceSettings, Policy
from sdk.signals import SignalHub, StaticSignals
from tandem.fleet import FleetSettings, LocalFleet

API_KEY = "tdm_example_key"
EASY = [{"role": "user", "content": "Hi there"}]
HARD = [{"role": "user", "content": "Prove that 123456789 * 987654321 is odd, step by step:\n```python\ndef f():"}]


async def main(work: Path) -> None:
    model = cached_toy_model(ToyModelSpec.tiny("llama"), work / "toys")
    key = Ed25519PrivateKey.generate()
    public = work / "tandem.pub"
    public.write_bytes(key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo))
    bundle = work / "bundle"
    if not bundle.exists():
        build_gguf_bundle(SourceModel.open(model), bundle, "f32", key, evaluation=None)

    async with LocalFleet(model, model="toy", api_key=API_KEY, replicas=1,
                          settings=FleetSettings(gateway_http=True)) as fleet:
        policy = Policy(device=DeviceSettings(bundle=bundle, trusted_keys=(public,)),
                        cloud=CloudSettings(api="openai", base_url=fleet.http_url, model="toy", api_key=API_KEY))
        # Fixed device readings, so the example routes the same on every machine.
        signals = SignalHub.from_static(StaticSignals(available_memory_bytes=8 << 30))
        async with AsyncHybridClient(policy, signals=signals) as client:
            print("cloud:", fleet.http_url)
            for name, messages in (("easy", EASY), ("hard", HARD)):
                answer = await client.chat.completions.create(messages=messages, max_tokens=12, temperature=0)
                route = answer.route
                print(f"{name}: {route.side} {[str(r) for r in route.reasons]} {answer.choices[0].message.content!r}")
            stream = await client.chat.completions.create(messages=HARD, max_tokens=12, temperature=0, stream=True,
                                                          assistant_prefix="Step one:")
            async with stream:
                text = "".join([chunk.choices[0].delta.content async for chunk in stream])
            attempt = stream.route.attempts[-1]
            print(f"continued after 'Step one:' in the {attempt.side}: {text!r} ({attempt.continuation}; "
                  f"continue_final_message honoured: {await client.cloud.prefill_supported()})")


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as scratch:
        asyncio.run(main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(scratch)))

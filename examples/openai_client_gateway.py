"""An OpenAI client talking to the Tandem gateway: two CPU replicas of a toy model behind a gateway that also
serves OpenAI-compatible HTTP, all on loopback, called with the official ``openai`` package.

    python examples/openai_client_gateway.py [FOLDER]

Shows: a streamed chat completion (with usage in its last chunk), a whole one, the model list, and an error
as an OpenAI client sees it. The same calls work with ``curl -N`` (see the README). The toy model has random
weights, so the words are noise; every step is the real one.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

import openai

from export.toy_models import ToyModelSpec, cached_toy_model
from tandem.fleet import FleetSettings, LocalFleet

API_KEY = "tdm_example_key"


def talk(base_url: str) -> None:
    """What any OpenAI client does (blocking calls: run here on a thread of their own)."""
    client = openai.OpenAI(base_url=base_url, api_key=API_KEY, max_retries=0)
    print("models:", [m.id for m in client.models.list()])
    stream = client.chat.completions.create(
        model="toy", messages=[{"role": "user", "content": "Name three colours."}], max_tokens=12, temperature=0,
        stream=True, stream_options={"include_usage": True})
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            print(f"  delta {chunk.choices[0].delta.content!r}")
        if chunk.usage:
            print(f"  usage: {chunk.usage.prompt_tokens} prompt + {chunk.usage.completion_tokens} completion tokens")
    whole = client.chat.completions.create(model="toy", messages=[{"role": "user", "content": "Hi"}], max_tokens=8)
    print("whole answer:", repr(whole.choices[0].message.content), whole.choices[0].finish_reason)
    try:
        client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "Hi"}])
    except openai.NotFoundError as exc:
        print("an unknown model:", exc.status_code, exc.body["message"][:60])


async def main(work: Path) -> None:
    model = cached_toy_model(ToyModelSpec.tiny("llama"), work / "toys")
    async with LocalFleet(model, model="toy", api_key=API_KEY, replicas=2,
                          settings=FleetSettings(gateway_http=True)) as fleet:
        print("gateway:", fleet.target, "(gRPC),", fleet.http_url, "(OpenAI-compatible HTTP)")
        await asyncio.to_thread(talk, fleet.http_url)


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as scratch:
        asyncio.run(main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(scratch)))

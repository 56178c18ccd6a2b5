"""An app developer's hybrid chat: a policy file, a HybridClient built from it, streamed answers, and each
answer's route (where it ran, why, and any fallback), with a signed toy bundle on the "device" and a Tandem
cloud tier (a CPU replica behind the gateway) on loopback.

    python examples/hybrid_chat.py [FOLDER]

Shows: an easy request answered on the device, a hard one (code and arithmetic) sent to the cloud, the same
hard one while the cloud is offline (the device takes over; the route says how), all from the policy file the
example writes to FOLDER/tandem.toml. The toy model has random weights, so the words are noise; every step is
the real one.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from export.gguf.pipeline import build_gguf_bundle
from export.signing_keys import generate_keypair, load_private_key
from export.source import SourceModel
from export.toy_models import ToyModelSpec, cached_toy_model
from sdk import HybridClient
from tandem.fleet import LocalFleet

API_KEY = "tdm_example_key"  # in production: `tandem cloud new-key my-app`, kept in the app's secret store
EASY = [{"role": "user", "content": "Hi there"}]
HARD = [{"role": "user", "content": "Prove that 123456789 * 987654321 is odd:\n```python\ndef f():"}]

# The policy as an app commits it (relative paths are relative to this file). The cloud's address is filled
# in once the loopback cloud below has a port.
POLICY = """\
[routing]
mode = "auto"                 # decide per request from the device's signals and the request's difficulty
min_battery_percent = 20      # below it and not charging: the cloud
max_thermal = "serious"       # at or above it: the cloud
max_difficulty = 0.5          # the text heuristic's score above it: the cloud

[device]
bundle = "bundle"             # the signed model on the device
trusted_keys = ["keys/team.pub"]

[cloud]
target = "{target}"             # the gateway, e.g. "models.example.com:443" with tls = true
model = "assistant"
api_key_env = "TANDEM_API_KEY"   # the key stays out of the file
first_token_timeout_s = 5        # no token from the cloud by then: the device answers instead
"""


def chat(client: HybridClient, name: str, messages: list[dict[str, str]]) -> None:
    print(f"{name}: ", end="")
    with client.chat.completions.create(messages=messages, max_tokens=12, temperature=0, stream=True) as stream:
        for chunk in stream:
            print(chunk.choices[0].delta.content, end="", flush=True)
    route = stream.route
    print(f"\n  ran on the {route.side} ({route.model}), because {', '.join(route.reasons)}; "
          f"difficulty {route.difficulty.score:.2f}, {route.tokens} tokens in {route.timings.total_s * 1000:.0f} ms")
    for switch in route.fallbacks:
        print(f"  {switch.kind}: {switch.from_side} -> {switch.to_side} ({switch.reason}, {switch.code}) "
              f"after {switch.after_tokens} tokens")


def app(policy: Path, go_offline: Callable[[], None]) -> None:
    """What the app does: plain blocking calls (run here on a thread of their own, beside the cloud's loop)."""
    os.environ.setdefault("TANDEM_API_KEY", API_KEY)
    with HybridClient(policy) as client:
        chat(client, "easy", EASY)
        chat(client, "hard", HARD)
        go_offline()  # the gateway stops: the next call to the cloud fails, and the device answers instead
        chat(client, "hard, cloud offline", HARD)


async def main(work: Path) -> None:
    model = cached_toy_model(ToyModelSpec.tiny("llama"), work / "toys")
    if not (work / "keys" / "team.pub").exists():
        generate_keypair(work / "keys" / "team")  # as `tandem export keygen keys/team`
    if not (work / "bundle").exists():
        key = load_private_key(work / "keys" / "team.key")  # an ML engineer's `tandem export gguf` in production
        build_gguf_bundle(SourceModel.open(model), work / "bundle", "f16", key, evaluation=None, name="assistant-edge")

    # The backend team's cloud: the same toy model under the CPU engine, behind the gateway, on loopback.
    async with LocalFleet(model, model="assistant", api_key=API_KEY, replicas=1) as fleet:
        policy = work / "tandem.toml"
        policy.write_text(POLICY.format(target=fleet.target))
        print(f"policy: {policy}\ncloud: {fleet.target}")
        loop = asyncio.get_running_loop()
        await asyncio.to_thread(app, policy,
                                lambda: asyncio.run_coroutine_threadsafe(fleet.stop_gateway(), loop).result())


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as scratch:
        asyncio.run(main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(scratch)))

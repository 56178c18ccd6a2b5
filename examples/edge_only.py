"""A device with no network: the SDK's HybridClient under ``mode = "local_only"``, answering from a signed toy
bundle and never opening a connection, even with a cloud in its policy.

    python examples/edge_only.py [FOLDER]

Shows: the bundle verified and loaded up front, a streamed answer with its route (the device, because of
local_only, not one cloud attempt), low battery changing nothing, and what a request the device cannot serve
(a prompt longer than the bundle's context) gets: a NoRouteError naming the device's reason, with no cloud
tried. The policy is written to FOLDER/tandem.toml. The toy model has random weights, so the words are noise;
every step is the real one.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from export.gguf.pipeline import build_gguf_bundle
from export.signing_keys import generate_keypair, load_private_key
from export.source import SourceModel
from export.toy_models import ToyModelSpec, cached_toy_model
from sdk import HybridClient, NoRouteError, Route

POLICY = """\
[routing]
mode = "local_only"           # the device only: no connection is ever opened

[device]
bundle = "bundle"             # relative to this file
trusted_keys = ["keys/team.pub"]
threads = 2

[cloud]                       # the app's usual cloud stays configured; local_only never dials it
target = "127.0.0.1:9"        # (nothing listens here: a try would fail, and none is made)
model = "assistant"
"""
QUESTION = [{"role": "user", "content": "Name three colours."}]
DOCUMENT = "The quick brown fox jumps over the lazy dog. " * 40  # beyond the toy bundle's 512 tokens


def show(route: Route) -> None:
    tried = ", ".join(f"{a.side} {'ok' if a.ok else a.code}" for a in route.attempts)
    print(f"  route: {route.side}, because {', '.join(route.reasons)}; attempts: {tried}")


def ask(client: HybridClient, messages: list[dict[str, str]]) -> None:
    with client.chat.completions.create(messages=messages, max_tokens=12, temperature=0, stream=True) as stream:
        try:
            for chunk in stream:
                print(chunk.choices[0].delta.content, end="", flush=True)
            print()
        except NoRouteError as exc:  # the only side could not answer, and no other side may
            print(f"\n  NoRouteError, device: {exc.codes.get('device')}: {exc.reasons['device']}")
        show(stream.route)


def main(work: Path) -> None:
    model = cached_toy_model(ToyModelSpec.tiny("llama"), work / "toys")
    if not (work / "keys" / "team.pub").exists():
        generate_keypair(work / "keys" / "team")  # as `tandem export keygen keys/team`
    if not (work / "bundle").exists():  # an ML engineer's `tandem export gguf` in production
        key = load_private_key(work / "keys" / "team.key")
        build_gguf_bundle(SourceModel.open(model), work / "bundle", "f16", key, evaluation=None, name="assistant-edge")
    policy = work / "tandem.toml"
    policy.write_text(POLICY)

    with HybridClient(policy) as client:
        # Verify the signature and every file's hash, and load the model now rather than on the first request.
        print("device ready:", client.preload(), f"(cloud side built: {client.aio.cloud is not None})")
        print("answer: ", end="")
        ask(client, QUESTION)

        client.signals.override(battery_percent=5, charging=False)  # "auto" would send this to the cloud
        print("answer at 5 % battery: ", end="")
        ask(client, QUESTION)

        print("a prompt the device cannot take: ", end="")
        ask(client, [{"role": "user", "content": f"Summarise:\n{DOCUMENT}"}])


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as scratch:
        main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(scratch))

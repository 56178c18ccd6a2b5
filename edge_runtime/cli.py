"""`tandem edge ...`: run a bundle on this machine, the way the SDK will on a device.

    tandem edge generate BUNDLE --public-key keys/team.pub --message "Name three colours." --max-tokens 64
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from rich.markup import escape

if TYPE_CHECKING:
    from edge_runtime import GenerationRequest, LocalEngine

app = typer.Typer(name="edge", help="Run signed bundles on this machine.", no_args_is_help=True)
console = Console(stderr=True)


@app.command()
def generate(
    bundle: Path = typer.Argument(..., help="The bundle folder."),
    public_key: list[Path] = typer.Option(..., "--public-key", "-k", help="Trusted Ed25519 public key (PEM)."),
    message: list[str] = typer.Option(None, "--message", "-m", help="A user message (repeat for a conversation)."),
    system: str = typer.Option(None, help="A system message before the user's."),
    prompt: str = typer.Option(None, help="A raw prompt instead of chat messages (no chat template)."),
    assistant_prefix: str = typer.Option("", help="Start the answer with this text and continue from it."),
    max_tokens: int = typer.Option(128, min=1, help="Most tokens to generate."),
    temperature: float = typer.Option(0.0, min=0.0, help="0 decodes greedily."),
    top_p: float = typer.Option(1.0, help="Nucleus sampling (0, 1]."),
    top_k: int = typer.Option(0, min=0, help="Keep the k most likely tokens; 0 keeps all."),
    seed: int = typer.Option(None, help="Sampling seed."),
    stop: list[str] = typer.Option(None, help="A stop sequence (repeatable)."),
    threads: int = typer.Option(None, min=1, help="CPU threads [default: the runtime's]."),
    context_length: int = typer.Option(None, min=2, help="KV-cache tokens [default: the bundle's]."),
    allow_insufficient_memory: bool = typer.Option(False, help="Load even when the memory estimate does not fit."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object (text, tokens, logprobs, timings)."),
) -> None:
    """Verify a bundle, load it and stream one answer, with time to first token and decode speed."""
    from edge_runtime import (
        EdgeRuntimeError,
        EngineOptions,
        GenerationRequest,
        Message,
        SamplingParams,
        load_bundle,
    )
    from edge_runtime.bundle import load_public_key

    try:
        if (prompt is None) == (not message):
            raise typer.BadParameter("give --message (one or more) or --prompt, not both")
        messages = None
        if message:
            messages = ([Message("system", system)] if system else []) + [Message("user", m) for m in message]
        request = GenerationRequest(
            messages=messages,
            prompt=prompt,
            assistant_prefix=assistant_prefix,
            sampling=SamplingParams(temperature=temperature, top_p=top_p, top_k=top_k, max_tokens=max_tokens,
                                    seed=seed, stop=tuple(stop or ())),
        )
        options = EngineOptions(context_length=context_length, threads=threads,
                                allow_insufficient_memory=allow_insufficient_memory, lazy=False)
        loaded = time.perf_counter()
        engine = load_bundle(bundle, trusted_keys=[load_public_key(k) for k in public_key], options=options)
        load_seconds = time.perf_counter() - loaded
        with engine:
            result = asyncio.run(_stream(engine, request, echo=not as_json))
    except EdgeRuntimeError as exc:
        console.print(f"[bold red]error:[/] {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(2) from exc
    result |= {"model": engine.info.model, "backend": engine.info.backend, "load_seconds": round(load_seconds, 3)}
    if as_json:
        print(json.dumps(result))
        return
    console.print(
        f"\n[dim]{engine.info.model} on {engine.info.backend}: {result['completion_tokens']} tokens, "
        f"finish {result['finish_reason']}, TTFT {result['ttft_ms']:.1f} ms, "
        f"{result['decode_tokens_per_s']:.1f} tokens/s, load {load_seconds:.2f} s[/]"
    )


async def _stream(engine: LocalEngine, request: GenerationRequest, *, echo: bool) -> dict[str, Any]:
    started = time.perf_counter()
    first = last = started
    text, ids, logprobs, finish, usage = [], [], [], None, None
    async for event in engine.generate(request):
        last = time.perf_counter()
        if not ids:
            first = last
        if echo:
            print(event.text, end="", flush=True)
        text.append(event.text)
        if event.token_id is not None:
            ids.append(event.token_id)
            logprobs.append(round(event.logprob, 5))
        finish, usage = event.finish_reason or finish, event.usage or usage
    decode_seconds = last - first
    return {
        "text": "".join(text),
        "token_ids": ids,
        "logprobs": logprobs,
        "finish_reason": str(finish),
        "prompt_tokens": usage.prompt_tokens if usage else 0,
        "completion_tokens": len(ids),
        "ttft_ms": (first - started) * 1000,
        "decode_tokens_per_s": (len(ids) - 1) / decode_seconds if len(ids) > 1 and decode_seconds > 0 else 0.0,
    }

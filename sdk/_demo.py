"""`tandem demo`: the smallest end-to-end run that exists today.

The hybrid device/cloud demo (task suite, teacher and student, two replicas behind the gateway, routing
scenarios) arrives with the routing-quality work. Until then the demo runs what exists, end to end: build
(or reuse) a toy Llama with the toy-model factory, load it offline with transformers, format a chat with the
model's own template and generate greedily.
"""

from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console
from rich.panel import Panel
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

_QUESTION = "What does Tandem do when the network drops?"


def run_demo(console: Console, cache_dir: Path, *, max_new_tokens: int) -> None:
    console.rule("[bold]Tandem demo")
    console.print(
        "[yellow]The hybrid device/cloud demo is not built yet; this runs the smallest end-to-end path that "
        "exists: toy-model factory -> offline load -> chat template -> greedy generation.[/]"
    )
    from export.toy_models import BUILD_STEPS, ToyModelSpec, cached_toy_model

    spec = ToyModelSpec.tiny("llama")
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console) as bar:
        task = bar.add_task("toy model: cached?", total=len(BUILD_STEPS))
        started = time.perf_counter()
        folder = cached_toy_model(
            spec, cache_dir / "toy-models",
            on_step=lambda step: bar.update(task, description=f"toy model: {step}..."),
        )
        bar.update(task, completed=len(BUILD_STEPS), description=f"toy model: {folder.name}")
    build_s = time.perf_counter() - started

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    started = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True).eval()
    load_s = time.perf_counter() - started

    messages = [{"role": "user", "content": _QUESTION}]
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    inputs = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
    started = time.perf_counter()
    with torch.inference_mode():
        output = model.generate(
            **inputs, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id
        )
    generate_s = time.perf_counter() - started
    new_tokens = output[0, inputs["input_ids"].shape[1]:]
    answer = tokenizer.decode(new_tokens, skip_special_tokens=False)

    console.print(Panel(prompt, title="prompt (the model's chat template)", expand=False))
    console.print(Panel(repr(answer), title="answer (random weights: noise, but a real forward pass)", expand=False))
    table = Table(show_header=False, title="figures")
    table.add_row("model folder", str(folder))
    table.add_row("build or cache hit", f"{build_s:.2f} s")
    table.add_row("load", f"{load_s:.2f} s")
    table.add_row("generated", f"{len(new_tokens)} tokens in {generate_s:.2f} s "
                  f"({len(new_tokens) / generate_s:.0f} tokens/s)")
    console.print(table)

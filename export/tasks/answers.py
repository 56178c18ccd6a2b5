"""Greedy answers to task items: from a signed bundle through the edge runtime, or from a Hugging Face folder
through transformers (batched); and accuracy per family and difficulty level.

    answers = bundle_answers(bundle, [public_key], items)        # llama.cpp or ONNX Runtime, one at a time
    answers = model_answers(teacher_folder, items)               # transformers, batched greedy decoding
    table = accuracy_table(items, answers)                       # {"overall": .., "levels": {1: ..}, ...}
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from export.tasks.suite import TaskItem

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from edge_runtime.types import Completion

ANSWER_MAX_TOKENS = 40
"""Tokens a model may spend on an answer (the longest expected answer is 23 characters): the same limit for
every item, so it tells the router nothing about the item."""
HF_BATCH_SIZE = 64
ENGINE_THREADS = 1
"""CPU threads of the edge runtime while answering: tiny models gain nothing from more on a shared machine."""

ItemCallback = Callable[[int, int], None]
"""(items done, items in all)."""


def _no_progress(done: int, total: int) -> None:
    pass


def bundle_answers(
    bundle: str | os.PathLike[str],
    trusted_keys: Sequence[Ed25519PublicKey],
    items: Sequence[Any],
    *,
    max_tokens: int = ANSWER_MAX_TOKENS,
    on_item: ItemCallback = _no_progress,
) -> list[str]:
    """The bundle's greedy answer to each item (anything with ``messages`` of role/content turns), run through
    ``edge_runtime.load_bundle``; raises the runtime's errors (BundleError...) when the bundle is unusable."""
    return [c.text for c in bundle_completions(bundle, trusted_keys, items, max_tokens=max_tokens, on_item=on_item)]


def bundle_completions(
    bundle: str | os.PathLike[str],
    trusted_keys: Sequence[Ed25519PublicKey],
    items: Sequence[Any],
    *,
    max_tokens: int = ANSWER_MAX_TOKENS,
    on_item: ItemCallback = _no_progress,
) -> list[Completion]:
    """As ``bundle_answers``, with each answer's token ids and logprobs (``edge_runtime.Completion``)."""
    from edge_runtime import EngineOptions, GenerationRequest, Message, SamplingParams, SyncEngine, load_bundle

    sampling = SamplingParams(temperature=0.0, max_tokens=max_tokens)
    options = EngineOptions(threads=ENGINE_THREADS, lazy=False)
    completions = []
    with SyncEngine(load_bundle(Path(bundle), trusted_keys=trusted_keys, options=options)) as engine:
        for index, item in enumerate(items):
            messages = [Message(turn.role, turn.content) for turn in item.messages]
            completions.append(engine.complete(GenerationRequest(messages=messages, sampling=sampling)))
            on_item(index + 1, len(items))
    return completions


def model_answers(
    folder: str | os.PathLike[str],
    items: Sequence[Any],
    *,
    max_tokens: int = ANSWER_MAX_TOKENS,
    batch_size: int = HF_BATCH_SIZE,
    on_item: ItemCallback = _no_progress,
) -> list[str]:
    """Greedy answers of a Hugging Face model folder (transformers, float32, left-padded batches)."""
    import torch

    from export.source import SourceModel

    source = SourceModel.open(folder)
    tokenizer = source.load_tokenizer()
    tokenizer.padding_side = "left"
    model = source.load_model(torch.float32)
    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    answers: list[str] = []
    for start in range(0, len(items), batch_size):
        batch = items[start : start + batch_size]
        chats = [[{"role": turn.role, "content": turn.content} for turn in item.messages] for item in batch]
        texts = tokenizer.apply_chat_template(chats, tokenize=False, add_generation_prompt=True)
        encoded = tokenizer(texts, add_special_tokens=False, padding=True, return_tensors="pt")
        with torch.inference_mode():
            output = model.generate(
                **encoded, max_new_tokens=max_tokens, do_sample=False, eos_token_id=eos, pad_token_id=pad,
            )
        for row in output[:, encoded["input_ids"].shape[1] :].tolist():
            if eos in row:
                row = row[: row.index(eos)]
            answers.append(tokenizer.decode(row, skip_special_tokens=True))
        on_item(len(answers), len(items))
    return answers


def accuracy_table(items: Sequence[TaskItem], answers: Sequence[str]) -> dict[str, Any]:
    """Share of right answers: overall, per level, per family, and per (family, level)."""
    if len(items) != len(answers):
        raise ValueError(f"{len(items)} items but {len(answers)} answers")
    by_cell: dict[tuple[str, int], list[bool]] = defaultdict(list)
    for item, answer in zip(items, answers, strict=True):
        by_cell[(item.family, item.level)].append(item.check(answer))

    def share(flags: list[bool]) -> float:
        return sum(flags) / len(flags) if flags else 0.0

    def merged(select: Callable[[tuple[str, int]], bool]) -> list[bool]:
        return [flag for cell, flags in by_cell.items() if select(cell) for flag in flags]

    families = sorted({family for family, _ in by_cell})
    levels = sorted({level for _, level in by_cell})
    return {
        "items": len(items),
        "overall": share(merged(lambda cell: True)),
        "levels": {str(level): share(merged(lambda cell, level=level: cell[1] == level)) for level in levels},
        "families": {
            family: {
                "overall": share(merged(lambda cell, family=family: cell[0] == family)),
                "levels": {str(level): share(by_cell[(family, level)]) for level in levels
                           if (family, level) in by_cell},
            }
            for family in families
        },
    }

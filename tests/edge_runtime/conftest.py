"""Signed bundles of the tiny toy models, built once per session, and the source model's greedy reference."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

PROMPT_MESSAGES = [("system", "You answer briefly."), ("user", "The quick brown fox jumps over the lazy dog.")]


@pytest.fixture(scope="session")
def source_models(tiny_llama, tiny_qwen2, tiny_mistral):
    """``source_models(family)``: (transformers model, tokenizer) of the toy model, loaded once."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folders = {"llama": tiny_llama, "qwen2": tiny_qwen2, "mistral": tiny_mistral}
    loaded: dict[str, tuple] = {}

    def get(family: str):
        if family not in loaded:
            model = AutoModelForCausalLM.from_pretrained(folders[family], dtype="float32").eval()
            loaded[family] = (model, AutoTokenizer.from_pretrained(folders[family]))
        return loaded[family]

    return get


def source_logits(model, token_ids: Sequence[int]) -> np.ndarray:
    """(len, vocab) float32 logits of the source model over ``token_ids``."""
    import torch

    with torch.no_grad():
        return model(torch.tensor([list(token_ids)])).logits[0].float().numpy()


def source_greedy(model, prompt_ids: Sequence[int], new_tokens: int) -> list[int]:
    """The source model's greedy continuation (no end-of-sequence stop)."""
    import torch

    new: list[int] = []
    feed, past = torch.tensor([list(prompt_ids)]), None
    with torch.no_grad():
        while len(new) < new_tokens:
            out = model(feed, past_key_values=past, use_cache=True)
            past = out.past_key_values
            new.append(int(out.logits[0, -1].argmax()))
            feed = torch.tensor([[new[-1]]])
    return new


def log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))

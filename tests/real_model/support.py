"""Comparing a side's greedy answer with the reference model: teacher-forced on the same token ids, so a
near-tie that tips one way on one runtime and the other way on the other is told apart from a broken model."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

NEAR_TIE_NATS = 0.5
"""A greedy token the reference ranks below its own top choice by less than this counts as a near-tie."""


def log_softmax(logits: np.ndarray) -> np.ndarray:
    logits = logits.astype(np.float64)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def reference_log_probs(model, token_ids: Sequence[int]) -> np.ndarray:
    """The reference's next-token log-probabilities after each prefix of ``token_ids``, (len, vocab) float64."""
    import torch

    with torch.inference_mode():
        logits = model(torch.tensor([list(token_ids)])).logits[0].float().numpy()
    return log_softmax(logits)


@dataclass(frozen=True)
class Agreement:
    """How a side's greedy tokens fare under the reference model, position by position."""

    tokens: int
    top1: float
    """Share of positions where the side's token is the reference's greedy choice."""
    near: float
    """Share where it is the reference's choice or a near-tie with it (``NEAR_TIE_NATS``)."""
    mean_logprob_gap: float
    """Mean |side's logprob - reference's logprob| of the chosen tokens, in nats."""
    reference_logprob: float
    """Mean reference log-probability of the side's tokens (a broken side produces improbable text)."""


def agreement(model, prompt_ids: Sequence[int], answer_ids: Sequence[int],
              answer_logprobs: Sequence[float]) -> Agreement:
    if not answer_ids:
        raise AssertionError("the side answered nothing")
    log_probs = reference_log_probs(model, [*prompt_ids, *answer_ids])[len(prompt_ids) - 1: -1]
    chosen = log_probs[np.arange(len(answer_ids)), list(answer_ids)]
    best = log_probs.max(axis=-1)
    return Agreement(
        tokens=len(answer_ids),
        top1=float((log_probs.argmax(axis=-1) == np.asarray(answer_ids)).mean()),
        near=float((best - chosen < NEAR_TIE_NATS).mean()),
        mean_logprob_gap=float(np.abs(np.asarray(answer_logprobs) - chosen).mean()),
        reference_logprob=float(chosen.mean()),
    )


def english(text: str) -> bool:
    """Real words: at least three, mostly alphabetic."""
    words = [word.strip(".,;:!?\"'()") for word in text.split()]
    words = [word for word in words if word]
    return len(words) >= 3 and sum(word.isalpha() for word in words) >= 0.7 * len(words)

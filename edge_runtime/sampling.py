"""Next-token selection from one row of logits, shared by every local backend so they agree exactly.

``pick`` returns the token and its logprob under the model's raw distribution (log-softmax of the logits,
before temperature, top-k and top-p): that is the confidence signal the SDK's cascade reads.
"""

from __future__ import annotations

import numpy as np

from edge_runtime.types import SamplingParams


def logsumexp(logits: np.ndarray, scratch: np.ndarray | None = None) -> float:
    """log(sum(exp(logits))) without overflow; ``scratch`` (same shape, float32) saves an allocation per call."""
    peak = float(logits.max())
    shifted = np.subtract(logits, peak, out=scratch if scratch is not None and scratch.shape == logits.shape else None)
    return peak + float(np.log(np.exp(shifted, out=shifted).sum()))


class Sampler:
    """Greedy (argmax) or temperature / top-k / top-p sampling with a seeded generator, one per request."""

    def __init__(self, params: SamplingParams) -> None:
        self.params = params
        self._rng = np.random.default_rng(params.seed)
        self._scratch: np.ndarray | None = None

    def pick(self, logits: np.ndarray) -> tuple[int, float]:
        """(token, logprob) from a (vocab,) float32 row of logits."""
        token = self.choose(logits)
        return token, self.logprob(logits, token)

    def choose(self, logits: np.ndarray) -> int:
        """The next token alone (what the next decode step needs); ``logprob`` can follow later."""
        return int(logits.argmax()) if self.params.greedy else self._sample(logits)

    def logprob(self, logits: np.ndarray, token: int) -> float:
        """``token``'s logprob under the raw distribution of ``logits``."""
        if self._scratch is None or self._scratch.shape != logits.shape or self._scratch.dtype != logits.dtype:
            self._scratch = np.empty_like(logits)
        return float(logits[token]) - logsumexp(logits, self._scratch)

    def _sample(self, logits: np.ndarray) -> int:
        params = self.params
        scaled = logits.astype(np.float64) / params.temperature
        if 0 < params.top_k < scaled.shape[0]:
            candidates = np.argpartition(scaled, -params.top_k)[-params.top_k :]
        else:
            candidates = np.arange(scaled.shape[0])
        order = candidates[np.argsort(scaled[candidates])[::-1]]  # most likely first
        probs = np.exp(scaled[order] - scaled[order[0]])
        probs /= probs.sum()
        if params.top_p < 1.0:
            keep = int(np.searchsorted(np.cumsum(probs), params.top_p)) + 1
            order, probs = order[:keep], probs[:keep] / probs[:keep].sum()
        return int(order[self._rng.choice(len(order), p=probs)])

"""What every artifact is checked against: the source model's logits and perplexity.

Each runtime (transformers for the source, llama.cpp for GGUF, ONNX Runtime for ONNX) scores the *same*
token windows, so the numbers compare like with like:

- ``check_logits`` — the numerical check of an unquantized (F32/F16) conversion: its logits on a fixed prompt
  set must match the source model's within a tolerance, or a NumericalMismatchError names the prompt and
  position that diverged.
- ``QualityGate`` — the quality gate of a quantized artifact: its perplexity on held-out text may rise at
  most ``max_increase_pct`` percent over the source model's.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np

from export.errors import NumericalMismatchError, QualityGateError, SpecError

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

# Default perplexity gates, in percent increase over the source model (documented in the README).
DEFAULT_MAX_INCREASE_PCT = {
    "f32": 0.1,
    "f16": 0.5,
    "bf16": 0.5,
    "q8_0": 1.0,
    "int8": 1.0,
    "q4_0": 10.0,
    "q4_k_m": 10.0,
    "int4": 10.0,
}

# Prompts of the numerical check; fixed so that every run and every runtime compares the same positions.
CHECK_PROMPTS = (
    "The device answers short questions on its own.",
    "12 + 34 = 46; 7 * 8 = 56",
    "def f(x):\n    return x * 2\n",
    "café naïve Zürich → 日本語",
)

WindowNll = Callable[[Sequence[int]], float]
"""Scores one window of token ids: the summed negative log-likelihood of tokens 1..n-1 given their prefixes."""


def eval_windows(token_ids: Sequence[int], window: int, max_windows: int | None = None) -> list[list[int]]:
    """Cut held-out text into non-overlapping windows of ``window`` tokens (the last, shorter one is kept
    when it has at least two tokens)."""
    if window < 2:
        raise SpecError(f"evaluation window={window} must be at least 2 tokens")
    windows = [list(token_ids[i : i + window]) for i in range(0, len(token_ids), window)]
    windows = [w for w in windows if len(w) >= 2]
    if not windows:
        raise SpecError("the evaluation text is shorter than two tokens; give more held-out text")
    return windows[:max_windows] if max_windows else windows


@dataclass(frozen=True)
class Perplexity:
    value: float
    tokens: int
    """Tokens scored (each window scores all but its first token)."""


def perplexity(windows: Sequence[Sequence[int]], window_nll: WindowNll) -> Perplexity:
    total = sum(window_nll(window) for window in windows)
    count = sum(len(window) - 1 for window in windows)
    return Perplexity(value=math.exp(total / count), tokens=count)


def nll_from_logits(logits: np.ndarray, window: Sequence[int]) -> float:
    """Summed NLL of ``window[1:]`` from ``logits`` of shape (len(window), vocab), in float64."""
    logits = logits[: len(window) - 1].astype(np.float64)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    targets = np.asarray(window[1:])
    return float(-log_probs[np.arange(len(targets)), targets].sum())


def hf_logits(model: PreTrainedModel, token_ids: Sequence[int]) -> np.ndarray:
    """Logits of a transformers model for one sequence, (len, vocab) float32."""
    import torch

    with torch.inference_mode():
        out = model(torch.tensor([list(token_ids)]))
    return out.logits[0].float().numpy()


def hf_window_nll(model: PreTrainedModel) -> WindowNll:
    return lambda window: nll_from_logits(hf_logits(model, window), window)


def check_logits(
    artifact: str,
    prompts: Sequence[Sequence[int]],
    reference: Callable[[Sequence[int]], np.ndarray],
    candidate: Callable[[Sequence[int]], np.ndarray],
    atol: float,
    rtol: float = 0.0,
) -> float:
    """Compare two models' logits on every prompt; return the largest absolute difference seen.

    Raises NumericalMismatchError naming the first prompt and position where the largest difference exceeds
    ``atol + rtol * max|reference logit|`` (reduced precision errs in proportion to the logits' size).
    """
    worst = 0.0
    for index, ids in enumerate(prompts):
        expected, actual = reference(ids), candidate(ids)
        if expected.shape != actual.shape:
            raise NumericalMismatchError(
                f"{artifact}: logits of prompt {index} have shape {actual.shape}, the source model's {expected.shape}"
            )
        diff = np.abs(expected - actual).max(axis=-1)
        bound = atol + rtol * np.abs(expected).max(axis=-1)
        worst = max(worst, float(diff.max()))
        over = np.flatnonzero(diff > bound)
        if over.size:
            position = int(over[0])
            raise NumericalMismatchError(
                f"{artifact}: logits diverge from the source model at prompt {index}, position {position}: "
                f"max |difference| {diff[position]:.4g} > tolerance {bound[position]:.4g}"
            )
    return worst


@dataclass(frozen=True)
class GateResult:
    artifact: str
    source_perplexity: float
    perplexity: float
    delta_pct: float
    max_increase_pct: float
    tokens: int

    def as_dict(self) -> dict[str, float | int | str]:
        return asdict(self)


@dataclass(frozen=True)
class QualityGate:
    max_increase_pct: float

    def __post_init__(self) -> None:
        if not self.max_increase_pct >= 0:
            raise SpecError(f"max_increase_pct={self.max_increase_pct} must be >= 0")

    @classmethod
    def default_for(cls, quantization: str) -> QualityGate:
        if quantization not in DEFAULT_MAX_INCREASE_PCT:
            raise SpecError(
                f"no default quality gate for quantization {quantization!r}; "
                f"known: {', '.join(DEFAULT_MAX_INCREASE_PCT)}"
            )
        return cls(DEFAULT_MAX_INCREASE_PCT[quantization])

    def check(self, artifact: str, source: Perplexity, candidate: Perplexity) -> GateResult:
        delta = 100.0 * (candidate.value - source.value) / source.value
        result = GateResult(artifact, source.value, candidate.value, delta, self.max_increase_pct, candidate.tokens)
        if delta > self.max_increase_pct:
            raise QualityGateError(
                f"{artifact}: perplexity {candidate.value:.4f} is {delta:.2f} % above the source model's "
                f"{source.value:.4f} (gate: {self.max_increase_pct:g} %); use a milder quantization or raise the gate"
            )
        return result


@dataclass(frozen=True)
class Evaluation:
    """Held-out text for a quality gate, and how it is cut into windows."""

    text: str
    gate: QualityGate
    window: int = 256
    max_windows: int = 32

    def windows(self, tokenizer: PreTrainedTokenizerBase, context_length: int) -> list[list[int]]:
        token_ids = tokenizer.encode(self.text, add_special_tokens=False, verbose=False)
        return eval_windows(token_ids, min(self.window, context_length), self.max_windows)

    def check(self, artifact: str, windows: list[list[int]], source: WindowNll, candidate: WindowNll) -> GateResult:
        """Score the same windows with the source model and the artifact, and apply the gate."""
        return self.gate.check(artifact, perplexity(windows, source), perplexity(windows, candidate))

"""What every artifact is checked against: the source model's logits and perplexity.

Each runtime (transformers for the source, llama.cpp for GGUF, ONNX Runtime for ONNX) scores the *same*
token windows, so the numbers compare like with like:

- ``check_logits`` — the numerical check of an unquantized (F32/F16) conversion: its logits on a fixed prompt
  set must match the source model's within a tolerance, or a NumericalMismatchError names the prompt and
  position that diverged.
- ``QualityGate`` — the quality gate of a quantized artifact: its perplexity on held-out text may rise at
  most ``max_increase_pct`` percent over the source model's. Beside perplexity it reports what llama.cpp's
  ``llama-perplexity --kl-divergence`` reports: the mean KL divergence of the artifact's next-token
  distribution from the source model's, and how often both rank the same token first; either can be gated.
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
WindowLogits = Callable[[Sequence[int]], np.ndarray]
"""The (len, vocab) logits of one window of token ids."""

DEFAULT_WINDOW = 256
DEFAULT_MAX_WINDOWS = 16
"""The evaluation scores at most this many windows (4,096 tokens) unless asked for a full run (--full-eval), so
that scoring does not dominate the export of a 1-3B model."""


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


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    # float32 elementwise, float64 sums: a 49k-token vocabulary's KL of ~1e-2 nats stays exact to ~1e-6, at a
    # third of the time of float64 throughout (the evaluation scores thousands of positions).
    shifted = logits.astype(np.float32, copy=True)
    shifted -= shifted.max(axis=-1, keepdims=True)
    total = np.exp(shifted).sum(axis=-1, keepdims=True, dtype=np.float64)
    shifted -= np.log(total).astype(np.float32)
    return shifted


@dataclass(frozen=True)
class Comparison:
    """The source model and an artifact scored on the same windows."""

    source: Perplexity
    candidate: Perplexity
    kl_divergence: float
    """Mean over scored positions of KL(source || artifact) of the next-token distributions, in nats."""
    top1_agreement: float
    """Fraction of scored positions where both rank the same token first."""


def compare(windows: Sequence[Sequence[int]], source: WindowLogits, candidate: WindowLogits) -> Comparison:
    """Perplexity of both, KL divergence and top-1 agreement, from one pass of each model over ``windows``."""
    nll_source = nll_candidate = kl = 0.0
    agree = count = 0
    for window in windows:
        n = len(window) - 1
        p = _log_softmax(source(window)[:n])
        q = _log_softmax(candidate(window)[:n])
        if p.shape != q.shape:
            raise SpecError(f"the two models' logits have shapes {p.shape} and {q.shape}: different vocabularies")
        targets = np.asarray(window[1:])
        rows = np.arange(n)
        nll_source -= float(p[rows, targets].sum())
        nll_candidate -= float(q[rows, targets].sum())
        kl += float((np.exp(p) * (p - q)).sum(dtype=np.float64))
        agree += int((p.argmax(axis=-1) == q.argmax(axis=-1)).sum())
        count += n
    return Comparison(
        source=Perplexity(math.exp(nll_source / count), count),
        candidate=Perplexity(math.exp(nll_candidate / count), count),
        kl_divergence=kl / count,
        top1_agreement=agree / count,
    )


@dataclass(frozen=True)
class GateResult:
    artifact: str
    source_perplexity: float
    perplexity: float
    delta_pct: float
    max_increase_pct: float
    tokens: int
    kl_divergence: float | None = None
    top1_agreement: float | None = None
    max_kl: float | None = None
    min_top1: float | None = None
    windows: int | None = None

    def as_dict(self) -> dict[str, float | int | str | None]:
        return asdict(self)


@dataclass(frozen=True)
class QualityGate:
    max_increase_pct: float
    max_kl: float | None = None
    """Largest mean KL divergence from the source model (nats), when set."""
    min_top1: float | None = None
    """Smallest top-1 agreement with the source model (0-1), when set."""

    def __post_init__(self) -> None:
        if not self.max_increase_pct >= 0:
            raise SpecError(f"max_increase_pct={self.max_increase_pct} must be >= 0")
        if self.max_kl is not None and not self.max_kl >= 0:
            raise SpecError(f"max_kl={self.max_kl} (--max-kl) must be >= 0 nats")
        if self.min_top1 is not None and not 0 <= self.min_top1 <= 1:
            raise SpecError(f"min_top1={self.min_top1} (--min-top1) must be between 0 and 1")

    @classmethod
    def default_for(cls, quantization: str, *, max_kl: float | None = None, min_top1: float | None = None
                    ) -> QualityGate:
        if quantization not in DEFAULT_MAX_INCREASE_PCT:
            raise SpecError(
                f"no default quality gate for quantization {quantization!r}; "
                f"known: {', '.join(DEFAULT_MAX_INCREASE_PCT)}"
            )
        return cls(DEFAULT_MAX_INCREASE_PCT[quantization], max_kl, min_top1)

    def check(self, artifact: str, source: Perplexity, candidate: Perplexity,
              comparison: Comparison | None = None, windows: int | None = None) -> GateResult:
        delta = 100.0 * (candidate.value - source.value) / source.value
        result = GateResult(
            artifact, source.value, candidate.value, delta, self.max_increase_pct, candidate.tokens,
            kl_divergence=comparison.kl_divergence if comparison else None,
            top1_agreement=comparison.top1_agreement if comparison else None,
            max_kl=self.max_kl, min_top1=self.min_top1, windows=windows,
        )
        if delta > self.max_increase_pct:
            raise QualityGateError(
                f"{artifact}: perplexity {candidate.value:.4f} is {delta:.2f} % above the source model's "
                f"{source.value:.4f} (gate: {self.max_increase_pct:g} %); use a milder quantization or raise the gate"
            )
        if comparison and self.max_kl is not None and comparison.kl_divergence > self.max_kl:
            raise QualityGateError(
                f"{artifact}: mean KL divergence from the source model {comparison.kl_divergence:.4f} nats exceeds "
                f"the gate's {self.max_kl:g} (--max-kl); use a milder quantization or raise the gate"
            )
        if comparison and self.min_top1 is not None and comparison.top1_agreement < self.min_top1:
            raise QualityGateError(
                f"{artifact}: the top token agrees with the source model's at {100 * comparison.top1_agreement:.1f} % "
                f"of positions, under the gate's {100 * self.min_top1:g} % (--min-top1); use a milder quantization "
                "or lower the gate"
            )
        return result


@dataclass(frozen=True)
class Evaluation:
    """Held-out text for a quality gate, and how it is cut into windows."""

    text: str
    gate: QualityGate
    window: int = DEFAULT_WINDOW
    max_windows: int | None = DEFAULT_MAX_WINDOWS
    """None scores every window of the text (a full run)."""

    def windows(self, tokenizer: PreTrainedTokenizerBase, context_length: int) -> list[list[int]]:
        token_ids = tokenizer.encode(self.text, add_special_tokens=False, verbose=False)
        return eval_windows(token_ids, min(self.window, context_length), self.max_windows)

    def check(self, artifact: str, windows: list[list[int]], source: WindowLogits, candidate: WindowLogits
              ) -> GateResult:
        """Score the same windows with the source model and the artifact (their logits), and apply the gate."""
        comparison = compare(windows, source, candidate)
        return self.gate.check(artifact, comparison.source, comparison.candidate, comparison, len(windows))


def hf_window_logits(model: PreTrainedModel) -> WindowLogits:
    return lambda window: hf_logits(model, window)

"""How hard a request looks, from cheap text features, or from the bundle's calibrated router when it has one.

The heuristic scores 0..1 from the prompt's length, the expected answer length, the conversation's depth
and code/math markers (weights below, named). A calibrated router (``router.json`` in a bundle, fitted by
``tandem export calibrate-router`` on the bundle's own answers) predicts the probability that the device
answers well; the request is hard when that probability is below the router's threshold. numpy only.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from edge_runtime.types import Message

if TYPE_CHECKING:
    from edge_runtime.router import DifficultyRouter

DEFAULT_MAX_TOKENS = 256
"""Expected answer length when the request sets no max_tokens."""
LONG_PROMPT_CHARS = 4000
"""A prompt this long counts as fully long (log scale)."""
LONG_ANSWER_TOKENS = 2048
DEEP_CONVERSATION_TURNS = 12
# Weights of the heuristic's features; they sum to more than 1 on purpose (the score is clipped).
WEIGHT_PROMPT = 0.25
WEIGHT_ANSWER = 0.25
WEIGHT_DEPTH = 0.15
WEIGHT_CODE = 0.35
WEIGHT_MATH = 0.35
WEIGHT_DIGITS = 0.25
LONG_DIGIT_RUN = 12

_CODE = re.compile(r"```|\bdef |\bclass |\bfunction\b|#include|\breturn\b|;\s*$|=>|\{\s*$", re.MULTILINE)
_MATH = re.compile(r"\d\s*[-+*/^=]\s*\d|\b(?:prove|integral|derivative|equation|solve|theorem)\b|[∑∫√π]",
                   re.IGNORECASE)
_DIGITS = re.compile(r"\d+")
# Plain-substring hints checked (in C, fast) before the regexes, which cost ~140 ns a character.
_CODE_HINTS = ("```", "def ", "class ", "function", "#include", "return", ";", "=>", "{")
_MATH_HINTS = ("prove", "integral", "derivative", "equation", "solve", "theorem", "∑", "∫", "√", "π")
_OPERATORS = ("+", "-", "*", "/", "^", "=")
SCAN_CHARS = 2048
"""Markers are looked for in the last user message's first and last SCAN_CHARS / 2 characters."""


def _scanned(text: str) -> str:
    half = SCAN_CHARS // 2
    return text if len(text) <= SCAN_CHARS else text[:half] + "\n" + text[-half:]


def _has_code(text: str) -> bool:
    return any(hint in text for hint in _CODE_HINTS) and _CODE.search(text) is not None


def _has_math(text: str) -> bool:
    lower = text.lower()
    hinted = any(hint in lower for hint in _MATH_HINTS) or any(op in text for op in _OPERATORS)
    return hinted and _MATH.search(text) is not None


@dataclass(frozen=True)
class Difficulty:
    score: float
    """0 (trivial) .. 1 (hard)."""
    hard: bool
    source: str
    """"heuristic" or "router"."""
    p_device_good: float | None = None
    """The router's probability that the device answers well (router only)."""


def _log_scale(value: float, full: float) -> float:
    return min(1.0, math.log1p(max(value, 0.0)) / math.log1p(full))


def heuristic_score(messages: Sequence[Message], max_tokens: int | None) -> float:
    last_user = _scanned(next((m.content for m in reversed(messages) if m.role == "user"), ""))
    prompt_chars = sum(len(m.content) for m in messages)
    longest_digits = max((len(run) for run in _DIGITS.findall(last_user)), default=0)
    score = (
        WEIGHT_PROMPT * _log_scale(prompt_chars, LONG_PROMPT_CHARS)
        + WEIGHT_ANSWER * _log_scale(max_tokens or DEFAULT_MAX_TOKENS, LONG_ANSWER_TOKENS)
        + WEIGHT_DEPTH * min(1.0, (len(messages) - 1) / DEEP_CONVERSATION_TURNS)
        + WEIGHT_CODE * _has_code(last_user)
        + WEIGHT_MATH * _has_math(last_user)
        + WEIGHT_DIGITS * min(1.0, longest_digits / LONG_DIGIT_RUN)
    )
    return min(1.0, score)


DEFAULT_ROUTER_THRESHOLD = 0.5
"""With a router and no configured threshold: the device answers when it more likely succeeds than fails."""


class DifficultyEstimator:
    """Scores requests. With a router the request is hard when P(device answer good) < ``threshold``: given,
    or taken from the router's calibrated table for a target ``cloud_share``, else DEFAULT_ROUTER_THRESHOLD."""

    def __init__(self, max_difficulty: float, router: DifficultyRouter | None = None,
                 threshold: float | None = None, cloud_share: float | None = None) -> None:
        self.max_difficulty = max_difficulty
        self.router = router
        if router is None or threshold is not None:
            self.threshold = threshold
        elif cloud_share is not None:
            self.threshold = router.threshold_for_cloud_share(cloud_share)
        else:
            self.threshold = DEFAULT_ROUTER_THRESHOLD

    def with_router(self, router: DifficultyRouter | None, threshold: float | None,
                    cloud_share: float | None = None) -> DifficultyEstimator:
        return DifficultyEstimator(self.max_difficulty, router, threshold, cloud_share)

    def estimate(self, messages: Sequence[Message], max_tokens: int | None) -> Difficulty:
        if self.router is not None and self.threshold is not None:
            from edge_runtime.router import text_features

            p_good = float(self.router.predict(text_features(messages, max_tokens)))
            return Difficulty(1.0 - p_good, p_good < self.threshold, "router", p_good)
        score = heuristic_score(messages, max_tokens)
        return Difficulty(score, score > self.max_difficulty, "heuristic")

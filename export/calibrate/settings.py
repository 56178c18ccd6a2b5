"""How a router is fitted: the settings and their defaults (no numpy here, so the CLI can import them cheaply)."""

from __future__ import annotations

from dataclasses import dataclass

from export.errors import SpecError

DEFAULT_HIDDEN = 8
DEFAULT_ITERATIONS = 500
DEFAULT_LEARNING_RATE = 0.03
DEFAULT_L2 = 3e-2
"""Strong: a few hundred calibration prompts against ~30 features overfit quickly (measured)."""
DEFAULT_CASCADE_TARGET = 0.95
"""The confidence cascade's cutoff reaches this share of the all-cloud accuracy (the routing-quality goal's 95 %)."""
DEFAULT_CASCADE_WINDOW = 8
"""First answer tokens the cascade checks (the SDK's default)."""


@dataclass(frozen=True)
class FitSettings:
    """The router's size and its fit (full-batch Adam with an L2 penalty), validated where built."""

    hidden: int = DEFAULT_HIDDEN
    """Hidden units of the one hidden layer (tanh); 0 fits a logistic regression."""
    iterations: int = DEFAULT_ITERATIONS
    learning_rate: float = DEFAULT_LEARNING_RATE
    l2: float = DEFAULT_L2
    seed: int = 0

    def __post_init__(self) -> None:
        if self.hidden < 0 or self.iterations < 1 or not self.learning_rate > 0 or self.l2 < 0:
            raise SpecError(
                f"router fit settings {self}: hidden >= 0, iterations >= 1, learning_rate > 0 and l2 >= 0 required"
            )

"""The task families of the suite: each makes one problem with an exact answer at a graded difficulty level.

A family is a declarative entry (name, one size parameter per level, a problem maker); adding a family means
adding an entry to FAMILIES, not branching elsewhere. Difficulty grows with one size per family: digits of
the number, length of the string, items of the list. A prompt's phrasing is picked by the generator
(PHRASINGS), but a problem's ``key`` leaves the phrasing out: it names the problem itself, so the split a
problem lands in does not depend on how it is asked.

Pure Python (``random`` only): the SDK's evaluation imports the suite on devices without torch or numpy.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

LEVELS = (1, 2, 3, 4, 5)
"""Difficulty levels, easiest first."""

LETTERS = "abcdefghijklmnopqrstuvwxyz"


PHRASINGS = {
    "addition": ("{a}+{b}=", "What is {a}+{b}?"),
    "reverse": ("Reverse {s}",),
    "sort": ("Sort {l}",),
}
"""How each family asks. Few and short on purpose: every extra phrasing slowed the teacher's training on
2 CPU cores measurably (the same model learned copying and reversal 1.5-2x slower with three phrasings per
family and system prompts than with one)."""


@dataclass(frozen=True)
class Problem:
    key: str
    """What the problem is, without its phrasing (e.g. "473+81"): equal keys are the same problem."""
    prompt: str
    """The user's message."""
    answer: str
    """The exact expected answer."""


ProblemMaker = Callable[[random.Random, int], Problem]
"""(generator, size of the level) -> a problem."""


@dataclass(frozen=True)
class TaskFamily:
    name: str
    description: str
    sizes: tuple[int, ...]
    """The size parameter of each level in LEVELS (digits, characters, items)."""
    size_unit: str
    make: ProblemMaker

    def __post_init__(self) -> None:
        if len(self.sizes) != len(LEVELS) or list(self.sizes) != sorted(set(self.sizes)):
            raise ValueError(f"family {self.name}: sizes must grow strictly, one per level {LEVELS}")

    def size(self, level: int) -> int:
        if level not in LEVELS:
            raise ValueError(f"level={level!r} is not one of {LEVELS}")
        return self.sizes[LEVELS.index(level)]

    def problem(self, rng: random.Random, level: int) -> Problem:
        return self.make(rng, self.size(level))

    @property
    def training_sizes(self) -> range:
        """Every size from the easiest level's to the hardest's. Training on the in-between sizes too makes
        a model learn the general rule: trained on the level sizes alone, the teacher learned one positional
        pattern per length and failed on lengths it had not seen (measured)."""
        return range(self.sizes[0], self.sizes[-1] + 1)

    def level_of(self, size: int) -> int:
        """The level whose size is the largest not above ``size`` (the easiest for smaller sizes)."""
        fitting = [level for level, level_size in zip(LEVELS, self.sizes, strict=True) if level_size <= size]
        return fitting[-1] if fitting else LEVELS[0]


def _number(rng: random.Random, digits: int) -> int:
    """A number with exactly ``digits`` digits (one digit: 0-9)."""
    low = 0 if digits == 1 else 10 ** (digits - 1)
    return rng.randint(low, 10**digits - 1)


def _word(rng: random.Random, length: int) -> str:
    return "".join(rng.choice(LETTERS) for _ in range(length))


def _addition(rng: random.Random, digits: int) -> Problem:
    a, b = _number(rng, digits), rng.randint(0, 9)
    phrasing = rng.choice(PHRASINGS["addition"])
    return Problem(f"{a}+{b}", phrasing.format(a=a, b=b), str(a + b))


def _reverse(rng: random.Random, length: int) -> Problem:
    text = _word(rng, length)
    phrasing = rng.choice(PHRASINGS["reverse"])
    return Problem(text, phrasing.format(s=text), text[::-1])


def _sort(rng: random.Random, items: int) -> Problem:
    digits = [rng.randint(0, 9) for _ in range(items)]
    listed = ",".join(map(str, digits))
    phrasing = rng.choice(PHRASINGS["sort"])
    return Problem(listed, phrasing.format(l=listed), ",".join(map(str, sorted(digits))))


# Tried and left out (measured with the full-size teacher on 2 cores): counting a letter (the loss stalled) and
# copying next to reversal (the two near-identical prompts competed: one of them stayed below 50 % on long
# strings within the training budget).
FAMILIES: dict[str, TaskFamily] = {
    family.name: family
    for family in (
        TaskFamily("addition", "add a one-digit number to a number of growing length", (1, 2, 4, 6, 8), "digits",
                   _addition),
        TaskFamily("reverse", "write a string of letters backwards", (2, 3, 5, 7, 8), "letters", _reverse),
        TaskFamily("sort", "sort a list of digits", (2, 3, 5, 7, 10), "items", _sort),
    )
}

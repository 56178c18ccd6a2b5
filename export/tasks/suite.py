"""Task items as chat prompts, and the train / calibration / test splits, generated deterministically.

    from export.tasks import generate_split
    items = generate_split("test", per_cell=20, seed=0)      # 20 items per (family, level)
    item = items[0]
    item.messages        # (ChatTurn("user", "What is 4738+6?"),) — sometimes after a short system prompt
    item.check(" 4744 ") # True: exact match after trimming

Splits never overlap, whatever the seeds or sizes: a problem belongs to exactly one split, chosen from the
hash of its family and key (not of its phrasing), and each split's generator keeps only its own problems.
The same (split, per_cell, seed, families, levels) always gives the same items, in the same order.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from export.tasks.families import FAMILIES, LEVELS, Problem, TaskFamily

SPLITS = ("train", "calibration", "test")
SPLIT_SHARES = {"train": 800, "calibration": 100, "test": 100}
"""Per mille of all problems of a family that belong to each split."""
_BUCKETS = sum(SPLIT_SHARES.values())

SYSTEM_PROMPTS = ("Answer only.",)
SYSTEM_PROMPT_SHARE = 0.1
"""Share of items that start with one of SYSTEM_PROMPTS."""

TRAINING_WEIGHTS = {"addition": 1.5, "reverse": 2.0}
"""Relative share of each family in ``training_stream`` (1.0 when absent): the families the teacher learned
slowest get more of the training examples (addition's are also the shortest, so the cheapest)."""

UNIQUE_ATTEMPTS = 50
"""Draws spent looking for a problem not yet in the split before a repeat is accepted (small levels have
only a few dozen problems per split)."""


class ChatTurn(NamedTuple):
    """One chat message; the same ``role`` / ``content`` attributes as ``edge_runtime.Message``."""

    role: str
    content: str


@dataclass(frozen=True)
class TaskItem:
    id: str
    family: str
    level: int
    messages: tuple[ChatTurn, ...]
    """The prompt: an optional system turn, then the user turn."""
    answer: str
    """The exact expected answer."""

    def check(self, answer_text: str) -> bool:
        """Whether a model's answer is right: exact match after trimming surrounding whitespace."""
        return answer_text.strip() == self.answer

    @property
    def prompt_text(self) -> str:
        """Every turn's content, one per line: what "the same prompt" means when comparing splits."""
        return "\n".join(turn.content for turn in self.messages)

    @property
    def user_prompt(self) -> str:
        return self.messages[-1].content

    def chat(self) -> list[dict[str, str]]:
        """The prompt as chat-template messages (``{"role", "content"}`` dicts)."""
        return [turn._asdict() for turn in self.messages]

    def training_chat(self) -> list[dict[str, str]]:
        """The prompt followed by the expected answer as the assistant's turn."""
        return [*self.chat(), {"role": "assistant", "content": self.answer}]

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "family": self.family, "level": self.level, "messages": self.chat(),
                "answer": self.answer}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TaskItem:
        """Inverse of ``to_dict``; raises ValueError naming the field that is missing or wrong."""
        try:
            messages = tuple(ChatTurn(str(m["role"]), str(m["content"])) for m in data["messages"])
            item = cls(str(data["id"]), str(data["family"]), int(data["level"]), messages, str(data["answer"]))
        except (KeyError, TypeError) as exc:
            raise ValueError(f"a task item needs id, family, level, messages and answer: {exc!r}") from exc
        if not messages or messages[-1].role != "user":
            raise ValueError(f"task item {item.id}: the last message must be the user's")
        return item


def split_of(family: str, key: str) -> str:
    """The split a problem belongs to: a stable hash of (family, key), independent of any seed."""
    digest = hashlib.sha256(f"{family}\x00{key}".encode()).digest()
    bucket = int.from_bytes(digest[:8], "big") % _BUCKETS
    for split, share in SPLIT_SHARES.items():
        if bucket < share:
            return split
        bucket -= share
    raise AssertionError("unreachable: the shares cover every bucket")


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split={split!r} is not one of {', '.join(SPLITS)}")


def _families(names: Iterable[str] | None) -> list[TaskFamily]:
    if names is None:
        return list(FAMILIES.values())
    chosen = []
    for name in names:
        if name not in FAMILIES:
            raise ValueError(f"no task family {name!r}; the suite has {', '.join(FAMILIES)}")
        chosen.append(FAMILIES[name])
    return chosen


def _levels(levels: Iterable[int] | None) -> list[int]:
    chosen = list(LEVELS if levels is None else levels)
    for level in chosen:
        if level not in LEVELS:
            raise ValueError(f"level={level!r} is not one of {LEVELS}")
    return chosen


def _draw(family: TaskFamily, level: int, split: str, rng: random.Random, size: int | None = None) -> Problem:
    """A problem of this family and level (or of this exact size) that belongs to ``split`` (rejection
    sampling)."""
    while True:
        problem = family.make(rng, size) if size is not None else family.problem(rng, level)
        if split_of(family.name, problem.key) == split:
            return problem


def _messages(problem: Problem, rng: random.Random) -> tuple[ChatTurn, ...]:
    user = ChatTurn("user", problem.prompt)
    if rng.random() < SYSTEM_PROMPT_SHARE:
        return (ChatTurn("system", rng.choice(SYSTEM_PROMPTS)), user)
    return (user,)


def _cell(split: str, family: TaskFamily, level: int, count: int, seed: int) -> list[TaskItem]:
    rng = random.Random(f"tandem-tasks:{seed}:{split}:{family.name}:{level}")
    seen: set[str] = set()
    items = []
    for index in range(count):
        problem = _draw(family, level, split, rng)
        for _ in range(UNIQUE_ATTEMPTS):
            if problem.key not in seen:
                break
            problem = _draw(family, level, split, rng)
        seen.add(problem.key)
        items.append(
            TaskItem(f"{split}-{family.name}-{level}-{index:05d}", family.name, level, _messages(problem, rng),
                     problem.answer)
        )
    return items


def generate_split(
    split: str,
    per_cell: int,
    *,
    seed: int = 0,
    families: Sequence[str] | None = None,
    levels: Sequence[int] | None = None,
) -> list[TaskItem]:
    """``per_cell`` items of ``split`` for every (family, level), grouped by family then level.

    Raises ValueError for an unknown split, family or level, or a negative count.
    """
    _check_split(split)
    if isinstance(per_cell, bool) or not isinstance(per_cell, int) or per_cell < 0:
        raise ValueError(f"per_cell={per_cell!r} must be an integer >= 0")
    return [
        item
        for family in _families(families)
        for level in _levels(levels)
        for item in _cell(split, family, level, per_cell, seed)
    ]


def training_stream(
    *, seed: int = 0, families: Sequence[str] | None = None, levels: Sequence[int] | None = None
) -> Iterator[TaskItem]:
    """An endless stream of training items: the family drawn by TRAINING_WEIGHTS, then a size uniformly from
    the family's sizes between the chosen levels' (every length in between, not only the levels' own)."""
    chosen, chosen_levels = _families(families), _levels(levels)
    weights = [TRAINING_WEIGHTS.get(family.name, 1.0) for family in chosen]
    rng = random.Random(f"tandem-tasks:{seed}:train-stream")
    index = 0
    while True:
        (family,) = rng.choices(chosen, weights)
        low, high = family.size(min(chosen_levels)), family.size(max(chosen_levels))
        size = rng.choice([s for s in family.training_sizes if low <= s <= high])
        problem = _draw(family, 0, "train", rng, size=size)
        yield TaskItem(f"train-stream-{index:08d}", family.name, family.level_of(size), _messages(problem, rng),
                       problem.answer)
        index += 1

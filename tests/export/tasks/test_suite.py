"""The task suite: deterministic items, exact checkers, graded levels, splits that never overlap."""

from __future__ import annotations

import json
import random

import pytest

from export.tasks import FAMILIES, LEVELS, SPLITS, TaskItem, generate_split, split_of, training_stream
from tests.support import heavy_modules_after


def test_the_suite_imports_without_torch_or_numpy() -> None:
    assert heavy_modules_after("import export.tasks, export.tasks.suite, export.tasks.families") == []
    assert "numpy" not in heavy_modules_after(
        "import export.tasks\nimport sys\nprint('numpy' if 'numpy' in sys.modules else '')"
    )


def test_same_arguments_give_the_same_items_and_other_seeds_differ() -> None:
    first = generate_split("test", 3, seed=5)
    assert first == generate_split("test", 3, seed=5)
    assert [item.prompt_text for item in first] != [item.prompt_text for item in generate_split("test", 3, seed=6)]
    assert len(first) == 3 * len(FAMILIES) * len(LEVELS)
    assert len({item.id for item in first}) == len(first)


@pytest.mark.parametrize("seeds", [(0, 0, 0), (0, 1, 2)])
def test_no_prompt_and_no_problem_is_in_two_splits(seeds: tuple[int, int, int]) -> None:
    splits = {split: generate_split(split, 12, seed=seed) for split, seed in zip(SPLITS, seeds, strict=True)}
    splits["train"] += [item for _, item in zip(range(3000), training_stream(seed=seeds[0]), strict=False)]
    prompts = {split: {item.prompt_text for item in items} for split, items in splits.items()}
    users = {split: {item.user_prompt for item in items} for split, items in splits.items()}
    for a, b in (("train", "calibration"), ("train", "test"), ("calibration", "test")):
        assert not prompts[a] & prompts[b], f"{a} and {b} share prompts"
        assert not users[a] & users[b], f"{a} and {b} share user prompts"


def test_each_problem_belongs_to_the_split_its_hash_names() -> None:
    for split in SPLITS:
        for item in generate_split(split, 2, seed=3):
            family = FAMILIES[item.family]
            # Recover the key the way the generator made it: the answer and prompt must match that split.
            assert split_of(family.name, _key(item)) == split


def _key(item: TaskItem) -> str:
    """The problem key of an item, recomputed from its prompt (the numbers or the string in it)."""
    import re

    text = item.user_prompt
    if item.family == "addition":
        a, b = re.findall(r"\d+", text)
        return f"{a}+{b}"
    if item.family == "sort":
        return re.search(r"[\d,]+\d", text).group(0)
    return _payload(text)


def _payload(prompt: str) -> str:
    """The string a copy / reverse prompt is about: its lowercase word (instructions are capitalised)."""
    import re

    (word,) = [w for w in re.findall(r"\b[a-z]+\b", prompt) if w != "backwards"]
    return word


@pytest.mark.parametrize("family", list(FAMILIES))
def test_answers_are_exact_and_sizes_grow_with_the_level(family: str) -> None:
    rng = random.Random(0)
    spec = FAMILIES[family]
    sizes = [spec.size(level) for level in LEVELS]
    assert sizes == sorted(sizes) and len(set(sizes)) == len(sizes)
    for level in LEVELS:
        for _ in range(20):
            problem = spec.problem(rng, level)
            assert problem.answer == _solve(family, problem.prompt), problem


def _solve(family: str, prompt: str) -> str:
    """An independent solver of each family's prompts."""
    import re

    if family == "addition":
        return str(sum(int(n) for n in re.findall(r"\d+", prompt)))
    if family == "sort":
        return ",".join(sorted(re.search(r"[\d,]+\d", prompt).group(0).split(",")))
    word = _payload(prompt)
    return word[::-1] if family == "reverse" else word


def test_check_is_an_exact_match_after_trimming() -> None:
    item = generate_split("test", 1, families=["addition"], levels=[3])[0]
    assert item.check(item.answer) and item.check(f"  {item.answer}\n")
    assert not item.check(item.answer + "0") and not item.check("") and not item.check(f"{item.answer}.")


def test_items_are_chat_prompts_that_round_trip_through_json() -> None:
    items = generate_split("calibration", 10, seed=1)
    assert any(item.messages[0].role == "system" for item in items)
    for item in items:
        assert item.messages[-1].role == "user"
        assert item.training_chat()[-1] == {"role": "assistant", "content": item.answer}
        assert TaskItem.from_dict(json.loads(json.dumps(item.to_dict()))) == item
    with pytest.raises(ValueError, match="needs id, family, level"):
        TaskItem.from_dict({"id": "x"})


def test_bad_arguments_name_the_fix() -> None:
    with pytest.raises(ValueError, match="split='dev' is not one of"):
        generate_split("dev", 1)
    with pytest.raises(ValueError, match="no task family 'poetry'"):
        generate_split("test", 1, families=["poetry"])
    with pytest.raises(ValueError, match="level=9"):
        generate_split("test", 1, levels=[9])
    with pytest.raises(ValueError, match="per_cell"):
        generate_split("test", -1)

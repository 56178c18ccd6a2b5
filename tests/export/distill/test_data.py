"""Reading, tokenizing, packing and splitting the training text; the order batches come in."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from export.distill.data import BatchSchedule, DataError, pack, read_documents, tokenize_documents
from export.errors import SpecError


def test_text_files_are_documents_per_line_or_whole(tmp_path: Path) -> None:
    path = tmp_path / "t.txt"
    path.write_text("first line\n\n  \nsecond line\n", encoding="utf-8")
    assert read_documents(path) == ["first line", "second line"]
    assert read_documents(path, "whole") == ["first line\n\n  \nsecond line\n"]


def test_jsonl_reads_the_text_field(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text("\n".join(json.dumps({"text": t, "id": i}) for i, t in enumerate(["a b", "c d"])) + "\n\n")
    assert read_documents(path) == ["a b", "c d"]


@pytest.mark.parametrize(
    ("third_line", "message"),
    [('{"text": "ok"', "line 3 is not valid JSON"), ('{"body": "x"}', 'line 3 has no string "text" field'),
     ('["text"]', "line 3 has no string")],
)
def test_a_malformed_jsonl_line_is_named(tmp_path: Path, third_line: str, message: str) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "one"}\n{"text": "two"}\n' + third_line + '\n{"text": "four"}\n')
    with pytest.raises(DataError, match=message):
        read_documents(path)


def test_missing_empty_and_binary_files_are_data_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file"):
        read_documents(tmp_path / "nope.txt")
    (tmp_path / "empty.txt").write_text("\n \n")
    with pytest.raises(DataError, match="holds no text"):
        read_documents(tmp_path / "empty.txt")
    (tmp_path / "bin.txt").write_bytes(b"\xff\xfe\x00abc")
    with pytest.raises(DataError, match="not UTF-8"):
        read_documents(tmp_path / "bin.txt")
    assert issubclass(DataError, SpecError)


def test_packing_splits_off_the_tail_without_overlap() -> None:
    stream = list(range(1000))
    packed = pack(stream, seq_len=32, eval_fraction=0.1)
    assert len(packed.train) + len(packed.held_out) == 1000 // 32
    assert len(packed.held_out) == 3
    assert all(len(s) == 32 for s in packed.train + packed.held_out)
    train_tokens = {t for s in packed.train for t in s}
    assert train_tokens.isdisjoint(packed.held_out_tokens)
    assert packed.held_out_tokens == stream[28 * 32 : 31 * 32]
    assert packed.dropped_tokens == 1000 - 31 * 32
    assert pack(stream, 32, 0.1) == packed  # deterministic
    assert packed.digest() == pack(stream, 32, 0.1).digest() != pack(stream, 31, 0.1).digest()


def test_too_little_text_is_a_data_error() -> None:
    with pytest.raises(DataError, match="too few for a training part and a held-out part"):
        pack(list(range(40)), seq_len=32, eval_fraction=0.1)
    with pytest.raises(SpecError, match="seq_len=1"):
        pack(list(range(40)), seq_len=1, eval_fraction=0.1)


def test_batches_cover_each_epoch_once_and_depend_only_on_seed_and_step() -> None:
    schedule = BatchSchedule(sequences=10, batch_size=4, seed=3)
    first_epoch = [i for step in range(2) for i in schedule.batch_indices(step)] + schedule.batch_indices(2)[:2]
    assert sorted(first_epoch) == list(range(10))
    assert schedule.position(3) == (1, 2)
    # A fresh schedule (as after a resume) answers the same for any step, in any order.
    again = BatchSchedule(sequences=10, batch_size=4, seed=3)
    assert [again.batch_indices(s) for s in (7, 2, 5)] == [schedule.batch_indices(s) for s in (7, 2, 5)]
    assert BatchSchedule(10, 4, seed=4).batch_indices(0) != schedule.batch_indices(0)


def test_documents_are_tokenized_with_eos_between_them(tiny_llama: Path, tiny_qwen2: Path) -> None:
    from export.source import SourceModel

    for folder in (tiny_llama, tiny_qwen2):
        tokenizer = SourceModel.open(folder).load_tokenizer()
        stream = tokenize_documents(tokenizer, ["hello world", "second doc"])
        assert stream.count(tokenizer.eos_token_id) == 2
        assert stream[-1] == tokenizer.eos_token_id
        first = tokenizer("hello world")["input_ids"]
        assert stream[: len(first)] == first

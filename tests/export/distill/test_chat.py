"""Chat examples (text_mode="chat"): conversations rendered with the teacher's template, one padded sequence
each, trained on the answer's tokens only."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from export.distill import DataError, DistillConfig, StudentSpec, distill
from export.distill.data import BatchSchedule, encode_chats, pad_examples, read_chat_examples

torch = pytest.importorskip("torch")

from export.distill.loss import distillation_loss  # noqa: E402

CHATS = [
    [{"role": "user", "content": f"What is {a}+{b}?"}, {"role": "assistant", "content": str(a + b)}]
    for a, b in [(1, 2), (30, 4), (512, 77), (9, 9), (123, 456), (5, 60), (71, 2), (8, 800)]
]


def _write(path: Path, chats: list) -> Path:
    path.write_text("\n".join(json.dumps({"messages": chat}) for chat in chats) + "\n")
    return path


def test_conversations_are_read_and_malformed_lines_named(tmp_path: Path) -> None:
    assert read_chat_examples(_write(tmp_path / "c.jsonl", CHATS)) == CHATS
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"messages": CHATS[0]}) + "\n" + json.dumps({"messages": CHATS[0][:1]}) + "\n")
    with pytest.raises(DataError, match="line 2 needs a \"messages\" list"):
        read_chat_examples(bad)
    with pytest.raises(DataError, match=r"\.jsonl file"):
        read_chat_examples(tmp_path / "c.txt")


def test_the_mask_covers_exactly_the_answer_and_its_end_token(tiny_llama: Path) -> None:
    from export.source import SourceModel

    tokenizer = SourceModel.open(tiny_llama).load_tokenizer()
    for (ids, mask), chat in zip(encode_chats(tokenizer, CHATS), CHATS, strict=True):
        prompt = tokenizer.apply_chat_template(chat[:1], tokenize=True, add_generation_prompt=True)
        assert ids[: len(prompt)] == prompt and len(mask) == len(ids)
        answer = [token for token, flag in zip(ids, mask, strict=True) if flag]
        assert tokenizer.decode(answer) == chat[1]["content"] + tokenizer.eos_token
        assert mask == [0] * len(prompt) + [1] * (len(ids) - len(prompt))


def test_examples_are_padded_one_per_sequence_and_the_tail_held_out() -> None:
    examples = [
        ([1, 2, 3, 4], [0, 0, 1, 1]), ([5, 6, 7], [0, 1, 1]), ([8, 9], [0, 1]), ([1, 1, 1, 1, 1], [0] * 4 + [1]),
    ]
    data = pad_examples(examples, seq_len=6, eval_fraction=0.25, pad_id=0)
    assert data.train == [[1, 2, 3, 4, 0, 0], [5, 6, 7, 0, 0, 0], [8, 9, 0, 0, 0, 0]]
    assert data.train_masks == [[0, 0, 1, 1, 0, 0], [0, 1, 1, 0, 0, 0], [0, 1, 0, 0, 0, 0]]
    assert data.held_out_windows() == [[1, 1, 1, 1, 1]]  # without its padding
    other_mask = [([1, 2, 3, 4], [0, 1, 1, 1]), *examples[1:]]  # same tokens, another answer span
    assert data.digest() != pad_examples(other_mask, 6, 0.25, 0).digest()
    with pytest.raises(DataError, match="chat example 4 has 5 tokens, more than seq_len=4"):
        pad_examples(examples, seq_len=4, eval_fraction=0.25, pad_id=0)
    with pytest.raises(DataError, match="too few"):
        pad_examples(examples[:1], seq_len=6, eval_fraction=0.25, pad_id=0)


def test_the_masked_loss_scores_only_masked_targets() -> None:
    generator = torch.Generator().manual_seed(0)
    student = (torch.randn(2, 5, 7, generator=generator) * 2).requires_grad_()
    teacher = torch.randn(2, 5, 7, generator=generator) * 2
    ids = torch.randint(0, 7, (2, 5), generator=generator)
    mask = torch.tensor([[0, 0, 1, 1, 0], [0, 0, 0, 1, 0]], dtype=torch.float32)
    parts = distillation_loss(student, teacher, ids, temperature=2.0, alpha_kl=0.5, alpha_ce=0.5, target_mask=mask)
    # Targets are tokens (0,2), (0,3), (1,3): predicted at positions (0,1), (0,2), (1,2).
    positions = [(0, 1, 2), (0, 2, 3), (1, 2, 3)]
    log_probs = torch.log_softmax(student.detach().double(), -1)
    expected_ce = -sum(float(log_probs[b, t, ids[b, target]]) for b, t, target in positions) / 3
    assert parts.ce.item() == pytest.approx(expected_ce, rel=1e-5)
    expected_kl = 0.0
    for b, t, _ in positions:
        p = torch.softmax(teacher[b, t].double() / 2, -1)
        q = torch.softmax(student[b, t].detach().double() / 2, -1)
        expected_kl += float((p * (p.log() - q.log())).sum())
    assert parts.kl.item() == pytest.approx(4 * expected_kl / 3, rel=1e-5)
    parts.total.backward()
    untouched = [(0, 0), (0, 3), (0, 4), (1, 0), (1, 1), (1, 3), (1, 4)]
    assert all(float(student.grad[b, t].abs().sum()) == 0.0 for b, t in untouched)


def test_a_chat_run_trains_on_the_answers(tiny_llama: Path, tmp_path: Path) -> None:
    data = _write(tmp_path / "chats.jsonl", CHATS * 4)
    config = DistillConfig(
        teacher=tiny_llama, data=data, out=tmp_path / "student", text_mode="chat", seq_len=48, batch_size=4,
        steps=4, lr=1e-2, student=StudentSpec(keep_layers=(0,)), eval_fraction=0.25, checkpoint_every=0,
    )
    result = distill(config)
    assert result.report["data"]["train_sequences"] == 24 and result.report["held_out"]["windows"] == 8
    assert result.student_perplexity.tokens < 8 * 48  # unpadded held-out conversations
    assert BatchSchedule(24, 4, 0).batch_indices(0) != BatchSchedule(24, 4, 1).batch_indices(0)
    with pytest.raises(DataError, match="more than seq_len=8"):
        distill(DistillConfig(teacher=tiny_llama, data=data, out=tmp_path / "s2", text_mode="chat", seq_len=8,
                              steps=1, checkpoint_every=0))


def test_adam_beta2_is_validated(tmp_path: Path) -> None:
    from export.errors import SpecError

    with pytest.raises(SpecError, match="adam_beta2=1.0"):
        DistillConfig(teacher=tmp_path / "t", data=tmp_path / "d.txt", out=tmp_path / "o", adam_beta2=1.0)
    assert DistillConfig(teacher=tmp_path / "t", data=tmp_path / "d.txt", out=tmp_path / "o").adam_beta2 == 0.999

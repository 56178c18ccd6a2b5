"""Incremental detokenizers never repeat or lose a character.

PieceDetokenizer over raw byte pieces: a UTF-8 character split across pieces appears once complete, invalid
bytes become U+FFFD, flush emits pending incomplete bytes as U+FFFD. WindowDetokenizer over the toy families'
real tokenizers (byte-level BPE for Llama 3 / Qwen2, SentencePiece with a dummy-prefix space for Mistral):
feeding a continuation token by token after the prompt releases exactly decode(prompt + continuation) minus
decode(prompt), with no chunk ending in an incomplete character.
"""

from __future__ import annotations

import functools
import itertools
import random
import re
from pathlib import Path

import pytest
from tokenizers import Tokenizer

from edge_runtime.detokenize import PROMPT_CONTEXT_TOKENS, PieceDetokenizer, WindowDetokenizer

REPLACEMENT = "\ufffd"

# ---------------------------------------------------------------------------------------------- PieceDetokenizer


def _pieces(*chunks: bytes) -> tuple[PieceDetokenizer, list[int]]:
    table = dict(enumerate(chunks))
    return PieceDetokenizer(table.__getitem__), list(table)


def test_ascii_pieces_pass_through() -> None:
    detok, ids = _pieces(b"Hello", b",", b" world", b"")
    assert [detok.add(i) for i in ids] == ["Hello", ",", " world", ""]
    assert detok.flush() == ""


@pytest.mark.parametrize("char", ["é", "日", "🙂", "ü"])
def test_a_multibyte_char_split_byte_by_byte_appears_once_complete(char: str) -> None:
    data = ("a" + char + "b").encode()
    detok, ids = _pieces(*(data[i : i + 1] for i in range(len(data))))
    out = [detok.add(i) for i in ids]
    assert "".join(out) == "a" + char + "b"
    width = len(char.encode())
    assert out == ["a", *[""] * (width - 1), char, "b"]
    assert detok.flush() == ""


def test_a_multibyte_char_split_across_two_pieces_with_neighbours() -> None:
    data = "日本".encode()  # 6 bytes: split mid-character twice
    detok, ids = _pieces(b"x" + data[:2], data[2:4], data[4:] + b"!")
    assert [detok.add(i) for i in ids] == ["x", "日", "本!"]


@pytest.mark.parametrize(
    ("pieces", "expected"),
    [
        ((b"\xff", b"a"), "\ufffda"),
        ((b"a\x80b",), "a\ufffdb"),
        ((b"\xc3", b"("), "\ufffd("),  # a lead byte followed by no continuation byte
        ((b"\xe6\x97", b"x"), "\ufffdx"),
    ],
)
def test_invalid_bytes_become_replacement_characters(pieces: tuple[bytes, ...], expected: str) -> None:
    detok, ids = _pieces(*pieces)
    assert "".join(detok.add(i) for i in ids) + detok.flush() == expected


def test_flush_emits_pending_incomplete_bytes_as_a_replacement() -> None:
    detok, ids = _pieces(b"ok ", "日".encode()[:2])
    assert [detok.add(i) for i in ids] == ["ok ", ""]
    assert detok.flush() == REPLACEMENT
    assert detok.flush() == ""


def test_piece_detokenizer_over_random_splits_reassembles_the_text() -> None:
    text = "Grüße, 日本! café 🙂 123\nnaïve"
    data = text.encode()
    rng = random.Random(7)
    for _ in range(200):
        cuts = sorted(rng.sample(range(1, len(data)), rng.randint(0, 12)))
        bounds = [0, *cuts, len(data)]
        detok, ids = _pieces(*(data[a:b] for a, b in itertools.pairwise(bounds)))
        out = [detok.add(i) for i in ids]
        assert REPLACEMENT not in "".join(out)
        assert "".join(out) + detok.flush() == text


# --------------------------------------------------------------------------------------------- WindowDetokenizer

FAMILIES = ["tiny_llama", "tiny_qwen2", "tiny_mistral"]

CASES = [
    # (prompt text, continuation text)
    ("The weather today is", " sunny, with 23 degrees.\nTomorrow: rain!"),
    ("Hello", " world"),
    ("Say something in French:", " Très bien, merci. Ça va? Über 100 % — naïve café."),
    ("Translate to Japanese:", " 日本語 は 難しい です。\n\n日本!"),
    ("Emoji time:", " 🙂 and 🚀🚀, then ok."),
    ("Numbers", " 1234567890 3.14159 -42\n\tindented"),
    ("A long prompt with many words so that the window of prompt context is only a small part of it, and", " then"),
    ("Lines\n", "\n\nfoo\n  bar  \n"),
    ("x", "é"),
]
CASE_IDS = ["weather", "hello", "french", "japanese", "emoji", "numbers", "long-prompt", "newlines", "one-char"]


@functools.cache
def _load(folder: Path) -> Tokenizer:
    return Tokenizer.from_file(str(folder / "tokenizer.json"))


@pytest.fixture(params=FAMILIES)
def tokenizer(request: pytest.FixtureRequest) -> Tokenizer:
    return _load(request.getfixturevalue(request.param))


def _decoder(tokenizer: Tokenizer):
    return lambda ids: tokenizer.decode(list(ids), skip_special_tokens=True)


def _stream(tokenizer: Tokenizer, prompt_ids: list[int], continuation: list[int]) -> tuple[list[str], str]:
    detok = WindowDetokenizer(_decoder(tokenizer), prompt_ids)
    return [detok.add(token) for token in continuation], detok.flush()


def _check_stream(tokenizer: Tokenizer, prompt_ids: list[int], continuation: list[int]) -> list[str]:
    decode = _decoder(tokenizer)
    prompt_text = decode(prompt_ids)
    full = decode(prompt_ids + continuation)
    assert full.startswith(prompt_text)
    chunks, tail = _stream(tokenizer, prompt_ids, continuation)
    assert prompt_text + "".join(chunks) + tail == full, "text repeated or lost"
    # No chunk ends inside a character unless the complete decode has a replacement character there.
    position = len(prompt_text)
    for chunk in chunks:
        position += len(chunk)
        if chunk.endswith(REPLACEMENT):
            assert full[position - 1] == REPLACEMENT
    return chunks


@pytest.mark.parametrize(("prompt", "continuation"), CASES, ids=CASE_IDS)
def test_window_detokenizer_releases_exactly_the_continuation(
    tokenizer: Tokenizer, prompt: str, continuation: str
) -> None:
    prompt_ids = tokenizer.encode(prompt).ids  # with the family's BOS where it adds one
    continuation_ids = tokenizer.encode(prompt + continuation, add_special_tokens=True).ids
    if continuation_ids[: len(prompt_ids)] == prompt_ids:
        continuation_ids = continuation_ids[len(prompt_ids) :]
    else:  # merges across the boundary: tokenize the continuation on its own
        continuation_ids = tokenizer.encode(continuation, add_special_tokens=False).ids
    chunks = _check_stream(tokenizer, prompt_ids, continuation_ids)
    assert REPLACEMENT not in "".join(chunks)
    assert len(chunks) == len(continuation_ids)


@pytest.mark.parametrize(("prompt", "continuation"), CASES, ids=CASE_IDS)
def test_separately_tokenized_continuation(tokenizer: Tokenizer, prompt: str, continuation: str) -> None:
    prompt_ids = tokenizer.encode(prompt).ids
    continuation_ids = tokenizer.encode(continuation, add_special_tokens=False).ids
    chunks = _check_stream(tokenizer, prompt_ids, continuation_ids)
    assert REPLACEMENT not in "".join(chunks)


def test_multibyte_characters_really_are_split_across_tokens(tokenizer: Tokenizer) -> None:
    """The toy vocabularies are small, so "日本" and emoji take several byte tokens: the cases above do test
    characters split across tokens."""
    ids = tokenizer.encode("日本 🙂", add_special_tokens=False).ids
    pieces = [tokenizer.decode([i]) for i in ids]
    assert any(REPLACEMENT in piece for piece in pieces)


def test_chat_prompt_ending_in_special_tokens(tokenizer: Tokenizer, request: pytest.FixtureRequest) -> None:
    family = request.node.callspec.params["tokenizer"]
    prompt = {
        "tiny_llama": "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi!<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n",
        "tiny_qwen2": "<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n",
        "tiny_mistral": "<s>[INST] Hi! [/INST]",
    }[family]
    prompt_ids = tokenizer.encode(prompt, add_special_tokens=False).ids
    continuation_ids = tokenizer.encode(" Hello! Grüße aus 日本 🙂.", add_special_tokens=False).ids
    eos = {"tiny_llama": "<|eot_id|>", "tiny_qwen2": "<|im_end|>", "tiny_mistral": "</s>"}[family]
    chunks = _check_stream(tokenizer, prompt_ids, [*continuation_ids, tokenizer.token_to_id(eos)])
    assert chunks[-1] == ""  # the end-of-sequence token adds no text


def test_empty_prompt(tokenizer: Tokenizer) -> None:
    continuation_ids = tokenizer.encode("Hello world, café 日本.", add_special_tokens=False).ids
    _check_stream(tokenizer, [], continuation_ids)


def test_a_continuation_cut_mid_character_is_flushed_as_a_replacement(tokenizer: Tokenizer) -> None:
    prompt_ids = tokenizer.encode("Say:").ids
    continuation_ids = tokenizer.encode(" ok 🙂", add_special_tokens=False).ids
    decode = _decoder(tokenizer)
    # Drop trailing tokens until the decode ends inside the emoji (byte tokens in every toy vocabulary).
    while continuation_ids and not decode(prompt_ids + continuation_ids).endswith(REPLACEMENT):
        continuation_ids = continuation_ids[:-1]
    assert continuation_ids, "the emoji should take more than one token in the toy vocabulary"
    chunks, tail = _stream(tokenizer, prompt_ids, continuation_ids)
    assert REPLACEMENT not in "".join(chunks)
    assert tail.endswith(REPLACEMENT)
    assert decode(prompt_ids) + "".join(chunks) + tail == decode(prompt_ids + continuation_ids)


def _stream_units(tokenizer: Tokenizer) -> list[list[int]]:
    """Pieces a random model output is made of: every non-special token on its own, except that SentencePiece
    byte-fallback tokens (``<0xNN>``) come only in groups that spell whole characters. (Its ByteFallback decoder
    turns a whole run of byte tokens into one U+FFFD per byte when the run is invalid UTF-8, so with a stray
    byte token even the all-at-once decode of an earlier, valid byte depends on what follows.) Byte-level BPE
    tokens are all allowed, stray partial bytes included."""
    special = {tokenizer.token_to_id(t) for t in ("<s>", "</s>", "<unk>")}
    units = []
    for i in range(tokenizer.get_vocab_size()):
        token = tokenizer.id_to_token(i)
        if i in special or token.startswith("<|") or re.fullmatch(r"<0x[0-9A-F]{2}>", token):
            continue
        units.append([i])
    units += [tokenizer.encode(char, add_special_tokens=False).ids for char in ["🙂", "🚀", "é", "日", "ü", "€"]]
    return units


def test_random_token_streams_lose_and_repeat_nothing(tokenizer: Tokenizer) -> None:
    """Model output need not be a canonical tokenization: random sequences of tokens."""
    decode = _decoder(tokenizer)
    units = _stream_units(tokenizer)
    prompt_ids = tokenizer.encode("Once upon a time, in a land far away").ids
    rng = random.Random(99)
    for _ in range(40):
        continuation_ids = [i for _ in range(rng.randint(1, 20)) for i in rng.choice(units)]
        chunks, tail = _stream(tokenizer, prompt_ids, continuation_ids)
        assert decode(prompt_ids) + "".join(chunks) + tail == decode(prompt_ids + continuation_ids)


def test_mistral_keeps_the_leading_space_of_the_first_new_token(tiny_mistral: Path) -> None:
    tokenizer = _load(tiny_mistral)
    word = tokenizer.token_to_id("▁w")
    assert word is not None, "the toy SentencePiece vocabulary should have a '▁w' piece"
    prompt_ids = tokenizer.encode("Hello").ids
    assert tokenizer.decode([word]) == "w"  # decoded alone, the dummy-prefix space is stripped
    chunks, tail = _stream(tokenizer, prompt_ids, [word, tokenizer.token_to_id("or")])
    assert chunks[0] == " w"
    assert "".join(chunks) + tail == " wor"


def test_mistral_first_token_space_after_a_chat_prompt(tiny_mistral: Path) -> None:
    tokenizer = _load(tiny_mistral)
    prompt_ids = tokenizer.encode("<s>[INST] Hi! [/INST]", add_special_tokens=False).ids
    continuation_ids = tokenizer.encode(" Sure", add_special_tokens=False).ids
    chunks = _check_stream(tokenizer, prompt_ids, continuation_ids)
    assert "".join(chunks).startswith(" ")


def test_mistral_space_after_a_prompt_ending_in_many_special_tokens(tiny_mistral: Path) -> None:
    tokenizer = _load(tiny_mistral)
    prompt_ids = tokenizer.encode("hello" + "</s>" * PROMPT_CONTEXT_TOKENS).ids
    continuation_ids = [tokenizer.token_to_id("▁w"), tokenizer.token_to_id("or")]
    decode = _decoder(tokenizer)
    if decode(prompt_ids[-PROMPT_CONTEXT_TOKENS:]) != "" or decode(prompt_ids + continuation_ids) != "hello wor":
        pytest.fail("precondition: the prompt window should decode to '' and the whole text to 'hello wor'")
    chunks, tail = _stream(tokenizer, prompt_ids, continuation_ids)
    assert "".join(chunks) + tail == " wor"

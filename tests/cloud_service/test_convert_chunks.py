"""Coalesced chunks on the wire keep which tokens released text: a continuation elsewhere must generate the
tokens whose text (part of a character, a held-back stop prefix) the caller has not seen, and only those."""

from __future__ import annotations

import pytest

from cloud_service.convert import chunk_from_events, events_from_chunk
from edge_runtime import FinishReason, TokenEvent, Usage


def _released(events: list[TokenEvent]) -> list[tuple[str, int | None]]:
    return [(event.text, event.token_id) for event in events]


@pytest.mark.parametrize(("texts", "expected_unreleased"), [
    (["a", "b", "c"], 0),
    (["a", "b", "", ""], 2),          # the last two tokens are the start of a character
    (["", "", "\ufffd\ufffd4"], 0),   # the third token completes what the first two began
    (["", ""], 2),
    (["x", "", "y", ""], 1),
])
def test_trailing_unreleased_tokens_survive_the_round_trip(texts, expected_unreleased) -> None:
    events = [TokenEvent(text, 10 + index, -0.5) for index, text in enumerate(texts)]
    chunk = chunk_from_events(events)
    assert chunk.unreleased_tokens == expected_unreleased
    back = events_from_chunk(chunk)
    assert [event.token_id for event in back] == [event.token_id for event in events]
    assert "".join(event.text for event in back) == "".join(texts)
    trailing_empty = 0
    for event in reversed(back):
        if event.text:
            break
        trailing_empty += 1
    assert trailing_empty == (len(texts) if not "".join(texts) else expected_unreleased)


def test_text_flushed_without_a_token_releases_every_token() -> None:
    events = [TokenEvent("a", 1, -0.1), TokenEvent("", 2, -0.2),
              TokenEvent("\ufffd", None, None, FinishReason.LENGTH, Usage(3, 2, 0))]
    chunk = chunk_from_events(events)
    assert chunk.unreleased_tokens == 0
    back = events_from_chunk(chunk)
    assert _released(back) == [("", 1), ("a\ufffd", 2)]
    assert back[-1].finish_reason is FinishReason.LENGTH

"""Delivered: what a continuation starts from (text, token ids of one vocabulary, unreleased tokens)."""

from __future__ import annotations

from edge_runtime import GenerationRequest, Message, SamplingParams, TokenEvent
from sdk.orchestrator import Delivered, continuation

REQUEST = GenerationRequest(messages=(Message("user", "hi"),), sampling=SamplingParams(max_tokens=10),
                            request_id="r")


def _feed(delivered: Delivered, vocabulary: str, *pieces: tuple[str, int | None]) -> None:
    for text, token in pieces:
        delivered.add(TokenEvent(text, token, -0.1 if token is not None else None), vocabulary)


def test_ids_of_one_vocabulary_travel_with_their_text() -> None:
    delivered = Delivered()
    _feed(delivered, "v1", ("The", 1), (" river", 2))
    sub = continuation(REQUEST, delivered, 1)
    assert sub.assistant_prefix == "The river" and sub.sampling.max_tokens == 8
    assert sub.prefix_tokens is not None
    assert (sub.prefix_tokens.vocabulary, sub.prefix_tokens.ids, sub.prefix_tokens.text) == ("v1", (1, 2),
                                                                                            "The river")


def test_another_vocabulary_starts_the_ids_over_and_an_unknown_one_sends_text_only() -> None:
    delivered = Delivered()
    _feed(delivered, "v1", ("The", 1), (" river", 2))
    _feed(delivered, "v2", (" runs", 9))
    tokens = continuation(REQUEST, delivered, 2).prefix_tokens
    assert tokens is not None and (tokens.vocabulary, tokens.ids, tokens.text) == ("v2", (9,), " runs")
    _feed(delivered, "", (" on", 4))
    sub = continuation(REQUEST, delivered, 3)
    assert sub.prefix_tokens is None and sub.assistant_prefix == "The river runs on"


def test_unreleased_tokens_are_generated_again_not_lost() -> None:
    delivered = Delivered()
    _feed(delivered, "v1", ("caf", 1), ("", 2), ("", 3))  # "é" is two byte tokens, not released yet
    delivered.rewind()
    sub = continuation(REQUEST, delivered, 1)
    assert sub.prefix_tokens is not None and sub.prefix_tokens.ids == (1,) and sub.prefix_tokens.text == "caf"
    assert sub.assistant_prefix == "caf" and sub.sampling.max_tokens == 9 and delivered.tokens == 1
    _feed(delivered, "v1", ("é", 2))
    assert delivered.unreleased == 0 and delivered.ids == [1, 2] and delivered.ids_text == "café"

"""prefix_tokens on the wire: round trip, and a mismatched text refused as INVALID_ARGUMENT material."""

from __future__ import annotations

import pytest

from cloud_service.convert import request_from_wire, request_to_wire
from edge_runtime import GenerationRequest, Message, PrefixTokens, SamplingParams
from edge_runtime.errors import InvalidRequestError


def _request(tokens: PrefixTokens | None) -> GenerationRequest:
    return GenerationRequest(messages=(Message("user", "hi"),), assistant_prefix="The river",
                             prefix_tokens=tokens, sampling=SamplingParams(max_tokens=4), request_id="r1")


@pytest.mark.parametrize("tokens", [None, PrefixTokens("abc123", (5, 6), " river")])
def test_prefix_tokens_round_trip(tokens) -> None:
    wire = request_to_wire(_request(tokens), model="m")
    back = request_from_wire(wire, max_tokens_limit=64, engine_request_id="e1")
    assert back.prefix_tokens == tokens and back.assistant_prefix == "The river"


def test_prefix_tokens_that_do_not_end_the_prefix_are_refused() -> None:
    wire = request_to_wire(_request(PrefixTokens("abc123", (5,), " river")), model="m")
    wire.prefix_tokens.text = "lake"
    with pytest.raises(InvalidRequestError, match="prefix_tokens.text"):
        request_from_wire(wire, max_tokens_limit=64, engine_request_id="e1")

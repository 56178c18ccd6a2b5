"""Request types validate themselves when built: every invalid value raises InvalidRequestError naming the field,
valid values keep their defaults, a single stop string becomes a 1-tuple, and request ids are unique."""

from __future__ import annotations

import math

import pytest

from edge_runtime.errors import InvalidRequestError
from edge_runtime.types import GenerationRequest, Message, SamplingParams

HI = (Message("user", "Hi!"),)


def test_sampling_defaults() -> None:
    params = SamplingParams()
    assert params.temperature == 1.0
    assert params.top_p == 1.0
    assert params.top_k == 0
    assert params.max_tokens == 256
    assert params.stop == ()
    assert params.seed is None
    assert params.ignore_eos is False
    assert not params.greedy


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("temperature", -0.1),
        ("temperature", -1),
        ("temperature", math.nan),
        ("temperature", math.inf),
        ("temperature", -math.inf),
        ("temperature", "0.5"),
        ("temperature", None),
        ("top_p", 0),
        ("top_p", 0.0),
        ("top_p", -0.5),
        ("top_p", 1.0001),
        ("top_p", 2),
        ("top_p", math.nan),
        ("top_p", math.inf),
        ("top_p", "0.9"),
        ("top_k", -1),
        ("top_k", True),
        ("top_k", False),
        ("top_k", 2.0),
        ("top_k", "5"),
        ("top_k", None),
        ("max_tokens", 0),
        ("max_tokens", -1),
        ("max_tokens", 10.0),
        ("max_tokens", 1.5),
        ("max_tokens", True),
        ("max_tokens", "16"),
        ("seed", -1),
        ("seed", 1.0),
        ("seed", True),
        ("seed", "7"),
    ],
)
def test_invalid_sampling_values_name_the_field(field: str, value: object) -> None:
    with pytest.raises(InvalidRequestError, match=rf"^sampling\.{field} must "):
        SamplingParams(**{field: value})


@pytest.mark.parametrize(
    "stop",
    [("",), ["ok", ""], "", ("ok", 3), [None], (b"bytes",)],
)
def test_invalid_stop_sequences_name_the_field(stop: object) -> None:
    with pytest.raises(InvalidRequestError, match=r"^sampling\.stop"):
        SamplingParams(stop=stop)  # type: ignore[arg-type]


@pytest.mark.parametrize("stop", [None, 3])
def test_a_non_iterable_stop_is_rejected_as_an_invalid_request(stop: object) -> None:
    try:
        params = SamplingParams(stop=stop)  # type: ignore[arg-type]
    except InvalidRequestError as exc:
        assert "stop" in str(exc)
    else:
        assert stop is None and params.stop == ()


def test_valid_sampling_values_are_kept() -> None:
    params = SamplingParams(temperature=0.7, top_p=0.9, top_k=40, max_tokens=1, stop=["</s>", "\n\n"], seed=0)
    assert (params.temperature, params.top_p, params.top_k, params.max_tokens, params.seed) == (0.7, 0.9, 40, 1, 0)
    assert params.stop == ("</s>", "\n\n")
    assert isinstance(params.stop, tuple)


@pytest.mark.parametrize("top_p", [1, 1.0, 1e-9, 0.5])
def test_top_p_boundaries_that_are_valid(top_p: float) -> None:
    assert SamplingParams(top_p=top_p).top_p == top_p


def test_max_tokens_none_means_unbounded_and_temperature_zero_is_allowed() -> None:
    assert SamplingParams(max_tokens=None).max_tokens is None
    assert SamplingParams(temperature=0).temperature == 0
    assert SamplingParams(temperature=0.0, top_k=0, seed=12345).seed == 12345


def test_a_single_stop_string_becomes_a_one_tuple() -> None:
    assert SamplingParams(stop="###").stop == ("###",)
    assert SamplingParams(stop="ab").stop == ("ab",)  # not ("a", "b")


@pytest.mark.parametrize(
    ("kwargs", "greedy"),
    [
        ({}, False),
        ({"temperature": 0}, True),
        ({"temperature": 0.0, "top_k": 50}, True),
        ({"temperature": 1.0, "top_k": 1}, True),
        ({"temperature": 0.5, "top_k": 2}, False),
        ({"temperature": 1e-3}, False),
        ({"temperature": 1.0, "top_p": 1e-6}, False),
    ],
)
def test_greedy_property(kwargs: dict[str, object], greedy: bool) -> None:
    assert SamplingParams(**kwargs).greedy is greedy  # type: ignore[arg-type]


def test_sampling_params_are_frozen() -> None:
    params = SamplingParams()
    with pytest.raises(AttributeError):
        params.temperature = 0.0  # type: ignore[misc]


@pytest.mark.parametrize("role", ["system", "user", "assistant", "tool"])
def test_valid_roles(role: str) -> None:
    assert Message(role, "text").role == role


@pytest.mark.parametrize("role", ["", "bot", "User", "SYSTEM", None, 1])
def test_bad_role_names_the_role(role: object) -> None:
    with pytest.raises(InvalidRequestError, match=r"^chat\.messages\[\]\.role"):
        Message(role, "text")  # type: ignore[arg-type]


@pytest.mark.parametrize("content", [None, 1, b"bytes", ["text"], {"type": "text"}])
def test_non_string_content_names_the_content(content: object) -> None:
    with pytest.raises(InvalidRequestError, match=r"^chat\.messages\[\]\.content"):
        Message("user", content)  # type: ignore[arg-type]


def test_empty_content_is_allowed() -> None:
    assert Message("assistant", "").content == ""


def test_request_with_messages_keeps_them_as_a_tuple() -> None:
    messages = [Message("system", "Be brief."), Message("user", "Hi!")]
    request = GenerationRequest(messages=messages)
    assert request.messages == tuple(messages)
    assert isinstance(request.messages, tuple)
    assert request.prompt is None
    assert request.sampling == SamplingParams()
    assert request.assistant_prefix == ""


def test_request_with_a_prompt() -> None:
    request = GenerationRequest(prompt="Once upon a time", assistant_prefix=" there", request_id="r-1")
    assert (request.prompt, request.messages, request.assistant_prefix, request.request_id) == (
        "Once upon a time", None, " there", "r-1",
    )


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"messages": HI, "prompt": "hi"}, "prompt"),
        ({}, "prompt"),
        ({"messages": []}, "messages"),
        ({"messages": ()}, "messages"),
        ({"messages": [{"role": "user", "content": "hi"}]}, "messages"),
        ({"messages": "hi"}, "messages"),
        ({"prompt": ""}, "prompt"),
        ({"prompt": 5}, "prompt"),
        ({"prompt": b"bytes"}, "prompt"),
        ({"prompt": "hi", "request_id": ""}, "request_id"),
        ({"prompt": "hi", "request_id": 7}, "request_id"),
        ({"prompt": "hi", "request_id": None}, "request_id"),
        ({"prompt": "hi", "assistant_prefix": None}, "assistant_prefix"),
        ({"prompt": "hi", "sampling": None}, "sampling"),
        ({"prompt": "hi", "sampling": {"temperature": 0}}, "sampling"),
    ],
)
def test_invalid_requests_name_the_field(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidRequestError, match=field):
        GenerationRequest(**kwargs)  # type: ignore[arg-type]


def test_non_iterable_messages_are_rejected_as_an_invalid_request() -> None:
    with pytest.raises(InvalidRequestError, match="messages"):
        GenerationRequest(messages=5)  # type: ignore[arg-type]


def test_both_messages_and_prompt_names_both() -> None:
    with pytest.raises(InvalidRequestError, match="messages") as info:
        GenerationRequest(messages=HI, prompt="hi")
    assert "prompt" in str(info.value)


def test_request_ids_are_unique_by_default() -> None:
    ids = {GenerationRequest(prompt="hi").request_id for _ in range(1000)}
    assert len(ids) == 1000
    assert all(isinstance(i, str) and i for i in ids)


def test_invalid_request_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        SamplingParams(top_p=0)

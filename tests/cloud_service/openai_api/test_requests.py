"""OpenAI bodies read into GenerateRequests, and every body this server cannot answer refused naming its field."""

from __future__ import annotations

import pytest

from cloud_service.openai_api.requests import BadRequest, chat_request, completion_request, parse_json
from edge_runtime.errors import InvalidRequestError
from edge_runtime.types import SamplingParams


def _chat(**fields):
    return {"model": "toy", "messages": [{"role": "user", "content": "Hi"}]} | fields


def test_a_chat_body_becomes_its_generate_request():
    asked = chat_request(_chat(messages=[{"role": "developer", "content": "Be brief."},
                                         {"role": "user", "content": [{"type": "text", "text": "Hi "},
                                                                      {"type": "text", "text": "there"}]}],
                               max_completion_tokens=7, temperature=0, top_p=0.5, stop="\n", seed=3,
                               stream=True, stream_options={"include_usage": True}, user="u1"), "r1")
    wire = asked.wire
    assert wire.request_id == "r1" and wire.model == "toy" and not wire.model_version
    assert [(m.role, m.content) for m in wire.chat.messages] == [("system", "Be brief."), ("user", "Hi there")]
    sampling = wire.sampling
    assert sampling.max_tokens == 7 and sampling.temperature == 0 and sampling.top_p == 0.5
    assert list(sampling.stop) == ["\n"] and sampling.seed == 3
    assert asked.stream and asked.include_usage and asked.model == "toy"
    assert not sampling.HasField("top_k")  # unset fields keep the server's defaults


def test_a_trailing_assistant_message_is_the_answers_prefix_and_a_version_can_be_pinned():
    asked = chat_request(_chat(model="toy@v2", messages=[{"role": "user", "content": "Count"},
                                                         {"role": "assistant", "content": "1, 2,"}],
                               continue_final_message=True, add_generation_prompt=False), "r")
    assert asked.wire.assistant_prefix == "1, 2," and len(asked.wire.chat.messages) == 1
    assert asked.wire.model == "toy" and asked.wire.model_version == "v2" and asked.model == "toy@v2"
    assert chat_request(_chat(messages=[{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]),
                        "r").wire.assistant_prefix == "b"


def test_a_completion_body_becomes_a_raw_prompt():
    asked = completion_request({"model": "toy", "prompt": ["Once upon"], "max_tokens": 5, "top_k": -1,
                                "ignore_eos": True}, "r")
    assert asked.wire.prompt == "Once upon" and asked.wire.sampling.max_tokens == 5
    assert asked.wire.sampling.top_k == 0 and asked.wire.sampling.ignore_eos and not asked.stream


@pytest.mark.parametrize(("fields", "param"), [
    ({"messages": []}, "messages"),
    ({"messages": [{"role": "tool", "content": "x"}]}, "messages[0].role"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]}, "messages[0].content[0]"),
    ({"messages": [{"role": "user", "content": 3}]}, "messages[0].content"),
    ({"model": ""}, "model"),
    ({"temperature": 3}, "temperature"),
    ({"temperature": "hot"}, "temperature"),
    ({"top_p": -0.1}, "top_p"),
    ({"max_completion_tokens": 0}, "max_completion_tokens"),
    ({"max_tokens": True}, "max_tokens"),
    ({"n": 2}, "n"),
    ({"stop": ["a", ""]}, "stop"),
    ({"stop": ["1", "2", "3", "4", "5"]}, "stop"),
    ({"tools": [{"type": "function"}]}, "tools"),
    ({"logprobs": True}, "logprobs"),
    ({"presence_penalty": 0.5}, "presence_penalty"),
    ({"stream": "yes"}, "stream"),
    ({"stream_options": {"include_usage": 1}}, "stream_options.include_usage"),
    ({"continue_final_message": True}, "messages"),
    ({"messages": [{"role": "assistant", "content": "only a prefill"}]}, "messages"),
])
def test_bodies_this_server_cannot_answer_are_refused_naming_the_field(fields, param):
    with pytest.raises(BadRequest) as caught:
        chat_request(_chat(**fields), "r")
    assert caught.value.param == param
    assert str(caught.value).startswith(param)  # the message names the field as param does


@pytest.mark.parametrize("body", [b"", b"{", b"[1]", b"\xff\xfe", b'"text"'])
def test_a_body_that_is_not_a_json_object_is_refused(body):
    with pytest.raises(BadRequest, match="JSON"):
        parse_json(body)


@pytest.mark.parametrize(("fields", "param"), [({"prompt": ""}, "prompt"), ({"prompt": ["a", "b"]}, "prompt"),
                                               ({"echo": True}, "echo"), ({"best_of": 3}, "best_of")])
def test_completion_bodies_this_server_cannot_answer_are_refused(fields, param):
    with pytest.raises(BadRequest) as caught:
        completion_request({"model": "toy", "prompt": "Hi"} | fields, "r")
    assert caught.value.param == param and str(caught.value).startswith(param)


PREFILLED = _chat(messages=[{"role": "user", "content": "Count"}, {"role": "assistant", "content": "1, 2,"}],
                  max_completion_tokens=5)


@pytest.mark.parametrize(("body", "message", "param"), [
    (PREFILLED, "sampling.temperature must be a finite number >= 0, got -1.0", "temperature"),
    (PREFILLED, "sampling.top_p must lie in (0, 1], got 0.0", "top_p"),
    (PREFILLED, "sampling.max_tokens must be >= 1, got 0", "max_completion_tokens"),
    (_chat(max_tokens=5), "sampling.max_tokens must be >= 1, got 0", "max_tokens"),
    (PREFILLED, "sampling.stop[1] must be a non-empty string, got ''", "stop[1]"),
    (PREFILLED, "chat.messages[0].role 'robot' is not one of system, user, assistant, tool", "messages[0].role"),
    (PREFILLED, "chat.messages: the model's chat template rejected them: no system role", "messages"),
    (PREFILLED, "chat.messages is empty; give at least one message", "messages"),
    (PREFILLED, "assistant_prefix must be a string", "messages[1].content"),
    (_chat(), "assistant_prefix must be a string", None),
    (PREFILLED, "model 'toy' version 'v9' is not served here (toy@v1)", "model"),
    (PREFILLED, "request_id is empty; give each request an id (Abort takes it)", None),  # the x-request-id header
    (PREFILLED, "prefix_tokens.ids must be one or more non-negative token ids", None),
    (PREFILLED, "the prompt is 300 tokens; this server accepts at most 256 (limits.max_prompt_tokens)", None),
    ({"model": "toy", "prompt": "Hi"}, "prompt must be a non-empty string", "prompt"),
    ({"model": "toy", "prompt": "Hi"}, "input is empty: set chat.messages or prompt", "prompt"),
])
def test_a_calls_error_names_the_bodys_field_for_the_wire_path(body, message, param):
    asked = (chat_request if "messages" in body else completion_request)(body, "r")
    said, named = asked.in_body_terms(message)
    assert named == param
    if param is None:
        assert said == message
    else:  # the same words, naming the body's field
        assert said.startswith(param) and said.endswith(message.split(maxsplit=1)[1])


def test_the_mapping_reads_the_runtimes_own_messages():
    with pytest.raises(InvalidRequestError) as caught:
        SamplingParams(top_p=0.0)
    said, param = chat_request(_chat(), "r").in_body_terms(str(caught.value))
    assert (said, param) == ("top_p must lie in (0, 1], got 0.0", "top_p")

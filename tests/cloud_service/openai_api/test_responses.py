"""OpenAI's objects from Inference chunks, and statuses mapped to what OpenAI clients expect."""

from __future__ import annotations

import grpc
import pytest

from cloud_service.openai_api.responses import Answer, models_list, retry_headers, status_error
from cloud_service.wire.v1 import inference_pb2 as pb


@pytest.mark.parametrize(("code", "status", "kind"), [
    (grpc.StatusCode.INVALID_ARGUMENT, 400, "invalid_request_error"),
    (grpc.StatusCode.UNAUTHENTICATED, 401, "authentication_error"),
    (grpc.StatusCode.PERMISSION_DENIED, 403, "permission_error"),
    (grpc.StatusCode.NOT_FOUND, 404, "not_found_error"),
    (grpc.StatusCode.RESOURCE_EXHAUSTED, 429, "rate_limit_error"),
    (grpc.StatusCode.UNAVAILABLE, 503, "service_unavailable_error"),
    (grpc.StatusCode.DEADLINE_EXCEEDED, 504, "timeout_error"),
    (grpc.StatusCode.INTERNAL, 500, "server_error"),
    (grpc.StatusCode.UNKNOWN, 500, "server_error"),
])
def test_statuses_map_to_http_with_openais_error_body(code, status, kind):
    got, body = status_error(code, "what happened")
    assert got == status
    assert body == {"error": {"message": "what happened", "type": kind, "param": None, "code": body["error"]["code"]}}


def test_retry_after_is_whole_seconds_rounded_up_beside_the_milliseconds():
    assert retry_headers("1500") == {"retry-after": "2", "retry-after-ms": "1500"}
    assert retry_headers("1") == {"retry-after": "1", "retry-after-ms": "1"}
    assert retry_headers(None) == {}


def test_a_streamed_chat_answer_and_its_whole_form():
    answer = Answer("chat", "r1", "toy", created=7)
    chunks = [pb.GenerateChunk(text="Hel", token_ids=[1]), pb.GenerateChunk(token_ids=[2]),
              pb.GenerateChunk(text="lo", token_ids=[3], finish_reason=pb.FINISH_REASON_LENGTH,
                               usage=pb.Usage(prompt_tokens=4, completion_tokens=3, cached_tokens=1))]
    events = [answer.delta(c, first=i == 0) for i, c in enumerate(chunks)]
    assert events[0]["choices"][0]["delta"] == {"role": "assistant", "content": "Hel"}
    assert events[1] is None  # nothing to send: a token whose text is not complete yet
    assert events[2]["choices"][0] == {"index": 0, "delta": {"content": "lo"}, "logprobs": None,
                                       "finish_reason": "length"}
    assert {e["id"] for e in events if e} == {"chatcmpl-r1"} and events[0]["object"] == "chat.completion.chunk"
    last = answer.usage_chunk(chunks[-1].usage)
    assert last["choices"] == [] and last["usage"]["total_tokens"] == 7
    for chunk in chunks:
        answer.add(chunk)
    whole = answer.whole()
    assert whole["object"] == "chat.completion" and whole["created"] == 7
    assert whole["choices"][0]["message"] == {"role": "assistant", "content": "Hello"}
    assert whole["choices"][0]["finish_reason"] == "length"
    assert whole["usage"] == {"prompt_tokens": 4, "completion_tokens": 3, "total_tokens": 7,
                              "prompt_tokens_details": {"cached_tokens": 1}}


def test_a_text_completion_and_the_model_list():
    answer = Answer("text", "r2", "toy")
    event = answer.delta(pb.GenerateChunk(text="Once", finish_reason=pb.FINISH_REASON_STOP), first=True)
    assert event["object"] == "text_completion" and event["id"] == "cmpl-r2"
    assert event["choices"][0]["text"] == "Once" and event["choices"][0]["finish_reason"] == "stop"
    listed = models_list([pb.ModelInfo(name="toy", version="v1", max_context=512),
                          pb.ModelInfo(name="toy", version="v2", max_context=512)])
    assert [m["id"] for m in listed["data"]] == ["toy", "toy@v1", "toy@v2"]

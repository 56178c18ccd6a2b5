"""One naming scheme for the fields an error names: the field's path in the wire's GenerateRequest
(``sampling.temperature``, ``sampling.stop[1]``, ``chat.messages[1].role``, ``prefix_tokens.ids``), at the start
of the message, whether the request was built in-process (``edge_runtime.types``) or sent over gRPC to a real
replica. (Over HTTP the body's own field is named instead: tests/cloud_service/openai_api.)"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
import pytest

from cloud_service.convert import field_path
from cloud_service.wire.v1 import inference_pb2 as pb
from edge_runtime.errors import InvalidRequestError
from edge_runtime.types import GenerationRequest, Message, PrefixTokens, SamplingParams, chat_messages
from tests.cloud_service.test_server import _config, generate_refusal

Mutation = Callable[[pb.GenerateRequest, str], Any]
"""Makes a valid wire request invalid; the second argument is the served model's vocabulary fingerprint."""


def _prefix(wire: pb.GenerateRequest, prefix: str, **tokens: Any) -> None:
    wire.assistant_prefix = prefix
    wire.prefix_tokens.CopyFrom(pb.PrefixTokens(**tokens))


CASES: list[tuple[str, Callable[[], object] | None, Mutation | None]] = [
    # (the path, the mistake made in-process, the same mistake on the wire); None: that side cannot make it
    ("sampling.temperature", lambda: SamplingParams(temperature=-1.0),
     lambda w, _: setattr(w.sampling, "temperature", -1.0)),
    ("sampling.top_p", lambda: SamplingParams(top_p=0.0), lambda w, _: setattr(w.sampling, "top_p", 0.0)),
    ("sampling.top_k", lambda: SamplingParams(top_k=-1), lambda w, _: setattr(w.sampling, "top_k", -1)),
    ("sampling.max_tokens", lambda: SamplingParams(max_tokens=0), lambda w, _: setattr(w.sampling, "max_tokens", 0)),
    ("sampling.stop[1]", lambda: SamplingParams(stop=["ok", ""]), lambda w, _: w.sampling.stop.extend(["ok", ""])),
    ("sampling.seed", lambda: SamplingParams(seed=-1), None),
    ("sampling", lambda: GenerationRequest(prompt="hi", sampling={"temperature": 0}), None),
    ("chat.messages[1].role", lambda: chat_messages([("user", "hi"), ("robot", "hi")]),
     lambda w, _: w.chat.messages.add(role="robot", content="hi")),
    ("chat.messages[0].content", lambda: chat_messages([("user", 5)]), None),
    ("chat.messages[1]", lambda: GenerationRequest(messages=[Message("user", "hi"), {"role": "user"}]), None),
    ("chat.messages", lambda: GenerationRequest(messages=[]), lambda w, _: w.chat.ClearField("messages")),
    ("input", lambda: GenerationRequest(), lambda w, _: w.ClearField("input")),
    ("prompt", lambda: GenerationRequest(prompt=""), lambda w, _: setattr(w, "prompt", "")),
    ("assistant_prefix", lambda: GenerationRequest(prompt="hi", assistant_prefix=None), None),
    ("request_id", lambda: GenerationRequest(prompt="hi", request_id=""), lambda w, _: w.ClearField("request_id")),
    ("prefix_tokens.vocabulary", lambda: PrefixTokens("", (1,), ""), lambda w, _: _prefix(w, "", ids=[1])),
    ("prefix_tokens.ids", lambda: PrefixTokens("v", (), ""), lambda w, _: _prefix(w, "", vocabulary="v")),
    ("prefix_tokens.ids", None,  # the engine's check: an id outside the served vocabulary
     lambda w, vocabulary: _prefix(w, "", vocabulary=vocabulary, ids=[10**6])),
    ("prefix_tokens.text", lambda: GenerationRequest(prompt="hi", assistant_prefix="ab",
                                                     prefix_tokens=PrefixTokens("v", (1,), "zz")),
     lambda w, _: _prefix(w, "ab", vocabulary="v", ids=[1], text="zz")),
    ("model", None, lambda w, _: setattr(w, "model", "no-such-model")),  # NOT_FOUND
]
IN_PROCESS = [(path, make) for path, make, _ in CASES if make is not None]
ON_THE_WIRE = [(path, mutate) for path, _, mutate in CASES if mutate is not None]


@pytest.fixture(scope="module")
def engine(tiny_llama):
    from cloud_service.engines.cpu import CpuEngine

    engine = CpuEngine(tiny_llama, name="toy", version="v1")
    yield engine
    engine.close()


@pytest.mark.parametrize(("path", "make"), IN_PROCESS, ids=[path for path, _ in IN_PROCESS])
def test_in_process_errors_start_with_the_wire_path(path, make):
    with pytest.raises(InvalidRequestError) as caught:
        make()
    assert field_path(str(caught.value)) == path, str(caught.value)


def test_a_message_built_on_its_own_names_the_messages_without_an_index():
    with pytest.raises(InvalidRequestError, match=r"^chat\.messages\[\]\.role 'robot' is not one of"):
        Message("robot", "hi")


@pytest.mark.parametrize(("path", "mutate"), ON_THE_WIRE, ids=[path for path, _ in ON_THE_WIRE])
def test_a_replica_names_the_same_path(tiny_llama, engine, path, mutate):
    error = generate_refusal(_config(tiny_llama), engine, lambda wire: mutate(wire, engine.info.vocabulary))
    assert error.code() == (grpc.StatusCode.NOT_FOUND if path == "model" else grpc.StatusCode.INVALID_ARGUMENT)
    assert field_path(error.details()) == path, error.details()


@pytest.mark.parametrize("message", [
    "the request is 5000 bytes; this replica accepts at most 4096 (limits.max_message_bytes)",
    "the prompt is 300 tokens; this server accepts at most 256 (limits.max_prompt_tokens)",
    "this API key belongs to tenant 'acme', not 'globex'",
    "sampling_rate is not a field",
])
def test_messages_that_name_no_request_field_have_no_path(message):
    assert field_path(message) is None

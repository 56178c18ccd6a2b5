"""Mid-stream resume in the gateway: ``Resume``'s continuation request and chunk trimming, and two real CPU
replica processes (a toy model, ``tandem cloud serve``) behind a gateway where one is killed with SIGKILL
during 32 greedy streams: none fails, and every answer equals the engine's uninterrupted one."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import grpc
import pytest

from cloud_service.auth import hash_key
from cloud_service.channel import bearer_metadata
from cloud_service.convert import request_to_wire
from cloud_service.errors import DELIVERED_METADATA, RESUMED_METADATA
from cloud_service.gateway import GatewayServer
from cloud_service.gateway.resume import Resume
from cloud_service.wire.v1 import inference_pb2 as pb
from cloud_service.wire.v1 import inference_pb2_grpc
from edge_runtime import GenerationRequest, Message, SamplingParams, collect
from tests.cloud_service.gateway.support import (
    ACME_KEY,
    GATEWAY_KEY,
    gateway_config,
    start_replica_process,
    wait_until,
)

STREAMS, TOKENS = 32, 96


def _request(**sampling: int) -> pb.GenerateRequest:
    return pb.GenerateRequest(request_id="acme/r1", model="m", prompt="Hi", assistant_prefix="Sure",
                              sampling=pb.SamplingParams(**sampling))


def test_the_continuation_appends_the_delivered_text_and_ids_and_lowers_max_tokens():
    resume = Resume(_request(max_tokens=10))
    resume.add(pb.GenerateChunk(text=", one", token_ids=[5, 6], model_version="v1", vocabulary="voc"))
    resume.add(pb.GenerateChunk(text=" two", token_ids=[7]))
    follow = resume.request("acme/r1~2")
    assert follow.request_id == "acme/r1~2" and follow.prompt == "Hi"
    assert follow.assistant_prefix == "Sure, one two"
    assert list(follow.prefix_tokens.ids) == [5, 6, 7] and follow.prefix_tokens.text == ", one two"
    assert follow.prefix_tokens.vocabulary == "voc" and follow.sampling.max_tokens == 7
    assert resume.original.assistant_prefix == "Sure"  # the original is left as it was


def test_unreleased_tokens_are_generated_again_and_their_ids_not_sent_twice():
    resume = Resume(_request(max_tokens=10))
    resume.add(pb.GenerateChunk(text="a", token_ids=[1], vocabulary="voc"))
    resume.add(pb.GenerateChunk(text="", token_ids=[2, 3], unreleased_tokens=2))  # half a character
    follow = resume.request("r~2")
    assert list(follow.prefix_tokens.ids) == [1] and follow.sampling.max_tokens == 9
    again = resume.trim(pb.GenerateChunk(text="é", token_ids=[2, 3, 4], logprobs=[-0.1, -0.2, -0.3],
                                         model_version="v1", vocabulary="voc"))
    assert list(again.token_ids) == [4] and list(again.logprobs) == pytest.approx([-0.3])
    assert again.text == "é" and not again.model_version and not again.vocabulary
    resume.add(again)
    last = resume.trim(pb.GenerateChunk(token_ids=[9], logprobs=[-1.0], finish_reason=pb.FINISH_REASON_LENGTH,
                                        usage=pb.Usage(prompt_tokens=13, completion_tokens=4, cached_tokens=12)))
    assert last.usage.completion_tokens == 5  # every id the caller got: 1, 2, 3, 4, 9
    assert last.usage.prompt_tokens == 12 and last.usage.cached_tokens == 12  # less the 1-token prefix


def test_a_callers_own_prefix_tokens_of_the_same_vocabulary_are_kept_in_front():
    original = _request()
    original.prefix_tokens.CopyFrom(pb.PrefixTokens(vocabulary="voc", ids=[40], text="Sure"))
    resume = Resume(original)
    resume.add(pb.GenerateChunk(text="!", token_ids=[41], vocabulary="voc"))
    follow = resume.request("r~2")
    assert list(follow.prefix_tokens.ids) == [40, 41] and follow.prefix_tokens.text == "Sure!"
    assert not follow.sampling.HasField("max_tokens")


def test_without_a_vocabulary_the_text_alone_continues():
    resume = Resume(_request())
    resume.add(pb.GenerateChunk(text=" more", token_ids=[3]))
    follow = resume.request("r~2")
    assert follow.assistant_prefix == "Sure more" and not follow.HasField("prefix_tokens")


def _replica_config(folder: Path, model: Path, index: int) -> Path:
    path = folder / f"replica-{index}.toml"
    path.write_text(
        f'[server]\nhost = "127.0.0.1"\nport = 0\n[limits]\nmax_tokens = 4096\n'
        f'[[models]]\nname = "toy"\npath = "{model}"\nversion = "v1"\n'
        "[models.cpu]\nmax_running = 32\nthreads = 1\n"
        f'[[tenants]]\nname = "gateway"\nkey_sha256 = "{hash_key(GATEWAY_KEY)}"\n'
        "requests_per_minute = 10000000\ntokens_per_minute = 10000000000\n"
    )
    return path


def _requests() -> list[GenerationRequest]:
    return [GenerationRequest(messages=[Message("user", f"Story {i}: " + "and then " * (i % 4))],
                              sampling=SamplingParams(temperature=0.0, max_tokens=TOKENS, ignore_eos=True),
                              request_id=f"s{i}")
            for i in range(STREAMS)]


def test_killing_one_of_two_replicas_mid_stream_fails_no_stream_and_changes_no_greedy_answer(tmp_path, tiny_llama):
    from cloud_service.engines.cpu import CpuEngine

    requests = _requests()
    solo_engine = CpuEngine(tiny_llama, name="toy", version="v1")
    try:
        solo = [asyncio.run(collect(solo_engine.generate(r))) for r in requests]
    finally:
        solo_engine.close()

    async def stream(target: str, request: GenerationRequest, received: list[int], index: int):
        async with grpc.aio.insecure_channel(target) as channel:
            call = inference_pb2_grpc.InferenceStub(channel).Generate(
                request_to_wire(request, model="toy"), metadata=bearer_metadata(ACME_KEY), timeout=120)
            ids, text = [], ""
            try:
                async for chunk in call:
                    ids.extend(chunk.token_ids)
                    text += chunk.text
                    received[index] = len(ids)
            except grpc.aio.AioRpcError:
                pass
            trailing = dict(await call.trailing_metadata() or ())
            return await call.code(), ids, text, trailing, await call.details()

    async def main():
        configs = [_replica_config(tmp_path, tiny_llama, i) for i in range(2)]
        started = await asyncio.gather(*(start_replica_process(config, 120) for config in configs))
        (victim, victim_port, _), _ = started
        addresses = [f"127.0.0.1:{port}" for _, port, _ in started]
        gateway = GatewayServer(gateway_config(addresses, policy="round_robin"), rng=random.Random(0))
        await gateway.start()
        target = f"127.0.0.1:{gateway.port}"
        try:
            await wait_until(lambda: len(gateway.membership.available()) == 2, 60, "both replicas admitted")
            member = gateway.membership.replicas[f"127.0.0.1:{victim_port}"]
            received = [0] * STREAMS
            tasks = [asyncio.create_task(stream(target, r, received, i)) for i, r in enumerate(requests)]
            await wait_until(lambda: min(received) >= 2, 60, "every stream to deliver tokens")
            on_victim = member.inflight  # streams mid-answer there now
            victim.kill()
            await victim.wait()
            results = await asyncio.gather(*tasks)
            resumed = gateway.metrics.registry.get_sample_value("tandem_gateway_resumes_total",
                                                                {"outcome": "resumed"})
            return results, resumed, on_victim
        finally:
            await gateway.stop(0.1)
            for process, _, log_task in started:
                if process.returncode is None:
                    process.kill()
                    await process.wait()
                log_task.cancel()

    results, resumed, on_victim = asyncio.run(main())
    failed = [(code, details) for code, _, _, _, details in results if code != grpc.StatusCode.OK]
    assert failed == []
    for (_, ids, text, trailing, _), alone in zip(results, solo, strict=True):
        assert ids == list(alone.token_ids) and text == alone.text
        assert DELIVERED_METADATA not in trailing
    switched = [trailing for _, _, _, trailing, _ in results if RESUMED_METADATA in trailing]
    assert 1 <= len(switched) == resumed <= on_victim  # the victim's streams went on on the survivor

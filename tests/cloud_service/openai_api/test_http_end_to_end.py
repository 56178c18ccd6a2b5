"""OpenAI-compatible HTTP on a real replica (the CPU engine over a toy model) and on a gateway in front of it,
on loopback, driven by the official ``openai`` package and by ``curl -N``: streamed and whole chat and text
completions equal the engine's own greedy answer, usage comes in the last chunk, and every error a caller can
cause is the HTTP status OpenAI clients expect."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import threading
from collections.abc import Coroutine, Iterator
from typing import Any

import openai
import pytest

from cloud_service.auth import hash_key
from cloud_service.config import FrontDoorConfig, Limits, ModelConfig, ServerConfig, TenantConfig
from cloud_service.gateway import GatewayConfig, GatewayServer, GatewaySettings
from cloud_service.server import ReplicaServer
from cloud_service.servicer import ServedModel
from edge_runtime import GenerationRequest, Message, SamplingParams, collect

KEY, GLOBEX_KEY, THRIFTY_KEY, GATEWAY_KEY = "tdm_http_acme", "tdm_http_globex", "tdm_http_thrifty", "tdm_http_gw"
UNLIMITED = {"requests_per_minute": 10**7, "tokens_per_minute": 10**10}
TENANTS = (TenantConfig("acme", hash_key(KEY), **UNLIMITED),
           TenantConfig("globex", hash_key(GLOBEX_KEY), models=("other-model",)),
           TenantConfig("thrifty", hash_key(THRIFTY_KEY), requests_per_minute=1),
           TenantConfig("gateway", hash_key(GATEWAY_KEY), **UNLIMITED))
QUESTION = "Name three colours."


class Loop:
    """An event loop on a thread of its own, so the blocking clients (openai, curl) can call the servers."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coroutine: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(60)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture(scope="module")
def servers(tiny_llama) -> Iterator[dict[str, Any]]:
    from cloud_service.engines.cpu import CpuEngine

    engine = CpuEngine(tiny_llama, name="toy", version="v1")
    loop = Loop()

    async def start() -> tuple[ReplicaServer, GatewayServer]:  # grpc.aio servers belong to the loop they start in
        replica = ReplicaServer(ServerConfig(
            models=(ModelConfig("toy", tiny_llama, version="v1"),),
            front_door=FrontDoorConfig(host="127.0.0.1", port=0, http_port=0, tenants=TENANTS,
                                       limits=Limits(max_prompt_tokens=256, max_tokens=64))),
            models=[ServedModel("toy", "v1", engine)])
        await replica.start()
        gateway = GatewayServer(GatewayConfig(
            gateway=GatewaySettings(replicas=(f"127.0.0.1:{replica.port}",), replica_api_key=GATEWAY_KEY,
                                    load_refresh_s=0.05, health_interval_s=0.1),
            front_door=FrontDoorConfig(host="127.0.0.1", port=0, http_port=0, tenants=TENANTS[:1])))
        await gateway.start()
        while not gateway.membership.available():
            await asyncio.sleep(0.01)
        return replica, gateway

    replica, gateway = loop.run(start())
    greedy = asyncio.run_coroutine_threadsafe(collect(engine.generate(GenerationRequest(
        messages=[Message("user", QUESTION)], sampling=SamplingParams(temperature=0.0, max_tokens=12)))),
        loop.loop).result(60)
    try:
        yield {"replica": replica, "gateway": gateway, "greedy": greedy, "loop": loop,
               "urls": {"replica": f"http://127.0.0.1:{replica.listener.http_port}/v1",
                        "gateway": f"http://127.0.0.1:{gateway.listener.http_port}/v1"}}
    finally:
        loop.run(gateway.stop(0.1))
        loop.run(replica.stop(0.1, close_engines=False))
        loop.close()
        engine.close()


def _client(servers, where: str = "replica", key: str = KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=servers["urls"][where], api_key=key, max_retries=0, timeout=60)


@pytest.mark.parametrize("where", ["replica", "gateway"])
def test_the_openai_client_streams_a_chat_completion_equal_to_the_engines_answer(servers, where):
    stream = _client(servers, where).chat.completions.create(
        model="toy", messages=[{"role": "user", "content": QUESTION}], temperature=0, max_tokens=12, stream=True,
        stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == servers["greedy"].text
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["length"]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 12
    assert chunks[-1].usage.prompt_tokens == servers["greedy"].usage.prompt_tokens


def test_whole_chat_and_text_completions_and_the_model_list(servers):
    client = _client(servers)
    whole = client.chat.completions.create(model="toy@v1", messages=[{"role": "user", "content": QUESTION}],
                                           temperature=0, max_tokens=12)
    assert whole.choices[0].message.content == servers["greedy"].text and whole.model == "toy@v1"
    assert whole.usage.completion_tokens == 12 and whole.choices[0].finish_reason == "length"
    text = client.completions.create(model="toy", prompt="Once upon a time", max_tokens=5, temperature=0)
    assert text.choices[0].text and text.usage.completion_tokens == 5
    streamed = "".join(c.choices[0].text for c in client.completions.create(
        model="toy", prompt="Once upon a time", max_tokens=5, temperature=0, stream=True) if c.choices)
    assert streamed == text.choices[0].text
    assert [m.id for m in client.models.list()] == ["toy", "toy@v1"]


def test_an_assistant_prefill_continues_the_answer(servers):
    greedy = servers["greedy"].text
    head = greedy[:len(greedy) // 2]
    rest = _client(servers).chat.completions.create(
        model="toy", messages=[{"role": "user", "content": QUESTION}, {"role": "assistant", "content": head}],
        temperature=0, max_tokens=40, extra_body={"continue_final_message": True, "add_generation_prompt": False})
    assert (head + rest.choices[0].message.content).startswith(greedy[:len(head) + 4])


def test_errors_are_the_statuses_openai_clients_expect(servers):
    chat = {"model": "toy", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}
    with pytest.raises(openai.AuthenticationError):
        _client(servers, key="tdm_wrong").chat.completions.create(**chat)
    with pytest.raises(openai.PermissionDeniedError):
        _client(servers, key=GLOBEX_KEY).chat.completions.create(**chat)
    with pytest.raises(openai.NotFoundError):
        _client(servers).chat.completions.create(**(chat | {"model": "nope"}))
    with pytest.raises(openai.BadRequestError) as bad:
        _client(servers).chat.completions.create(**(chat | {"temperature": 5}))
    assert bad.value.body["param"] == "temperature" and "temperature" in bad.value.message
    thrifty = _client(servers, key=THRIFTY_KEY)
    thrifty.chat.completions.create(**chat)
    with pytest.raises(openai.RateLimitError) as limited:
        thrifty.chat.completions.create(**chat)
    assert int(limited.value.response.headers["retry-after"]) >= 1
    assert int(limited.value.response.headers["retry-after-ms"]) > 0


@pytest.mark.parametrize("where", ["replica", "gateway"])
def test_a_field_the_server_refuses_is_named_as_the_body_names_it(servers, where):
    # top_p 0 passes the HTTP layer's range check; the replica refuses sampling.top_p, the caller reads top_p
    with pytest.raises(openai.BadRequestError) as bad:
        _client(servers, where).chat.completions.create(model="toy", messages=[{"role": "user", "content": "Hi"}],
                                                        max_tokens=2, top_p=0)
    assert bad.value.body["param"] == "top_p"
    assert bad.value.body["message"].startswith("top_p must lie in (0, 1]")


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")
def test_curl_streams_server_sent_events_and_sees_plain_errors(servers):
    body = json.dumps({"model": "toy", "messages": [{"role": "user", "content": QUESTION}], "max_tokens": 12,
                       "temperature": 0, "stream": True})
    url = servers["urls"]["gateway"] + "/chat/completions"
    out = subprocess.run(["curl", "-sN", url, "-H", f"Authorization: Bearer {KEY}", "-H",
                          "Content-Type: application/json", "-d", body], capture_output=True, text=True, timeout=60,
                         check=True).stdout
    events = [line.removeprefix("data: ") for line in out.splitlines() if line]
    assert all(line.startswith("data: ") for line in out.splitlines() if line)
    assert events[-1] == "[DONE]"
    text = "".join(json.loads(e)["choices"][0]["delta"].get("content", "") for e in events[:-1])
    assert text == servers["greedy"].text
    refused = subprocess.run(["curl", "-s", "-w", "\n%{http_code}", url, "-d", body], capture_output=True, text=True,
                             timeout=60, check=True).stdout.rsplit("\n", 1)
    assert refused[1] == "401" and json.loads(refused[0])["error"]["type"] == "authentication_error"


def test_a_body_that_is_not_json_is_400_and_one_too_large_is_413(servers):
    url = servers["urls"]["replica"] + "/chat/completions"
    headers = ["-H", f"Authorization: Bearer {KEY}"]
    status = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", url, *headers, "-d", "{nope"],
                            capture_output=True, text=True, timeout=60, check=True).stdout
    assert status == "400"
    big = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", url, *headers,
                          "--data-binary", "@-"], input="x" * (3 << 20), capture_output=True, text=True, timeout=60,
                         check=True).stdout
    assert big == "413"


def test_http_calls_are_in_the_metrics_and_a_caller_that_leaves_cancels_its_call(servers):
    import httpx

    replica = servers["replica"]

    def count(status: str, model: str = "toy") -> float:
        return replica.metrics.registry.get_sample_value("tandem_requests_total",
                                                         {"model": model, "status": status}) or 0.0

    before_ok, before_unauth, before_cancelled = count("OK"), count("UNAUTHENTICATED", ""), count("CANCELLED")
    client = _client(servers)
    client.chat.completions.create(model="toy", messages=[{"role": "user", "content": "Hi"}], max_tokens=2)
    with pytest.raises(openai.AuthenticationError):
        _client(servers, key="tdm_wrong").models.list()
    body = {"model": "toy", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 64, "stream": True,
            "ignore_eos": True}
    with httpx.stream("POST", servers["urls"]["replica"] + "/chat/completions", json=body, timeout=60,
                      headers={"Authorization": f"Bearer {KEY}"}) as response:
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
        next(response.iter_lines())  # one event, then the caller leaves

    async def settled() -> None:
        for _ in range(500):
            if not replica.inference.inflight and count("CANCELLED") > before_cancelled:
                return
            await asyncio.sleep(0.01)

    servers["loop"].run(settled())
    assert count("OK") == before_ok + 1
    assert count("CANCELLED") == before_cancelled + 1 and not replica.inference.inflight
    assert count("UNAUTHENTICATED", "") == before_unauth  # ListModels is not a Generate call
    generated = replica.metrics.registry.get_sample_value("tandem_generated_tokens_total", {"model": "toy"})
    assert generated and generated > 0


def test_a_draining_server_answers_503_and_health_says_so(servers):
    """Last in this module: the replica stays draining."""
    replica = servers["replica"]
    servers["loop"].run(replica.drain(timeout_s=0.1))
    with pytest.raises(openai.InternalServerError) as caught:
        _client(servers).chat.completions.create(model="toy", messages=[{"role": "user", "content": "Hi"}])
    assert caught.value.status_code == 503
    health = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                             servers["urls"]["replica"].removesuffix("/v1") + "/health"],
                            capture_output=True, text=True, timeout=60, check=True).stdout
    assert health == "503"

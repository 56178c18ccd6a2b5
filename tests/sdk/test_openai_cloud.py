"""The SDK's cloud as an OpenAI-compatible server (``[cloud] api = "openai"``), against real servers on
loopback: llama-cpp-python's ``llama_cpp.server`` (a third-party server, serving the device bundle's own GGUF)
in a subprocess, and Tandem's own HTTP endpoint on a replica. Streaming, the error mapping, the health check,
the detection of ``continue_final_message`` support, and mid-stream failover both ways."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from edge_runtime import GenerationRequest, Message, SamplingParams
from sdk import AsyncHybridClient, Continuation, NoRouteError, PolicyError, Reason, Side, SwitchKind
from sdk.backends.failure import LinkFailure, SideFailure
from sdk.backends.openai_cloud import MIN_OVERLAP_CHARS, OpenAICloudSide, OverlapCut
from sdk.policy import CloudSettings, DeviceSettings, Policy, RetrySettings, RoutingSettings, policy_from_dict
from sdk.signals import HttpLinkMonitor, Link
from tests.sdk.conftest import API_KEY, MODEL, free_port, replica_config, run
from tests.sdk.test_client_routes import QUESTION, hub
from tests.sdk.test_failover import close_device_at, stream_with

LLAMA_KEY = "sk-llama-test"
TOKENS = 160
STARTUP_S = 60.0


# -- servers -----------------------------------------------------------------------------------------------

@contextlib.contextmanager
def llama_server(gguf: Path, port: int | None = None) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """``python -m llama_cpp.server`` on loopback serving ``gguf`` as MODEL (with LLAMA_KEY); yields the
    process and its API root once it answers GET /models."""
    port = port or free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--model_alias", MODEL,
         "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "512", "--n_threads", "1", "--verbose", "False",
         "--api_key", LLAMA_KEY, "--interrupt_requests", "False"],  # else a health check ends a stream early
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        started = time.monotonic()
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"llama_cpp.server exited: {process.stderr.read().decode()[-2000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{base_url}/models", headers={"authorization": f"Bearer {LLAMA_KEY}"},
                             timeout=1).is_success:
                    break
            if time.monotonic() - started > STARTUP_S:
                raise RuntimeError("llama_cpp.server did not start")
            time.sleep(0.1)
        yield process, base_url
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(10)
        process.stderr.close()


@pytest.fixture(scope="module")
def llama(device_bundle) -> Iterator[str]:
    """One llama_cpp.server for the module's tests that do not kill it: its API root."""
    with llama_server(device_bundle / "model.gguf") as (_, base_url):
        yield base_url


@contextlib.asynccontextmanager
async def http_replica(tiny_llama: Path, engine: Any) -> AsyncIterator[Any]:
    """A real replica serving OpenAI-compatible HTTP too: ``server.target`` (gRPC), ``server.base_url``."""
    from cloud_service.server import ReplicaServer
    from cloud_service.servicer import ServedModel

    config = replica_config(tiny_llama)
    config = dataclasses.replace(config, front_door=dataclasses.replace(config.front_door, http_port=0))
    server = ReplicaServer(config, models=[ServedModel(MODEL, "v1", engine)])
    port = await server.start()
    server.target = f"127.0.0.1:{port}"
    server.base_url = f"http://127.0.0.1:{server.listener.http_port}/v1"
    try:
        yield server
    finally:
        await server.stop(0.1, close_engines=False)


class CutRelay:
    """A TCP relay on loopback in front of a server: it passes bytes both ways until ``after`` server-sent
    events (``data:`` lines) of a response reached the client; then it passes nothing more, calls ``on_cut``
    (which kills the server) and closes the client's connection once the server's side has closed."""

    def __init__(self, upstream_port: int, after: int, on_cut: Callable[[], None]) -> None:
        self.upstream_port, self.after, self.on_cut = upstream_port, after, on_cut
        self.cut = False
        self.port = 0
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> CutRelay:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)

        async def upward() -> None:
            with contextlib.suppress(ConnectionError):
                while data := await reader.read(65536):
                    up_writer.write(data)
                    await up_writer.drain()

        async def downward() -> None:
            events = 0
            with contextlib.suppress(ConnectionError):
                while data := await up_reader.read(65536):
                    if self.cut:
                        continue  # the server's last words never reach the client
                    end = start = 0
                    for line in data.splitlines(keepends=True):
                        start += len(line)
                        if line.startswith(b"data:"):
                            events += 1
                            if events == self.after:
                                end, self.cut = start, True
                                break
                    writer.write(data[:end] if self.cut else data)
                    await writer.drain()
                    if self.cut:
                        self.on_cut()
            writer.transport.abort()

        task = asyncio.ensure_future(upward())
        await downward()
        task.cancel()
        up_writer.close()


# -- policies and helpers ----------------------------------------------------------------------------------

def openai_policy(base_url: str, *, bundle: Path | None = None, key: Path | None = None, mode: str = "cloud_only",
                  api_key: str = LLAMA_KEY, **cloud: Any) -> Policy:
    settings = CloudSettings(api="openai", base_url=base_url, model=MODEL, api_key=api_key,
                             first_token_timeout_s=20, health_interval_s=0.2, **cloud)
    return Policy(routing=RoutingSettings(mode=mode), cloud=settings,
                  device=DeviceSettings(bundle=bundle, trusted_keys=(key,) if key else ()),
                  retry=RetrySettings(base_delay_s=0.01, max_delay_s=0.05))


def direct_answer(base_url: str, key: str, messages: list[dict[str, str]], max_tokens: int, **extra: Any) -> str:
    """The server's answer as a plain OpenAI client gets it (no SDK)."""
    response = httpx.post(f"{base_url}/chat/completions", headers={"authorization": f"Bearer {key}"}, timeout=60,
                          json={"model": MODEL, "messages": messages, "max_tokens": max_tokens, "temperature": 0}
                          | extra)
    response.raise_for_status()
    return response.json()["choices"][0]["message"]["content"]


async def device_answer(bundle: Path, key: Path) -> str:
    policy = Policy(routing=RoutingSettings(mode="local_only"),
                    device=DeviceSettings(bundle=bundle, trusted_keys=(key,)))
    async with AsyncHybridClient(policy, signals=hub()) as client:
        response = await client.chat.completions.create(messages=QUESTION, max_tokens=TOKENS, temperature=0)
    return response.choices[0].message.content


REQUEST = GenerationRequest(messages=(Message("user", QUESTION[0]["content"]),),
                            sampling=SamplingParams(temperature=0, max_tokens=8))


async def side_failure(settings: CloudSettings) -> SideFailure:
    side = OpenAICloudSide(settings)
    try:
        async for _ in side.generate(REQUEST):
            pass
    except SideFailure as failure:
        return failure
    finally:
        await side.close()
    raise AssertionError("the request did not fail")


# -- configuration -----------------------------------------------------------------------------------------

def test_the_cloud_table_takes_an_openai_api_and_names_the_wrong_field(tmp_path, public_key_file):
    policy = policy_from_dict({"cloud": {"api": "openai", "base_url": "http://127.0.0.1:8080/v1/", "model": "m",
                                         "api_key_env": "SOME_KEY"}}, tmp_path)
    assert policy.cloud.api == "openai" and policy.cloud.base_url == "http://127.0.0.1:8080/v1"
    assert policy.cloud.configured and policy.cloud.target is None
    for table, field in [
        ({"api": "rest", "target": "h:1", "model": "m"}, "cloud.api"),
        ({"api": "openai", "model": "m"}, "cloud.base_url"),
        ({"api": "openai", "base_url": "127.0.0.1:8080", "model": "m"}, "cloud.base_url"),
        ({"api": "openai", "base_url": "http://h/v1"}, "cloud.model"),
        ({"api": "openai", "base_url": "http://h/v1", "model": "m", "target": "h:1"}, "cloud.target"),
        ({"api": "openai", "base_url": "http://h/v1", "model": "m", "tenant": "t"}, "cloud.tenant"),
        ({"api": "openai", "base_url": "http://h/v1", "model": "m", "tls": True}, "cloud.base_url"),
        ({"target": "h:1", "model": "m", "base_url": "http://h/v1"}, "cloud.base_url"),
    ]:
        with pytest.raises(PolicyError) as error:
            policy_from_dict({"cloud": table}, tmp_path)
        assert error.value.field == field, table
    with pytest.raises(PolicyError) as error:  # bundles come over gRPC only
        policy_from_dict({"device": {"bundle": "b", "trusted_keys": [str(public_key_file)], "provision_bundle": "b"},
                          "cloud": {"api": "openai", "base_url": "http://h/v1", "model": "m"}}, tmp_path)
    assert error.value.field == "device.provision_bundle"


def test_the_overlap_cut_drops_a_repeat_of_the_delivered_text_and_nothing_else():
    def through(prefix: str, *deltas: str) -> tuple[str, int]:
        cut = OverlapCut(prefix)
        out = "".join(cut.feed(d) for d in deltas) + cut.finish()
        return out, cut.cut

    assert through("The river runs", "The riv", "er runs", " to the sea.") == (" to the sea.", 14)  # started over
    assert through("The river runs", " The river", " runs far") == (" far", 15)  # after a space
    assert through("It rains. The river runs", "The river runs", " fast") == (" fast", 14)  # its end again
    assert through("The river runs", " to the sea") == (" to the sea", 0)  # a real continuation
    assert through("The river runs", "runs on") == ("runs on", 0)  # too short to tell from chance
    assert len("runs") < MIN_OVERLAP_CHARS
    assert through("The river", "The") == ("The", 0)  # it ended before repeating the end of the prefix: kept
    cut = OverlapCut("The river runs")
    assert cut.feed("The") == "" and cut.feed(" sea") == "The sea"  # held only while it may be a repeat


# -- llama_cpp.server --------------------------------------------------------------------------------------

def test_an_answer_streams_from_llama_cpp_server_and_its_link_is_checked_over_http(llama):
    records = []

    async def main():
        async with AsyncHybridClient(openai_policy(llama), on_record=records.append) as client:
            text, route = await stream_with(client, max_tokens=24)
            whole = await client.chat.completions.create(messages=QUESTION, max_tokens=24, temperature=0)
            assert isinstance(client.link, HttpLinkMonitor)
            link = client.link.probe_now()
        wrong = HttpLinkMonitor(llama, api_key="sk-wrong", interval_s=1)
        refused = wrong.probe_now()
        wrong.close()
        return text, route, whole, link, refused

    text, route, whole, link, refused = run(main)
    assert text and text == direct_answer(llama, LLAMA_KEY, QUESTION, 24) == whole.choices[0].message.content
    assert route.side is Side.CLOUD and route.model == MODEL and not route.switches
    assert route.tokens == route.attempts[0].tokens > 0 and route.timings.ttft_s is not None
    # llama_cpp.server sends no usage in a stream: each text delta counts as one token
    assert whole.usage.completion_tokens == whole.route.tokens == route.tokens
    assert link.state is Link.UP and link.rtt_ms is not None
    assert refused.last_error == "HTTP_401"
    assert [(r.ok, r.side) for r in records] == [(True, "cloud"), (True, "cloud")]


def test_errors_from_an_openai_server_are_typed_like_the_grpc_sides(llama, device_bundle, public_key_file):
    async def main():
        refused = await side_failure(openai_policy(llama, api_key="sk-wrong").cloud)
        port = free_port()
        unreachable = await side_failure(openai_policy(f"http://127.0.0.1:{port}/v1").cloud)
        with pytest.raises(NoRouteError) as no_route:
            async with AsyncHybridClient(openai_policy(llama, api_key="sk-wrong"), signals=hub()) as client:
                await client.chat.completions.create(messages=QUESTION, max_tokens=4)
        policy = openai_policy(f"http://127.0.0.1:{port}/v1", bundle=device_bundle, key=public_key_file,
                               mode="prefer_cloud")
        async with AsyncHybridClient(policy, signals=hub()) as client:
            fallback = await client.chat.completions.create(messages=QUESTION, max_tokens=4, temperature=0)
        return refused, unreachable, no_route.value, fallback

    refused, unreachable, no_route, fallback = run(main)
    assert type(refused) is SideFailure and not refused.retryable and refused.code == "HTTP_401"
    assert "Invalid API key" in refused.detail
    assert isinstance(unreachable, LinkFailure) and unreachable.retryable and unreachable.code == "UNAVAILABLE"
    assert "HTTP 401" in no_route.reasons["cloud"]
    assert fallback.route.side is Side.DEVICE
    [switch] = fallback.route.switches
    assert (switch.kind, switch.reason, switch.code) == (SwitchKind.FALLBACK, Reason.CLOUD_FAILED, "UNAVAILABLE")


def test_the_device_failing_mid_stream_continues_on_llama_cpp_server_without_prefill(llama, device_bundle,
                                                                                     public_key_file):
    async def main():
        alone = await device_answer(device_bundle, public_key_file)
        policy = openai_policy(llama, bundle=device_bundle, key=public_key_file, mode="prefer_local")
        async with AsyncHybridClient(policy, signals=hub()) as client:

            text, route = await stream_with(client, close_device_at(client))
            honoured = await client.cloud.prefill_supported()
        return alone, text, route, honoured

    alone, text, route, honoured = run(main)
    assert honoured is False  # llama_cpp.server ignores continue_final_message (measured by the probe)
    assert route.sides == (Side.DEVICE, Side.CLOUD)
    [switch] = route.switches
    assert (switch.kind, switch.from_side, switch.to_side, switch.reason) == (
        SwitchKind.FAILOVER, Side.DEVICE, Side.CLOUD, Reason.STREAM_BROKEN)
    delivered = alone[:switch.after_chars]
    assert switch.after_chars > 0 and text.startswith(delivered) and len(text) > len(delivered)
    last = route.attempts[-1]
    assert last.ok and last.continuation is Continuation.WITHOUT_PREFILL
    assert "continued without prefill" in last.detail and "repeated characters cut" in last.detail


def test_llama_cpp_server_killed_mid_stream_continues_on_the_device(device_bundle, public_key_file):
    async def main():
        with llama_server(device_bundle / "model.gguf") as (process, base_url):
            first = direct_answer(base_url, LLAMA_KEY, QUESTION, TOKENS)
            port = int(base_url.rsplit(":", 1)[1].split("/")[0])
            async with CutRelay(port, after=4, on_cut=lambda: os.kill(process.pid, signal.SIGKILL)) as relay:
                policy = openai_policy(f"http://127.0.0.1:{relay.port}/v1", bundle=device_bundle,
                                       key=public_key_file, mode="prefer_cloud")
                async with AsyncHybridClient(policy, signals=hub()) as client:
                    text, route = await stream_with(client)
                killed = process.wait(10)
        return first, text, route, killed, relay.cut

    first, text, route, killed, cut = run(main)
    assert cut and killed == -signal.SIGKILL
    assert route.sides == (Side.CLOUD, Side.DEVICE) and route.side is Side.DEVICE
    [switch] = route.switches
    assert (switch.kind, switch.from_side, switch.to_side, switch.reason, switch.code) == (
        SwitchKind.FAILOVER, Side.CLOUD, Side.DEVICE, Reason.STREAM_BROKEN, "UNAVAILABLE")
    delivered = text[:switch.after_chars]
    assert switch.after_chars > 0 and first.startswith(delivered)  # the server's own words, then the device's
    assert len(text) > len(delivered)
    broken, device = route.attempts
    assert not broken.ok and broken.tokens > 0 and isinstance(broken.detail, str)
    assert device.ok and device.continuation is Continuation.PREFILL  # from the text: there are no ids


# -- Tandem's own OpenAI-compatible endpoint ---------------------------------------------------------------

def test_tandems_http_endpoint_honours_continue_final_message(tiny_llama, cloud_engine, device_bundle,
                                                             public_key_file):
    async def main():
        async with http_replica(tiny_llama, cloud_engine) as server:
            side = OpenAICloudSide(openai_policy(server.base_url, api_key=API_KEY).cloud)
            honoured = await side.prefill_supported()
            await side.close()
            missing = await side_failure(CloudSettings(api="openai", base_url=server.base_url, model="nope",
                                                       api_key=API_KEY))
            prefix = "The river"
            async with AsyncHybridClient(openai_policy(server.base_url, api_key=API_KEY), signals=hub()) as client:
                over_http = await client.chat.completions.create(messages=QUESTION, max_tokens=12, temperature=0,
                                                                 assistant_prefix=prefix)
            grpc_policy = Policy(routing=RoutingSettings(mode="cloud_only"), cloud=CloudSettings(
                target=server.target, model=MODEL, api_key=API_KEY, tenant="app"))
            async with AsyncHybridClient(grpc_policy, signals=hub()) as client:
                over_grpc = await client.chat.completions.create(messages=QUESTION, max_tokens=12, temperature=0,
                                                                 assistant_prefix=prefix)
            alone = await device_answer(device_bundle, public_key_file)
            policy = openai_policy(server.base_url, api_key=API_KEY, bundle=device_bundle, key=public_key_file,
                                   mode="prefer_local")
            async with AsyncHybridClient(policy, signals=hub()) as client:

                text, route = await stream_with(client, close_device_at(client))
        return honoured, missing, over_http, over_grpc, alone, text, route

    honoured, missing, over_http, over_grpc, alone, text, route = run(main)
    assert honoured is True
    assert type(missing) is SideFailure and missing.code == "HTTP_404" and not missing.retryable
    # The same continuation over HTTP and over gRPC: one engine, one prefix, one greedy answer.
    assert over_http.choices[0].message.content == over_grpc.choices[0].message.content != ""
    assert over_http.route.attempts[0].continuation is Continuation.PREFILL
    assert over_http.usage.completion_tokens == 12  # the server's usage, streamed with include_usage
    [switch] = route.switches
    assert (switch.kind, switch.from_side, switch.to_side) == (SwitchKind.FAILOVER, Side.DEVICE, Side.CLOUD)
    assert text.startswith(alone[:switch.after_chars]) and route.attempts[-1].continuation is Continuation.PREFILL

"""Failures behind the gateway: a replica process killed under load (queued requests retried elsewhere and
answered, started streams resumed on another replica, the replica ejected, then re-admitted when it is back),
the only replica killed mid-stream (UNAVAILABLE + delivered tokens: nothing can continue there), a replica
failing every request ejected as an outlier, and the ejection's states."""

from __future__ import annotations

import asyncio
import random
import signal
from pathlib import Path

import grpc

from cloud_service.auth import hash_key
from cloud_service.errors import DELIVERED_METADATA, RESUMED_METADATA
from cloud_service.gateway import GatewayServer
from cloud_service.gateway.ejection import EjectionState, OutlierEjection
from cloud_service.gateway.membership import ReplicaState
from cloud_service.server import ReplicaServer
from edge_runtime import collect
from tests.cloud_service.gateway.support import (
    GATEWAY_KEY,
    MODEL,
    chat,
    gateway_config,
    raw_generate,
    replica_config,
    running_fleet,
    start_replica_process,
    wait_until,
)

TOKENS = 60


def _victim_config(folder: Path, port: int) -> Path:
    path = folder / f"victim-{port}.toml"
    path.write_text(
        f'[server]\nhost = "127.0.0.1"\nport = {port}\n[limits]\nmax_tokens = 4096\n'
        f'[[models]]\nname = "{MODEL}"\nengine = "simulator"\nversion = "v1"\n'
        "[models.simulator]\nmax_running = 2\ndecode_step_s = 0.01\ndecode_s_per_sequence = 0.0\n"
        f'[[tenants]]\nname = "gateway"\nkey_sha256 = "{hash_key(GATEWAY_KEY)}"\n'
        "requests_per_minute = 10000000\ntokens_per_minute = 10000000000\n"
    )
    return path


def test_a_replica_killed_under_load_retries_queued_requests_and_resumes_started_ones(tmp_path):
    async def main():
        survivors = [ReplicaServer(replica_config(decode_step_s=0.01)) for _ in range(2)]
        for replica in survivors:
            await replica.start()
        victim, port, log_task = await start_replica_process(_victim_config(tmp_path, 0))
        address = f"127.0.0.1:{port}"
        addresses = [f"127.0.0.1:{r.port}" for r in survivors] + [address]
        gateway = GatewayServer(gateway_config(addresses, policy="round_robin"), rng=random.Random(0))
        await gateway.start()
        target = f"127.0.0.1:{gateway.port}"
        try:
            member = gateway.membership.replicas[address]
            streams = [asyncio.create_task(raw_generate(target, chat(i, tokens=TOKENS))) for i in range(12)]
            # round robin gives the victim 4: 2 generating, 2 queued in its engine
            await wait_until(lambda: member.load is not None and member.load.running == 2
                             and member.load.waiting == 2, what="the victim to run 2 and queue 2")
            await asyncio.sleep(0.1)  # the running ones stream some tokens
            victim.kill()
            await victim.wait()
            results = await asyncio.gather(*streams)
            await wait_until(lambda: member.state is ReplicaState.EJECTED, what="the victim to be ejected")
            ejections = gateway.metrics.registry.get_sample_value(
                "tandem_gateway_ejections_total", {"replica": address, "reason": "health"})
            retries = sum(s.value for m in gateway.metrics.registry.collect() for s in m.samples
                          if s.name == "tandem_gateway_retries_total")

            victim, _, log_task2 = await start_replica_process(_victim_config(tmp_path, port))  # back, same address
            await wait_until(lambda: member.state is ReplicaState.ADMITTED, what="the victim to be re-admitted")
            after = await asyncio.gather(*(raw_generate(target, chat(i, tokens=4)) for i in range(6)))
            served_again = gateway.metrics.registry.get_sample_value(
                "tandem_gateway_requests_total", {"model": MODEL, "version": "v1", "replica": address,
                                                  "status": "OK"})
            victim.send_signal(signal.SIGTERM)
            await victim.wait()
            log_task2.cancel()
            return results, ejections, retries, after, served_again
        finally:
            if victim.returncode is None:
                victim.kill()
                await victim.wait()
            log_task.cancel()
            await gateway.stop(0.1)
            for replica in survivors:
                await replica.stop(0.1)

    results, ejections, retries, after, served_again = asyncio.run(main())
    assert all(r.code == grpc.StatusCode.OK for r in results), [(r.code, r.details) for r in results]
    assert all(r.tokens == TOKENS for r in results)  # queued ones retried, started ones resumed elsewhere
    resumed = [r for r in results if RESUMED_METADATA in r.trailing]
    assert len(resumed) == 2 and all(r.trailing[RESUMED_METADATA] == "1" for r in resumed)
    assert retries >= 2 and ejections == 1
    assert all(r.code == grpc.StatusCode.OK for r in after)
    assert served_again >= 1  # re-admitted replicas get work again


def test_streams_whose_only_replica_dies_end_unavailable_with_the_tokens_delivered(tmp_path):
    async def main():
        victim, port, log_task = await start_replica_process(_victim_config(tmp_path, 0))
        gateway = GatewayServer(gateway_config([f"127.0.0.1:{port}"]), rng=random.Random(0))
        await gateway.start()
        target = f"127.0.0.1:{gateway.port}"
        try:
            await wait_until(lambda: bool(gateway.membership.available()), what="the replica to be admitted")
            received = [0, 0]

            def counter(index):
                async def seen(tokens):
                    received[index] = tokens
                return seen

            streams = [asyncio.create_task(raw_generate(target, chat(i, tokens=TOKENS), on_chunk=counter(i)))
                       for i in range(2)]
            await wait_until(lambda: min(received) >= 3, what="both streams to deliver tokens")
            victim.kill()
            await victim.wait()
            results = await asyncio.gather(*streams)
            failed = gateway.metrics.registry.get_sample_value("tandem_gateway_resumes_total", {"outcome": "failed"})
            return results, failed
        finally:
            if victim.returncode is None:
                victim.kill()
                await victim.wait()
            log_task.cancel()
            await gateway.stop(0.1)

    results, failed = asyncio.run(main())
    for result in results:
        assert result.code == grpc.StatusCode.UNAVAILABLE, result.details
        assert 3 <= result.tokens < TOKENS
        assert int(result.trailing[DELIVERED_METADATA]) == result.tokens
        assert "continue from the partial answer" in result.details
    assert failed == 2


def test_a_replica_that_fails_every_request_is_ejected_as_an_outlier():
    async def main():
        async with running_fleet(("v1",) * 3, policy="round_robin", breaker_failures=2,
                                 breaker_cooldown_s=60) as fleet, fleet.client() as cloud:
            broken = fleet.replicas[0]
            broken.models[0].engine.close()  # health still SERVING, every Generate fails
            answers = [await collect(cloud.generate(chat(i, tokens=3), model=MODEL)) for i in range(12)]
            member = fleet.gateway.membership.replicas[fleet.addresses[0]]
            return (answers, member.state, member.ejection.state, member.available,
                    fleet.sample("tandem_gateway_ejections_total", replica=fleet.addresses[0], reason="outlier"))

    answers, state, ejection, available, ejections = asyncio.run(main())
    assert all(a.usage.completion_tokens == 3 for a in answers)  # every request retried and answered
    assert state is ReplicaState.ADMITTED and ejection is EjectionState.EJECTED and not available
    assert ejections == 1


def test_consecutive_failures_eject_then_a_probe_decides_with_doubling_ejections():
    now = [0.0]
    ejection = OutlierEjection(failure_threshold=3, ejection_s=10, clock=lambda: now[0])
    assert not ejection.record_failure() and not ejection.record_failure()
    ejection.record_success()  # consecutive only
    assert [ejection.record_failure() for _ in range(3)] == [False, False, True]
    assert ejection.state is EjectionState.EJECTED and not ejection.allows()
    now[0] = 10.0
    assert ejection.state is EjectionState.PROBING and ejection.allows()
    assert ejection.record_failure()  # the probe failed: ejected again, twice as long
    now[0] = 29.0
    assert ejection.state is EjectionState.EJECTED
    now[0] = 30.0
    assert ejection.state is EjectionState.PROBING
    ejection.record_success()
    assert ejection.state is EjectionState.IN_ROTATION and ejection.failures == 0


def test_a_probing_replica_takes_one_probe_at_a_time():
    now = [0.0]
    ejection = OutlierEjection(failure_threshold=1, ejection_s=10, clock=lambda: now[0])
    assert not ejection.routed()  # in rotation: any number of requests, none of them a probe
    assert ejection.record_failure()
    now[0] = 10.0
    assert ejection.allows() and ejection.routed()  # the probe goes
    assert not ejection.allows()  # everything else waits for its verdict
    ejection.probe_finished()  # cancelled by its caller without a verdict: the next request probes
    assert ejection.allows() and ejection.routed()
    ejection.record_success()
    assert ejection.allows() and not ejection.routed() and ejection.allows()

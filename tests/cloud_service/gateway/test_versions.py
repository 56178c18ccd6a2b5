"""Model versions behind the gateway: the weighted canary split holds within statistical tolerance, changes at
run time without touching running streams, pinned versions reach only their replicas, and SIGHUP-style reloads
re-read the weights from the config file."""

from __future__ import annotations

import asyncio
import math

import pytest

from cloud_service.config import ConfigError
from cloud_service.errors import ModelNotFoundError
from cloud_service.gateway.config import VersionWeight
from edge_runtime import collect
from tests.cloud_service.gateway.support import MODEL, chat, raw_generate, running_fleet

VERSIONS = ("v1", "v1", "v2", "v2")
SPLIT_REQUESTS = 300
CONCURRENCY = 30


async def _split(target: str, count: int, offset: int = 0) -> dict[str, int]:
    """Versions that answered ``count`` unpinned one-token requests (read from each stream's first chunk)."""
    counts: dict[str, int] = {}
    gate = asyncio.Semaphore(CONCURRENCY)

    async def one(index: int) -> None:
        async with gate:
            result = await raw_generate(target, chat(offset + index, tokens=1, words=2))
        counts[result.versions[0]] = counts.get(result.versions[0], 0) + 1

    await asyncio.gather(*(one(i) for i in range(count)))
    return counts


def _within_binomial_tolerance(hits: int, trials: int, share: float, sigmas: float = 4.0) -> bool:
    return abs(hits - trials * share) <= sigmas * math.sqrt(trials * share * (1 - share))


def test_the_canary_split_holds_and_changes_at_run_time_without_dropping_streams():
    weights = (VersionWeight(MODEL, "v1", 80), VersionWeight(MODEL, "v2", 20))

    async def main():
        async with running_fleet(VERSIONS, versions=weights) as fleet:
            before = await _split(fleet.target, SPLIT_REQUESTS)
            long_stream = asyncio.create_task(raw_generate(fleet.target, chat(0, tokens=150)))
            await asyncio.sleep(0.1)
            fleet.gateway.set_weights(MODEL, {"v1": 0, "v2": 1})  # all new traffic to v2 now
            after = await _split(fleet.target, 100, offset=SPLIT_REQUESTS)
            weight_v1 = fleet.sample("tandem_gateway_version_weight", model=MODEL, version="v1")
            return before, after, await long_stream, weight_v1

    before, after, long_stream, weight_v1 = asyncio.run(main())
    assert sum(before.values()) == SPLIT_REQUESTS
    assert _within_binomial_tolerance(before.get("v2", 0), SPLIT_REQUESTS, 0.2), before
    assert after == {"v2": 100}
    assert long_stream.tokens == 150 and long_stream.code.name == "OK"  # the running stream was untouched
    assert weight_v1 == 0


def test_pinned_versions_reach_only_replicas_serving_them():
    async def main():
        async with running_fleet(VERSIONS, versions=(VersionWeight(MODEL, "v1", 1),)) as fleet:
            pinned = await asyncio.gather(*(raw_generate(fleet.target, chat(i, tokens=2), version="v2")
                                            for i in range(20)))
            v2_replicas = {a for a, v in zip(fleet.addresses, VERSIONS, strict=True) if v == "v2"}
            served = {a for a in fleet.addresses if fleet.served(a)}
            async with fleet.client() as cloud:
                with pytest.raises(ModelNotFoundError, match="v3"):
                    await collect(cloud.generate(chat(0), model=MODEL, model_version="v3"))
                with pytest.raises(ModelNotFoundError, match="not served by any replica"):
                    await collect(cloud.generate(chat(0), model="no-such-model"))
                unpinned = await raw_generate(fleet.target, chat(1, tokens=2))
                models = sorted((m.name, m.version) for m in await cloud.list_models())
            return pinned, served, v2_replicas, unpinned, models

    pinned, served, v2_replicas, unpinned, models = asyncio.run(main())
    assert all(r.versions == ["v2"] and r.tokens == 2 for r in pinned)
    assert served == v2_replicas
    assert unpinned.versions == ["v1"]  # the configured split sends unpinned traffic to v1 only
    assert models == [(MODEL, "v1"), (MODEL, "v2")]


def test_reload_rereads_the_weights_and_a_bad_file_changes_nothing(tmp_path):
    config = tmp_path / "gateway.toml"

    def write(weight_v2: str) -> None:
        config.write_text(
            '[server]\nallow_unauthenticated = true\n[gateway]\nreplicas = ["127.0.0.1:1"]\n'
            f'[[gateway.versions]]\nmodel = "{MODEL}"\nversion = "v1"\nweight = 50\n'
            f'[[gateway.versions]]\nmodel = "{MODEL}"\nversion = "v2"\nweight = {weight_v2}\n'
        )

    async def main():
        async with running_fleet(("v1",)) as fleet:
            gateway = fleet.gateway
            write("50")
            gateway.reload(config)
            first = gateway.versions.weights(MODEL)
            write('"lots"')
            gateway.reload(config)  # logged, nothing changes
            second = gateway.versions.weights(MODEL)
            with pytest.raises(ConfigError, match="sum to 0"):
                gateway.set_weights(MODEL, {"v1": 0, "v2": 0})
            return first, second, gateway.versions.weights(MODEL)

    first, second, third = asyncio.run(main())
    assert first == second == third == {"v1": 50.0, "v2": 50.0}

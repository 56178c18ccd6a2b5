"""``routing.use_router``: validated, read from a policy file, and honoured: false routes on the text heuristic
even when the bundle carries a calibrated router."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from sdk import AsyncHybridClient, DeviceSettings, Policy, PolicyError, RoutingSettings, load_policy


def test_use_router_defaults_to_true_and_must_be_a_bool() -> None:
    assert RoutingSettings().use_router is True
    with pytest.raises(PolicyError, match=r"routing\.use_router"):
        RoutingSettings(use_router="no")  # type: ignore[arg-type]
    with pytest.raises(PolicyError, match=r"routing\.use_router"):
        RoutingSettings(use_router=0)  # type: ignore[arg-type]


def test_use_router_is_read_from_the_policy_file(tmp_path: Path) -> None:
    path = tmp_path / "tandem.toml"
    path.write_text('[routing]\nuse_router = false\n[cloud]\ntarget = "127.0.0.1:50051"\nmodel = "m"\n')
    assert load_policy(path).routing.use_router is False


@pytest.mark.parametrize(("use_router", "source"), [(True, "router"), (False, "heuristic")])
def test_use_router_chooses_the_difficulty_source(eval_models, use_router: bool, source: str) -> None:
    models = eval_models("smoke")
    policy = Policy(routing=RoutingSettings(mode="local_only", use_router=use_router),
                    device=DeviceSettings(bundle=models.bundles["gguf"], trusted_keys=(models.public_key,), threads=1))

    async def ask():
        async with AsyncHybridClient(policy) as client:
            assert await client.preload()
            response = await client.chat.completions.create(
                messages=[{"role": "user", "content": "What is 4738+6?"}], max_tokens=2, temperature=0.0)
            return response.route.difficulty

    difficulty = asyncio.run(ask())
    assert difficulty.source == source
    assert (difficulty.p_device_good is not None) is use_router

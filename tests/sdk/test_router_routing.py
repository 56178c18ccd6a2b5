"""The SDK routes on the bundle's calibrated router once the bundle is loaded (verified with it): P(device
answer good) below the threshold sends a request to the cloud; the threshold comes from the policy, the
router's table, or the default; an unusable router falls back to the text heuristic."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

from edge_runtime.bundle import verify_bundle
from edge_runtime.router import FEATURE_NAMES, ROUTER_FILE, DifficultyRouter, ThresholdPoint
from export.calibrate.run import seal_router
from sdk import AsyncHybridClient, Reason, Side
from sdk.difficulty import DEFAULT_ROUTER_THRESHOLD
from sdk.signals import SignalHub, StaticSignals
from tests.sdk.conftest import make_policy, replica, run

SHORT = [{"role": "user", "content": "What is 3+4?"}]
LONG = [{"role": "user", "content": "What is 73920581+6?"}]
"""Both look easy to the text heuristic (short, one small sum); the router below tells them apart."""


def _digit_router() -> DifficultyRouter:
    """P(good) = sigmoid(6 - 1.5 x longest digit run): 0.989 for 3+4, 0.002 for an 8-digit number."""
    width = len(FEATURE_NAMES)
    weights = np.zeros((width, 1))
    weights[FEATURE_NAMES.index("longest_digit_run"), 0] = -1.5
    return DifficultyRouter(
        mean=np.zeros(width), scale=np.ones(width), layers=((weights, np.array([6.0])),),
        thresholds=(ThresholdPoint(0.0, 0.0, 0.8), ThresholdPoint(0.995, 0.5, 0.95), ThresholdPoint(1.0, 1.0, 1.0)),
    )


@pytest.fixture
def routed_bundle(device_bundle: Path, signing_key, tmp_path: Path) -> Path:
    folder = Path(shutil.copytree(device_bundle, tmp_path / "routed"))
    seal_router(folder, verify_bundle(folder, [signing_key.public_key()]), _digit_router(), signing_key, {})
    return folder


def _hub() -> SignalHub:
    return SignalHub.from_static(StaticSignals(available_memory_bytes=8 << 30, battery_percent=None, charging=None))


def _ask_both(tiny_llama, cloud_engine, bundle: Path, key: Path, *, preload: bool = True, **routing):
    async def main():
        async with replica(tiny_llama, cloud_engine) as server:
            policy = make_policy(bundle=bundle, key=key, target=server.target, routing=routing)
            async with AsyncHybridClient(policy, signals=_hub()) as client:
                if preload:
                    assert await client.preload()
                return [await client.chat.completions.create(messages=m, max_tokens=4, temperature=0)
                        for m in (SHORT, LONG)]

    return run(main)


def test_the_router_sends_what_the_device_would_get_wrong_to_the_cloud(
        tiny_llama, cloud_engine, routed_bundle, public_key_file) -> None:
    short, long = _ask_both(tiny_llama, cloud_engine, routed_bundle, public_key_file)
    assert short.route.difficulty.source == long.route.difficulty.source == "router"
    assert short.route.side is Side.DEVICE and short.route.reasons == (Reason.DIFFICULTY_LOW,)
    assert long.route.side is Side.CLOUD and long.route.reasons == (Reason.DIFFICULTY_HIGH,)
    assert short.route.difficulty.p_device_good > DEFAULT_ROUTER_THRESHOLD > long.route.difficulty.p_device_good


def test_the_threshold_comes_from_the_policy_or_the_routers_table(
        tiny_llama, cloud_engine, routed_bundle, public_key_file) -> None:
    # 0.995 (the table's point for a 50 % cloud share) is above the short prompt's 0.989: both go to the cloud.
    for routing in ({"router_threshold": 0.995}, {"router_cloud_share": 0.5}):
        short, long = _ask_both(tiny_llama, cloud_engine, routed_bundle, public_key_file, **routing)
        assert short.route.side is long.route.side is Side.CLOUD, routing
    short, long = _ask_both(tiny_llama, cloud_engine, routed_bundle, public_key_file, router_cloud_share=0.0)
    assert short.route.side is long.route.side is Side.DEVICE


def test_without_a_router_or_before_loading_the_heuristic_decides(
        tiny_llama, cloud_engine, device_bundle, routed_bundle, public_key_file) -> None:
    for bundle, preload in ((device_bundle, True), (routed_bundle, False)):
        short, _ = _ask_both(tiny_llama, cloud_engine, bundle, public_key_file, preload=preload)
        assert short.route.difficulty.source == "heuristic"


def test_a_signed_router_this_runtime_cannot_read_is_ignored_with_a_warning(
        tiny_llama, cloud_engine, routed_bundle, public_key_file, signing_key, caplog) -> None:
    from export.bundle_writer import seal_bundle

    manifest = verify_bundle(routed_bundle, [signing_key.public_key()])
    data = json.loads((routed_bundle / ROUTER_FILE).read_text())
    (routed_bundle / ROUTER_FILE).write_text(json.dumps(data | {"features_version": 99}))
    seal_bundle(routed_bundle, manifest, signing_key)  # re-signed: the bundle verifies, the router is unreadable
    with caplog.at_level(logging.WARNING, logger="sdk.backends.edge"):
        _, long = _ask_both(tiny_llama, cloud_engine, routed_bundle, public_key_file)
    assert long.route.difficulty.source == "heuristic"
    assert "router is unusable" in caplog.text and "calibrate the bundle again" in caplog.text


def test_preload_without_a_usable_bundle_says_false(tmp_path: Path, public_key_file) -> None:
    async def main():
        policy = make_policy(bundle=tmp_path / "missing", key=public_key_file, target=None, mode="local_only")
        async with AsyncHybridClient(policy, signals=_hub()) as client:
            return await client.preload()

    assert run(main) is False


def _cascade_answer(tiny_llama, cloud_engine, bundle: Path, key: Path, **cascade):
    async def main():
        async with replica(tiny_llama, cloud_engine) as server:
            policy = make_policy(bundle=bundle, key=key, target=server.target, mode="prefer_local",
                                 cascade={"enabled": True, **cascade})
            async with AsyncHybridClient(policy, signals=_hub()) as client:
                assert await client.preload()
                return await client.chat.completions.create(messages=SHORT, max_tokens=6, temperature=0)

    return run(main)


@pytest.mark.parametrize(("calibrated", "policy", "escalated"), [
    (0.0, {}, True),                         # the bundle's cutoff: any token short of certainty escalates
    (-1000.0, {}, False),                    # the bundle's cutoff: nothing escalates
    (0.0, {"min_logprob": -1000.0}, False),  # the policy's own cutoff wins over the bundle's
])
def test_the_cascade_takes_the_bundles_calibrated_cutoff_unless_the_policy_sets_one(
        tiny_llama, cloud_engine, device_bundle, signing_key, tmp_path, public_key_file,
        calibrated: float, policy: dict, escalated: bool) -> None:
    import dataclasses

    from edge_runtime.router import CascadeCalibration

    folder = Path(shutil.copytree(device_bundle, tmp_path / "cascade"))
    router = dataclasses.replace(_digit_router(), cascade=CascadeCalibration(4, calibrated, 0.95))
    seal_router(folder, verify_bundle(folder, [signing_key.public_key()]), router, signing_key, {})
    answer = _cascade_answer(tiny_llama, cloud_engine, folder, public_key_file, **policy)
    assert answer.route.side is (Side.CLOUD if escalated else Side.DEVICE)
    assert [s.reason for s in answer.route.switches] == ([Reason.LOW_CONFIDENCE] if escalated else [])

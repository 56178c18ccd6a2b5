"""Background bundle provisioning from the cloud (resuming an interrupted transfer), and telemetry records."""

from __future__ import annotations

import asyncio
import json

from cloud_service.config import DistributionConfig
from cloud_service.distribution import partial_folder
from edge_runtime.bundle import load_public_key, verify_bundle
from edge_runtime.errors import DiskFullError
from sdk import AsyncHybridClient, Reason, Side
from sdk.provisioning import ProvisionState
from tests.machine_faults import small_disk
from tests.sdk.conftest import make_policy, replica, run
from tests.sdk.test_client_routes import QUESTION, hub


def test_the_device_bundle_arrives_by_download_resuming_and_then_serves(tiny_llama, cloud_engine, device_bundle,
                                                                        public_key_file, tmp_path):
    dest = tmp_path / "bundles" / "toy"
    manifest = json.loads((device_bundle / "manifest.json").read_text())
    model_file = manifest["model_file"]
    partial = partial_folder(dest)  # what an interrupted transfer leaves behind
    partial.mkdir(parents=True)
    data = (device_bundle / model_file).read_bytes()
    (partial / model_file).write_bytes(data[: len(data) // 2])
    distribution = DistributionConfig(bundles={"toy": (device_bundle,)}, trusted_keys=(public_key_file,))

    async def main():
        async with replica(tiny_llama, cloud_engine, distribution=distribution) as server:
            policy = make_policy(bundle=dest, key=public_key_file, target=server.target, mode="prefer_local",
                                 device=dict(provision_bundle="toy"))
            async with AsyncHybridClient(policy, signals=hub()) as client:
                before = await client.chat.completions.create(messages=QUESTION, max_tokens=4, temperature=0)
                assert await client.provisioner.wait_ready(timeout=60), client.provisioner.status
                after = await client.chat.completions.create(messages=QUESTION, max_tokens=4, temperature=0)
                return before, after, client.provisioner.status

    before, after, status = run(main)
    assert before.route.side is Side.CLOUD and before.route.reasons == (Reason.NO_BUNDLE,)
    assert after.route.side is Side.DEVICE and after.route.reasons == (Reason.MODE_PREFER_LOCAL,)
    assert status.state is ProvisionState.READY and status.bytes_done == status.bytes_total
    assert status.resumed_bytes >= len(data) // 2  # the half file was kept, not fetched again
    verify_bundle(dest, [load_public_key(public_key_file)])
    assert not partial.exists()


def test_a_device_without_room_for_the_bundle_keeps_using_the_cloud_and_says_why(tiny_llama, cloud_engine,
                                                                                  device_bundle, public_key_file,
                                                                                  tmp_path):
    distribution = DistributionConfig(bundles={"toy": (device_bundle,)}, trusted_keys=(public_key_file,))
    bundle_bytes = sum(path.stat().st_size for path in device_bundle.iterdir())

    async def main(disk):
        async with replica(tiny_llama, cloud_engine, distribution=distribution) as server:
            policy = make_policy(bundle=disk / "toy", key=public_key_file, target=server.target,
                                 mode="prefer_local", device=dict(provision_bundle="toy"))
            async with AsyncHybridClient(policy, signals=hub()) as client:
                for _ in range(200):  # the first attempt fails at once: no room
                    if client.provisioner.status.error is not None:
                        break
                    await asyncio.sleep(0.05)
                answer = await client.chat.completions.create(messages=QUESTION, max_tokens=4, temperature=0)
                return answer, client.provisioner.status

    with small_disk(tmp_path / "device", bundle_bytes // 4) as disk:
        answer, status = run(lambda: main(disk))
        assert list(disk.iterdir()) == []
    assert answer.route.side is Side.CLOUD and answer.route.reasons == (Reason.NO_BUNDLE,)
    assert status.state is ProvisionState.RETRYING and isinstance(status.error, DiskFullError)
    assert status.error.needed_bytes > status.error.free_bytes
    assert status.last_error.startswith(f"DiskFullError: Not enough space to write {disk / 'toy'}")


def test_every_request_is_recorded_without_its_text(tiny_llama, cloud_engine, device_bundle, public_key_file):
    records = []
    secret = "my secret diary entry"

    async def main():
        async with replica(tiny_llama, cloud_engine) as server:
            policy = make_policy(bundle=device_bundle, key=public_key_file, target=server.target)
            async with AsyncHybridClient(policy, signals=hub(), on_record=records.append) as client:
                await client.chat.completions.create(messages=[{"role": "user", "content": secret}], max_tokens=4)
                await client.chat.completions.create(messages=QUESTION, max_tokens=4, mode="cloud_only")
                return client.telemetry.counters(), client.telemetry.prometheus_collector()

    counters, collector = run(main)
    assert [(r.side, r.reasons, r.ok) for r in records] == [
        ("device", ("difficulty_low",), True), ("cloud", ("mode_cloud_only",), True)]
    assert all(r.completion_tokens == 4 and r.ttft_s is not None and r.total_s > 0 for r in records)
    assert secret not in repr(records) and "river" not in repr(records)
    assert counters["requests"] == {("device", "difficulty_low"): 1, ("cloud", "mode_cloud_only"): 1}
    samples = {s.name: s.value for family in collector.collect() for s in family.samples
               if s.labels.get("side") == "cloud"}
    assert samples == {"tandem_sdk_requests_total": 1}

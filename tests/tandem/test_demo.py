"""`tandem demo --smoke`: the task models (smoke size) on a local fleet and a fresh device, through every
scenario; a second run reuses the models. The models come from the session's shared cache (built once by
the ``task_models`` fixture, or by the demo itself when it runs first)."""

from __future__ import annotations

import io
from pathlib import Path

from rich.console import Console

from tandem.demo import Scenario, demo_batch, run_demo
from tests.support import invoke


def test_smoke_demo_plays_every_scenario_then_reuses_its_models(task_cache: Path) -> None:
    console = Console(file=io.StringIO(), width=200)
    result = run_demo(console, task_cache, smoke=True)
    output = " ".join(console.file.getvalue().split())
    assert result.models.path.parent == task_cache / "tasks"

    # The bundle arrives by download; meanwhile the cloud answers.
    download = result.scenario(Scenario.DOWNLOAD)
    assert download and all(row.route.side == "cloud" and row.route.reasons == ("no_bundle",) for row in download)
    assert result.download is not None and result.download.state == "ready" and result.download.bytes_done > 0

    # Normal: the downloaded bundle's router decides, each request on the side its threshold says.
    normal = result.scenario(Scenario.NORMAL)
    assert [row.item for row in normal] == demo_batch("smoke")
    assert result.router_threshold is not None
    for row in normal:
        difficulty = row.route.difficulty
        assert difficulty.source == "router" and difficulty.p_device_good is not None
        assert difficulty.hard is (difficulty.p_device_good < result.router_threshold)
        assert row.route.reasons == (("difficulty_high",) if difficulty.hard else ("difficulty_low",))
        assert row.route.side == ("cloud" if difficulty.hard else "device") and not row.route.switches
    assert len(result.device_only) == len(result.cloud_only) == len(normal)

    # Low battery and low memory move work to the cloud; with the gateway stopped everything runs on the device.
    for scenario, side, reason in ((Scenario.BATTERY, "cloud", "battery_low"),
                                   (Scenario.MEMORY, "cloud", "device_memory_short"),
                                   (Scenario.OFFLINE, "device", "cloud_down")):
        rows = result.scenario(scenario)
        assert rows, scenario
        for row in rows:
            assert (row.route.side, row.route.reasons, row.route.switches) == (side, (reason,), ()), scenario

    # The replica serving a stream dies after its first chunk: the device continues from the delivered text.
    killed = result.killed
    assert killed is not None and killed in result.scenario(Scenario.KILLED)
    [switch] = killed.route.switches
    assert (switch.kind, switch.from_side, switch.to_side, switch.reason) == ("failover", "cloud", "device",
                                                                             "stream_broken")
    assert switch.after_tokens >= 1 and killed.route.sides == ("cloud", "device")
    assert 0 < switch.after_chars < len(killed.text)

    cloud_calls = sum(row.used_cloud for row in result.rows)
    for expected in ("no_bundle", "state ready", "difficulty_", "battery_low", "device_memory_short", "cloud_down",
                     "failover: stream_broken", "continued on the device", "device only", "cloud only", "hybrid",
                     f"{len(result.rows)} requests", f"{cloud_calls} called the cloud", "routing-quality plot"):
        assert expected in output, expected

    teacher_weights = result.models.teacher / "model.safetensors"
    stamp = teacher_weights.stat().st_mtime_ns
    second = invoke("demo", "--smoke", "--cache-dir", str(task_cache))
    assert second.exit_code == 0, second.output
    again = " ".join(second.output.split())
    assert f"cached in {result.models.path}" in again and "failover: stream_broken" in again
    assert teacher_weights.stat().st_mtime_ns == stamp

from pathlib import Path

from tests.support import invoke


def test_demo_plays_every_scenario_and_reuses_its_model(tmp_path: Path) -> None:
    args = ["demo", "--cache-dir", str(tmp_path), "--max-new-tokens", "8"]
    first = invoke(*args)
    assert first.exit_code == 0, first.output
    output = " ".join(first.output.split())
    for expected in ("no_bundle", "battery_low", "device_memory_short", "cloud_down", "failover cloud->device",
                     "stream_broken", "no answer lost", "state ready"):
        assert expected in output, expected
    [folder] = (tmp_path / "toy-models").iterdir()
    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    second = invoke(*args)
    assert second.exit_code == 0, second.output
    assert (folder / "model.safetensors").stat().st_mtime_ns == stamp

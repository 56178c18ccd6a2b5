"""`tandem eval routing` end to end on real models (the smoke size: real engines, real SDK, real cloud tier on
loopback), its bad-option messages, and the policies' ordering on real models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from evaluation.routing.policies import POLICIES
from evaluation.routing.replay import BUDGET_GRID
from tests.evaluation.conftest import EVAL_PER_CELL
from tests.support import invoke

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
POLICY_KEYS = {"accuracy", "cloud_share", "levels", "cloud_share_at_95pct", "replay_agreement", "setting"}

ORDERING_SIZES = ["smoke", "small"]
"""The smoke models answer almost nothing right (the ordering holds with equality and its strict part is
skipped); the small ones learn enough for the ordering to be strict."""


def test_json_report_and_plot(eval_report) -> None:
    report, plot = eval_report("smoke")
    assert report["size"] == "smoke" and report["backend"] == "gguf"
    assert report["items"] == EVAL_PER_CELL["smoke"] * 15  # 3 families x 5 levels
    assert set(report["policies"]) == {policy.name for policy in POLICIES}
    for name, entry in report["policies"].items():
        assert set(entry) >= POLICY_KEYS, name
        assert 0.0 <= entry["accuracy"] <= 1.0 and 0.0 <= entry["cloud_share"] <= 1.0
        assert set(entry["levels"]) == {"1", "2", "3", "4", "5"}
        assert entry["fallbacks"] == 0, name
        # greedy decoding: the replay predicts every real run's side and correctness
        assert entry["replay_agreement"] == 1.0, name
    assert report["policies"]["always_device"]["cloud_share"] == 0.0
    assert report["policies"]["always_cloud"]["cloud_share"] == 1.0
    assert len(report["policies"]["router"]["replay_curve"]) == len(BUDGET_GRID)
    reach = report["cloud_share_at_95pct"]
    assert reach["target_accuracy"] == pytest.approx(0.95 * report["policies"]["always_cloud"]["accuracy"])
    assert set(reach["per_policy"]) == set(report["policies"])
    goals = report["goals"]
    assert set(goals) == {"best_policy_95pct_at_40pct_cloud", "router_auroc"}
    assert all({"value", "met", "limit"} <= set(goal) for goal in goals.values())
    assert report["plot"] == str(plot)
    assert plot.read_bytes().startswith(PNG_SIGNATURE)


def test_table_output(eval_cache: Path, eval_models, tmp_path: Path) -> None:
    eval_models("smoke")
    result = invoke("eval", "routing", "--size", "smoke", "--cache-dir", str(eval_cache), "--per-cell", "1",
                    "--backend", "onnx", "--plot", str(tmp_path / "onnx.png"))
    assert result.exit_code == 0, result.output
    for text in ("calibrated router", "router + cascade", "oracle", "cloud share at 95 %", "router AUROC"):
        assert text in result.stdout
    assert (tmp_path / "onnx.png").read_bytes().startswith(PNG_SIGNATURE)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--size", "huge"], "--size: 'huge' is not one of"),
        (["--backend", "tflite"], "--backend: 'tflite' is not one of gguf, onnx"),
        (["--per-cell", "0"], "--per-cell: must be an integer from 1"),
        (["--plot", "routing.jpg"], "must end in .png"),
    ],
)
def test_bad_options_say_what_to_do(args: list[str], message: str, tmp_path: Path) -> None:
    result = invoke("eval", "routing", "--cache-dir", str(tmp_path), *args)
    assert result.exit_code == 2
    assert message in " ".join(result.output.split())
    assert "Traceback" not in result.output


@pytest.mark.slow
@pytest.mark.parametrize("size", ORDERING_SIZES)
def test_policies_order_on_real_models(eval_report, size: str) -> None:
    """oracle >= router >= random at the same cloud share, on the replayed curves of a real run."""
    report, _ = eval_report(size)
    policies = report["policies"]

    def curve(name: str) -> list[float]:
        return [point["accuracy"] for point in policies[name]["replay_curve"]]

    oracle, router, random = curve("oracle"), curve("router"), curve("random")
    for budget, best, routed in zip(BUDGET_GRID, oracle, router, strict=True):
        assert best >= routed - 1e-9, budget  # the oracle bounds every policy at every budget
    # Random draws can be lucky at one budget; over the whole curve the router must do at least as well.
    assert np.mean(router) >= np.mean(random) - 1e-9
    learned = policies["always_cloud"]["accuracy"] > policies["always_device"]["accuracy"]
    if size == "smoke" or not learned:
        return  # the smoke models learn nothing: every curve is flat
    assert report["router_auroc"] > 0.5
    assert np.mean(oracle) > np.mean(router) > np.mean(random)

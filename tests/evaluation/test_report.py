"""The report built from hand-made runs: per-policy figures, cloud_share_at_95pct, the best policy, the goals."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from evaluation.routing.evaluate import check_plot_path, default_plot_path
from evaluation.routing.policies import POLICIES
from evaluation.routing.replay import routed
from evaluation.routing.report import build_report, policy_curves, tables
from evaluation.routing.run import ItemResult, PolicyRun
from evaluation.routing.settings import EvalSettings
from export.tasks import generate_split
from tests.evaluation.test_replay import outcomes


def runs_as_replayed(table, items) -> dict[str, PolicyRun]:
    """Runs whose every item went where the replay says, and got the recorded answer's correctness."""
    runs = {}
    for policy in POLICIES:
        cloud = routed(policy.cloud_score(table), policy.headline_cutoff)
        correct = np.where(cloud, table.cloud_correct, table.device_correct)
        results = tuple(ItemResult(bool(c), bool(ok), "", False, False, 0.0, "router", 0.5, ())
                        for c, ok in zip(cloud, correct, strict=True))
        runs[policy.name] = PolicyRun(policy, results, 0.1)
    return runs


@pytest.fixture
def items():
    return generate_split("test", 4, families=["addition"])  # 20 items, 4 per level


def test_report_figures_goals_and_best_policy(items) -> None:
    n = len(items)
    device = [1] * 14 + [0] * 6
    cloud = [0] + [1] * 19
    assert n == 20
    table = outcomes(device, cloud, p_good=[0.9 if d else 0.1 for d in device],
                     heuristic=[0.3] * n, draws=np.linspace(0.01, 0.99, n).tolist())
    report = build_report(items, runs_as_replayed(table, items), table, policy_curves(table),
                          {"size": "hand", "backend": "gguf"})
    policies = report["policies"]
    assert policies["always_device"]["accuracy"] == 0.7 and policies["always_device"]["cloud_share"] == 0.0
    assert policies["always_cloud"]["accuracy"] == 0.95 and policies["always_cloud"]["cloud_share"] == 1.0
    assert policies["always_cloud"]["cloud_share_at_95pct"] == 1.0
    assert policies["always_device"]["cloud_share_at_95pct"] is None
    assert set(policies["router"]["levels"]) == {"1", "2", "3", "4", "5"}
    assert all(entry["replay_agreement"] == 1.0 for entry in policies.values())
    # The perfect router sends the 6 wrong items: 0.3; the oracle needs only 5 of them (it is no candidate).
    assert policies["router"]["cloud_share_at_95pct"] == pytest.approx(0.3)
    assert policies["router"]["threshold_at_95pct"] == pytest.approx(0.9)  # P(good) < 0.9: the wrong ones
    assert policies["oracle"]["cloud_share_at_95pct"] == pytest.approx(0.25)
    best = report["goals"]["best_policy_95pct_at_40pct_cloud"]
    assert report["cloud_share_at_95pct"]["best_policy"] in ("router", "router_cascade")
    assert best["value"] == pytest.approx(0.3) and best["met"] is True
    assert report["router_auroc"] == 1.0 and report["goals"]["router_auroc"]["met"] is True
    rendered = [table.title for table in tables({**report, "items": n, "seconds": 1.0, "plot": "x.png"})]
    assert rendered[0].startswith("routing policies")


def test_goal_is_not_met_when_the_cloud_answers_nothing_right(items) -> None:
    n = len(items)
    table = outcomes([0] * n, [0] * n, p_good=np.linspace(0.1, 0.9, n).tolist())
    report = build_report(items, runs_as_replayed(table, items), table, policy_curves(table),
                          {"size": "hand", "backend": "gguf"})
    assert report["goals"]["best_policy_95pct_at_40pct_cloud"]["met"] is False
    assert report["router_auroc"] is None and report["goals"]["router_auroc"]["met"] is False


def test_replay_agreement_drops_when_a_run_went_elsewhere(items) -> None:
    n = len(items)
    table = outcomes([1] * 10 + [0] * 10, [1] * n, p_good=[0.9] * 10 + [0.1] * 10)
    runs = runs_as_replayed(table, items)
    router = runs["router"]
    moved = list(router.results)
    moved[-1] = ItemResult(False, False, "", False, True, 0.0, "router", 0.1, ())  # fell back to the device
    runs["router"] = PolicyRun(router.policy, tuple(moved), 0.1)
    report = build_report(items, runs, table, policy_curves(table), {"size": "hand", "backend": "gguf"})
    assert report["policies"]["router"]["replay_agreement"] == pytest.approx(19 / 20)
    assert report["policies"]["router"]["fallbacks"] == 1


def test_default_plot_path_is_in_the_repo_only_when_run_from_it(tmp_path: Path) -> None:
    settings = EvalSettings(size="smoke", cache_dir=tmp_path / "cache")
    assert default_plot_path(settings, tmp_path) == tmp_path / "cache" / "routing_quality.png"
    (tmp_path / "benchmarks" / "results").mkdir(parents=True)
    (tmp_path / "pyproject.toml").write_text("")
    assert default_plot_path(settings, tmp_path) == Path("benchmarks/results/routing_quality.png")


def test_plot_path_must_be_a_png_file(tmp_path: Path) -> None:
    from evaluation.routing.errors import EvaluationSettingsError

    with pytest.raises(EvaluationSettingsError, match="--plot"):
        check_plot_path(tmp_path)
    with pytest.raises(EvaluationSettingsError, match=r"\.png"):
        check_plot_path(tmp_path / "plot.jpg")

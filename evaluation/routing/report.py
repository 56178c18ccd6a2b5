"""The evaluation's result: one JSON-ready object (``build_report``) and its Rich tables (``tables``).

Per policy: the real run's ``accuracy``, ``cloud_share`` and per-level accuracy; the replay's agreement
with that run; ``cloud_share_at_95pct`` (the smallest cloud share at which the policy reaches
GOAL_ACCURACY_RATIO of always-cloud accuracy: from the replayed sweep for threshold policies, from the run
itself for the fixed ones) and the compact replayed curve. Overall: ``router_auroc`` (the router's P(good)
against the device's correctness on the test split), the best deployable policy's ``cloud_share_at_95pct``
and the two ``goals``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from rich.table import Table

from evaluation.routing.policies import POLICIES, RECORDING_POLICIES, RoutingPolicy
from evaluation.routing.replay import EPSILON, Curve, Outcomes, agreement, routed, router_auroc, sweep

if TYPE_CHECKING:
    from evaluation.routing.run import PolicyRun
    from export.tasks import TaskItem

GOAL_ACCURACY_RATIO = 0.95
"""A policy "reaches" always-cloud quality at this share of always-cloud accuracy."""
GOAL_MAX_CLOUD_SHARE = 0.40
"""Goal: the best policy reaches GOAL_ACCURACY_RATIO of always-cloud accuracy at this cloud share or less."""
GOAL_MIN_AUROC = 0.80
"""Goal: the router's AUROC on the test split."""
# With always-cloud accuracy 0 (models that learned nothing) every policy "reaches" 95 % of it at no cloud
# share: the goal then counts as not met.
REPLAY_METHOD = (
    "Curves and cloud_share_at_95pct of threshold policies are a replay of recorded outcomes, not one SDK run "
    "per threshold: each item's greedy answer on each side (from the always_device and always_cloud runs), the "
    "router's P(good), the heuristic's score, the device's first-token logprobs and the random draws are "
    "recorded, and each threshold's split is scored from them. Each policy's headline point is a real SDK run; "
    "replay_agreement is the share of items where the replay at that point predicts the side and the "
    "correctness the real run got (1.0 by construction for always_device and always_cloud, whose runs are the "
    "recordings)."
)


def policy_curves(outcomes: Outcomes, policies: Sequence[RoutingPolicy] = POLICIES) -> dict[str, Curve]:
    """The replayed curve of every policy with a sweep."""
    return {policy.name: sweep(policy.cloud_score(outcomes), outcomes) for policy in policies if policy.sweep}


def _share(flags: Sequence[bool]) -> float:
    return sum(flags) / len(flags) if flags else 0.0


def _levels(items: Sequence[TaskItem], correct: Sequence[bool]) -> dict[str, float]:
    levels = sorted({item.level for item in items})
    return {str(level): _share([ok for item, ok in zip(items, correct, strict=True) if item.level == level])
            for level in levels}


def _threshold(policy: RoutingPolicy, curve: Curve, share: float | None, target: float) -> float | None:
    """The policy's own threshold at the split that reaches ``target`` with cloud share ``share``."""
    if share is None or policy.threshold_sign is None:
        return None
    hits = (curve.accuracy >= target - EPSILON) & (abs(curve.cloud_share - share) <= EPSILON)
    cutoff = float(curve.cutoff[hits][0])
    return None if cutoff in (float("inf"), float("-inf")) else policy.threshold_sign * cutoff


def _policy_entry(policy: RoutingPolicy, run: PolicyRun, items: Sequence[TaskItem], outcomes: Outcomes,
                  curve: Curve | None, target: float) -> dict[str, Any]:
    accuracy, cloud_share = _share(run.correct), _share(run.cloud)
    predicted = routed(policy.cloud_score(outcomes), policy.headline_cutoff)
    entry: dict[str, Any] = {
        "label": policy.label,
        "setting": policy.setting,
        "deployable": policy.deployable,
        "accuracy": accuracy,
        "cloud_share": cloud_share,
        "levels": _levels(items, run.correct),
        "replay_agreement": agreement(predicted, run.cloud, run.correct, outcomes),
        "escalations": sum(result.escalated for result in run.results),
        "fallbacks": sum(result.switched for result in run.results),
        "seconds": round(run.seconds, 2),
        "sweep": policy.sweep,
    }
    if curve is None:
        entry["cloud_share_at_95pct"] = cloud_share if accuracy >= target - EPSILON else None
        entry["threshold_at_95pct"] = None
        entry["replay_curve"] = None
    else:
        reached = curve.cloud_share_reaching(target)
        entry["cloud_share_at_95pct"] = reached
        entry["threshold_at_95pct"] = _threshold(policy, curve, reached, target)
        entry["replay_curve"] = curve.on_budgets()
    return entry


def build_report(items: Sequence[TaskItem], runs: Mapping[str, PolicyRun], outcomes: Outcomes,
                 curves: Mapping[str, Curve], meta: Mapping[str, Any],
                 policies: Sequence[RoutingPolicy] = POLICIES) -> dict[str, Any]:
    """The JSON object of `tandem eval routing --json` (``meta``: size, backend, paths, timings...); ``policies``
    as run (``evaluation.routing.run.bundle_policies``)."""
    cloud_accuracy = _share(runs["always_cloud"].correct)
    target = GOAL_ACCURACY_RATIO * cloud_accuracy
    policies = {policy.name: _policy_entry(policy, runs[policy.name], items, outcomes, curves.get(policy.name),
                                           target) for policy in policies}
    reached = [(entry["cloud_share_at_95pct"], name) for name, entry in policies.items()
               if entry["deployable"] and entry["cloud_share_at_95pct"] is not None]
    best_share, best_policy = min(reached, default=(None, None), key=lambda pair: pair[0])
    auroc = router_auroc(outcomes)
    return {
        **meta,
        "items": len(items),
        "policies": policies,
        "router_auroc": auroc,
        "cloud_share_at_95pct": {
            "always_cloud_accuracy": cloud_accuracy,
            "target_accuracy": target,
            "per_policy": {name: entry["cloud_share_at_95pct"] for name, entry in policies.items()},
            "best_policy": best_policy,
            "best": best_share,
            "note": "best: over deployable policies (the oracle is an upper bound)",
        },
        "goals": {
            "best_policy_95pct_at_40pct_cloud": {
                "value": best_share, "policy": best_policy, "limit": GOAL_MAX_CLOUD_SHARE,
                "met": cloud_accuracy > 0 and best_share is not None and best_share <= GOAL_MAX_CLOUD_SHARE + EPSILON,
            },
            "router_auroc": {"value": auroc, "limit": GOAL_MIN_AUROC,
                             "met": auroc is not None and auroc >= GOAL_MIN_AUROC},
        },
        "replay": {
            "method": REPLAY_METHOD,
            "agreement": {name: entry["replay_agreement"] for name, entry in policies.items()},
            "recorded_by": list(RECORDING_POLICIES),
        },
    }


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f} %"


def tables(report: Mapping[str, Any]) -> list[Table]:
    """The policy table and the summary (goals, AUROC, plot), for the terminal."""
    policies = Table(title=f"routing policies on the test split ({report['items']} items, greedy, "
                           f"{report['size']} models, {report['backend']} device bundle)")
    for column in ("policy", "headline setting", "accuracy", "cloud share", "cloud share at 95 %",
                   "replay agreement"):
        policies.add_column(column, justify="left" if column in ("policy", "headline setting") else "right")
    for entry in report["policies"].values():
        label = entry["label"] + ("" if entry["deployable"] else " (bound)")
        policies.add_row(label, entry["setting"], _pct(entry["accuracy"]), _pct(entry["cloud_share"]),
                         _pct(entry["cloud_share_at_95pct"]), _pct(entry["replay_agreement"]))
    reach = report["cloud_share_at_95pct"]
    goals = report["goals"]
    summary = Table(title="summary", show_header=False)
    summary.add_row("target accuracy", f"{_pct(reach['target_accuracy'])} "
                                       f"(95 % of always-cloud {_pct(reach['always_cloud_accuracy'])})")
    auroc = report["router_auroc"]
    summary.add_row("router AUROC", "n/a (one class only)" if auroc is None else f"{auroc:.3f}")
    best = goals["best_policy_95pct_at_40pct_cloud"]
    summary.add_row("goal: 95 % at <= 40 % cloud",
                    f"{'met' if best['met'] else 'NOT met'}: {best['policy'] or 'no policy'} at "
                    f"{_pct(best['value'])} cloud share")
    summary.add_row("goal: router AUROC >= 0.80", "met" if goals["router_auroc"]["met"] else "NOT met")
    summary.add_row("plot", str(report.get("plot", "-")))
    summary.add_row("wall time", f"{report.get('seconds', 0.0):.0f} s")
    return [policies, summary]

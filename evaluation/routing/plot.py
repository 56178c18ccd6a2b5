"""The accuracy vs cloud-call share plot (PNG, matplotlib's headless Agg backend), written atomically.

One curve per threshold policy (the replay of recorded outcomes: every distinct split, by cloud share), a
marker at each policy's real headline run, the always-device and always-cloud points, the 95 %-of-always-cloud
target line and the goal's cloud-share budget.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from evaluation.routing.errors import EvaluationSettingsError
from evaluation.routing.replay import Curve

FIGURE_SIZE = (8.5, 6.0)
DPI = 120
GOAL_SHARE_STYLE = {"color": "grey", "linestyle": ":", "linewidth": 1.0}
LINE_STYLES = {"router_cascade": "-.", "oracle": "--"}
"""Policies whose curve may lie on another's (router + cascade on the router's when the cascade rarely
escalates) or that are no real policy (the oracle) get their own dash pattern."""


def _points(curve: Curve) -> tuple[list[float], list[float]]:
    """The curve's (cloud share, accuracy) points by increasing share (a real run's point lies on them)."""
    order = curve.cloud_share.argsort(kind="stable")
    return curve.cloud_share[order].tolist(), curve.accuracy[order].tolist()


def _save(figure: Any, path: Path) -> Path:
    """Write ``figure`` to ``path`` atomically (its folder is created); EvaluationSettingsError on failure."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        staged = path.with_name(f".{path.name}.{os.getpid()}.partial")
        figure.savefig(staged, dpi=DPI, format="png")
        staged.replace(path)
    except OSError as exc:
        raise EvaluationSettingsError("--plot", f"cannot write {str(path)!r}: {exc}") from exc
    return path


def _figure() -> tuple[Any, Any, Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=FIGURE_SIZE)
    return plt, figure, axes


def _finish(axes: Any, title: str) -> None:
    axes.set_xlabel("cloud-call share")
    axes.set_ylabel("accuracy (exact answers)")
    axes.set_xlim(-0.02, 1.02)
    axes.set_title(title, fontsize=10)
    axes.grid(alpha=0.3)
    axes.legend(loc="lower right", fontsize=8)


def write_plot(report: Mapping[str, Any], curves: Mapping[str, Curve], path: Path) -> Path:
    """Draw the evaluation's plot into ``path``; EvaluationSettingsError when it cannot be written."""
    plt, figure, axes = _figure()
    policies = report["policies"]
    try:
        for name, curve in curves.items():
            entry = policies[name]
            shares, accuracies = _points(curve)
            style = LINE_STYLES.get(name, "-")
            (line,) = axes.plot(shares, accuracies, linestyle=style, linewidth=1.4, label=entry["label"])
            axes.plot([entry["cloud_share"]], [entry["accuracy"]], marker="o", color=line.get_color())
        for name, marker in (("always_device", "s"), ("always_cloud", "D")):
            entry = policies[name]
            axes.plot([entry["cloud_share"]], [entry["accuracy"]], marker=marker, linestyle="none", color="black",
                      label=entry["label"])
        target = report["cloud_share_at_95pct"]["target_accuracy"]
        axes.axhline(target, color="black", linestyle="--", linewidth=1.0, label="95 % of always cloud")
        budget = report["goals"]["best_policy_95pct_at_40pct_cloud"]["limit"]
        axes.axvline(budget, label=f"goal: cloud share <= {budget:.0%}", **GOAL_SHARE_STYLE)
        _finish(axes, f"Routing quality: {report['size']} task models, {report['backend']} device bundle, "
                      f"{report['items']} test items\n(curves: replay of recorded outcomes; dots: real SDK runs)")
        figure.tight_layout()
        return _save(figure, path)
    finally:
        plt.close(figure)


def write_batch_plot(curves: Mapping[str, Curve], points: Mapping[str, tuple[float, float]], title: str,
                     path: Path) -> Path:
    """A small batch's plot (the demo's): labelled replay ``curves`` and real runs' ``points`` (label ->
    (cloud share, accuracy)); EvaluationSettingsError when it cannot be written."""
    plt, figure, axes = _figure()
    try:
        for label, curve in curves.items():
            shares, accuracies = _points(curve)
            axes.plot(shares, accuracies, linewidth=1.4, label=label)
        for label, (share, accuracy) in points.items():
            axes.plot([share], [accuracy], marker="o", linestyle="none", label=label)
        _finish(axes, title)
        figure.tight_layout()
        return _save(figure, path)
    finally:
        plt.close(figure)

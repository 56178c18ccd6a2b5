"""Replay of recorded outcomes: what a routing policy would score at any threshold, without running it again.

Sweeping every threshold through the SDK would mean one full run per threshold. Decoding is greedy, so an
item's answer on each side does not depend on the policy that sent it there: the evaluation records, per
test item, whether the device's answer and the cloud's answer are right, the router's P(device good), the
text heuristic's score, the device's first-token logprobs and the random policy's draw (``Outcomes``), and
a replay computes which side any threshold picks and so the accuracy it gets. Each policy's headline
operating point is a real SDK run; ``agreement`` says how often the replay at that point predicts the same
side and the same correctness as the real run (below 1.0 only where an engine's greedy answer changed
between runs, or a request fell back to the other side).

A threshold policy is a ``cloud_score`` per item: the item goes to the cloud when its score is above a
cutoff. ``sweep`` evaluates every cutoff that makes a different split (all items with equal scores go
together, as a threshold would send them). numpy only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

EPSILON = 1e-9
"""Tolerance of share and accuracy comparisons (they are ratios of item counts)."""
BUDGET_GRID = tuple(round(0.05 * step, 2) for step in range(21))
"""Cloud-share budgets of the compact curves in the report: 0, 5, 10 ... 100 %."""


@dataclass(frozen=True)
class Outcomes:
    """What was recorded per test item (arrays of one entry per item, in item order)."""

    device_correct: np.ndarray
    """bool: the device's greedy answer is right."""
    cloud_correct: np.ndarray
    """bool: the cloud's greedy answer is right."""
    p_good: np.ndarray
    """float: the bundle router's P(device answer good)."""
    heuristic: np.ndarray
    """float: the SDK's text-heuristic difficulty (0..1)."""
    first_logprobs: np.ndarray
    """float, (items, k): logprobs of the device's first k answer tokens; 0.0 past the answer's end (a token
    that is not there never escalates)."""
    random_draw: np.ndarray
    """float in [0, 1): the random policy sends the item to the cloud when its draw is below the share."""

    def __post_init__(self) -> None:
        n = len(self.device_correct)
        for name in ("cloud_correct", "p_good", "heuristic", "random_draw"):
            if np.shape(getattr(self, name)) != (n,):
                raise ValueError(f"outcomes.{name} has shape {np.shape(getattr(self, name))}, expected ({n},)")
        if np.ndim(self.first_logprobs) != 2 or np.shape(self.first_logprobs)[0] != n:
            raise ValueError(f"outcomes.first_logprobs must have shape ({n}, k)")

    @property
    def items(self) -> int:
        return len(self.device_correct)

    def min_logprob(self, window: int) -> np.ndarray:
        """The lowest logprob among each device answer's first ``window`` tokens (0.0 for an empty answer)."""
        if window > self.first_logprobs.shape[1]:
            raise ValueError(f"only the first {self.first_logprobs.shape[1]} logprobs were recorded, not {window}")
        head = self.first_logprobs[:, :window]
        return head.min(axis=1) if head.shape[1] else np.zeros(self.items)

    @classmethod
    def build(cls, device_correct: Sequence[bool], cloud_correct: Sequence[bool], p_good: Sequence[float],
              heuristic: Sequence[float], logprobs: Sequence[Sequence[float]], random_draw: Sequence[float],
              window: int) -> Outcomes:
        """From per-item lists; ``logprobs`` (each answer's, any length) are cut / padded to ``window``."""
        first = np.zeros((len(device_correct), window))
        for row, values in enumerate(logprobs):
            head = list(values)[:window]
            first[row, : len(head)] = head
        return cls(np.asarray(device_correct, dtype=bool), np.asarray(cloud_correct, dtype=bool),
                   np.asarray(p_good, dtype=np.float64), np.asarray(heuristic, dtype=np.float64), first,
                   np.asarray(random_draw, dtype=np.float64))


@dataclass(frozen=True)
class Curve:
    """Every distinct split of a threshold policy, by increasing cloud share."""

    cutoff: np.ndarray
    """The item goes to the cloud when its cloud score is > cutoff (-inf: every item)."""
    cloud_share: np.ndarray
    accuracy: np.ndarray

    def accuracy_within(self, budget: float) -> float | None:
        """The best accuracy of a split that sends at most ``budget`` of the items to the cloud."""
        fits = self.cloud_share <= budget + EPSILON
        return float(self.accuracy[fits].max()) if fits.any() else None

    def cloud_share_reaching(self, target: float) -> float | None:
        """The smallest cloud share of a split whose accuracy is >= ``target`` (None: no split reaches it)."""
        reaching = self.accuracy >= target - EPSILON
        return float(self.cloud_share[reaching].min()) if reaching.any() else None

    def on_budgets(self, budgets: Sequence[float] = BUDGET_GRID) -> list[dict[str, float | None]]:
        """``accuracy_within`` at each budget: the compact curve of the report."""
        return [{"cloud_share": budget, "accuracy": self.accuracy_within(budget)} for budget in budgets]


def routed(cloud_score: np.ndarray, cutoff: float) -> np.ndarray:
    """bool per item: it goes to the cloud (its score is above ``cutoff``)."""
    return np.asarray(cloud_score, dtype=np.float64) > cutoff


def accuracy_of(cloud: np.ndarray, outcomes: Outcomes) -> np.ndarray:
    """bool per item: the answer of the side ``cloud`` picks is right."""
    return np.where(cloud, outcomes.cloud_correct, outcomes.device_correct)


def sweep(cloud_score: np.ndarray, outcomes: Outcomes) -> Curve:
    """Accuracy and cloud share at every cutoff that splits the items differently: below every finite score
    (all to the cloud) and at each distinct finite score (the items above it to the cloud). Items scored
    +inf go to the cloud at every cutoff (a rule the threshold does not control, e.g. a cascade's escalation)."""
    score = np.asarray(cloud_score, dtype=np.float64)
    n = outcomes.items
    if score.shape != (n,) or not n:
        raise ValueError(f"need one cloud score per item, and at least one item; got {score.shape} for {n}")
    if np.isnan(score).any():
        raise ValueError("cloud scores must not be NaN")
    cutoffs = np.concatenate([[-np.inf], np.unique(score[np.isfinite(score)])])[::-1]  # decreasing
    ascending = np.sort(score)
    to_cloud = n - np.searchsorted(ascending, cutoffs, side="right")  # items with score > cutoff
    order = np.argsort(-score, kind="stable")
    gain = outcomes.cloud_correct[order].astype(np.int64) - outcomes.device_correct[order].astype(np.int64)
    gained = np.concatenate([[0], np.cumsum(gain)])
    accuracy = (int(outcomes.device_correct.sum()) + gained[to_cloud]) / n
    return Curve(cutoffs, to_cloud / n, accuracy.astype(np.float64))


def agreement(predicted_cloud: np.ndarray, real_cloud: Sequence[bool], real_correct: Sequence[bool],
              outcomes: Outcomes) -> float:
    """Share of items where the replay predicts the side the real run took and the correctness it got."""
    real_cloud_arr = np.asarray(real_cloud, dtype=bool)
    real_correct_arr = np.asarray(real_correct, dtype=bool)
    same = (predicted_cloud == real_cloud_arr) & (accuracy_of(predicted_cloud, outcomes) == real_correct_arr)
    return float(same.mean()) if len(same) else 1.0


def router_auroc(outcomes: Outcomes) -> float | None:
    """AUROC of the router's P(good) for "the device answer is right" (None when every device answer is right,
    or every one wrong)."""
    from export.calibrate.fit import auroc

    return auroc(outcomes.p_good, outcomes.device_correct)

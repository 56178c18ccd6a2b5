"""Calibrate the SDK's logprob confidence cascade for one bundle (numpy only).

    calibration = calibrate_cascade([completion.logprobs for ...], labels, window_tokens=8, target=0.95)
    calibration.min_logprob, calibration.thresholds

The cascade answers on the device and escalates to the cloud when one of the answer's first ``window_tokens``
tokens has a logprob below ``min_logprob``. How low a good answer's logprobs go depends on the model (its
size, its vocabulary, how it was trained), so the cutoff is measured per bundle on the calibration prompts:
each prompt's score is the lowest logprob among its first tokens; escalating the prompts scoring below a cutoff
costs that share of cloud calls and scores them as the cloud's (right: the labels' reference is what the cloud
answers). The chosen cutoff is the one with the smallest escalation share whose expected accuracy reaches
``target`` x the all-cloud accuracy; it sits halfway between two observed scores, so a score equal to one seen
in calibration is not on the edge. No fit, so every calibration prompt is used.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from edge_runtime.router import CascadeCalibration
from export.calibrate.fit import threshold_table
from export.calibrate.settings import DEFAULT_CASCADE_TARGET, DEFAULT_CASCADE_WINDOW
from export.errors import SpecError


def first_min_logprobs(logprobs: Sequence[Sequence[float]], window_tokens: int) -> np.ndarray:
    """Per answer, the lowest logprob among its first ``window_tokens`` tokens (0.0 for an empty answer)."""
    return np.array([min(list(values)[:window_tokens], default=0.0) for values in logprobs], dtype=np.float64)


def choose_cutoff(scores: np.ndarray, labels: np.ndarray, target_accuracy: float) -> float:
    """The cutoff (escalate scores below it) with the fewest escalations whose expected accuracy (escalated
    prompts counted right) reaches ``target_accuracy``; halfway between neighbouring observed scores."""
    values = np.unique(scores)  # sorted, increasing
    for count in range(len(values)):  # escalate the scores below values[count]
        escalated = scores < values[count]
        accuracy = (labels[~escalated].sum() + escalated.sum()) / len(scores)
        if accuracy >= target_accuracy:
            return float(values[0]) if count == 0 else float((values[count - 1] + values[count]) / 2)
    return 0.0  # escalate every answer with a token below certainty


def calibrate_cascade(
    logprobs: Sequence[Sequence[float]], labels: Sequence[float] | np.ndarray, *,
    window_tokens: int = DEFAULT_CASCADE_WINDOW, target: float = DEFAULT_CASCADE_TARGET,
) -> CascadeCalibration:
    """The cascade's cutoff and table from each calibration answer's token logprobs and its label (1: good)."""
    if not 0 < target <= 1:
        raise SpecError(f"cascade target {target} must be in (0, 1], e.g. {DEFAULT_CASCADE_TARGET}")
    if window_tokens < 1:
        raise SpecError(f"cascade window_tokens {window_tokens} must be >= 1, e.g. {DEFAULT_CASCADE_WINDOW}")
    y = np.asarray(labels, dtype=np.float64)
    if not len(y) or len(logprobs) != len(y):
        raise SpecError("cascade calibration needs one logprob list per label, and at least one")
    scores = np.minimum(first_min_logprobs(logprobs, window_tokens), 0.0)
    cutoff = choose_cutoff(scores, y, target)  # <= 0: the scores are
    table = threshold_table(scores, y, bounds=(float(scores.min()), 0.0))
    return CascadeCalibration(window_tokens, cutoff, target, table)

"""The confidence cascade's calibrated cutoff: the fewest escalations that reach the target accuracy."""

from __future__ import annotations

import numpy as np
import pytest

from export.calibrate.cascade import calibrate_cascade, choose_cutoff, first_min_logprobs
from export.errors import SpecError


def test_the_score_is_the_lowest_of_the_first_tokens() -> None:
    scores = first_min_logprobs([[-0.1, -3.0, -0.2], [-0.5, -0.1, -9.0], []], window_tokens=2)
    assert scores.tolist() == [-3.0, -0.5, 0.0]


def test_the_cutoff_escalates_the_unsure_answers_first_and_no_more_than_needed() -> None:
    # Wrong answers are the unsure ones (low min logprob), plus one confident wrong answer.
    scores = np.array([-0.1, -0.2, -0.3, -0.4, -2.0, -3.0, -4.0, -0.05])
    labels = np.array([1, 1, 1, 1, 0, 0, 0, 0], dtype=float)
    cutoff = choose_cutoff(scores, labels, 7 / 8)
    assert -2.0 < cutoff < -0.4  # halfway between neighbours: escalates exactly the three unsure ones
    escalated = scores < cutoff
    assert escalated.tolist() == [False, False, False, False, True, True, True, False]
    assert choose_cutoff(scores, labels, 0.5) == -4.0  # already reached: escalate nothing
    assert choose_cutoff(scores, labels, 1.0) == 0.0   # only escalating everything is perfect


def test_calibration_carries_its_table_and_reaches_the_target_on_its_data() -> None:
    rng = np.random.default_rng(0)
    labels = rng.random(200) < 0.7
    logprobs = [[-0.1, float(rng.normal(-0.3 if good else -2.0, 0.5)), -0.2] for good in labels]
    calibration = calibrate_cascade(logprobs, labels, window_tokens=3, target=0.9)
    scores = first_min_logprobs(logprobs, 3)
    escalated = scores < calibration.min_logprob
    assert (labels[~escalated].sum() + escalated.sum()) / len(labels) >= 0.9
    assert 0 < escalated.mean() < 0.5 and calibration.window_tokens == 3 and calibration.target == 0.9
    shares = [point.cloud_share for point in calibration.thresholds]
    assert shares[0] == 0.0 and shares[-1] == 1.0 and shares == sorted(shares)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"target": 0.0}, "target"), ({"target": 1.5}, "target"), ({"window_tokens": 0}, "window_tokens"),
])
def test_bad_settings_are_spec_errors(kwargs: dict, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        calibrate_cascade([[-1.0]], [1.0], **kwargs)
    with pytest.raises(SpecError, match="one logprob list per label"):
        calibrate_cascade([[-1.0]], [1.0, 0.0])

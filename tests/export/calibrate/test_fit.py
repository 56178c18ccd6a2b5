"""Fitting the router (numpy): it learns a learnable rule; AUROC and the threshold table are computed right."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from edge_runtime.router import FEATURE_NAMES
from export.calibrate.fit import auroc, fit_router, log_loss, threshold_table
from export.calibrate.settings import FitSettings
from export.errors import SpecError


def _data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Good answers when two features are small, with 10 % label noise; the other features are noise."""
    scales = np.random.default_rng(0).uniform(0.1, 20, size=len(FEATURE_NAMES))
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, len(FEATURE_NAMES)))
    x = z * scales + 3.0
    x[:, 5] = 0.0  # a constant feature must not break the standardisation
    good = (z[:, 0] + np.abs(z[:, 3])) < 0.8
    flip = rng.random(n) < 0.1
    return x, np.where(flip, ~good, good).astype(float)


@pytest.mark.parametrize(("hidden", "bound"), [(0, 0.7), (8, 0.78)])
def test_the_fit_learns_a_rule_and_generalises(hidden: int, bound: float) -> None:
    """Logistic regression sees the linear half of the rule; the MLP also the |.| half."""
    x, y = _data(600, seed=1)
    test_x, test_y = _data(400, seed=2)
    router = fit_router(x, y, FitSettings(hidden=hidden))
    p = router.predict(test_x)
    assert auroc(p, test_y) > bound
    assert log_loss(p, test_y) < log_loss(np.full(len(test_y), y.mean()), test_y)
    assert np.array_equal(fit_router(x, y, FitSettings(hidden=hidden)).predict(test_x), p)


def test_auroc_matches_the_pairwise_definition_with_ties() -> None:
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 5, size=40).astype(float)
    labels = rng.random(40) < 0.5
    pairs = [(s_pos > s_neg) + 0.5 * (s_pos == s_neg)
             for (s_pos, l_pos), (s_neg, l_neg) in itertools.product(zip(scores, labels, strict=True), repeat=2)
             if l_pos and not l_neg]
    assert auroc(scores, labels) == pytest.approx(np.mean(pairs))
    assert auroc(scores, np.ones(40)) is None
    assert auroc(np.array([0.1, 0.9]), np.array([0, 1])) == 1.0


def test_the_threshold_table_trades_cloud_share_for_accuracy() -> None:
    p = np.array([0.1, 0.2, 0.3, 0.6, 0.7, 0.8, 0.9, 0.95, 0.97, 0.99])
    y = np.array([0, 0, 1, 0, 1, 1, 1, 1, 1, 1], dtype=float)
    table = threshold_table(p, y, points=11)
    shares = [point.cloud_share for point in table]
    assert shares == sorted(shares) and shares[0] == 0.0 and shares[-1] == 1.0
    assert table[0].expected_accuracy == pytest.approx(0.7) and table[-1].expected_accuracy == 1.0
    by_share = {round(point.cloud_share, 2): point for point in table}
    assert by_share[0.2].expected_accuracy == pytest.approx(0.9)  # the two lowest were the wrong ones
    assert by_share[0.2].threshold == 0.3
    assert threshold_table(p, y, cloud_accuracy=0.5, points=2)[-1].expected_accuracy == 0.5


def test_bad_inputs_are_spec_errors() -> None:
    with pytest.raises(SpecError, match="features of shape"):
        fit_router(np.zeros((3, 2)), np.zeros(3))
    with pytest.raises(SpecError, match="NaN"):
        fit_router(np.full((3, len(FEATURE_NAMES)), np.nan), np.zeros(3))
    with pytest.raises(SpecError, match="hidden >= 0"):
        FitSettings(hidden=-1)

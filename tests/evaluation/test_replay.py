"""The replay on hand-made outcome tables: sweeps, budgets, cloud_share_at_95pct, agreement, AUROC, the policies'
headline rules (same boundaries as the SDK's), and the report built from them."""

from __future__ import annotations

import numpy as np
import pytest

from evaluation.routing.policies import BY_NAME, CASCADE, HEURISTIC_MAX_DIFFICULTY, ROUTER_THRESHOLD
from evaluation.routing.replay import BUDGET_GRID, Outcomes, agreement, routed, router_auroc, sweep
from evaluation.routing.report import policy_curves


def outcomes(device: list[int], cloud: list[int], *, p_good: list[float] | None = None,
             heuristic: list[float] | None = None, logprobs: list[list[float]] | None = None,
             draws: list[float] | None = None) -> Outcomes:
    n = len(device)
    return Outcomes.build(
        [bool(x) for x in device], [bool(x) for x in cloud], p_good if p_good is not None else [0.5] * n,
        heuristic if heuristic is not None else [0.0] * n, logprobs if logprobs is not None else [[]] * n,
        draws if draws is not None else np.linspace(0, 1, n, endpoint=False).tolist(), CASCADE.window_tokens,
    )


def signal_table(seed: int = 7, n: int = 40) -> Outcomes:
    """Device right on 60 % of the items, the cloud on all but one; a router with signal (P(good) ranks the
    wrong answers low, with one pair swapped); the random policy's seeded draws."""
    rng = np.random.default_rng(seed)
    device = (np.arange(n) % 5 < 3).astype(int)  # 3 of 5 right
    cloud = np.ones(n, dtype=int)
    cloud[0] = 0  # the cloud misses one the device gets right
    p_good = np.where(device == 1, 0.6, 0.3) + rng.uniform(0.0, 0.05, n)
    wrong, right = np.flatnonzero(device == 0)[0], np.flatnonzero(device == 1)[0]
    p_good[[wrong, right]] = p_good[[right, wrong]]  # the router is good, not perfect
    return outcomes(device.tolist(), cloud.tolist(), p_good=p_good.tolist(), draws=rng.random(n).tolist())


# -- sweep and curves ---------------------------------------------------------------------------------------


def test_sweep_spans_all_device_to_all_cloud() -> None:
    table = outcomes([1, 0, 1, 0], [1, 1, 0, 1])
    curve = sweep(np.array([0.1, 0.9, 0.2, 0.8]), table)
    assert curve.cloud_share.tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]
    # all device: 2/4; then item 1 (wrong -> right), item 3 (wrong -> right), item 2 (right -> wrong), item 0.
    assert curve.accuracy.tolist() == [0.5, 0.75, 1.0, 0.75, 0.75]
    assert curve.cutoff[0] == 0.9 and curve.cutoff[-1] == -np.inf


def test_sweep_keeps_tied_scores_together_as_a_threshold_does() -> None:
    table = outcomes([0, 0, 1, 1], [1, 1, 1, 1])
    curve = sweep(np.array([0.7, 0.7, 0.2, 0.2]), table)
    assert curve.cloud_share.tolist() == [0.0, 0.5, 1.0]


def test_sweep_sends_infinite_scores_to_the_cloud_at_every_cutoff() -> None:
    table = outcomes([0, 1, 1, 1], [1, 1, 1, 1])
    curve = sweep(np.array([np.inf, 0.3, 0.2, 0.1]), table)
    assert curve.cloud_share.min() == 0.25
    assert curve.accuracy[0] == 1.0


def test_sweep_refuses_nan_and_mismatched_scores() -> None:
    table = outcomes([1, 0], [1, 1])
    with pytest.raises(ValueError, match="NaN"):
        sweep(np.array([0.1, np.nan]), table)
    with pytest.raises(ValueError, match="one cloud score per item"):
        sweep(np.array([0.1, 0.2, 0.3]), table)


def test_budgets_take_the_best_split_within_the_share() -> None:
    table = outcomes([1, 0, 1, 0], [1, 1, 0, 1])
    curve = sweep(np.array([0.1, 0.9, 0.2, 0.8]), table)
    assert curve.accuracy_within(0.0) == 0.5
    assert curve.accuracy_within(0.6) == 1.0
    assert curve.accuracy_within(1.0) == 1.0  # the all-cloud split is worse than the best one
    assert [point["cloud_share"] for point in curve.on_budgets()] == list(BUDGET_GRID)


def test_cloud_share_at_95pct_of_always_cloud() -> None:
    # 20 items: the device right on 14; the cloud on 19 (it misses item 0, which the device gets right).
    device = [1] * 14 + [0] * 6
    cloud = [0] + [1] * 19
    table = outcomes(device, cloud)
    target = 0.95 * (19 / 20)  # 0.9025: 19 of 20 right are needed
    curves = policy_curves(table)
    # The oracle sends the 6 device-wrong items (the cloud gets each right) first: 19/20 after 5 of them.
    assert curves["oracle"].cloud_share_reaching(target) == pytest.approx(5 / 20)
    # A perfect router (P(good) = the device's correctness) reaches it at the same share.
    perfect = outcomes(device, cloud, p_good=[0.9 if d else 0.1 for d in device])
    assert policy_curves(perfect)["router"].cloud_share_reaching(target) == pytest.approx(6 / 20)
    # Nothing reaches an accuracy above the best split.
    assert curves["oracle"].cloud_share_reaching(1.01) is None


def test_oracle_beats_router_beats_random_at_the_same_cloud_share() -> None:
    table = signal_table()
    assert router_auroc(table) > 0.9
    curves = policy_curves(table)
    oracle, router, random = (curves[name] for name in ("oracle", "router", "random"))
    for budget in BUDGET_GRID:
        assert oracle.accuracy_within(budget) >= router.accuracy_within(budget) - 1e-12, budget
        assert router.accuracy_within(budget) >= random.accuracy_within(budget) - 1e-12, budget
    area = {name: np.mean([curves[name].accuracy_within(b) for b in BUDGET_GRID]) for name in curves}
    assert area["oracle"] > area["router"] > area["random"]


def test_a_router_without_signal_does_no_better_than_its_ranking() -> None:
    table = signal_table()
    inverted = outcomes(table.device_correct.astype(int).tolist(), table.cloud_correct.astype(int).tolist(),
                        p_good=(1 - table.p_good).tolist(), draws=table.random_draw.tolist())
    assert router_auroc(inverted) < 0.1
    assert policy_curves(inverted)["router"].accuracy_within(0.4) <= policy_curves(table)["random"].accuracy_within(
        0.4)


# -- AUROC and agreement ------------------------------------------------------------------------------------


def test_router_auroc() -> None:
    base = dict(cloud=[1, 1, 1, 1])
    assert router_auroc(outcomes([0, 0, 1, 1], p_good=[0.1, 0.4, 0.35, 0.8], **base)) == pytest.approx(0.75)
    assert router_auroc(outcomes([0, 0, 1, 1], p_good=[0.1, 0.2, 0.8, 0.9], **base)) == 1.0
    assert router_auroc(outcomes([0, 0, 1, 1], p_good=[0.9, 0.8, 0.2, 0.1], **base)) == 0.0
    assert router_auroc(outcomes([1, 1, 1, 1], p_good=[0.1, 0.2, 0.3, 0.4], **base)) is None


def test_agreement_counts_side_and_correctness() -> None:
    table = outcomes([1, 0, 1, 0], [1, 1, 0, 1])
    predicted = np.array([False, True, True, False])
    # predicted correctness: right, right, wrong, wrong
    assert agreement(predicted, [False, True, True, False], [True, True, False, False], table) == 1.0
    assert agreement(predicted, [False, True, False, False], [True, True, False, False], table) == 0.75
    assert agreement(predicted, [False, True, True, False], [True, True, True, False], table) == 0.75


# -- headline rules: the SDK's boundaries -------------------------------------------------------------------


def test_headline_rules_use_the_sdks_boundaries() -> None:
    logprobs = [[-0.1, CASCADE.min_logprob], [-0.1, CASCADE.min_logprob - 0.01], [], [-0.1] * CASCADE.window_tokens
                + [-9.0]]
    table = outcomes([1, 1, 1, 1], [1, 1, 1, 1], p_good=[ROUTER_THRESHOLD, ROUTER_THRESHOLD - 0.01, 0.9, 0.9],
                     heuristic=[HEURISTIC_MAX_DIFFICULTY, HEURISTIC_MAX_DIFFICULTY + 0.01, 0.0, 0.0],
                     logprobs=logprobs)

    def headline(name: str) -> list[bool]:
        policy = BY_NAME[name]
        return routed(policy.cloud_score(table), policy.headline_cutoff).tolist()

    # router: hard when P(good) < threshold; heuristic: hard when score > max_difficulty
    assert headline("router") == [False, True, False, False]
    assert headline("heuristic") == [False, True, False, False]
    # cascade: a token below min_logprob among the first window_tokens; none past the window, none if empty
    assert headline("cascade") == [False, True, False, False]
    assert headline("router_cascade") == [False, True, False, False]
    assert headline("always_device") == [False] * 4
    assert headline("always_cloud") == [True] * 4


def test_oracle_headline_is_cloud_exactly_when_the_device_is_wrong() -> None:
    table = outcomes([1, 0, 0, 1, 0], [1, 1, 0, 0, 1])
    policy = BY_NAME["oracle"]
    assert routed(policy.cloud_score(table), policy.headline_cutoff).tolist() == [False, True, True, False, True]


def test_heuristic_replay_matches_the_sdk_estimator_on_the_test_items() -> None:
    from edge_runtime.types import Message
    from export.tasks import generate_split
    from export.tasks.answers import ANSWER_MAX_TOKENS
    from sdk.difficulty import DifficultyEstimator

    items = generate_split("test", 4)
    estimator = DifficultyEstimator(HEURISTIC_MAX_DIFFICULTY)
    estimates = [estimator.estimate([Message(t.role, t.content) for t in item.messages], ANSWER_MAX_TOKENS)
                 for item in items]
    n = len(items)
    table = outcomes([1] * n, [1] * n, heuristic=[estimate.score for estimate in estimates])
    policy = BY_NAME["heuristic"]
    assert routed(policy.cloud_score(table), policy.headline_cutoff).tolist() == [e.hard for e in estimates]


def test_outcomes_check_their_shapes() -> None:
    with pytest.raises(ValueError, match="cloud_correct"):
        Outcomes(np.ones(3, bool), np.ones(2, bool), np.zeros(3), np.zeros(3), np.zeros((3, 1)), np.zeros(3))
    table = outcomes([1], [1], logprobs=[[-1.0, -3.0]])
    assert table.min_logprob(2) == -3.0
    with pytest.raises(ValueError, match="recorded"):
        table.min_logprob(CASCADE.window_tokens + 1)

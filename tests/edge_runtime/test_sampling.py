"""Sampler.pick against numpy references: greedy is argmax, the logprob is always the raw log-softmax of the chosen
token, seeds make picks reproducible, top-k / top-p only ever return tokens inside their sets, sampled frequencies
follow softmax(logits / temperature), and logsumexp does not overflow on large logits."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from edge_runtime.sampling import Sampler, logsumexp
from edge_runtime.types import SamplingParams


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    x = logits.astype(np.float64)
    return x - np.logaddexp.reduce(x)


def _softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    x = logits.astype(np.float64) / temperature
    p = np.exp(x - x.max())
    return p / p.sum()


def _random_logits(rng: np.random.Generator, vocab: int, scale: float = 3.0) -> np.ndarray:
    return (rng.standard_normal(vocab) * scale).astype(np.float32)


def _frequencies(params: SamplingParams, logits: np.ndarray, draws: int) -> np.ndarray:
    sampler = Sampler(params)
    counts = Counter(sampler.pick(logits)[0] for _ in range(draws))
    return np.array([counts.get(i, 0) for i in range(logits.shape[0])], dtype=np.float64) / draws


SMALL = np.array([2.0, 1.0, 0.5, -0.5, -1.5], dtype=np.float32)


def test_greedy_returns_argmax_and_its_raw_logprob() -> None:
    rng = np.random.default_rng(0)
    sampler = Sampler(SamplingParams(temperature=0.0))
    for _ in range(50):
        logits = _random_logits(rng, 1000)
        token, logprob = sampler.pick(logits)
        assert token == int(np.argmax(logits))
        assert isinstance(token, int) and isinstance(logprob, float)
        assert logprob == pytest.approx(_log_softmax(logits)[token], abs=1e-5)
        assert logprob <= 0.0


def test_greedy_ignores_the_seed_and_the_filters() -> None:
    logits = _random_logits(np.random.default_rng(1), 64)
    picks = {
        Sampler(SamplingParams(temperature=0.0, seed=seed, top_k=5, top_p=0.3)).pick(logits)[0] for seed in range(10)
    }
    assert picks == {int(np.argmax(logits))}


def test_top_k_one_at_temperature_one_is_argmax() -> None:
    rng = np.random.default_rng(2)
    sampler = Sampler(SamplingParams(temperature=1.0, top_k=1, seed=3))
    for _ in range(100):
        logits = _random_logits(rng, 200, scale=0.1)  # flat: a real sample would often differ from argmax
        token, logprob = sampler.pick(logits)
        assert token == int(np.argmax(logits))
        assert logprob == pytest.approx(_log_softmax(logits)[token], abs=1e-5)


@pytest.mark.parametrize(
    "params",
    [
        SamplingParams(temperature=1.0, seed=1),
        SamplingParams(temperature=0.3, seed=2),
        SamplingParams(temperature=2.5, seed=3),
        SamplingParams(temperature=1.0, top_k=3, seed=4),
        SamplingParams(temperature=0.7, top_p=0.5, seed=5),
        SamplingParams(temperature=1.5, top_k=10, top_p=0.9, seed=6),
    ],
    ids=["t1", "t0.3", "t2.5", "topk3", "topp0.5", "mixed"],
)
def test_logprob_is_always_the_raw_log_softmax(params: SamplingParams) -> None:
    rng = np.random.default_rng(7)
    sampler = Sampler(params)
    for _ in range(200):
        logits = _random_logits(rng, 300)
        token, logprob = sampler.pick(logits)
        assert 0 <= token < 300
        assert logprob == pytest.approx(_log_softmax(logits)[token], abs=1e-5)


def test_same_seed_same_picks_different_seed_different_picks() -> None:
    logits = _random_logits(np.random.default_rng(8), 100, scale=0.2)  # flat-ish

    def picks(seed: int) -> list[int]:
        sampler = Sampler(SamplingParams(temperature=1.0, seed=seed))
        return [sampler.pick(logits)[0] for _ in range(50)]

    assert picks(42) == picks(42)
    assert picks(42) != picks(43)
    assert picks(0) != picks(1)
    assert len(set(picks(42))) > 10  # really sampling, not stuck on one token


def test_same_seed_same_picks_with_top_k_and_top_p() -> None:
    rng = np.random.default_rng(9)
    rows = [_random_logits(rng, 500) for _ in range(50)]
    params = SamplingParams(temperature=0.8, top_k=40, top_p=0.95, seed=1234)
    first, second = Sampler(params), Sampler(params)
    assert [first.pick(row) for row in rows] == [second.pick(row) for row in rows]


@pytest.mark.parametrize("k", [2, 5, 17])
def test_top_k_only_returns_the_k_largest(k: int) -> None:
    rng = np.random.default_rng(10 + k)
    logits = _random_logits(rng, 60, scale=0.5)
    allowed = set(np.argsort(logits)[-k:].tolist())
    sampler = Sampler(SamplingParams(temperature=1.0, top_k=k, seed=k))
    seen = {sampler.pick(logits)[0] for _ in range(3000)}
    assert seen <= allowed
    assert seen == allowed  # flat enough that every one of the k shows up


def test_top_k_larger_than_the_vocabulary_keeps_everything() -> None:
    freq = _frequencies(SamplingParams(temperature=1.0, top_k=50, seed=11), SMALL, 4000)
    assert (freq > 0).all()


def test_top_p_small_returns_the_argmax_when_one_token_dominates() -> None:
    logits = np.array([0.0, 6.0, 1.0, 0.5, -2.0, 1.5], dtype=np.float32)
    assert _softmax(logits)[1] > 0.9
    for top_p in (1e-6, 0.1, 0.5, 0.9):
        sampler = Sampler(SamplingParams(temperature=1.0, top_p=top_p, seed=12))
        assert {sampler.pick(logits)[0] for _ in range(500)} == {1}


@pytest.mark.parametrize(
    ("top_p", "nucleus"),
    [(0.3, {0}), (0.6, {0, 1}), (0.75, {0, 1}), (0.85, {0, 1, 2}), (0.93, {0, 1, 2, 3}), (0.99, {0, 1, 2, 3, 4})],
)
def test_top_p_returns_only_tokens_inside_the_nucleus(top_p: float, nucleus: set[int]) -> None:
    probs = np.array([0.5, 0.3, 0.1, 0.06, 0.04])
    logits = np.log(probs).astype(np.float32)[[3, 0, 4, 1, 2]]  # shuffled: token ids are not sorted by logit
    order = [1, 3, 4, 0, 2]  # token ids from most to least likely
    expected = {order[i] for i in nucleus}
    freq = _frequencies(SamplingParams(temperature=1.0, top_p=top_p, seed=13), logits, 2500)
    assert set(np.flatnonzero(freq).tolist()) == expected
    # Inside the nucleus the probabilities are renormalised.
    kept = np.array([probs[i] for i in sorted(nucleus)])
    for rank, p in zip(sorted(nucleus), kept / kept.sum(), strict=True):
        assert freq[order[rank]] == pytest.approx(p, abs=0.03)


def test_top_p_applies_after_temperature() -> None:
    # At temperature 1 the nucleus of 0.6 holds two tokens; sharpened at 0.25 the top token alone passes 0.6.
    logits = np.log(np.array([0.5, 0.3, 0.2])).astype(np.float32)
    wide = _frequencies(SamplingParams(temperature=1.0, top_p=0.6, seed=14), logits, 2000)
    sharp = _frequencies(SamplingParams(temperature=0.25, top_p=0.6, seed=14), logits, 2000)
    assert set(np.flatnonzero(wide).tolist()) == {0, 1}
    assert set(np.flatnonzero(sharp).tolist()) == {0}


def test_frequencies_follow_softmax_at_temperature_one() -> None:
    draws = 20000
    freq = _frequencies(SamplingParams(temperature=1.0, seed=15), SMALL, draws)
    total_variation = 0.5 * np.abs(freq - _softmax(SMALL)).sum()
    assert total_variation < 0.02


@pytest.mark.parametrize("temperature", [0.5, 2.0])
def test_frequencies_follow_tempered_softmax(temperature: float) -> None:
    freq = _frequencies(SamplingParams(temperature=temperature, seed=16), SMALL, 5000)
    assert 0.5 * np.abs(freq - _softmax(SMALL, temperature)).sum() < 0.03


def test_lower_temperature_sharpens() -> None:
    argmax = int(np.argmax(SMALL))
    shares = [_frequencies(SamplingParams(temperature=t, seed=17), SMALL, 2500)[argmax] for t in (2.0, 1.0, 0.5, 0.1)]
    assert shares == sorted(shares)
    assert shares[0] + 0.1 < shares[1] < shares[2] - 0.1
    assert shares[-1] > 0.99


def test_very_small_temperature_behaves_like_greedy() -> None:
    rng = np.random.default_rng(18)
    sampler = Sampler(SamplingParams(temperature=1e-6, seed=18))
    for _ in range(50):
        logits = _random_logits(rng, 100)
        assert sampler.pick(logits)[0] == int(np.argmax(logits))


def test_masked_tokens_are_never_sampled() -> None:
    logits = np.full(20, -np.inf, dtype=np.float32)
    logits[[3, 7, 11]] = [0.0, 0.5, 1.0]
    sampler = Sampler(SamplingParams(temperature=1.0, seed=19))
    for _ in range(500):
        token, logprob = sampler.pick(logits)
        assert token in {3, 7, 11}
        assert np.isfinite(logprob)
        assert logprob == pytest.approx(_log_softmax(logits)[token], abs=1e-5)


@pytest.mark.parametrize(
    "values",
    [
        [1000.0, 999.0, -1000.0, 998.5],
        [1e4, 1e4 - 1, 1e4 - 2, 0.0],
        [-1e4, -1e4, -1e4, -1e4],
        [88.0, 89.5, 100.0, -50.0],  # exp(100) overflows float32
        [3e38, 3e38 - 1e32, 0.0],
        [0.0],
    ],
)
def test_logsumexp_matches_numpy_on_large_logits(values: list[float]) -> None:
    logits = np.array(values, dtype=np.float32)
    with np.errstate(over="raise"):
        got = logsumexp(logits)
    expected = float(np.logaddexp.reduce(logits.astype(np.float64)))
    assert np.isfinite(got)
    assert got == pytest.approx(expected, rel=1e-6, abs=1e-4)


def test_logsumexp_on_a_real_sized_vocabulary() -> None:
    logits = _random_logits(np.random.default_rng(20), 32000, scale=10.0)
    assert logsumexp(logits) == pytest.approx(float(np.logaddexp.reduce(logits.astype(np.float64))), abs=1e-4)


def test_greedy_logprob_with_huge_logits_is_finite() -> None:
    logits = np.array([5e3, 5e3 + 2.0, -5e3], dtype=np.float32)
    token, logprob = Sampler(SamplingParams(temperature=0.0)).pick(logits)
    assert token == 1
    assert logprob == pytest.approx(-np.log1p(np.exp(-2.0)), abs=1e-5)

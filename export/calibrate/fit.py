"""Fit a difficulty router on labelled features, and measure it: AUROC and the threshold table (numpy only).

    router = fit_router(features_fit, labels_fit, FitSettings(hidden=8))
    p = router.predict(features_held_out)
    auroc(p, labels_held_out)
    threshold_table(p, labels_held_out)   # (threshold, cloud_share, expected_accuracy) points

The fit is full-batch Adam on the mean binary cross-entropy plus an L2 penalty on the weights, from a seeded
initialisation: the same data and settings give the same router.
"""

from __future__ import annotations

import itertools

import numpy as np

from edge_runtime.router import FEATURE_NAMES, DifficultyRouter, ThresholdPoint
from export.calibrate.settings import FitSettings
from export.errors import SpecError

TABLE_POINTS = 21
"""Threshold table resolution: cloud shares 0, 5, 10 ... 100 %."""
_ADAM_BETAS = (0.9, 0.999)
_ADAM_EPSILON = 1e-8
_PROBABILITY_FLOOR = 1e-7


def _standardisation(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean = features.mean(axis=0)
    scale = features.std(axis=0)
    return mean, np.where(scale > 1e-9, scale, 1.0)


def _forward(x: np.ndarray, params: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
    """Logits of each row, and each layer's input (for the backward pass)."""
    inputs, hidden = [], x
    layer_count = len(params) // 2
    for index in range(layer_count):
        inputs.append(hidden)
        hidden = hidden @ params[2 * index] + params[2 * index + 1]
        if index < layer_count - 1:
            hidden = np.tanh(hidden)
    return hidden[:, 0], inputs


def _gradients(x: np.ndarray, y: np.ndarray, params: list[np.ndarray], l2: float) -> list[np.ndarray]:
    logits, inputs = _forward(x, params)
    probability = 0.5 * (1.0 + np.tanh(0.5 * logits))
    delta = ((probability - y) / len(y))[:, None]  # d(mean BCE)/d(logit)
    grads: list[np.ndarray] = [np.empty(0)] * len(params)
    for index in reversed(range(len(params) // 2)):
        weights = params[2 * index]
        grads[2 * index] = inputs[index].T @ delta + l2 * weights
        grads[2 * index + 1] = delta.sum(axis=0)
        if index > 0:
            delta = (delta @ weights.T) * (1.0 - inputs[index] ** 2)  # through tanh
    return grads


def fit_router(features: np.ndarray, labels: np.ndarray, settings: FitSettings | None = None) -> DifficultyRouter:
    """A router predicting ``labels`` (1: the device answer is good) from ``features`` (n, len(FEATURE_NAMES)).

    Raises SpecError when the shapes disagree or there is no data.
    """
    settings = settings or FitSettings()
    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != len(FEATURE_NAMES) or y.shape != (x.shape[0],) or not len(y):
        raise SpecError(
            f"router fit needs features of shape (n, {len(FEATURE_NAMES)}) and n labels, n >= 1; got "
            f"{x.shape} and {y.shape}"
        )
    if not np.all(np.isfinite(x)):
        raise SpecError("router features hold NaN or infinite values")
    mean, scale = _standardisation(x)
    z = (x - mean) / scale
    rng = np.random.default_rng(settings.seed)
    sizes = [x.shape[1], *([settings.hidden] if settings.hidden else []), 1]
    params: list[np.ndarray] = []
    for fan_in, fan_out in itertools.pairwise(sizes):
        params.append(rng.normal(0.0, 1.0 / np.sqrt(fan_in), size=(fan_in, fan_out)))
        params.append(np.zeros(fan_out))
    base_rate = float(np.clip(y.mean(), 0.01, 0.99))
    params[-1][:] = np.log(base_rate / (1.0 - base_rate))  # start at the base rate
    first = [np.zeros_like(p) for p in params]
    second = [np.zeros_like(p) for p in params]
    beta1, beta2 = _ADAM_BETAS
    for step in range(1, settings.iterations + 1):
        for index, grad in enumerate(_gradients(z, y, params, settings.l2)):
            first[index] = beta1 * first[index] + (1 - beta1) * grad
            second[index] = beta2 * second[index] + (1 - beta2) * grad**2
            corrected = first[index] / (1 - beta1**step)
            params[index] -= settings.learning_rate * corrected / (
                np.sqrt(second[index] / (1 - beta2**step)) + _ADAM_EPSILON
            )
    layers = tuple((params[2 * i], params[2 * i + 1]) for i in range(len(params) // 2))
    return DifficultyRouter(mean=mean, scale=scale, layers=layers)


def log_loss(probabilities: np.ndarray, labels: np.ndarray) -> float:
    p = np.clip(np.asarray(probabilities, dtype=np.float64), _PROBABILITY_FLOOR, 1 - _PROBABILITY_FLOOR)
    y = np.asarray(labels, dtype=np.float64)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def auroc(scores: np.ndarray, labels: np.ndarray) -> float | None:
    """Area under the ROC curve of ``scores`` for the positive ``labels`` (ties count half); None when one
    class is absent."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels).astype(bool)
    positives, negatives = int(y.sum()), int((~y).sum())
    if not positives or not negatives:
        return None
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s))
    sorted_scores = s[order]
    start = 0
    while start < len(s):  # average ranks over ties
        end = start
        while end + 1 < len(s) and sorted_scores[end + 1] == sorted_scores[start]:
            end += 1
        ranks[order[start : end + 1]] = (start + end) / 2 + 1
        start = end + 1
    return float((ranks[y].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def threshold_table(
    probabilities: np.ndarray, labels: np.ndarray, *, cloud_accuracy: float = 1.0, points: int = TABLE_POINTS,
    bounds: tuple[float, float] = (0.0, 1.0),
) -> tuple[ThresholdPoint, ...]:
    """The cloud share and expected accuracy of sending every request with P(good) < threshold to the cloud,
    at ``points`` cloud shares from 0 to 1. Device answers score their ``labels``; cloud answers score
    ``cloud_accuracy`` (1.0: the labels' reference is what the cloud answers). ``bounds``: the thresholds
    that send none and all (for scores other than probabilities, e.g. logprobs)."""
    p = np.asarray(probabilities, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    if not len(p) or p.shape != y.shape:
        raise SpecError("threshold table needs one probability per label, and at least one")
    ordered = np.sort(p)
    table: dict[float, ThresholdPoint] = {}
    for target in np.linspace(0.0, 1.0, points):
        count = round(target * len(p))
        threshold = bounds[0] if count == 0 else bounds[1] if count == len(p) else float(ordered[count])
        cloud = p < threshold
        share = float(cloud.mean())
        accuracy = float((y[~cloud].sum() + cloud_accuracy * cloud.sum()) / len(p))
        table[threshold] = ThresholdPoint(threshold, share, accuracy)
    return tuple(sorted(table.values(), key=lambda point: point.threshold))

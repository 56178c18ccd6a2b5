"""The difficulty router: text features, predictions, router.json round trips, and loading from a signed bundle."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from edge_runtime import Message
from edge_runtime.errors import BundleError, BundleIntegrityError, InvalidRequestError, SignatureError
from edge_runtime.router import (
    FEATURE_NAMES,
    ROUTER_FILE,
    CascadeCalibration,
    DifficultyRouter,
    RouterFormatError,
    RouterNotFoundError,
    ThresholdPoint,
    load_router,
    text_features,
)
from tests.support import heavy_modules_after

PROMPTS = [
    [Message("user", "What is 48213+377?")],
    [Message("system", "Answer only."), Message("user", "Sort 3,1,4,1,5,9,2,6")],
    [{"role": "user", "content": "def f(x):\n    return {x: 1};"}],
    [("user", "Reverse kqzpt"), ("assistant", "tpzqk"), ("user", "And café?")],
    [Message("user", "")],
    [],
]


def _feature(messages: list, name: str, max_tokens: int | None = 32) -> float:
    return float(text_features(messages, max_tokens)[FEATURE_NAMES.index(name)])


def _router(seed: int = 0, hidden: int = 4) -> DifficultyRouter:
    rng = np.random.default_rng(seed)
    width = len(FEATURE_NAMES)
    return DifficultyRouter(
        mean=rng.normal(size=width),
        scale=rng.uniform(0.5, 2.0, size=width),
        layers=((rng.normal(size=(width, hidden)), rng.normal(size=hidden)),
                (rng.normal(size=(hidden, 1)), rng.normal(size=1))),
        thresholds=(ThresholdPoint(0.0, 0.0, 0.7), ThresholdPoint(0.4, 0.3, 0.9), ThresholdPoint(1.0, 1.0, 1.0)),
        metrics={"auroc": 0.9},
    )


def test_importing_the_router_loads_no_ml_library() -> None:
    assert heavy_modules_after("import edge_runtime.router") == []


@pytest.mark.parametrize("messages", PROMPTS)
def test_features_are_finite_stable_and_named(messages: list) -> None:
    features = text_features(messages, 64)
    assert features.shape == (len(FEATURE_NAMES),) and features.dtype == np.float64
    assert np.all(np.isfinite(features))
    assert np.array_equal(features, text_features(list(messages), 64))
    assert np.all(np.isfinite(text_features(messages, None)))


def test_features_measure_what_they_name() -> None:
    add = PROMPTS[0]
    assert _feature(add, "longest_digit_run") == 5
    assert _feature([Message("user", "What is 4+3?")], "longest_digit_run") == 1
    assert _feature(add, "math_operators_log") > 0 and _feature(add, "ends_with_question") == 1
    assert _feature(PROMPTS[1], "list_items") == 8 and _feature(PROMPTS[1], "has_system") == 1
    assert _feature(PROMPTS[2], "code_markers_log") > _feature(add, "code_markers_log") == 0
    assert _feature(PROMPTS[3], "messages") == 3 and _feature(PROMPTS[3], "user_turns") == 2
    assert _feature(PROMPTS[3], "non_ascii_share") > 0  # the last user message: "And café?"
    assert _feature([Message("user", "Copy abcdefghij")], "longest_letter_run") == 10
    assert _feature(add, "max_tokens_log", 8) < _feature(add, "max_tokens_log", 64) < _feature(
        add, "max_tokens_log", None)


def test_predict_is_a_probability_for_one_vector_or_a_batch() -> None:
    router = _router()
    matrix = np.stack([text_features(m, 40) for m in PROMPTS])
    batch = router.predict(matrix)
    assert batch.shape == (len(PROMPTS),) and np.all((batch > 0) & (batch < 1))
    assert router.predict(matrix[1]) == pytest.approx(batch[1])
    with pytest.raises(InvalidRequestError, match="features"):
        router.predict(np.zeros(3))


def test_threshold_lookup_follows_the_table() -> None:
    router = _router()
    assert router.threshold_for_cloud_share(0.0) == 0.0
    assert router.threshold_for_cloud_share(0.35) == 0.4
    assert router.threshold_for_cloud_share(1.0) == 1.0


def test_json_round_trip_keeps_every_number() -> None:
    router = _router(seed=3)
    again = DifficultyRouter.from_json(router.to_json())
    assert again.to_json() == router.to_json()
    features = np.stack([text_features(m, 40) for m in PROMPTS])
    assert np.array_equal(again.predict(features), router.predict(features))
    assert again.thresholds == router.thresholds and again.metrics == {"auroc": 0.9}
    assert again.cascade is None and "cascade" not in json.loads(router.to_json())  # routers calibrated before it
    cascade = CascadeCalibration(8, -1.25, 0.95, (ThresholdPoint(-3.0, 0.0, 0.8), ThresholdPoint(0.0, 1.0, 1.0)))
    with_cascade = DifficultyRouter.from_json(dataclasses.replace(router, cascade=cascade).to_json())
    assert with_cascade.cascade == cascade
    logistic = DifficultyRouter(mean=np.zeros(len(FEATURE_NAMES)), scale=np.ones(len(FEATURE_NAMES)),
                                layers=((np.ones((len(FEATURE_NAMES), 1)) * 0.1, np.zeros(1)),))
    assert DifficultyRouter.from_json(logistic.to_json()).predict(features[0]) == logistic.predict(features[0])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.update(format_version=2), "format version 2"),
        (lambda d: d.update(format="other"), "not a tandem-router file"),
        (lambda d: d.update(features_version=0), "fitted on other features"),
        (lambda d: d["feature_names"].reverse(), "fitted on other features"),
        (lambda d: d.pop("layers"), "missing a field"),
        (lambda d: d.update(mean=[0.0, 1.0]), "one per feature"),
        (lambda d: d["layers"][0].update(bias=[1.0]), "layer 0"),
        (lambda d: d["layers"][1]["weights"][0].__setitem__(0, None), "malformed|non-finite"),
        (lambda d: d.update(cascade=[1]), "cascade must be an object"),
        (lambda d: d.update(cascade={"window_tokens": 8, "min_logprob": 0.5, "target": 0.95}), "min_logprob"),
        (lambda d: d.update(cascade={"window_tokens": 0, "min_logprob": -1.0, "target": 0.95}), "window_tokens"),
        (lambda d: d.update(cascade={"min_logprob": -1.0, "target": 0.95}), "missing a field"),
    ],
)
def test_a_wrong_router_file_is_a_format_error(change, message: str) -> None:
    data = json.loads(_router().to_json())
    change(data)
    with pytest.raises(RouterFormatError, match=message):
        DifficultyRouter.from_json(json.dumps(data))
    with pytest.raises(RouterFormatError, match="not valid JSON"):
        DifficultyRouter.from_json(b"{router")
    assert issubclass(RouterFormatError, BundleError)


@pytest.fixture
def routed_bundle(bundles, signing_key, tmp_path: Path) -> Path:
    """A copy of a signed toy GGUF bundle with a router sealed in (re-signed)."""
    from edge_runtime.bundle import verify_bundle
    from export.calibrate.run import seal_router

    folder = tmp_path / "bundle"
    shutil.copytree(bundles("llama", "gguf", "f16"), folder)
    seal_router(folder, verify_bundle(folder, [signing_key.public_key()]), _router(), signing_key, {"auroc": 0.9})
    return folder


def test_the_router_travels_signed_in_the_bundle(routed_bundle: Path, trusted) -> None:
    from edge_runtime.bundle import verify_bundle

    manifest = verify_bundle(routed_bundle, trusted)
    assert ROUTER_FILE in manifest.files and manifest.evaluation["router"] == {"auroc": 0.9}
    expected = _router().to_json()
    assert load_router(routed_bundle, trusted_keys=trusted).to_json() == expected
    assert load_router(routed_bundle, manifest=manifest).to_json() == expected


def test_tampering_with_the_router_after_signing_is_detected(routed_bundle: Path, trusted) -> None:
    from edge_runtime.bundle import verify_bundle

    manifest = verify_bundle(routed_bundle, trusted)
    data = json.loads((routed_bundle / ROUTER_FILE).read_text())
    data["layers"][-1]["bias"] = [50.0]  # "always answer on the device"
    (routed_bundle / ROUTER_FILE).write_text(json.dumps(data))
    with pytest.raises(BundleIntegrityError, match=ROUTER_FILE):
        load_router(routed_bundle, trusted_keys=trusted)
    with pytest.raises(BundleIntegrityError, match="altered"):
        load_router(routed_bundle, manifest=manifest)
    (routed_bundle / ROUTER_FILE).unlink()
    with pytest.raises(BundleIntegrityError, match="missing"):
        load_router(routed_bundle, manifest=manifest)


def test_a_router_signed_by_someone_else_is_refused(routed_bundle: Path) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    with pytest.raises(SignatureError, match="not among the trusted keys"):
        load_router(routed_bundle, trusted_keys=[Ed25519PrivateKey.generate().public_key()])


def test_a_bundle_without_a_router_says_how_to_get_one(bundles, trusted) -> None:
    with pytest.raises(RouterNotFoundError, match="calibrate-router"):
        load_router(bundles("llama", "gguf", "f16"), trusted_keys=trusted)
    with pytest.raises(InvalidRequestError, match="trusted_keys"):
        load_router(bundles("llama", "gguf", "f16"))

"""`tandem export calibrate-router`: label a bundle's answers, fit its router, seal it in, re-signed; and the
errors a user can run into (no bundle, wrong key, unsigned or altered bundle, bad reference file)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from edge_runtime.bundle import load_public_key, verify_bundle
from edge_runtime.errors import BundleIntegrityError
from edge_runtime.router import ROUTER_FILE, load_router
from export.tasks import generate_split
from tests.support import invoke

REFERENCE_ITEMS = 16


@pytest.fixture
def bundle(smoke_models, tmp_path: Path) -> Path:
    """A private copy of the smoke GGUF bundle (the session's stays untouched)."""
    return Path(shutil.copytree(smoke_models.bundles["gguf"], tmp_path / "student-gguf"))


@pytest.fixture
def reference(smoke_models, bundle: Path, tmp_path: Path) -> Path:
    """Reference answers the device gets right for every other prompt: labels of both kinds."""
    from export.tasks.answers import bundle_answers

    items = generate_split("calibration", 2, seed=4)[:REFERENCE_ITEMS]
    device = bundle_answers(bundle, [load_public_key(smoke_models.public_key)], items)
    path = tmp_path / "reference.jsonl"
    lines = [
        json.dumps({"messages": item.chat(), "answer": answer if index % 2 == 0 else answer + " (not this)"})
        for index, (item, answer) in enumerate(zip(items, device, strict=True))
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def _calibrate(bundle: Path, key: Path, *args: str):
    return invoke("export", "calibrate-router", str(bundle), "--key", str(key), *args)


def test_calibration_seals_a_router_the_runtime_loads(smoke_models, bundle: Path, reference: Path) -> None:
    keys = [load_public_key(smoke_models.public_key)]
    result = _calibrate(bundle, smoke_models.private_key, "--reference", str(reference), "--holdout", "0.5")
    assert result.exit_code == 0, result.output
    for text in ("held-out AUROC", "threshold table", "device answers good", "50.0 %", "re-signed"):
        assert text in result.output
    manifest = verify_bundle(bundle, keys)
    router = load_router(bundle, trusted_keys=keys)
    assert router.metrics["items"] == REFERENCE_ITEMS and router.metrics["label_source"] == "answers"
    assert router.metrics["device_good_share"] == 0.5 and router.metrics["auroc"] is not None
    assert manifest.evaluation["router"] == router.metrics and manifest.extra["router"]["file"] == ROUTER_FILE
    shares = [point.cloud_share for point in router.thresholds]
    assert shares[0] == 0.0 and shares[-1] == 1.0 and shares == sorted(shares)
    # The cascade's cutoff, measured on the same answers: escalating below it reaches the target accuracy.
    from export.calibrate.cascade import first_min_logprobs
    from export.tasks.answers import bundle_completions

    cascade = router.cascade
    assert cascade is not None and cascade.target == 0.95 and "confidence cascade" in result.output
    items = generate_split("calibration", 2, seed=4)[:REFERENCE_ITEMS]
    scores = first_min_logprobs([c.logprobs for c in bundle_completions(bundle, keys, items)], cascade.window_tokens)
    escalated = scores < cascade.min_logprob
    good = np.array([index % 2 == 0 for index in range(REFERENCE_ITEMS)])
    assert (good[~escalated].sum() + escalated.sum()) / REFERENCE_ITEMS >= cascade.target
    assert not [p.name for p in bundle.parent.iterdir() if p.name.startswith(".")]  # no staging left behind

    (bundle / ROUTER_FILE).write_text((bundle / ROUTER_FILE).read_text().replace('"auroc"', '"AUROC"'))
    with pytest.raises(BundleIntegrityError):
        verify_bundle(bundle, keys)


def test_calibrating_again_replaces_the_router(smoke_models, bundle: Path) -> None:
    for seed in ("1", "2"):
        result = _calibrate(bundle, smoke_models.private_key, "--per-level", "1", "--seed", seed)
        assert result.exit_code == 0, result.output
    keys = [load_public_key(smoke_models.public_key)]
    assert load_router(bundle, trusted_keys=keys).metrics["items"] == len(generate_split("calibration", 1))


def test_teacher_labels_compare_with_the_teachers_answers(smoke_models, bundle: Path) -> None:
    result = _calibrate(bundle, smoke_models.private_key, "--per-level", "1", "--teacher", str(smoke_models.teacher))
    assert result.exit_code == 0, result.output
    assert "equal to the teacher's answer" in result.output
    router = load_router(bundle, trusted_keys=[load_public_key(smoke_models.public_key)])
    assert router.metrics["label_source"] == "teacher"


def test_errors_say_what_to_do(smoke_models, bundle: Path, tmp_path: Path) -> None:
    from export.signing_keys import generate_keypair

    key = smoke_models.private_key
    before = {p.name: p.read_bytes() for p in bundle.iterdir()}

    result = _calibrate(tmp_path / "nowhere", key)
    assert result.exit_code == 2 and "no bundle at" in result.output

    other_key, _ = generate_keypair(tmp_path / "other")
    result = _calibrate(bundle, other_key, "--per-level", "1")
    assert result.exit_code == 2 and "not among the trusted keys" in result.output and "--key" in result.output

    result = _calibrate(bundle, tmp_path / "missing.key")
    assert result.exit_code == 2 and "keygen" in result.output

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": [{"role": "user", "content": "1+1="}]}\n')
    result = _calibrate(bundle, key, "--reference", str(bad))
    assert result.exit_code == 2 and "line 1" in result.output and "answer" in result.output
    assert {p.name: p.read_bytes() for p in bundle.iterdir()} == before  # nothing was touched

    (bundle / "tokenizer.json").write_bytes((bundle / "tokenizer.json").read_bytes() + b" ")
    result = _calibrate(bundle, key, "--per-level", "1")
    assert result.exit_code == 2 and "altered" in result.output
    assert (bundle / ROUTER_FILE).read_bytes() == before[ROUTER_FILE]  # an altered bundle is never re-signed

    (bundle / "manifest.sig").unlink()
    result = _calibrate(bundle, key, "--per-level", "1")
    assert result.exit_code == 2 and "unsigned" in result.output

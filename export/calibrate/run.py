"""Calibrate a bundle's difficulty router and store it in the bundle, re-signed.

    result = calibrate_bundle(Path("student-gguf-q8_0"), private_key, items=generate_split("calibration", 30))
    result.auroc, result.router.thresholds

1. verify    the bundle's signature (under the given key's public half) and every file's hash: a bundle that
             was altered, is unsigned or was signed by another key is refused, never re-signed
2. device    the bundle answers every calibration prompt through the edge runtime (greedy), with logprobs
3. teacher   optional: a teacher folder answers the same prompts (transformers, greedy)
4. label     good = the device answer is right (reference answers) or equals the teacher's
5. fit       text features -> a tiny MLP (numpy), fitted on part of the prompts; AUROC and the threshold
             table are measured on the rest (held out). The confidence cascade's cutoff (the lowest
             logprob among an answer's first tokens) is calibrated on every prompt (export.calibrate.cascade)
6. seal      router.json joins the bundle; the manifest (with the router's metrics) is re-hashed and
             re-signed. The new bundle is assembled beside the old one and swapped in by renames: the
             bundle is never half-written, and tampering after signing fails verification as before.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edge_runtime.bundle import Manifest, verify_bundle
from edge_runtime.errors import BundleError
from edge_runtime.router import FORMAT_VERSION, ROUTER_FILE, DifficultyRouter, text_features
from export.atomic import staged_folder
from export.bundle_writer import seal_bundle
from export.calibrate.cascade import calibrate_cascade
from export.calibrate.fit import auroc, fit_router, log_loss, threshold_table
from export.calibrate.settings import DEFAULT_CASCADE_TARGET, FitSettings
from export.errors import ExportError, SpecError
from export.tasks.answers import ANSWER_MAX_TOKENS, bundle_completions, model_answers
from export.tasks.suite import ChatTurn, TaskItem

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

STEPS = ("verify", "device", "teacher", "fit", "seal")
DEFAULT_HOLDOUT = 0.3
"""Share of the calibration prompts held out of the fit, to measure AUROC and the threshold table on."""
MIN_ITEMS = 4


class CalibrationError(ExportError):
    """The bundle cannot be calibrated as asked: missing, unsigned, signed by another key, altered, or the
    calibration prompts are unusable. The message says what to do."""


@dataclass(frozen=True)
class CalibrationResult:
    bundle: Path
    router: DifficultyRouter
    manifest: Manifest
    auroc: float | None
    """On the held-out prompts; None when they hold only good or only bad answers."""
    items: int
    good_share: float
    """Share of all calibration prompts the device answered well."""


def _no_step(_: str) -> None:
    pass


def _no_item(done: int, total: int) -> None:
    pass


def read_reference(path: str | os.PathLike[str], *, need_answers: bool = True) -> list[TaskItem]:
    """Calibration prompts from a JSONL file: one object per line with "messages" (role/content objects, the
    last the user's) and "answer" (optional with a teacher); "id", "family" and "level" are optional."""
    file = Path(path)
    try:
        lines = file.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise CalibrationError(f"cannot read the reference answers {file}: {exc}") from exc
    items = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            messages = tuple(ChatTurn(str(m["role"]), str(m["content"])) for m in record["messages"])
            answer = record.get("answer")
            if answer is None and need_answers:
                raise KeyError("answer")
            items.append(TaskItem(
                str(record.get("id", f"line-{number}")), str(record.get("family", "custom")),
                int(record.get("level", 0)), messages, "" if answer is None else str(answer),
            ))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
            raise CalibrationError(
                f"{file} line {number} must be a JSON object with \"messages\" (a list of {{\"role\", \"content\"}}) "
                f"and \"answer\": {exc!r}"
            ) from exc
        if not messages or messages[-1].role != "user":
            raise CalibrationError(f"{file} line {number}: the last message must be the user's")
    if len(items) < MIN_ITEMS:
        raise CalibrationError(f"{file} holds {len(items)} prompts; calibration needs at least {MIN_ITEMS}")
    return items


def verify_for_signing(bundle: Path, signing_key: Ed25519PrivateKey) -> Manifest:
    """The bundle's manifest, after checking it is intact and signed by ``signing_key``."""
    try:
        return verify_bundle(bundle, [signing_key.public_key()])
    except BundleError as exc:
        raise CalibrationError(
            f"cannot calibrate {bundle}: {exc}. Only an intact bundle signed with the given --key is re-signed: "
            "pass the private key it was signed with, or export the bundle again"
        ) from exc


def _holdout_split(count: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.random.default_rng(seed).permutation(count)
    held = min(count - 1, max(1, round(count * fraction)))
    return np.sort(order[held:]), np.sort(order[:held])


def _copy_into(source: Path, target: Path) -> None:
    """Hard-link (same file system, no copy of big model files) or copy."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def seal_router(
    bundle: Path, manifest: Manifest, router: DifficultyRouter, signing_key: Ed25519PrivateKey,
    summary: dict[str, Any],
) -> Manifest:
    """Write ``router`` into the (verified) bundle and re-sign its manifest, atomically."""
    with staged_folder(bundle, overwrite=True) as stage:
        for name in manifest.files:
            if name != ROUTER_FILE:
                _copy_into(bundle / name, stage / name)
        (stage / ROUTER_FILE).write_bytes(router.to_json())
        draft = dataclasses.replace(
            manifest,
            files={},
            evaluation={**manifest.evaluation, "router": summary},
            extra={**manifest.extra, "router": {"file": ROUTER_FILE, "format_version": FORMAT_VERSION}},
        )
        return seal_bundle(stage, draft, signing_key)


def calibrate_bundle(
    bundle: str | os.PathLike[str],
    signing_key: Ed25519PrivateKey,
    *,
    items: Sequence[TaskItem],
    teacher: str | os.PathLike[str] | None = None,
    settings: FitSettings | None = None,
    holdout: float = DEFAULT_HOLDOUT,
    seed: int = 0,
    on_step: Callable[[str], None] = _no_step,
    on_item: Callable[[int, int], None] = _no_item,
    cascade_target: float = DEFAULT_CASCADE_TARGET,
) -> CalibrationResult:
    """Label ``items`` by the bundle's answers (right per the reference answers, or equal to ``teacher``'s),
    fit the router, calibrate the cascade's cutoff for ``cascade_target`` of the all-cloud accuracy, and seal both
    into the bundle. Raises CalibrationError (the bundle or the prompts are
    unusable) and SpecError (bad settings)."""
    folder = Path(bundle)
    if not 0 < holdout < 1:
        raise SpecError(f"holdout={holdout} must be between 0 and 1 (exclusive), e.g. {DEFAULT_HOLDOUT}")
    if not 0 < cascade_target <= 1:
        raise SpecError(f"cascade_target={cascade_target} must be in (0, 1], e.g. {DEFAULT_CASCADE_TARGET}")
    if len(items) < MIN_ITEMS:
        raise CalibrationError(f"{len(items)} calibration prompts are too few; give at least {MIN_ITEMS}")
    on_step("verify")
    manifest = verify_for_signing(folder, signing_key)

    on_step("device")
    completions = bundle_completions(folder, [signing_key.public_key()], items, on_item=on_item)
    device = [completion.text for completion in completions]
    if teacher is not None:
        on_step("teacher")
        reference = [answer.strip() for answer in model_answers(teacher, items, on_item=on_item)]
        labels = np.array([d.strip() == r for d, r in zip(device, reference, strict=True)], dtype=np.float64)
        label_source = "teacher"
    else:
        labels = np.array([item.check(answer) for item, answer in zip(items, device, strict=True)], dtype=np.float64)
        label_source = "answers"

    on_step("fit")
    features = np.stack([text_features(item.messages, ANSWER_MAX_TOKENS) for item in items])
    fit_rows, held_rows = _holdout_split(len(items), holdout, seed)
    router = fit_router(features[fit_rows], labels[fit_rows], settings or FitSettings(seed=seed))
    held_p = router.predict(features[held_rows])
    area = auroc(held_p, labels[held_rows])
    metrics = {
        "auroc": area,
        "log_loss": log_loss(held_p, labels[held_rows]),
        "label_source": label_source,
        "items": len(items),
        "fit_items": len(fit_rows),
        "held_out_items": len(held_rows),
        "device_good_share": float(labels.mean()),
        "max_tokens": ANSWER_MAX_TOKENS,
    }
    cascade = calibrate_cascade([completion.logprobs for completion in completions], labels, target=cascade_target)
    metrics["cascade_min_logprob"] = cascade.min_logprob
    router = dataclasses.replace(router, thresholds=threshold_table(held_p, labels[held_rows]), metrics=metrics,
                                 cascade=cascade)

    on_step("seal")
    sealed = seal_router(folder, manifest, router, signing_key, metrics)
    return CalibrationResult(folder, router, sealed, area, len(items), float(labels.mean()))

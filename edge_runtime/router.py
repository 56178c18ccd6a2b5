"""Difficulty routing on the device: cheap text features of a request, and the bundle's calibrated router.

    from edge_runtime.router import load_router, text_features

    router = load_router(bundle_dir, manifest=engine.manifest)       # or trusted_keys=[public_key]
    p_good = router.predict(text_features(messages, max_tokens=64))  # P(the device answer is good)
    threshold = router.threshold_for_cloud_share(0.3)                # from the calibrated threshold table
    target = "cloud" if p_good < threshold else "device"

The router is fitted by the export tool (``tandem export calibrate-router``) on the bundle's own answers to a
calibration set, and stored in the bundle as ``router.json``: listed and hashed in the manifest like every
file, so the bundle's signature covers it. Inference is a few numpy operations (no torch): standardise the
features, run a tiny multilayer perceptron (no hidden layer: logistic regression), squash with a sigmoid.

Features are generic text statistics (lengths, digits and the longest digit run, list items, conversation
depth, math and code markers, the requested answer length, a hashed bag of short words); nothing in them
knows a task's name. ``FEATURE_NAMES`` lists them in order; ``FEATURES_VERSION`` changes when their meaning
does, and a router fitted on other features is refused.

router.json (format version 1)::

    {"format": "tandem-router", "format_version": 1, "features_version": 1,
     "feature_names": [...], "mean": [...], "scale": [...],
     "layers": [{"weights": [[...]], "bias": [...]}, ...],    # hidden layers use tanh, the last a sigmoid
     "thresholds": [{"threshold": t, "cloud_share": s, "expected_accuracy": a}, ...],
     "cascade": {"window_tokens": 8, "min_logprob": m, "target": 0.95,   # optional (older routers lack it)
                 "thresholds": [{"threshold": m, "cloud_share": s, "expected_accuracy": a}, ...]},
     "metrics": {...}}                                        # e.g. held-out AUROC, label source, sizes

The ``cascade`` part calibrates the SDK's logprob confidence cascade for this bundle: escalating a device
answer whose first ``window_tokens`` tokens include one with a logprob below ``min_logprob`` reaches
``target`` x the accuracy of sending everything to the cloud, at the smallest escalation share measured on the
calibration prompts (its table: escalation share and expected accuracy per cutoff). A model's logprobs depend
on the model, so one fixed cutoff fits no bundle: the SDK takes this one unless its policy sets its own.

Errors (both are ``edge_runtime.errors.BundleError``: the bundle's router cannot be used as it is)::

    RouterError
    ├── RouterNotFoundError   the bundle has no router.json (calibrate it, or route without a router)
    └── RouterFormatError     router.json is corrupt, of another format version, or fitted on other features
"""

from __future__ import annotations

import json
import math
import os
import re
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edge_runtime.bundle import MANIFEST_FILE, Manifest, file_sha256, verify_bundle
from edge_runtime.errors import BundleError, BundleIntegrityError, InvalidRequestError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

ROUTER_FILE = "router.json"
ROUTER_FORMAT = "tandem-router"
FORMAT_VERSION = 1
FEATURES_VERSION = 1

WORD_BUCKETS = 8
"""Hashed bag of short words: how many buckets."""
BUCKET_WORD_MAX = 10
"""Only words up to this many letters are hashed: instruction words, not long payload strings."""
MAX_TOKENS_UNBOUNDED = 4096
"""What ``max_tokens=None`` (no limit) counts as."""

_BASE_FEATURES = (
    "user_chars_log",
    "user_words_log",
    "total_chars_log",
    "digits_log",
    "longest_digit_run",
    "numbers_log",
    "longest_letter_run",
    "longest_token",
    "list_items",
    "messages",
    "user_turns",
    "has_system",
    "system_chars_log",
    "math_operators_log",
    "code_markers_log",
    "ends_with_question",
    "uppercase_share",
    "non_ascii_share",
    "max_tokens_log",
)
FEATURE_NAMES: tuple[str, ...] = (*_BASE_FEATURES, *(f"word_bucket_{i}" for i in range(WORD_BUCKETS)))
"""The features ``text_features`` returns, in order."""

_DIGIT_RUN = re.compile(r"\d+")
_LETTER_RUN = re.compile(r"[^\W\d_]+")
_LIST_SEPARATOR = re.compile(r"[,;\n]")
_MATH_OPERATOR = re.compile(r"(?<=[\d\s)])[-+*/^%=\u00d7\u00f7](?=[\d\s(])")
_CODE_MARKER = re.compile(r"```|\bdef\b|\breturn\b|\bimport\b|\bclass\b|=>|[{};]|\w\(")


class RouterError(BundleError):
    """The bundle's router cannot be used as it is."""


class RouterNotFoundError(RouterError, FileNotFoundError):
    """The bundle has no router.json: calibrate it with `tandem export calibrate-router`."""


class RouterFormatError(RouterError):
    """router.json is not valid JSON, not a router of this format version, or fitted on other features."""


# -- features ----------------------------------------------------------------------------------------------


def _role_content(message: Any) -> tuple[str, str]:
    """(role, content) of an ``edge_runtime.Message``, a ``{"role", "content"}`` dict or a (role, content) pair."""
    if isinstance(message, Mapping):
        return str(message.get("role", "")), str(message.get("content", ""))
    if hasattr(message, "role") and hasattr(message, "content"):
        return str(message.role), str(message.content)
    role, content = message
    return str(role), str(content)


def _longest(pattern: re.Pattern[str], text: str) -> int:
    return max((len(match) for match in pattern.findall(text)), default=0)


def _log(count: float) -> float:
    return math.log1p(count)


def text_features(messages: Iterable[Any], max_tokens: int | None) -> np.ndarray:
    """The features of a chat request, in FEATURE_NAMES order (float64, always finite).

    ``messages``: ``edge_runtime.Message`` objects, ``{"role", "content"}`` dicts or (role, content) pairs;
    the text statistics describe the last user message (the question being asked), the conversation ones
    all messages. ``max_tokens``: the answer length the caller allows (None: unbounded).
    """
    turns = [_role_content(message) for message in messages]
    user_texts = [content for role, content in turns if role == "user"]
    text = user_texts[-1] if user_texts else (turns[-1][1] if turns else "")
    system = "".join(content for role, content in turns if role == "system")
    letters = [c for c in text if c.isalpha()]
    words = text.split()
    buckets = [0] * WORD_BUCKETS
    for word in _LETTER_RUN.findall(text.lower()):
        if len(word) <= BUCKET_WORD_MAX:
            buckets[zlib.crc32(word.encode()) % WORD_BUCKETS] += 1
    limit = MAX_TOKENS_UNBOUNDED if max_tokens is None else max_tokens
    values = [
        _log(len(text)),
        _log(len(words)),
        _log(sum(len(content) for _, content in turns)),
        _log(sum(c.isdigit() for c in text)),
        float(_longest(_DIGIT_RUN, text)),
        _log(len(_DIGIT_RUN.findall(text))),
        float(_longest(_LETTER_RUN, text)),
        float(max((len(word) for word in words), default=0)),
        float(len([part for part in _LIST_SEPARATOR.split(text) if part.strip()]) or 1),
        float(len(turns)),
        float(len(user_texts)),
        float(bool(system)),
        _log(len(system)),
        _log(len(_MATH_OPERATOR.findall(text))),
        _log(len(_CODE_MARKER.findall(text))),
        float(text.rstrip().endswith("?")),
        sum(c.isupper() for c in letters) / len(letters) if letters else 0.0,
        sum(not c.isascii() for c in text) / len(text) if text else 0.0,
        _log(max(int(limit), 0)),
        *(_log(count) for count in buckets),
    ]
    return np.asarray(values, dtype=np.float64)


# -- the router ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ThresholdPoint:
    """Route to the cloud when P(device answer good) < ``threshold``: measured on held-out calibration data,
    that sends ``cloud_share`` of the requests to the cloud for an overall ``expected_accuracy`` (device
    answers scored by their labels, cloud answers counted as right)."""

    threshold: float
    cloud_share: float
    expected_accuracy: float


@dataclass(frozen=True)
class CascadeCalibration:
    """The confidence cascade's cutoff for this bundle (see the module docstring)."""

    window_tokens: int
    min_logprob: float
    """Escalate when one of the first ``window_tokens`` tokens has a logprob below this (<= 0)."""
    target: float
    """The share of the all-cloud accuracy ``min_logprob`` was chosen to reach."""
    thresholds: tuple[ThresholdPoint, ...] = ()
    """Per cutoff (``threshold``: a min_logprob), sorted increasing: the share escalated and the accuracy."""

    def __post_init__(self) -> None:
        if isinstance(self.window_tokens, bool) or not isinstance(self.window_tokens, int) or self.window_tokens < 1:
            raise RouterFormatError(f"cascade window_tokens must be an integer >= 1, got {self.window_tokens!r}")
        if not (math.isfinite(self.min_logprob) and self.min_logprob <= 0):
            raise RouterFormatError(f"cascade min_logprob must be a finite number <= 0, got {self.min_logprob!r}")
        if not 0 < self.target <= 1:
            raise RouterFormatError(f"cascade target must be in (0, 1], got {self.target!r}")
        if list(self.thresholds) != sorted(self.thresholds, key=lambda point: point.threshold):
            raise RouterFormatError("cascade thresholds must be sorted by threshold")

    def to_dict(self) -> dict[str, Any]:
        return {"window_tokens": self.window_tokens, "min_logprob": self.min_logprob, "target": self.target,
                "thresholds": _points_to_json(self.thresholds)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CascadeCalibration:
        return cls(int(data["window_tokens"]), float(data["min_logprob"]), float(data["target"]),
                   _points_from_json(data.get("thresholds", [])))


def _points_to_json(points: Sequence[ThresholdPoint]) -> list[dict[str, float]]:
    return [{"threshold": p.threshold, "cloud_share": p.cloud_share, "expected_accuracy": p.expected_accuracy}
            for p in points]


def _points_from_json(points: Sequence[Mapping[str, Any]]) -> tuple[ThresholdPoint, ...]:
    return tuple(ThresholdPoint(float(p["threshold"]), float(p["cloud_share"]), float(p["expected_accuracy"]))
                 for p in points)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


@dataclass(frozen=True)
class DifficultyRouter:
    """P(the device answer is good) from ``text_features``: standardise, tiny MLP, sigmoid."""

    mean: np.ndarray
    scale: np.ndarray
    layers: tuple[tuple[np.ndarray, np.ndarray], ...]
    """(weights of shape (inputs, outputs), bias of shape (outputs,)) per layer; the last has one output."""
    thresholds: tuple[ThresholdPoint, ...] = ()
    """Sorted by threshold, increasing (so cloud share increases too)."""
    metrics: dict[str, Any] = field(default_factory=dict)
    feature_names: tuple[str, ...] = FEATURE_NAMES
    cascade: CascadeCalibration | None = None
    """The confidence cascade's calibrated cutoff (None: calibrated before cascades were, or not measured)."""

    def __post_init__(self) -> None:
        width = len(self.feature_names)
        if self.mean.shape != (width,) or self.scale.shape != (width,):
            raise RouterFormatError(f"router mean/scale must have {width} entries, one per feature")
        if not np.all(np.isfinite(self.mean)) or not np.all(np.isfinite(self.scale)) or np.any(self.scale <= 0):
            raise RouterFormatError("router mean/scale must be finite, and scale positive")
        if not self.layers:
            raise RouterFormatError("router has no layers")
        inputs = width
        for index, (weights, bias) in enumerate(self.layers):
            if weights.ndim != 2 or weights.shape[0] != inputs or bias.shape != (weights.shape[1],):
                raise RouterFormatError(f"router layer {index} has shape {weights.shape}/{bias.shape}, "
                                        f"expected ({inputs}, n)/(n,)")
            if not (np.all(np.isfinite(weights)) and np.all(np.isfinite(bias))):
                raise RouterFormatError(f"router layer {index} holds non-finite numbers")
            inputs = weights.shape[1]
        if inputs != 1:
            raise RouterFormatError("the router's last layer must have one output")
        if list(self.thresholds) != sorted(self.thresholds, key=lambda point: point.threshold):
            raise RouterFormatError("router thresholds must be sorted by threshold")

    def predict(self, features: np.ndarray | Sequence[float]) -> Any:
        """P(device answer good): a float for one feature vector, an array for a (n, features) matrix."""
        x = np.asarray(features, dtype=np.float64)
        single = x.ndim == 1
        x = np.atleast_2d(x)
        if x.shape[1] != len(self.feature_names):
            raise InvalidRequestError(
                f"the router takes {len(self.feature_names)} features (edge_runtime.router.text_features), "
                f"got {x.shape[1]}"
            )
        hidden = (x - self.mean) / self.scale
        for index, (weights, bias) in enumerate(self.layers):
            hidden = hidden @ weights + bias
            if index < len(self.layers) - 1:
                hidden = np.tanh(hidden)
        probability = _sigmoid(hidden[:, 0])
        return float(probability[0]) if single else probability

    def threshold_for_cloud_share(self, cloud_share: float) -> float:
        """The largest calibrated threshold whose cloud share does not exceed ``cloud_share`` (0.0, sending
        nothing to the cloud, when even the smallest exceeds it or there is no table)."""
        eligible = [point.threshold for point in self.thresholds if point.cloud_share <= cloud_share]
        return max(eligible, default=0.0)

    # -- JSON -------------------------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": ROUTER_FORMAT,
            "format_version": FORMAT_VERSION,
            "features_version": FEATURES_VERSION,
            "feature_names": list(self.feature_names),
            "mean": self.mean.tolist(),
            "scale": self.scale.tolist(),
            "layers": [{"weights": weights.tolist(), "bias": bias.tolist()} for weights, bias in self.layers],
            "thresholds": _points_to_json(self.thresholds),
            **({"cascade": self.cascade.to_dict()} if self.cascade is not None else {}),
            "metrics": self.metrics,
        }

    def to_json(self) -> bytes:
        return (json.dumps(self.to_dict(), sort_keys=True, indent=2) + "\n").encode()

    @classmethod
    def from_json(cls, raw: bytes | str) -> DifficultyRouter:
        """Parse router.json; RouterFormatError names what is wrong."""
        try:
            data = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise RouterFormatError(f"{ROUTER_FILE} is not valid JSON: {exc}") from exc
        if not isinstance(data, dict) or data.get("format") != ROUTER_FORMAT:
            raise RouterFormatError(f"{ROUTER_FILE} is not a {ROUTER_FORMAT} file")
        if data.get("format_version") != FORMAT_VERSION:
            raise RouterFormatError(
                f"{ROUTER_FILE} has format version {data.get('format_version')!r}; this runtime reads version "
                f"{FORMAT_VERSION}: upgrade tandem-inference or calibrate the bundle again"
            )
        if data.get("features_version") != FEATURES_VERSION or data.get("feature_names") != list(FEATURE_NAMES):
            raise RouterFormatError(
                f"{ROUTER_FILE} was fitted on other features (features version {data.get('features_version')!r}, "
                f"this runtime computes version {FEATURES_VERSION}): calibrate the bundle again"
            )
        try:
            layers = tuple(
                (np.asarray(layer["weights"], dtype=np.float64), np.asarray(layer["bias"], dtype=np.float64))
                for layer in data["layers"]
            )
            thresholds = _points_from_json(data.get("thresholds", []))
            cascade = data.get("cascade")
            if cascade is not None and not isinstance(cascade, dict):
                raise TypeError("cascade must be an object")
            metrics = data.get("metrics", {})
            if not isinstance(metrics, dict):
                raise TypeError("metrics must be an object")
            return cls(
                mean=np.asarray(data["mean"], dtype=np.float64),
                scale=np.asarray(data["scale"], dtype=np.float64),
                layers=layers,
                thresholds=thresholds,
                metrics=metrics,
                cascade=CascadeCalibration.from_dict(cascade) if cascade is not None else None,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise RouterFormatError(f"{ROUTER_FILE} is missing a field or has a malformed one: {exc!r}") from exc


def load_router(
    bundle_dir: str | os.PathLike[str],
    *,
    trusted_keys: Iterable[Ed25519PublicKey] | None = None,
    manifest: Manifest | None = None,
) -> DifficultyRouter:
    """The router of a verified bundle.

    Give ``trusted_keys`` to verify the whole bundle here (signature and every file), or the ``manifest`` of
    a bundle already verified (``engine.manifest`` after ``load_bundle``): router.json is then checked
    against its size and sha256 in that manifest. Raises RouterNotFoundError when the bundle has no router,
    RouterFormatError when router.json is unusable, and the bundle's own errors (SignatureError,
    BundleIntegrityError...) when verification fails.
    """
    folder = Path(bundle_dir)
    if trusted_keys is not None:
        manifest = verify_bundle(folder, trusted_keys)
    elif manifest is None:
        raise InvalidRequestError(
            "load_router needs trusted_keys (to verify the bundle) or the manifest of an already verified bundle"
        )
    entry = manifest.files.get(ROUTER_FILE)
    if entry is None:
        raise RouterNotFoundError(
            f"{manifest.name} has no {ROUTER_FILE}: calibrate it with `tandem export calibrate-router`"
        )
    path = folder / ROUTER_FILE
    if trusted_keys is None:
        if not path.is_file():
            raise BundleIntegrityError(f"{ROUTER_FILE} is missing from {folder}")
        if path.stat().st_size != entry.size or file_sha256(path) != entry.sha256:
            raise BundleIntegrityError(f"{ROUTER_FILE} does not match its sha256 in {MANIFEST_FILE}: it was altered")
    return DifficultyRouter.from_json(path.read_bytes())

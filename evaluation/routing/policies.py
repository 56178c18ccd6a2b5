"""The routing policies compared, declared once: how the SDK client of each is configured for its real run,
and how the replay scores items for it (``cloud_score``: an item goes to the cloud when its score is above a
cutoff; see ``evaluation.routing.replay``).

    always_device   every request on the device (mode local_only)
    always_cloud    every request in the cloud (mode cloud_only)
    random          per request, the cloud with probability RANDOM_CLOUD_SHARE (seeded draws, per-request mode)
    heuristic       the SDK's text-heuristic difficulty (the bundle's router ignored: routing.use_router=false)
    router          the bundle's calibrated router: the cloud when P(device answer good) < its threshold
    cascade         the device first; the cloud when one of its first tokens has a logprob below min_logprob
    router_cascade  the router, and the cascade on what the router keeps on the device
    oracle          the cloud exactly when the device's answer is wrong (an upper bound, not deployable)

The headline settings are the SDK's defaults (heuristic max_difficulty 0.5, router threshold 0.5, the cascade's
cutoff calibrated into the bundle's router.json, else min_logprob -2.0 over 8 tokens); the replay sweeps one
threshold per policy around them. ``routing_policies(cascade)`` declares them for a resolved cascade setting;
``POLICIES`` is that for an uncalibrated bundle (the names and order are the same for every bundle).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from evaluation.routing.replay import Outcomes
from sdk.difficulty import DEFAULT_ROUTER_THRESHOLD
from sdk.policy import CascadeSettings, Mode, RoutingSettings

RANDOM_CLOUD_SHARE = 0.4
"""The random policy's headline share of cloud calls: the goal's cloud-share budget."""
HEURISTIC_MAX_DIFFICULTY = RoutingSettings().max_difficulty
ROUTER_THRESHOLD = DEFAULT_ROUTER_THRESHOLD
CASCADE = CascadeSettings(enabled=True).resolved(None)
"""The cascade of the headline runs on a bundle without a calibrated cutoff: the SDK's defaults."""
LOGPROB_WINDOW = 32
"""Device answer tokens whose logprobs are recorded for the cascade's replay (more than any cascade window
checks; answers are at most 40 tokens)."""
ORACLE_CUTOFF = 0.75
"""The oracle's cloud scores are 2 (device wrong, cloud right), 1 (both wrong) or 0 (device right), each plus
a tie-breaker below 0.5: the cloud exactly when the device is wrong means a score above 0.75."""


@dataclass(frozen=True)
class ClientSetup:
    """What the SDK client of a policy's real run is configured with (everything else is the evaluation's)."""

    mode: Mode = Mode.AUTO
    use_router: bool = True
    router_threshold: float | None = ROUTER_THRESHOLD
    max_difficulty: float = HEURISTIC_MAX_DIFFICULTY
    cascade: bool = False


ROUTER_CLIENT = ClientSetup()
HEURISTIC_CLIENT = ClientSetup(use_router=False)
CASCADE_CLIENT = ClientSetup(mode=Mode.PREFER_LOCAL, cascade=True)
"""prefer_local: the device answers first whatever the difficulty; the cascade escalates to the cloud."""
ROUTER_CASCADE_CLIENT = ClientSetup(cascade=True)

RequestMode = Callable[["Outcomes | None", int], "Mode | None"]
"""(recorded outcomes, item index) -> the request's ``mode=`` (None: the client's own). The recording policies
run before anything is recorded: they get None."""


def _client_mode(outcomes: Outcomes | None, index: int) -> Mode | None:
    return None


def _device_mode(outcomes: Outcomes | None, index: int) -> Mode | None:
    return Mode.LOCAL_ONLY


def _cloud_mode(outcomes: Outcomes | None, index: int) -> Mode | None:
    return Mode.CLOUD_ONLY


def _recorded(outcomes: Outcomes | None) -> Outcomes:
    if outcomes is None:
        raise ValueError("this policy's per-request mode needs the recorded outcomes")
    return outcomes


def _random_mode(outcomes: Outcomes | None, index: int) -> Mode | None:
    return Mode.CLOUD_ONLY if _recorded(outcomes).random_draw[index] < RANDOM_CLOUD_SHARE else Mode.LOCAL_ONLY


def _oracle_mode(outcomes: Outcomes | None, index: int) -> Mode | None:
    return Mode.LOCAL_ONLY if _recorded(outcomes).device_correct[index] else Mode.CLOUD_ONLY


def _oracle_score(outcomes: Outcomes) -> np.ndarray:
    """Device-wrong items first (those the cloud gets right before the others); ties broken by item order,
    since the oracle may send any subset."""
    wrong = ~outcomes.device_correct
    priority = wrong.astype(np.float64) + (wrong & outcomes.cloud_correct)
    tie_breaker = 0.5 * np.arange(outcomes.items, 0, -1) / (outcomes.items + 1)
    return priority + tie_breaker


@dataclass(frozen=True)
class RoutingPolicy:
    name: str
    label: str
    setting: str
    """The headline run's setting, in words."""
    client: ClientSetup
    cloud_score: Callable[[Outcomes], np.ndarray]
    headline_cutoff: float
    """The real run's setting as a cutoff on ``cloud_score``."""
    sweep: str | None
    """What the replay's curve varies (None: a fixed point)."""
    request_mode: RequestMode = _client_mode
    deployable: bool = True
    """False for the oracle: it knows the answers, so it only bounds what routing could reach."""
    threshold_sign: float | None = 1.0
    """The policy's own threshold is ``threshold_sign * cutoff`` (e.g. the router: P(good) < -cutoff); None
    when it has none (the oracle's budget)."""


def routing_policies(cascade: CascadeSettings) -> tuple[RoutingPolicy, ...]:
    """The policies compared, in order; the cascade ones at ``cascade`` (resolved: window and cutoff set)."""
    window, cutoff = cascade.window_tokens, cascade.min_logprob
    if window is None or cutoff is None:
        raise ValueError("routing_policies needs resolved cascade settings (CascadeSettings.resolved)")

    def router_cascade_score(outcomes: Outcomes) -> np.ndarray:
        """The router's score, except items the cascade escalates at its headline cutoff: always the cloud."""
        escalated = outcomes.min_logprob(window) < cutoff
        return np.where(escalated, np.inf, -outcomes.p_good)

    return (
        RoutingPolicy("always_device", "always device", "mode local_only", ROUTER_CLIENT,
                      lambda o: np.zeros(o.items), 0.5, None, _device_mode),
        RoutingPolicy("always_cloud", "always cloud", "mode cloud_only", HEURISTIC_CLIENT,
                      lambda o: np.ones(o.items), 0.5, None, _cloud_mode),
        RoutingPolicy("random", "random", f"cloud share {RANDOM_CLOUD_SHARE:g} (seeded draws)", ROUTER_CLIENT,
                      lambda o: -o.random_draw, -RANDOM_CLOUD_SHARE, "cloud share (draw < share)", _random_mode,
                      threshold_sign=-1.0),
        RoutingPolicy("heuristic", "text heuristic", f"max_difficulty {HEURISTIC_MAX_DIFFICULTY:g}", HEURISTIC_CLIENT,
                      lambda o: o.heuristic, HEURISTIC_MAX_DIFFICULTY, "max_difficulty (cloud when score > it)"),
        RoutingPolicy("router", "calibrated router", f"router_threshold {ROUTER_THRESHOLD:g}", ROUTER_CLIENT,
                      lambda o: -o.p_good, -ROUTER_THRESHOLD, "router_threshold (cloud when P(good) < it)",
                      threshold_sign=-1.0),
        RoutingPolicy("cascade", "logprob cascade", f"min_logprob {cutoff:.3g} over {window} tokens", CASCADE_CLIENT,
                      lambda o: -o.min_logprob(window), -cutoff,
                      "min_logprob (cloud when a first token is below it)", threshold_sign=-1.0),
        RoutingPolicy("router_cascade", "router + cascade",
                      f"router_threshold {ROUTER_THRESHOLD:g}, min_logprob {cutoff:.3g}",
                      ROUTER_CASCADE_CLIENT, router_cascade_score, -ROUTER_THRESHOLD,
                      f"router_threshold, cascade fixed at min_logprob {cutoff:.3g}", threshold_sign=-1.0),
        RoutingPolicy("oracle", "oracle", "cloud exactly when the device answer is wrong", ROUTER_CLIENT,
                      _oracle_score, ORACLE_CUTOFF, "cloud budget (device-wrong items first)", _oracle_mode,
                      deployable=False, threshold_sign=None),
    )


POLICIES = routing_policies(CASCADE)
BY_NAME = {policy.name: policy for policy in POLICIES}
RECORDING_POLICIES = ("always_device", "always_cloud")
"""Their real runs are the recordings the replay reads: every item's answer on each side."""

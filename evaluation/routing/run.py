"""The real runs: every policy's headline operating point through the SDK, on real engines.

    runs, outcomes = await run_policies(items, models, settings, progress)   # {"router": PolicyRun, ...}

The cloud is whatever ``start_cloud`` starts from a ``CloudSpec`` (the command line passes ``tandem.fleet``'s: two
CPU-engine replicas of the teacher behind the gateway, on loopback); this package never starts servers itself. The
device is the student's signed bundle (GGUF or ONNX) with its calibrated router. Each policy is an
``AsyncHybridClient`` configured as ``policies.ClientSetup`` says (clients with the same setup are shared),
asked every test item with greedy decoding (temperature 0, ``ANSWER_MAX_TOKENS``), a few requests at a time.

The device signals are fixed (mains power, nominal temperature, memory not reported) and the client gets no
link monitor, so only the request's difficulty and the policy decide the side: what is measured is routing
quality, not the reaction to the device's state (the demo and the SDK tests cover that). The runs of
``always_device`` and ``always_cloud`` come first: they are the recordings the other policies need (the
oracle's per-request mode) and the replay reads. The fleet's tenants get quotas no evaluation reaches: the
gateway's default of 600 requests a minute would refuse part of a full run (about 1,400 cloud calls in under
a minute), and a refusal would be scored as the policy's choice.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evaluation.routing.errors import EvaluationRunError, RouterMissingError
from evaluation.routing.policies import (
    LOGPROB_WINDOW,
    RECORDING_POLICIES,
    ClientSetup,
    RoutingPolicy,
    routing_policies,
)
from evaluation.routing.replay import Outcomes
from evaluation.routing.settings import EvalSettings

if TYPE_CHECKING:
    from export.tasks import TaskItem
    from export.tasks.build import TaskModels
    from sdk import AsyncHybridClient, ChatCompletion

CLOUD_MODEL = "teacher"
CLOUD_REPLICAS = 2
CLOUD_TENANT = "eval"
ENGINE_THREADS = 1
"""Threads of the device engine and of each cloud replica: tiny models gain nothing from more, and the
machine is shared."""
CLOUD_TIMEOUT_S = 600.0
FIRST_TOKEN_TIMEOUT_S = 300.0
"""Generous: a cloud request that merely waits behind others on a busy CPU must not fall back to the device
(the route would then say "device", and the run would measure the machine's load, not the policy)."""
TEMPERATURE = 0.0
UNMETERED_REQUESTS_PER_MINUTE = 10_000_000
UNMETERED_TOKENS_PER_MINUTE = 1_000_000_000
"""The evaluation's tenant quotas: a full run sends well over the default 600 requests a minute, and a
refused request would open the client's cloud breaker and be scored as the policy's choice."""


@dataclass(frozen=True)
class CloudSpec:
    """The cloud tier a run needs: ``replicas`` replicas of the teacher behind one gateway, its callers
    authenticated with ``api_key`` as ``tenant``, each replica batching up to ``max_running`` requests."""

    teacher: Path
    model: str
    api_key: str
    tenant: str
    replicas: int
    threads: int
    max_running: int
    requests_per_minute: int
    tokens_per_minute: int


StartCloud = Callable[[CloudSpec], AbstractAsyncContextManager[str]]
"""Starts the cloud tier a ``CloudSpec`` describes and yields its gRPC target (``host:port``); stops it on exit."""


class EvalProgress:
    """What the runs report (the CLI draws it); the default ignores everything."""

    def phase(self, name: str, total: int | None) -> None:
        """A phase starts: ``total`` items (None: a step of unknown length)."""

    def advance(self) -> None:
        """One item of the current phase is done."""


@dataclass(frozen=True)
class ItemResult:
    """One request of a real run, as the SDK answered it."""

    cloud: bool
    """The answer finished in the cloud (``route.side``)."""
    correct: bool
    text: str
    escalated: bool
    """The cascade sent it from the device to the cloud."""
    switched: bool
    """A side failed and the other took over (fallback or failover): not the policy's choice."""
    difficulty_score: float
    difficulty_source: str
    p_good: float | None
    logprobs: tuple[float, ...]


@dataclass(frozen=True)
class PolicyRun:
    policy: RoutingPolicy
    results: tuple[ItemResult, ...]
    seconds: float

    @property
    def cloud(self) -> list[bool]:
        return [result.cloud for result in self.results]

    @property
    def correct(self) -> list[bool]:
        return [result.correct for result in self.results]


def _random_draws(count: int, seed: int) -> Any:
    import numpy as np

    return np.random.default_rng(seed).random(count)


def _sdk_policy(setup: ClientSetup, models: TaskModels, backend: str, target: str, api_key: str) -> Any:
    from sdk import CascadeSettings, CloudSettings, DeviceSettings, Policy, RoutingSettings

    routing = RoutingSettings(mode=setup.mode, use_router=setup.use_router, router_threshold=setup.router_threshold,
                              max_difficulty=setup.max_difficulty)
    device = DeviceSettings(bundle=models.bundles[backend], trusted_keys=(models.public_key,), threads=ENGINE_THREADS)
    cloud = CloudSettings(target=target, model=CLOUD_MODEL, api_key=api_key, tenant=CLOUD_TENANT,
                          timeout_s=CLOUD_TIMEOUT_S, first_token_timeout_s=FIRST_TOKEN_TIMEOUT_S)
    cascade = CascadeSettings(enabled=setup.cascade)  # the cutoff: the SDK's default (the bundle's calibrated one)
    return Policy(routing=routing, device=device, cloud=cloud, cascade=cascade)


def _fixed_signals() -> Any:
    from sdk.signals.hub import SignalHub
    from sdk.signals.static import StaticSignals
    from sdk.signals.types import Thermal

    return SignalHub.from_static(StaticSignals(thermal=Thermal.NOMINAL))


def bundle_policies(models: TaskModels, backend: str) -> tuple[RoutingPolicy, ...]:
    """The policies for the device bundle: its cascade cutoff as the SDK resolves it (the calibrated one in
    router.json). RouterMissingError when the bundle carries no usable router (the router policies need one)."""
    from edge_runtime.bundle import load_public_key
    from edge_runtime.router import RouterError, load_router
    from sdk.policy import CascadeSettings

    bundle = models.bundles[backend]
    try:
        router = load_router(bundle, trusted_keys=[load_public_key(models.public_key)])
    except RouterError as exc:
        raise RouterMissingError(f"the {backend} bundle {bundle} has no usable router ({exc}): calibrate it with "
                                 f"`tandem export calibrate-router`, or rebuild the task models") from exc
    return routing_policies(CascadeSettings(enabled=True).resolved(router.cascade))


class _Clients:
    """One AsyncHybridClient per ClientSetup, built (and its device bundle loaded) on first use."""

    def __init__(self, models: TaskModels, backend: str, target: str, api_key: str) -> None:
        self._models, self._backend, self._target, self._api_key = models, backend, target, api_key
        self._clients: dict[ClientSetup, AsyncHybridClient] = {}

    async def get(self, setup: ClientSetup) -> AsyncHybridClient:
        from sdk import AsyncHybridClient

        if setup not in self._clients:
            policy = _sdk_policy(setup, self._models, self._backend, self._target, self._api_key)
            client = AsyncHybridClient(policy, signals=_fixed_signals())
            self._clients[setup] = client
            if not await client.preload():
                failure = client.edge.failure if client.edge is not None else "no device side"
                raise EvaluationRunError(f"the device bundle {self._models.bundles[self._backend]} could not be "
                                         f"loaded: {failure}")
        return self._clients[setup]

    async def close(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            await client.close()
            client.signals.close()


async def ask(client: AsyncHybridClient, item: TaskItem, mode: Any = None) -> ChatCompletion:
    """``item`` asked as the evaluation and the demo ask it: its chat, greedy, the suite's answer budget."""
    from export.tasks.answers import ANSWER_MAX_TOKENS

    return await client.chat.completions.create(
        messages=item.chat(), max_tokens=ANSWER_MAX_TOKENS, temperature=TEMPERATURE, mode=mode)


async def _ask(client: AsyncHybridClient, item: TaskItem, mode: Any) -> ItemResult:
    from sdk import SwitchKind

    response = await ask(client, item, mode)
    route = response.route
    text = response.choices[0].message.content
    difficulty = route.difficulty
    return ItemResult(
        cloud=str(route.side) == "cloud", correct=item.check(text), text=text,
        escalated=any(switch.kind is SwitchKind.ESCALATION for switch in route.switches),
        switched=any(switch.kind in (SwitchKind.FALLBACK, SwitchKind.FAILOVER) for switch in route.switches),
        difficulty_score=difficulty.score, difficulty_source=difficulty.source, p_good=difficulty.p_device_good,
        logprobs=tuple(response.choices[0].logprobs),
    )


async def run_policy(policy: RoutingPolicy, client: AsyncHybridClient, items: Sequence[TaskItem],
                     outcomes: Outcomes | None, concurrency: int, progress: EvalProgress) -> PolicyRun:
    """Every item through ``client``, at most ``concurrency`` at a time; results in item order."""
    from sdk import TandemError

    gate = asyncio.Semaphore(concurrency)
    started = time.perf_counter()

    async def one(index: int, item: TaskItem) -> ItemResult:
        mode = policy.request_mode(outcomes, index)
        async with gate:
            try:
                result = await _ask(client, item, mode)
            except TandemError as exc:
                raise EvaluationRunError(f"policy {policy.name}, item {item.id}: {exc}") from exc
        progress.advance()
        return result

    progress.phase(f"{policy.label} ({policy.setting})", len(items))
    results = await asyncio.gather(*(one(index, item) for index, item in enumerate(items)))
    return PolicyRun(policy, tuple(results), time.perf_counter() - started)


def record(device: PolicyRun, cloud: PolicyRun, seed: int) -> Outcomes:
    """The outcomes the replay reads, from the always-device run (answers, the router's P(good), logprobs) and
    the always-cloud run (answers, the heuristic's score: that client ignores the router)."""
    p_good = []
    for index, result in enumerate(device.results):
        if result.p_good is None:
            raise EvaluationRunError(f"item {index}: the device run routed without the bundle's router "
                                     f"(difficulty source {result.difficulty_source!r})")
        p_good.append(result.p_good)
    heuristic = []
    for index, result in enumerate(cloud.results):
        if result.difficulty_source != "heuristic":
            raise EvaluationRunError(f"item {index}: the cloud run did not score the text heuristic")
        heuristic.append(result.difficulty_score)
    return Outcomes.build(
        device.correct, cloud.correct, p_good, heuristic, [result.logprobs for result in device.results],
        _random_draws(len(device.results), seed), LOGPROB_WINDOW,
    )


def _recorded_runs_are_clean(device: PolicyRun, cloud: PolicyRun) -> None:
    for run, side in ((device, False), (cloud, True)):
        wrong = [index for index, result in enumerate(run.results) if result.cloud is not side]
        if wrong:
            raise EvaluationRunError(f"{run.policy.name}: {len(wrong)} answers came from the other side "
                                     f"(first: item {wrong[0]})")


def cloud_spec(models: TaskModels, settings: EvalSettings, api_key: str) -> CloudSpec:
    """The evaluation's cloud: the teacher on ``CLOUD_REPLICAS`` replicas, its tenant unmetered."""
    return CloudSpec(teacher=Path(models.teacher), model=CLOUD_MODEL, api_key=api_key, tenant=CLOUD_TENANT,
                     replicas=CLOUD_REPLICAS, threads=ENGINE_THREADS, max_running=settings.concurrency,
                     requests_per_minute=UNMETERED_REQUESTS_PER_MINUTE, tokens_per_minute=UNMETERED_TOKENS_PER_MINUTE)


async def run_policies(items: Sequence[TaskItem], models: TaskModels, settings: EvalSettings,
                       start_cloud: StartCloud, progress: EvalProgress | None = None,
                       policies: Sequence[RoutingPolicy] | None = None) -> tuple[dict[str, PolicyRun], Outcomes]:
    """Start the cloud tier with ``start_cloud``, run every policy (default: ``bundle_policies``) on ``items``;
    the runs by policy name and the recorded outcomes. Raises EvaluationRunError when a request gets no answer."""
    progress = progress or EvalProgress()
    policies = policies if policies is not None else bundle_policies(models, settings.backend)
    api_key = secrets.token_urlsafe(24)
    progress.phase(f"starting the cloud tier ({CLOUD_REPLICAS} replicas of the teacher behind the gateway)", None)
    async with start_cloud(cloud_spec(models, settings, api_key)) as target:
        clients = _Clients(models, settings.backend, target, api_key)
        try:
            runs: dict[str, PolicyRun] = {}
            outcomes: Outcomes | None = None
            for policy in policies:
                if outcomes is None and policy.name not in RECORDING_POLICIES:
                    device, cloud = (runs[name] for name in RECORDING_POLICIES)
                    _recorded_runs_are_clean(device, cloud)
                    outcomes = record(device, cloud, settings.seed)
                client = await clients.get(policy.client)
                runs[policy.name] = await run_policy(policy, client, items, outcomes, settings.concurrency, progress)
        finally:
            await clients.close()
    assert outcomes is not None
    return runs, outcomes

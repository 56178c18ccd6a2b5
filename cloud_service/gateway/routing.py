"""From a request to a replica: which replicas may serve it (model, pinned or weighted version, health,
outlier ejection), the admission queue while they are all saturated, then the balancing policy.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass, field

from cloud_service.errors import RoutingError
from cloud_service.gateway.balancing import Affinity, Balancer, affinity_keys
from cloud_service.gateway.load import saturated
from cloud_service.gateway.membership import Membership, Replica
from cloud_service.gateway.queueing import AdmissionQueue
from cloud_service.gateway.versions import VersionTable
from cloud_service.wire.v1 import inference_pb2 as pb

MAX_PROBLEMS_SHOWN = 3
"""Unavailable replicas whose problem an error message names."""


class NoReplicaError(RoutingError):
    """No replica can take the request: ``not_found`` when none serves the model (version) at all,
    otherwise none that does is available now."""

    def __init__(self, message: str, *, not_found: bool = False) -> None:
        super().__init__(message)
        self.not_found = not_found


@dataclass
class Plan:
    """One request's routing state across its attempts."""

    tenant: str
    request: pb.GenerateRequest
    version: str | None = None
    """The version chosen (pinned, or by weight; "" lets the replica choose); None until the first pick."""
    _key_cache: dict[str, list[bytes]] = field(default_factory=dict, init=False, repr=False)

    @property
    def model(self) -> str:
        return self.request.model

    @property
    def pinned(self) -> str:
        return self.request.model_version

    def keys(self, version: str) -> list[bytes]:
        """The prefix affinity keys of the request under ``version`` (computed once per version)."""
        if version not in self._key_cache:
            self._key_cache[version] = affinity_keys(self.tenant, self.model, version, self.request)
        return self._key_cache[version]


class Router:
    def __init__(self, membership: Membership, balancer: Balancer, versions: VersionTable,
                 queue: AdmissionQueue[Replica], *, queue_limit: int,
                 on_affinity: Callable[[Affinity], None] = lambda outcome: None) -> None:
        self.membership = membership
        self.balancer = balancer
        self.versions = versions
        self.queue = queue
        self.queue_limit = queue_limit
        self._on_affinity = on_affinity

    def check_served(self, model: str, version: str) -> None:
        """NoReplicaError(not_found) when every replica that has listed its models lacks this one."""
        members = [r for r in self.membership.members() if r.served]
        if members and not any(r.serves(model, version) for r in members):
            what = f"model {model!r} version {version!r}" if version else f"model {model!r}"
            known = sorted({f"{n}@{v}" for r in members for n, v in r.served})
            raise NoReplicaError(f"{what} is not served by any replica ({', '.join(known)})", not_found=True)

    def candidates(self, plan: Plan, tried: Collection[Replica]) -> list[Replica]:
        """Available replicas for the plan's version (choosing it now if it is not fixed yet or has none left);
        replicas not tried yet come first, tried ones only when no other is left."""
        model = plan.model
        serving = [r for r in self.membership.available() if r.serves(model, "")]
        if plan.pinned:
            plan.version = plan.pinned
        elif plan.version is None or not any(r.serves(model, plan.version) for r in serving):
            versions = {v for r in serving for m, v in r.served if m == model}
            plan.version = self.versions.choose(model, versions)
            if plan.version is None:
                raise NoReplicaError(f"no replica of a weighted version of model {model!r} is available "
                                     f"(weights: {self.versions.weights(model)}){self._problems()}")
        found = [r for r in serving if r.serves(model, plan.version)]
        if not found:
            what = f"{model}@{plan.version}" if plan.version else model
            raise NoReplicaError(f"no replica serving {what} is available now{self._problems()}")
        fresh = [r for r in found if r not in tried]
        return fresh or found

    def _problems(self) -> str:
        """What is wrong with the replicas that cannot take work, for the caller's error message."""
        problems = [f"{r.address} {r.state.value}" + (f": {r.problem}" if r.problem else "")
                    for r in self.membership.members() if not r.available][:MAX_PROBLEMS_SHOWN]
        return f" ({'; '.join(problems)})" if problems else ""

    def _ready(self, plan: Plan, tried: Collection[Replica]) -> Replica | None:
        candidates = self.candidates(plan, tried)
        room = [c for c in candidates if not saturated(c, self.queue_limit)]
        if not room:
            return None
        assert plan.version is not None
        keys = plan.keys(plan.version) if self.balancer.uses_affinity else ()
        replica, outcome = self.balancer.pick(room, keys)
        if outcome is not None:
            self._on_affinity(outcome)
        return replica

    async def acquire(self, plan: Plan, tried: Collection[Replica],
                      give_up: Callable[[], bool] = lambda: False) -> Replica | None:
        """A replica with room for the request, after waiting in the admission queue if every candidate is
        saturated; None when ``give_up()`` turned true meanwhile. Raises NoReplicaError or QueueFullError."""
        return await self.queue.admit(lambda: self._ready(plan, tried), give_up)

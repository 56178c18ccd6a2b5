"""BundleRouting: the difficulty estimator and the cascade's cutoff, kept in step with the device bundle.

The bundle may carry a calibrated router (``router.json``): its difficulty model, and the cascade cutoff the
policy uses when it sets none. Both are re-read whenever the device side has loaded a new engine (provisioning
replaced the bundle); until the bundle is loaded, routing uses the text heuristic and the policy's cascade.
"""

from __future__ import annotations

from sdk.backends.edge import EdgeSide
from sdk.difficulty import DifficultyEstimator
from sdk.policy import CascadeSettings, Policy


class BundleRouting:
    def __init__(self, policy: Policy, edge: EdgeSide | None) -> None:
        self.policy = policy
        self.edge = edge
        self._estimator = DifficultyEstimator(policy.routing.max_difficulty)
        self._cascade = policy.cascade.resolved(None)
        self._loads = 0
        """``EdgeSide.loads`` when the bundle's router was last read."""

    def _refresh(self) -> None:
        edge = self.edge
        if edge is None or not edge.loaded or self._loads == edge.loads:
            return
        self._loads = edge.loads
        routing = self.policy.routing
        router = edge.router() if routing.use_router or self.policy.cascade.enabled else None
        self._cascade = self.policy.cascade.resolved(router.cascade if router is not None else None)
        if router is None or not routing.use_router:
            self._estimator = self._estimator.with_router(None, None)
        else:
            self._estimator = self._estimator.with_router(router, routing.router_threshold, routing.router_cloud_share)

    def estimator(self) -> DifficultyEstimator:
        """The difficulty estimator: the bundle's router where the policy uses it, else the text heuristic."""
        self._refresh()
        return self._estimator

    def cascade(self) -> CascadeSettings:
        """The cascade's settings with its cutoff resolved (the bundle's calibrated one when the policy sets none)."""
        self._refresh()
        return self._cascade

"""Model versions side by side: pinned requests go to replicas serving that version; unpinned traffic of a
model with configured weights ([[gateway.versions]]) splits by weight (a canary).

Weights change at run time (``set_weights``; the gateway re-reads its config file on SIGHUP). A stream keeps
the version it was routed to, so changing weights never drops or moves a running stream; only new requests
see the new split. A model without configured weights goes to any replica serving it, and the replica
picks the version (its first).
"""

from __future__ import annotations

import math
import random
from collections.abc import Collection, Mapping

from cloud_service.errors import ConfigError


def check_weights(model: str, weights: Mapping[str, float]) -> dict[str, float]:
    """A copy of the weights; ConfigError unless each is a finite number >= 0 and some is > 0."""
    checked = {}
    for version, weight in weights.items():
        if not isinstance(version, str) or not version:
            raise ConfigError(f"versions of {model!r}: version names must be non-empty strings, got {version!r}")
        if isinstance(weight, bool) or not isinstance(weight, int | float) or not 0 <= weight < math.inf:
            raise ConfigError(f"versions of {model!r}: the weight of {version!r} must be a number >= 0, got {weight!r}")
        checked[version] = float(weight)
    if checked and sum(checked.values()) <= 0:
        raise ConfigError(f"versions of {model!r}: the weights sum to 0; give one version a weight > 0")
    return checked


class VersionTable:
    def __init__(self, weights: Mapping[str, Mapping[str, float]] | None = None,
                 rng: random.Random | None = None) -> None:
        self._weights: dict[str, dict[str, float]] = {}
        self._rng = rng or random.Random()
        self.replace(weights or {})

    def weights(self, model: str) -> dict[str, float]:
        """version -> weight for ``model``; empty when none are configured."""
        return dict(self._weights.get(model, {}))

    def all(self) -> dict[str, dict[str, float]]:
        return {model: dict(table) for model, table in self._weights.items()}

    def set_weights(self, model: str, weights: Mapping[str, float]) -> None:
        """Replace ``model``'s split (an empty mapping removes it: the replicas choose again)."""
        checked = check_weights(model, weights)
        if checked:
            self._weights[model] = checked
        else:
            self._weights.pop(model, None)

    def replace(self, weights: Mapping[str, Mapping[str, float]]) -> None:
        """Every model's split at once (a reloaded config file)."""
        checked = {model: check_weights(model, table) for model, table in weights.items()}
        self._weights = {model: table for model, table in checked.items() if table}

    def choose(self, model: str, available: Collection[str]) -> str | None:
        """A version by weight among those in ``available`` (versions with a replica that can take it now);
        "" when ``model`` has no configured split; None when none of its weighted versions is available."""
        table = self._weights.get(model)
        if not table:
            return ""
        versions = [v for v, w in table.items() if w > 0 and v in available]
        if not versions:
            return None
        return self._rng.choices(versions, weights=[table[v] for v in versions])[0]

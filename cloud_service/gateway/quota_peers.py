"""Split every tenant's quota between the gateways that serve it.

A gateway enforces tenants' quotas in its own process. Behind one Kubernetes Service there are several gateway
pods, and a client's long-lived HTTP/2 connections spread over them, so each pod enforcing the whole quota would
let a tenant use N times it. With ``quota_peers_dns`` set to the gateways' own headless Service
("name:port"), each gateway counts the addresses it resolves to (itself included) every ``dns_refresh_s`` and
enforces 1/N of every quota (``Quotas.set_share``). Traffic that a Service spreads evenly then meets the
configured total; an uneven spread makes it stricter, never looser than N x share. A failed lookup keeps the
last count (and logs it); a lookup that finds nobody counts this gateway alone.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from cloud_service.gateway.membership import resolve
from cloud_service.quota import Quotas

log = logging.getLogger("tandem.gateway")

Resolver = Callable[[str], Awaitable[list[str]]]


class QuotaPeers:
    """Keeps ``quotas.share`` at 1 / (gateways found at ``name``)."""

    def __init__(self, name: str, quotas: Quotas, refresh_s: float, resolver: Resolver = resolve) -> None:
        self.name = name
        self.quotas = quotas
        self.refresh_s = refresh_s
        self._resolve = resolver
        self.peers = 1
        """Gateways counted at the last successful lookup (this one included)."""

    async def refresh(self) -> int:
        """Look the peers up once and set the share; the count in use afterwards."""
        try:
            found = len(await self._resolve(self.name))
        except OSError as exc:
            log.warning("quota peers lookup failed; keeping the last count", extra={"fields": {
                "name": self.name, "peers": self.peers, "error": str(exc)}})
            return self.peers
        peers = max(1, found)
        if peers != self.peers:
            log.info("quota peers changed", extra={"fields": {"name": self.name, "peers": peers,
                                                               "share": round(1 / peers, 4)}})
        self.peers = peers
        self.quotas.set_share(1 / peers)
        return peers

    async def run(self) -> None:
        """Refresh every ``refresh_s`` until cancelled."""
        while True:
            await self.refresh()
            await asyncio.sleep(self.refresh_s)

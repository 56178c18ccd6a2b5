"""The LLM-aware gateway: the Inference API in front of N replicas.

    membership.py   static list or DNS discovery, grpc.health.v1 checks, ejection and re-admission, draining
    load.py         GetLoad polled on a short interval, combined with the gateway's own requests' work
    work.py         what the gateway's requests still cost a replica (prompt until the first chunk, tokens left)
    balancing.py    round_robin, random, least_loaded, p2c, p2c_affinity (prefix affinity with an imbalance guard)
    ejection.py     per-replica outlier ejection on consecutive failed requests (doubling ejection time)
    versions.py     model versions side by side: pinned versions, weighted canary split changeable at run time
    queueing.py     the admission queue: bounded while every replica is saturated, then RESOURCE_EXHAUSTED +
                    retry-after
    retry.py        which failures go to another replica, and the backoff before it (``cloud_service.backoff``)
    routing.py      request -> candidates -> admission queue -> policy -> replica
    servicer.py     Generate (forwarding, retries, delivered-tokens on failure), Abort, GetLoad, ListModels
    metrics.py      Prometheus metrics per replica and per version
    config.py       the [gateway] table of the gateway's TOML config
    server.py       GatewayServer: the front door (``cloud_service.front_door``) over the routing, SIGHUP
                    reload; serve_gateway for the CLI

``tandem cloud gateway -c gateway.toml`` runs one.
"""

from cloud_service.gateway.config import GatewayConfig, GatewaySettings, load_gateway_config
from cloud_service.gateway.server import GatewayServer, serve_gateway

__all__ = ["GatewayConfig", "GatewayServer", "GatewaySettings", "load_gateway_config", "serve_gateway"]

"""Prometheus metrics of the gateway, on their own registry (served on ``server.metrics_port``).

    tandem_gateway_requests_total{model, version, replica, status}   every Generate call by its final status,
                                                                     refusals included (replica "" when none
                                                                     was reached, model "" when the body was
                                                                     never read)
    tandem_gateway_time_to_first_token_seconds{model, version}       histogram, as the gateway's callers see it
    tandem_gateway_e2e_latency_seconds{model, version}               histogram, whole stream
    tandem_gateway_retries_total{reason}                             attempts moved to another replica
                                                                     (mid_stream: after tokens were sent)
    tandem_gateway_resumes_total{outcome}                            broken streams that went on on another
                                                                     replica (resumed) or could not (failed)
    tandem_gateway_prompt_tokens_total{model, version}               prompt tokens of every call (estimated
                                                                     when it ended before its usage)
    tandem_gateway_generated_tokens_total{model, version}            tokens streamed, however the call ended
    tandem_gateway_ejections_total{replica, reason}                  ejections: by health checks and as outliers
    tandem_gateway_affinity_total{outcome}                           prefix affinity: hit, yield, miss
    tandem_gateway_queue_depth                                       requests waiting for a replica with room
    tandem_gateway_inflight{replica}                                 streams running per replica
    tandem_gateway_replicas{state}                                   replicas per state (available = admitted
                                                                     and not ejected as an outlier)
    tandem_gateway_version_weight{model, version}                    the canary split in force

A canary is judged by comparing ``requests_total`` by status and the latency histograms across versions.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from cloud_service.metrics import LATENCY_BUCKETS, serve_registry

if TYPE_CHECKING:
    from cloud_service.front_door.access_log import CallRecord


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("tandem_gateway_requests", "Finished Generate calls.",
                                ["model", "version", "replica", "status"], registry=r)
        self.ttft = Histogram("tandem_gateway_time_to_first_token_seconds", "Time to first token.",
                              ["model", "version"], buckets=LATENCY_BUCKETS, registry=r)
        self.e2e = Histogram("tandem_gateway_e2e_latency_seconds", "Whole request.", ["model", "version"],
                             buckets=LATENCY_BUCKETS, registry=r)
        self.retries = Counter("tandem_gateway_retries", "Attempts moved to another replica.", ["reason"],
                               registry=r)
        self.resumes = Counter("tandem_gateway_resumes", "Broken streams continued on another replica.",
                               ["outcome"], registry=r)
        self.prompt_tokens = Counter("tandem_gateway_prompt_tokens", "Prompt tokens of the calls.",
                                     ["model", "version"], registry=r)
        self.generated_tokens = Counter("tandem_gateway_generated_tokens", "Tokens streamed to callers.",
                                        ["model", "version"], registry=r)
        self.ejections = Counter("tandem_gateway_ejections", "Replicas ejected (health or outlier).",
                                 ["replica", "reason"], registry=r)
        self.affinity = Counter("tandem_gateway_affinity", "Prefix affinity outcomes.", ["outcome"], registry=r)
        self.queue_depth = Gauge("tandem_gateway_queue_depth", "Requests waiting for a replica with room.",
                                 registry=r)
        self.inflight = Gauge("tandem_gateway_inflight", "Streams running per replica.", ["replica"], registry=r)
        self.replicas = Gauge("tandem_gateway_replicas", "Replicas per state.", ["state"], registry=r)
        self.version_weight = Gauge("tandem_gateway_version_weight", "Configured split of unpinned traffic.",
                                    ["model", "version"], registry=r)

    def record_call(self, record: CallRecord, duration_s: float) -> None:
        """A finished Generate call."""
        replica = record.replica or ""
        self.requests.labels(record.model, record.version, replica, record.status).inc()
        if record.first_at is not None:
            self.ttft.labels(record.model, record.version).observe(record.first_at - record.started)
        self.e2e.labels(record.model, record.version).observe(duration_s)
        self.prompt_tokens.labels(record.model, record.version).inc(record.prompt_tokens)
        self.generated_tokens.labels(record.model, record.version).inc(record.completion_tokens)

    def record_refusal(self, status: str) -> None:
        """A Generate call refused before its body was read (authentication, an unreadable body)."""
        self.requests.labels("", "", "", status).inc()

    def watch(self, queue_depth: Callable[[], float], replica_states: Callable[[], dict[str, int]]) -> None:
        self.queue_depth.set_function(queue_depth)
        for state in ("available", "admitted", "draining", "ejected", "pending"):
            self.replicas.labels(state).set_function(lambda s=state: replica_states().get(s, 0))

    def show_weights(self, weights: dict[str, dict[str, float]]) -> None:
        self.version_weight.clear()
        for model, table in weights.items():
            for version, weight in table.items():
                self.version_weight.labels(model, version).set(weight)

    def serve(self, port: int, host: str = "0.0.0.0") -> int:
        """Start the /metrics HTTP endpoint on a daemon thread; returns the bound port."""
        return serve_registry(self.registry, port, host)

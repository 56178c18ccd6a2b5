"""Prometheus metrics of a replica (and, with other labels, the gateway), on their own registry.

    tandem_requests_total{model, status}           every Generate call by its final gRPC status, refusals
                                                   included (model "" when the body was never read)
    tandem_time_to_first_token_seconds{model}      histogram
    tandem_inter_token_latency_seconds{model}      histogram, per token after the first
    tandem_e2e_latency_seconds{model}              histogram, whole stream
    tandem_prompt_tokens_total{model}, tandem_generated_tokens_total{model}
    tandem_running_requests{model}, tandem_waiting_requests{model}   gauges read from the engines
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

if TYPE_CHECKING:
    from cloud_service.front_door.access_log import CallRecord

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
TOKEN_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


class ServerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("tandem_requests", "Finished Generate calls.", ["model", "status"], registry=r)
        self.ttft = Histogram("tandem_time_to_first_token_seconds", "Time to first token.", ["model"],
                              buckets=LATENCY_BUCKETS, registry=r)
        self.inter_token = Histogram("tandem_inter_token_latency_seconds", "Time between tokens.", ["model"],
                                     buckets=TOKEN_BUCKETS, registry=r)
        self.e2e = Histogram("tandem_e2e_latency_seconds", "Whole request.", ["model"], buckets=LATENCY_BUCKETS,
                             registry=r)
        self.prompt_tokens = Counter("tandem_prompt_tokens", "Prompt tokens processed.", ["model"], registry=r)
        self.generated_tokens = Counter("tandem_generated_tokens", "Tokens generated.", ["model"], registry=r)
        self.running = Gauge("tandem_running_requests", "Requests generating.", ["model"], registry=r)
        self.waiting = Gauge("tandem_waiting_requests", "Requests queued (queue depth).", ["model"], registry=r)

    def record_call(self, record: CallRecord, duration_s: float) -> None:
        """A finished Generate call (the time to its first token was observed as it came)."""
        self.requests.labels(record.model, record.status).inc()
        self.e2e.labels(record.model).observe(duration_s)
        self.prompt_tokens.labels(record.model).inc(record.prompt_tokens)
        self.generated_tokens.labels(record.model).inc(record.completion_tokens)

    def record_refusal(self, status: str) -> None:
        """A Generate call refused before its body was read (authentication, an unreadable body)."""
        self.requests.labels("", status).inc()

    def watch_engine(self, model: str, running: Callable[[], float], waiting: Callable[[], float]) -> None:
        self.running.labels(model).set_function(running)
        self.waiting.labels(model).set_function(waiting)

    def serve(self, port: int, host: str = "0.0.0.0") -> int:
        """Start the /metrics HTTP endpoint on a daemon thread; returns the bound port."""
        return serve_registry(self.registry, port, host)


def serve_registry(registry: CollectorRegistry, port: int, host: str = "0.0.0.0") -> int:
    """Serve ``registry`` at /metrics over HTTP on a daemon thread; returns the bound port."""
    server, _ = start_http_server(port, addr=host, registry=registry)
    return int(server.server_port)

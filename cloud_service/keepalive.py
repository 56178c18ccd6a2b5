"""HTTP/2 keepalive settings shared by our gRPC clients and servers.

Streams run for seconds to minutes over long-lived connections. When a peer vanishes without closing its
connection (a node lost, a NAT or load balancer silently dropping the flow), nothing arrives and nothing
fails: without pings a stream would hang until its deadline. Clients ping during calls every
``PING_INTERVAL_MS`` and give the connection up after ``PING_TIMEOUT_MS`` without an answer, so a dead peer
surfaces as UNAVAILABLE within about half a minute (and the SDK or gateway continues elsewhere). No pings
while idle: a phone's radio is not woken for nothing. Servers accept pings that often (gRPC's default would
answer a client pinging more than once every 5 minutes with GOAWAY "too_many_pings").
"""

from __future__ import annotations

PING_INTERVAL_MS = 20_000
PING_TIMEOUT_MS = 10_000
SERVER_MIN_PING_INTERVAL_MS = 10_000
"""Half the clients' interval: pings from a slightly faster clock are never counted as abuse."""

CLIENT_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.keepalive_time_ms", PING_INTERVAL_MS),
    ("grpc.keepalive_timeout_ms", PING_TIMEOUT_MS),
    ("grpc.keepalive_permit_without_calls", 0),
    ("grpc.http2.max_pings_without_data", 0),  # a long silent generation (prefill) is still a live call
)
SERVER_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.http2.min_recv_ping_interval_without_data_ms", SERVER_MIN_PING_INTERVAL_MS),
    ("grpc.http2.min_ping_interval_without_data_ms", SERVER_MIN_PING_INTERVAL_MS),
    ("grpc.http2.max_ping_strikes", 2),
)

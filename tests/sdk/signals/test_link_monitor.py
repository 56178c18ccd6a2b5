"""The link monitor against a real gRPC health server on loopback: UP after a check, RTT smoothed, a single
failed check absorbed, DOWN after N, UP again after M, reports from real requests, TLS, API key, and a
prompt close even with a check hanging in flight."""

from __future__ import annotations

import datetime
import threading
import time
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from cloud_service.client import ClientTls
from sdk.signals import CloudLink, Link, LinkMonitor, SignalError, SignalsClosedError
from tests.sdk.signals.health_server import NOT_SERVING, SERVING, HealthServer, wait_until

FAST = {"interval_s": 0.05, "timeout_s": 2.0}
QUICK_CLOSE_S = 1.5
"""close() must end well before the monitor's interval or its check's deadline (both far longer here)."""


def test_building_a_monitor_connects_nowhere(health_server: HealthServer) -> None:
    monitor = LinkMonitor(health_server.target)
    assert not monitor.connected
    assert monitor.link == CloudLink(Link.UNKNOWN, None, 0)
    assert health_server.health.metadata == []
    monitor.close()
    assert monitor.probe_now() == CloudLink(Link.UNKNOWN, None, 0)  # closed: no check, no channel
    assert not monitor.connected


def test_up_after_a_check_with_a_smoothed_round_trip(health_server: HealthServer) -> None:
    with LinkMonitor(health_server.target, rtt_alpha=0.5) as monitor:
        first = monitor.probe_now()
        assert first.state is Link.UP
        assert first.rtt_ms is not None and first.rtt_ms > 0
        assert first.last_error is None
        second = monitor.probe_now()
        assert second.rtt_ms is not None and second.rtt_ms > 0
        # the EWMA folds a reported round trip in with the named weight
        assert monitor.report_success(rtt_ms=1000.0).rtt_ms == pytest.approx(0.5 * 1000 + 0.5 * second.rtt_ms)


def test_hysteresis_against_a_server_that_stops_serving(health_server: HealthServer) -> None:
    monitor = LinkMonitor(health_server.target, down_after=2, up_after=3)
    try:
        assert monitor.probe_now().state is Link.UP
        health_server.set(NOT_SERVING)
        blip = monitor.probe_now()
        assert (blip.state, blip.consecutive_failures, blip.last_error) == (Link.UP, 1, "NOT_SERVING")
        health_server.set(SERVING)
        assert monitor.probe_now() == CloudLink(Link.UP, monitor.link.rtt_ms, 0, None)

        health_server.set(NOT_SERVING)
        assert monitor.probe_now().state is Link.UP
        assert monitor.probe_now().state is Link.DOWN
        health_server.set(SERVING)
        assert [monitor.probe_now().state for _ in range(3)] == [Link.DOWN, Link.DOWN, Link.UP]
    finally:
        monitor.close()


def test_a_named_service_follows_its_own_status(health_server: HealthServer) -> None:
    health_server.set(SERVING, "tandem.v1.Inference")
    with LinkMonitor(health_server.target, service="tandem.v1.Inference", down_after=1) as monitor:
        assert monitor.probe_now().state is Link.UP
        health_server.set(NOT_SERVING, "tandem.v1.Inference")
        assert monitor.probe_now().state is Link.DOWN
    with LinkMonitor(health_server.target, service="no.such.Service", down_after=1) as monitor:
        assert monitor.probe_now().last_error == "NOT_FOUND"


def test_outage_and_recovery_on_the_monitor_thread(health_server: HealthServer) -> None:
    monitor = LinkMonitor(health_server.target, down_after=2, up_after=2, **FAST).start()
    try:
        assert wait_until(lambda: monitor.link.state is Link.UP)
        health_server.stop()  # connections refused from now on
        assert wait_until(lambda: monitor.link.state is Link.DOWN)
        assert monitor.link.consecutive_failures >= 2
        assert monitor.link.last_error == "UNAVAILABLE"
        health_server.start()  # the same port again
        assert wait_until(lambda: monitor.link.state is Link.UP)
        assert monitor.link.consecutive_failures == 0
    finally:
        monitor.close()


def test_reports_from_real_requests_count_at_once_and_wake_a_check(health_server: HealthServer) -> None:
    seen: list[CloudLink] = []
    monitor = LinkMonitor(health_server.target, interval_s=60.0, down_after=2)
    monitor.add_listener(seen.append)
    try:
        monitor.start()
        assert wait_until(lambda: monitor.link.state is Link.UP)
        checks = len(health_server.health.metadata)
        reported = monitor.report_failure("UNAVAILABLE")
        assert (reported.state, reported.consecutive_failures, reported.last_error) == (Link.UP, 1, "UNAVAILABLE")
        assert reported in seen
        # the woken check (long before the 60 s interval) finds the server fine and clears the count
        assert wait_until(lambda: monitor.link.consecutive_failures == 0)
        assert len(health_server.health.metadata) == checks + 1
        assert monitor.report_success(rtt_ms=5.0).state is Link.UP
    finally:
        monitor.close()


def test_reported_failures_alone_take_the_link_down(health_server: HealthServer) -> None:
    with LinkMonitor(health_server.target, down_after=2, up_after=1) as monitor:
        monitor.report_failure()
        assert monitor.report_failure().state is Link.DOWN
        assert monitor.link.last_error == "reported"
        assert monitor.report_success().state is Link.UP


def test_an_unreachable_endpoint_fails_fast_within_the_deadline() -> None:
    with LinkMonitor("127.0.0.1:1", timeout_s=2.0, down_after=1) as monitor:  # port 1: refused
        started = time.monotonic()
        link = monitor.probe_now()
        assert time.monotonic() - started < 2.5
        assert (link.state, link.last_error) == (Link.DOWN, "UNAVAILABLE")


def test_the_api_key_travels_as_a_bearer_header(health_server: HealthServer) -> None:
    with LinkMonitor(health_server.target, api_key="tdm_secret") as monitor:
        monitor.probe_now()
    assert health_server.health.metadata[-1]["authorization"] == "Bearer tdm_secret"


def test_close_is_prompt_and_idempotent_even_with_a_check_hanging(health_server: HealthServer) -> None:
    health_server.health.release.clear()  # the server now holds every Check
    monitor = LinkMonitor(health_server.target, interval_s=60.0, timeout_s=30.0).start()
    assert wait_until(lambda: len(health_server.health.metadata) == 1)
    started = time.monotonic()
    monitor.close()
    assert time.monotonic() - started < QUICK_CLOSE_S
    assert monitor._thread is not None and not monitor._thread.is_alive()
    assert monitor.link.state is Link.UNKNOWN  # the cancelled check counted for nothing
    monitor.close()
    with pytest.raises(SignalsClosedError):
        monitor.start()


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"target": ""}, "target"), ({"target": "host :1"}, "target"), ({"interval_s": 0}, "interval_s"),
    ({"timeout_s": -1}, "timeout_s"), ({"down_after": 0}, "down_after"), ({"service": None}, "service"),
    ({"tls": ClientTls(ca=Path("/nonexistent/ca.pem"))}, "tls.ca"),
])
def test_settings_are_validated_when_built(kwargs: dict, field: str) -> None:
    values = {"target": "127.0.0.1:1", **kwargs}
    with pytest.raises(SignalError) as raised:
        LinkMonitor(values.pop("target"), **values)
    assert raised.value.field == field


# -- TLS -----------------------------------------------------------------------------------------------------

def _certificate(subject: str, key, issuer=None, issuer_key=None, *, ca: bool = False) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (
        x509.CertificateBuilder().subject_name(name).issuer_name(issuer.subject if issuer else name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1)).not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(subject)]), critical=False)
    return builder.sign(issuer_key or key, hashes.SHA256())


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


@pytest.fixture
def tls_server(tmp_path: Path):
    ca_key, server_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = _certificate("tandem-test-ca", ca_key, ca=True)
    server = _certificate("cloud.tandem.test", server_key, ca, ca_key)
    key_pem = server_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption())
    (tmp_path / "ca.pem").write_bytes(_pem(ca))
    other = _certificate("someone-else", ec.generate_private_key(ec.SECP256R1()), ca=True)
    (tmp_path / "other-ca.pem").write_bytes(_pem(other))
    running = HealthServer(grpc.ssl_server_credentials([(key_pem, _pem(server))])).start()
    yield running, tmp_path
    running.stop()


def test_tls_checks_the_server_against_the_given_ca(tls_server) -> None:
    server, folder = tls_server
    trusted = ClientTls(ca=folder / "ca.pem", server_name="cloud.tandem.test")
    with LinkMonitor(server.target, tls=trusted) as monitor:
        assert monitor.probe_now().state is Link.UP
    untrusted = ClientTls(ca=folder / "other-ca.pem", server_name="cloud.tandem.test")
    with LinkMonitor(server.target, tls=untrusted, down_after=1) as monitor:
        assert monitor.probe_now().state is Link.DOWN
    with LinkMonitor(server.target, down_after=1) as monitor:  # plaintext against a TLS port
        assert monitor.probe_now().state is Link.DOWN


def test_listeners_run_on_the_monitor_thread(health_server: HealthServer) -> None:
    threads: list[str] = []
    monitor = LinkMonitor(health_server.target, **FAST)
    monitor.add_listener(lambda link: threads.append(threading.current_thread().name))
    with monitor:
        assert wait_until(lambda: len(threads) >= 2)
    assert threads[0].startswith("tandem-link-monitor")

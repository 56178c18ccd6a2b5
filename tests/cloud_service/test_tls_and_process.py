"""TLS and mutual TLS on a real replica, and `tandem cloud serve` as a process: SIGTERM drains, exit 0."""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from cloud_service.auth import hash_key
from cloud_service.client import ClientTls, CloudClient
from cloud_service.config import FrontDoorConfig, ModelConfig, ServerConfig, TenantConfig, TlsConfig
from cloud_service.errors import CloudUnavailableError
from cloud_service.server import ReplicaServer
from cloud_service.servicer import ServedModel
from edge_runtime import GenerationRequest, SamplingParams, collect
from tests.support import REPO

KEY = "tdm_tls_key"
REQUEST = GenerationRequest(prompt="Hello", sampling=SamplingParams(temperature=0, max_tokens=3, ignore_eos=True))


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _issue(name: str, ca: tuple | None, *, is_ca: bool = False, san: str | None = None):
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    issuer_cert, issuer_key = ca if ca else (None, key)
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder().subject_name(subject)
        .issuer_name(issuer_cert.subject if issuer_cert else subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
    )
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(san)]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256()), key


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("pki")
    ca = _issue("tandem test CA", None, is_ca=True)
    server = _issue("replica", ca, san="replica.test")
    client = _issue("device", ca)
    files = {"ca": _pem(ca[0]), "server.crt": _pem(server[0]), "server.key": _key_pem(server[1]),
             "client.crt": _pem(client[0]), "client.key": _key_pem(client[1])}
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return {name: folder / name for name in files}


@pytest.fixture(scope="module")
def engine(tiny_llama):
    from cloud_service.engines.cpu import CpuEngine

    engine = CpuEngine(tiny_llama, name="toy")
    yield engine
    engine.close()


def _serve(config: ServerConfig, engine, body):
    async def main():
        server = ReplicaServer(config, models=[ServedModel("toy", "", engine)])
        port = await server.start()
        try:
            return await body(f"127.0.0.1:{port}")
        finally:
            await server.stop(0.1, close_engines=False)

    return asyncio.run(main())


@pytest.mark.parametrize("mutual", [False, True], ids=["tls", "mtls"])
def test_tls_and_mutual_tls(tiny_llama, engine, pki, mutual):
    tls = TlsConfig(pki["server.crt"], pki["server.key"], pki["ca"] if mutual else None)
    config = ServerConfig(models=(ModelConfig("toy", tiny_llama),),
                          front_door=FrontDoorConfig(port=0, tls=tls, tenants=(TenantConfig("acme", hash_key(KEY)),)))
    good = ClientTls(ca=pki["ca"], cert=pki["client.crt"] if mutual else None,
                     key=pki["client.key"] if mutual else None, server_name="replica.test")

    async def body(target):
        async with CloudClient(target, api_key=KEY, tls=good) as cloud:
            answer = await collect(cloud.generate(REQUEST, model="toy"))
        async with CloudClient(target, api_key=KEY, timeout_s=3) as plaintext:
            with pytest.raises(CloudUnavailableError):
                await collect(plaintext.generate(REQUEST, model="toy"))
        if mutual:  # a client without a certificate is turned away by the handshake
            anonymous = ClientTls(ca=pki["ca"], server_name="replica.test")
            async with CloudClient(target, api_key=KEY, tls=anonymous, timeout_s=3) as cloud:
                with pytest.raises(CloudUnavailableError):
                    await collect(cloud.generate(REQUEST, model="toy"))
        return answer

    assert _serve(config, engine, body).usage.completion_tokens == 3


def test_the_serve_command_drains_on_sigterm_and_exits_0(tmp_path, tiny_llama):
    config = tmp_path / "replica.toml"
    config.write_text(
        f'[server]\nport = 0\ndrain_timeout_s = 20\n[[models]]\nname = "toy"\npath = "{tiny_llama}"\n'
        f'[[tenants]]\nname = "acme"\nkey_sha256 = "{hashlib.sha256(KEY.encode()).hexdigest()}"\n'
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "tandem", "cloud", "serve", "-c", str(config)], cwd=REPO,
        stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        port = None
        deadline = time.monotonic() + 60
        while port is None and time.monotonic() < deadline:
            line = process.stderr.readline()
            if '"message": "serving"' in line:
                port = int(line.split('"port": ')[1].split(",")[0])
        assert port, "the replica did not report its port"

        async def stream_then_signal():
            async with CloudClient(f"127.0.0.1:{port}", api_key=KEY) as cloud:
                long = GenerationRequest(prompt="Hi", sampling=SamplingParams(max_tokens=200, ignore_eos=True))
                events = []
                async for event in cloud.generate(long, model="toy"):
                    events.append(event)
                    if len(events) == 1:
                        process.send_signal(signal.SIGTERM)  # drain starts while this stream runs
                return events

        events = asyncio.run(stream_then_signal())
        assert events[-1].usage.completion_tokens == 200  # the in-flight stream finished
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
        process.stderr.close()

"""TLS on both sides of the gateway: callers reach it over TLS, and it reaches a replica that requires mutual
TLS with its own client certificate (gateway.replica_tls); a gateway without that certificate cannot."""

from __future__ import annotations

import asyncio
import dataclasses
import random
from typing import Any

import pytest

from cloud_service.client import ClientTls, CloudClient
from cloud_service.config import TlsConfig
from cloud_service.errors import CloudUnavailableError
from cloud_service.gateway import GatewayServer
from cloud_service.gateway.config import ReplicaTls
from cloud_service.server import ReplicaServer
from edge_runtime import collect
from tests.cloud_service.gateway.support import ACME_KEY, MODEL, chat, gateway_config, replica_config
from tests.cloud_service.test_tls_and_process import _issue, _key_pem, _pem


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gateway-pki")
    ca = _issue("fleet CA", None, is_ca=True)
    issued = {"replica": _issue("replica", ca, san="replica.internal"),
              "gateway": _issue("gateway", ca, san="gateway.test")}
    files = {"ca.crt": _pem(ca[0])}
    for name, (cert, key) in issued.items():
        files[f"{name}.crt"], files[f"{name}.key"] = _pem(cert), _key_pem(key)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return {name: folder / name for name in files}


def _with_tls(config: Any, tls: TlsConfig) -> Any:
    """A replica's or the gateway's config with TLS on its front door."""
    return dataclasses.replace(config, front_door=dataclasses.replace(config.front_door, tls=tls))


@pytest.mark.parametrize("with_client_cert", [True, False], ids=["mtls", "no-client-cert"])
def test_tls_to_the_gateway_and_mutual_tls_to_the_replicas(pki, with_client_cert):
    async def main():
        replica_tls = TlsConfig(pki["replica.crt"], pki["replica.key"], pki["ca.crt"])
        replica = ReplicaServer(_with_tls(replica_config(), replica_tls))
        await replica.start()
        tls = ReplicaTls(ca=pki["ca.crt"], cert=pki["gateway.crt"] if with_client_cert else None,
                         key=pki["gateway.key"] if with_client_cert else None, server_name="replica.internal")
        config = gateway_config([f"127.0.0.1:{replica.port}"], replica_tls=tls)
        config = _with_tls(config, TlsConfig(pki["gateway.crt"], pki["gateway.key"]))
        gateway = GatewayServer(config, rng=random.Random(0))
        await gateway.start()
        client_tls = ClientTls(ca=pki["ca.crt"], server_name="gateway.test")
        try:
            async with CloudClient(f"127.0.0.1:{gateway.port}", api_key=ACME_KEY, tls=client_tls,
                                   timeout_s=5) as cloud:
                if with_client_cert:
                    return await collect(cloud.generate(chat(0, tokens=3), model=MODEL))
                with pytest.raises(CloudUnavailableError):  # the replica's handshake turns the gateway away
                    await collect(cloud.generate(chat(0, tokens=3), model=MODEL))
                return None
        finally:
            await gateway.stop(0.1)
            await replica.stop(0.1)

    answer = asyncio.run(main())
    if with_client_cert:
        assert answer.usage.completion_tokens == 3

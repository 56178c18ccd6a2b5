"""The client end of a connection: the API key's metadata (and the server's reading of it), trailing-metadata
lookup, and TLS files read once with the field named when one is missing."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from cloud_service.channel import (
    AUTH_METADATA,
    ClientTls,
    bearer_key,
    bearer_metadata,
    channel_options,
    open_channel,
    open_sync_channel,
    trailing_value,
)
from cloud_service.errors import ConfigError, TlsFileError
from tests.cloud_service.test_tls_and_process import _issue, _pem


def test_the_bearer_header_round_trips_and_no_key_sends_nothing():
    assert bearer_metadata("tdm_k") == ((AUTH_METADATA, "Bearer tdm_k"),)
    assert bearer_metadata(None) == () and bearer_metadata("") == ()
    assert bearer_key([("x-other", "1"), *bearer_metadata("tdm_k")]) == "tdm_k"
    assert bearer_key([(AUTH_METADATA, "Basic abc")]) is None and bearer_key(None) is None


def test_the_bearer_scheme_is_matched_in_any_case_and_an_empty_key_is_none():
    for scheme in ("bearer", "BEARER", "Bearer", "bEaReR"):
        assert bearer_key([(AUTH_METADATA, f"{scheme} tdm_k")]) == "tdm_k"
    assert bearer_key([(AUTH_METADATA, "Bearer  ")]) is None and bearer_key([(AUTH_METADATA, "Bearertdm_k")]) is None


def test_trailing_values_are_found_and_decoded():
    metadata = (("retry-after-ms", b"1500"), ("tandem-draining", "1"))
    assert trailing_value(metadata, "retry-after-ms") == "1500"
    assert trailing_value(metadata, "tandem-draining") == "1"
    assert trailing_value(metadata, "missing") is None and trailing_value(None, "x") is None


def test_a_missing_tls_file_is_a_config_error_naming_the_field(tmp_path):
    tls = ClientTls(ca=tmp_path / "nope.pem")
    with pytest.raises(TlsFileError, match="tls.ca: cannot read") as caught:
        tls.credentials()
    assert isinstance(caught.value, ConfigError) and caught.value.field == "tls.ca"


def test_channels_of_both_apis_dial_with_tls_and_the_name_override(tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_bytes(_pem(_issue("test CA", None, is_ca=True)[0]))
    tls = ClientTls(ca=ca, server_name="replica.internal")
    assert ("grpc.ssl_target_name_override", "replica.internal") in channel_options(tls)
    assert channel_options(None, [("a", 1)]) == [("a", 1)]
    credentials = tls.credentials()  # read once, early; the channels reuse it
    sync = open_sync_channel("127.0.0.1:1", tls, credentials=credentials)
    assert isinstance(sync, grpc.Channel)
    sync.close()

    async def dial() -> None:
        async with open_channel("127.0.0.1:1", tls, credentials=credentials), open_channel("127.0.0.1:1"):
            pass

    asyncio.run(dial())

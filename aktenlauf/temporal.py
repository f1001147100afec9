"""Connecting to Temporal with the settings: TLS, API key, and the encrypting payload codec."""

from __future__ import annotations

import dataclasses

from temporalio.client import Client, TLSConfig
from temporalio.converter import default as default_converter

from aktenlauf.codec import EncryptionCodec
from aktenlauf.settings import Settings


def data_converter(settings: Settings):  # type: ignore[no-untyped-def]
    return dataclasses.replace(default_converter(), payload_codec=EncryptionCodec(settings.payload_key_ring()))


async def connect(settings: Settings) -> Client:
    tls: TLSConfig | bool = False
    if settings.temporal_tls:
        tls = TLSConfig(
            server_root_ca_cert=settings.temporal_tls_ca_cert.read_bytes() if settings.temporal_tls_ca_cert else None,
            client_cert=settings.temporal_tls_client_cert.read_bytes() if settings.temporal_tls_client_cert else None,
            client_private_key=settings.temporal_tls_client_key.read_bytes() if settings.temporal_tls_client_key else None,
        )
    return await Client.connect(
        settings.temporal_address, namespace=settings.temporal_namespace, tls=tls,
        api_key=settings.temporal_api_key, data_converter=data_converter(settings),
    )

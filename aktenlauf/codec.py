"""AES-GCM payload codec: personal data never reaches the Temporal database in plaintext.

Every payload is encrypted with the active key; the key id travels in the payload
metadata so that older payloads stay readable after a key rotation (keep old keys in
PAYLOAD_KEYS behind the new active one).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from temporalio.api.common.v1 import Payload
from temporalio.converter import PayloadCodec

ENCODING = b"binary/encrypted-aesgcm"


class EncryptionCodec(PayloadCodec):
    def __init__(self, key_ring: Sequence[tuple[str, bytes]]) -> None:
        if not key_ring:
            raise ValueError("empty key ring")
        self._active_kid, active = key_ring[0]
        self._active = AESGCM(active)
        self._keys = {kid: AESGCM(key) for kid, key in key_ring}

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self._encrypt(p) for p in payloads]

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self._decrypt(p) for p in payloads]

    def _encrypt(self, payload: Payload) -> Payload:
        nonce = os.urandom(12)
        sealed = self._active.encrypt(nonce, payload.SerializeToString(), self._active_kid.encode())
        return Payload(
            metadata={"encoding": ENCODING, "encryption-key-id": self._active_kid.encode()},
            data=nonce + sealed,
        )

    def _decrypt(self, payload: Payload) -> Payload:
        if payload.metadata.get("encoding") != ENCODING:
            return payload
        kid = payload.metadata["encryption-key-id"].decode()
        aead = self._keys.get(kid)
        if aead is None:
            raise ValueError(f"payload encrypted with unknown key id {kid!r}")
        plain = aead.decrypt(payload.data[:12], payload.data[12:], kid.encode())
        out = Payload()
        out.ParseFromString(plain)
        return out


"""Verified reads of objects larger than one read chunk (the SHA-256 is computed in a helper
thread while the next chunk is read), held in memory or spooled to disk, and uploads spooled
once (hash computed while copying): every read still refuses a mismatch, nothing is sent
before the whole object is verified, nothing half-stored."""

from __future__ import annotations

import hashlib
import io
import os
import struct
import zlib

import pytest

import eakte.blobstore as blobstore
from aktenlauf.errors import IntegrityViolation
from eakte.blobstore import READ_CHUNK, object_key
from tests.integration.helpers import MELDE, application, wait_for_case

BIG = 2 * READ_CHUNK + 12_345  # three chunks, the last one short


def _forge_one_byte(store, key: str) -> bytes:  # type: ignore[no-untyped-def]
    """Flip one byte in the middle, behind the eAkte's back: same size, other hash. Returns the
    original bytes, for tests whose object a recorded Version points to (restore them: later
    tests check every stored version of the shared stack)."""
    resp = store.client.get_object(store.bucket, key)
    original = resp.read()
    resp.close()
    resp.release_conn()
    data = bytearray(original)
    data[len(data) // 2] ^= 0x01
    store.client.put_object(store.bucket, key, io.BytesIO(bytes(data)), len(data))
    return original


def _png(size: int) -> bytes:
    width = 512
    row = 1 + 3 * width
    height = size // row
    raw = bytearray(os.urandom(row * height))
    raw[::row] = bytes(height)

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(bytes(raw), 0)) + chunk(b"IEND", b""))


def test_a_large_object_reads_back_verified_in_memory_and_a_forged_byte_is_refused(stack) -> None:
    store = stack.store()
    data = os.urandom(BIG)
    ref = store.put_bytes(data)
    before = blobstore._MEMORY.used
    with store.read_verified(ref.key, ref.sha256) as content:
        assert content.in_memory and content.size == BIG
        assert b"".join(content.chunks or []) == data
        assert blobstore._MEMORY.used == before + BIG
    assert blobstore._MEMORY.used == before
    assert b"".join(store.iter_verified(ref.key, ref.sha256)) == data

    _forge_one_byte(store, ref.key)
    with pytest.raises(IntegrityViolation):
        store.read_verified(ref.key, ref.sha256)
    assert blobstore._MEMORY.used == before  # the refused read gave its reservation back
    with pytest.raises(IntegrityViolation):
        store.get_bytes(ref.key, ref.sha256)
    seen: list[bytes] = []
    with pytest.raises(IntegrityViolation):
        for chunk in store.iter_verified(ref.key, ref.sha256):
            seen.append(chunk)
    assert sum(map(len, seen)) == BIG  # streamed, and refused at the end
    store.remove(ref.key)


def test_past_the_memory_budget_a_read_is_spooled_to_disk_and_still_verified(stack, monkeypatch) -> None:
    store = stack.store()
    data = os.urandom(BIG)
    ref = store.put_bytes(data)
    monkeypatch.setattr(blobstore, "_MEMORY", blobstore._MemoryBudget(BIG - 1))
    with store.read_verified(ref.key, ref.sha256) as content:
        assert not content.in_memory
        assert content.read() == data
    assert blobstore._MEMORY.used == 0
    _forge_one_byte(store, ref.key)
    with pytest.raises(IntegrityViolation):
        store.read_verified(ref.key, ref.sha256)
    store.remove(ref.key)


def test_an_upload_spooled_once_is_stored_under_its_hash_and_a_too_large_one_not_at_all(stack) -> None:
    store = stack.store()
    data = os.urandom(BIG)
    with store.spool(io.BytesIO(data), max_bytes=BIG, suffix=".bin") as spooled:
        assert spooled.path.read_bytes() == data
        assert spooled.sha256 == hashlib.sha256(data).hexdigest() and spooled.size == BIG
        ref = store.put_spooled(spooled)
        folder = spooled.path.parent
    assert not folder.exists()  # the private copy is gone
    assert ref.key == object_key(hashlib.sha256(data).hexdigest())
    assert store.get_bytes(ref.key, ref.sha256) == data

    bigger = os.urandom(BIG + 1)
    with pytest.raises(ValueError, match="too large"):
        with store.spool(io.BytesIO(bigger), max_bytes=BIG):
            pytest.fail("a too large stream must not be handed out")
    assert not store.exists(object_key(hashlib.sha256(bigger).hexdigest()))
    store.remove(ref.key)


async def test_a_large_document_downloads_whole_and_a_forged_one_answers_500_without_its_bytes(stack) -> None:
    portal = stack.token("portal-bigread", "integrator")
    payload = _png(BIG)
    async with stack.client() as http:
        r = await http.post("/v1/cases", json=application(MELDE), headers=portal)
        case_id = r.json()["case_id"]
        await wait_for_case(http, case_id, portal, status="awaiting_decision")
        up = await http.post(f"/v1/cases/{case_id}/documents", headers=portal,
                             files={"file": ("gross.png", payload, "image/png")})
        assert up.status_code == 201, up.text
        doc_id, sha = up.json()["document_id"], up.json()["sha256"]
        dl = await http.get(f"/v1/documents/{doc_id}/content", headers=portal)
        assert dl.status_code == 200
        assert dl.content == payload and dl.headers["x-content-sha256"] == sha
        assert int(dl.headers["content-length"]) == len(payload)

        store = stack.store()
        original = _forge_one_byte(store, object_key(sha))
        try:
            bad = await http.get(f"/v1/documents/{doc_id}/content", headers=portal)
            assert bad.status_code == 500
            assert bad.headers["content-type"].startswith("application/problem+json")
            assert bad.json()["type"].endswith("integrity-violation")
            assert len(bad.content) < 4096  # a problem document, not the object's bytes
        finally:
            store.client.put_object(store.bucket, object_key(sha), io.BytesIO(original), len(original))

"""The eAkte's guarantees: unique Aktenzeichen under concurrency, hash-verified reads,
no personal data in Temporal's history."""

from __future__ import annotations

import concurrent.futures
import io
import uuid

import pytest
from sqlalchemy import select

from aktenlauf.errors import IntegrityViolation
from eakte import records
from eakte.db import transaction
from eakte.models import AuditEvent, Dokument, Version
from tests.integration.helpers import HUND, application, wait_for_case


def test_aktenzeichen_are_unique_under_parallel_allocation(stack) -> None:
    sessions = stack.sessions()
    plan = f"{uuid.uuid4().int % 90 + 10}.99"

    def allocate(_: int) -> int:
        with transaction(sessions) as s:
            return records.next_sequence(s, plan, 2026)

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        seqs = list(pool.map(allocate, range(80)))
    assert sorted(seqs) == list(range(1, 81))


def test_a_tampered_object_is_refused_on_read(stack) -> None:
    store = stack.store()
    ref = store.put_bytes(b"Original content " + uuid.uuid4().bytes, "text/plain")
    assert store.get_bytes(ref.key, ref.sha256).startswith(b"Original")
    # tamper directly in the S3 server, behind the eAkte's back
    store.client.put_object(store.bucket, ref.key, io.BytesIO(b"forged"), 6)
    with pytest.raises(IntegrityViolation):
        store.get_bytes(ref.key, ref.sha256)
    store.remove(ref.key)


async def test_downloading_a_tampered_document_answers_500_and_is_audited(stack) -> None:
    portal = stack.token("portal-tamper", "integrator")
    async with stack.client() as http:
        r = await http.post("/v1/cases", json=application(HUND), headers=portal)
        case = await wait_for_case(http, r.json()["case_id"], portal, status="completed")
        cert = next(d for d in case["documents"] if d["kind"] == "Urkunde")
        store = stack.store()
        with stack.sessions()() as s:
            v = s.scalar(select(Version).where(Version.dokument_id == cert["id"]))
        original = store.client.get_object(store.bucket, v.object_key).read()
        store.client.put_object(store.bucket, v.object_key, io.BytesIO(b"%PDF-forged"), 11)
        try:
            dl = await http.get(cert["download_url"], headers=portal)
            assert dl.status_code == 500
            assert dl.json()["type"].endswith("integrity-violation")
        finally:  # later tests check every stored object of the shared stack
            store.client.put_object(store.bucket, v.object_key, io.BytesIO(original), len(original))
    with stack.sessions()() as s:
        actions = list(s.scalars(select(AuditEvent.action).where(AuditEvent.target_id == cert["id"])))
    assert "document.integrity_failed" in actions


async def test_every_document_read_is_audited(stack) -> None:
    portal = stack.token("portal-audit", "integrator")
    async with stack.client() as http:
        r = await http.post("/v1/cases", json=application(HUND), headers=portal)
        case = await wait_for_case(http, r.json()["case_id"], portal, status="completed")
        doc = case["documents"][0]
        assert (await http.get(doc["download_url"], headers=portal)).status_code == 200
    with stack.sessions()() as s:
        events = list(s.scalars(select(AuditEvent).where(AuditEvent.target_id == doc["id"],
                                                         AuditEvent.action == "document.read")))
    assert [(e.actor, e.role) for e in events] == [("portal-audit", "integrator")]


async def test_temporal_history_holds_no_plaintext_personal_data(stack) -> None:
    portal = stack.token("portal-pii", "integrator")
    name, street = "Zacharias Geheimnisträger", "Verborgene Gasse 17"
    body = application(HUND, name=name)
    body["applicant"]["address_lines"] = [street, "12345 Musterstadt"]
    async with stack.client() as http:
        r = await http.post("/v1/cases", json=body, headers=portal)
        await wait_for_case(http, r.json()["case_id"], portal, status="completed")
    from temporalio.client import Client

    raw = await Client.connect(stack.settings.temporal_address, namespace=stack.settings.temporal_namespace)
    history = await raw.get_workflow_handle(r.json()["case_id"]).fetch_history()
    blob = history.to_json()
    assert "Zacharias" not in blob and "Verborgene" not in blob
    assert "encryption-key-id" in blob or "ZW5jcnlwdGlvbi1rZXktaWQ" in blob  # payloads are sealed
    with stack.sessions()() as s:  # ...while the eAkte itself has them
        assert s.scalar(select(Dokument).where(Dokument.vorgang_id == r.json()["case_id"])) is not None

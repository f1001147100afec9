"""The backbone end to end through the HTTP API, against the real servers."""

from __future__ import annotations

import hashlib
import uuid

from pypdf import PdfReader
from sqlalchemy import func, select

from eakte.models import Akte, Dispatch, Dokument, Version
from tests.integration.helpers import HUND, MAENGEL, MELDE, application, pay, wait_for_case

PORTAL = ("portal-1", "integrator")


def key(stack, name: str) -> str:  # type: ignore[no-untyped-def]
    """Idempotency keys unique per stack: both database backends share one Temporal server."""
    return f"{name}-{stack.settings.task_queue}"
CLERK = ("clerk-bb", "clerk", "buergerbuero")


async def test_meldebescheinigung_from_submission_to_downloaded_certificate(stack) -> None:
    portal, clerk = stack.token(*PORTAL), stack.token(*CLERK)
    async with stack.client() as http:
        r = await http.post("/v1/cases", json=application(), headers={**portal, "Idempotency-Key": key(stack, "happy")})
        assert r.status_code == 201, r.text
        created = r.json()
        case_id, az = created["case_id"], created["aktenzeichen"]
        assert az.startswith("32.10-")

        up = await http.post(f"/v1/cases/{case_id}/documents", headers=portal,
                             files={"file": ("ausweis.pdf", _tiny_pdf(), "application/pdf")}, data={"kind": "Nachweis"})
        assert up.status_code == 201, up.text

        case = await wait_for_case(http, case_id, portal, status="awaiting_decision")
        assert case["department"] == "buergerbuero"
        tasks = (await http.get("/v1/tasks", headers=clerk)).json()
        assert case_id in [t["case_id"] for t in tasks]

        d = await http.post(f"/v1/cases/{case_id}/decision", json={"decision": "approve"}, headers=clerk)
        assert d.status_code == 200, d.text
        assert d.json()["status"] == "awaiting_payment"
        payment_url = d.json()["payment_url"]
        assert payment_url

        await pay(http, payment_url)
        done = await wait_for_case(http, case_id, portal, status="completed")

        certs = [doc for doc in done["documents"] if doc["kind"] == "Urkunde"]
        assert len(certs) == 1
        dl = await http.get(certs[0]["download_url"], headers=portal)
        assert dl.status_code == 200
        assert dl.headers["content-type"] == "application/pdf"
        assert hashlib.sha256(dl.content).hexdigest() == certs[0]["sha256"] == dl.headers["x-content-sha256"]
        text = "".join(p.extract_text() for p in PdfReader(__import__("io").BytesIO(dl.content)).pages)
        assert az in text and "Erika Mustermann" in text

        steps = [e["step"] for e in done["timeline"]]
        for step in ("intake", "routing", "decision", "payment", "certificate", "dispatch", "archive"):
            assert step in steps

    with stack.sessions()() as s:
        assert s.scalar(select(func.count()).select_from(Dispatch).where(Dispatch.vorgang_id == case_id)) == 1
        akte = s.scalar(select(Akte).where(Akte.aktenzeichen == az))
        assert akte.status == "closed" and akte.retention_until is not None
        assert akte.retention_until.year == akte.closed_at.year + 5
        kinds = sorted(d.kind for d in s.scalars(select(Dokument).where(Dokument.vorgang_id == case_id)))
        assert kinds == ["Antrag", "Nachweis", "Urkunde", "Vermerk"]  # Vermerk: the clerk's decision


async def test_verification_code_confirms_a_certificate_without_personal_data(stack) -> None:
    portal = stack.token(*PORTAL)
    async with stack.client() as http:
        r = await http.post("/v1/cases", json=application(HUND, name="Hasso Halter"), headers=portal)
        case = await wait_for_case(http, r.json()["case_id"], portal, status="completed")
        cert = next(d for d in case["documents"] if d["kind"] == "Urkunde")
        with stack.sessions()() as s:
            code = s.get(Dokument, cert["id"]).verification_code
        v = await http.get(f"/v1/verify/{code}")
        assert v.status_code == 200
        assert v.json()["sha256"] == cert["sha256"]
        assert "Hasso" not in v.text
        assert (await http.get("/v1/verify/AAAA-BBBB-CCCC")).status_code == 404


async def test_rejection_needs_a_reason_and_ends_with_a_notice(stack) -> None:
    portal, clerk = stack.token(*PORTAL), stack.token(*CLERK)
    async with stack.client() as http:
        case_id = (await http.post("/v1/cases", json=application(), headers=portal)).json()["case_id"]
        await wait_for_case(http, case_id, portal, status="awaiting_decision")
        no_reason = await http.post(f"/v1/cases/{case_id}/decision", json={"decision": "reject"}, headers=clerk)
        assert no_reason.status_code == 422
        assert no_reason.headers["content-type"].startswith("application/problem+json")
        r = await http.post(f"/v1/cases/{case_id}/decision",
                            json={"decision": "reject", "reason": "Keine Wohnung in Musterstadt gemeldet."},
                            headers=clerk)
        assert r.status_code == 200 and r.json()["status"] == "rejected"
        again = await http.post(f"/v1/cases/{case_id}/decision", json={"decision": "approve"}, headers=clerk)
        assert again.status_code == 409
        done = await wait_for_case(http, case_id, portal, status="rejected")
        notices = [d for d in done["documents"] if d["kind"] == "Bescheid"]
        assert len(notices) == 1 and not [d for d in done["documents"] if d["kind"] == "Urkunde"]
        pdf = (await http.get(notices[0]["download_url"], headers=portal)).content
        text = "".join(p.extract_text() for p in PdfReader(__import__("io").BytesIO(pdf)).pages)
        assert "Keine Wohnung in Musterstadt gemeldet." in " ".join(text.split())
        assert done["closed_at"] is not None


async def test_defect_report_needs_no_fee_and_issues_no_certificate(stack) -> None:
    portal = stack.token(*PORTAL)
    async with stack.client() as http:
        r = await http.post("/v1/cases", json=application(MAENGEL, Ort="Gehweg Lindenallee 3", Mangel="Schlagloch"),
                            headers=portal)
        case = await wait_for_case(http, r.json()["case_id"], portal, status="completed")
        assert [d["kind"] for d in case["documents"]] == ["Antrag"]
        assert case["department"] == "bauhof" and case["payment_status"] is None


async def test_same_idempotency_key_twice_makes_one_case_and_a_different_body_conflicts(stack) -> None:
    portal = stack.token(*PORTAL)
    body = application()
    async with stack.client() as http:
        first = await http.post("/v1/cases", json=body, headers={**portal, "Idempotency-Key": key(stack, "dup-42")})
        second = await http.post("/v1/cases", json=body, headers={**portal, "Idempotency-Key": key(stack, "dup-42")})
        assert first.status_code == second.status_code == 201
        assert first.json()["case_id"] == second.json()["case_id"]
        assert first.json()["aktenzeichen"] == second.json()["aktenzeichen"]
        other = await http.post("/v1/cases", json=application(name="Max Muster"),
                                headers={**portal, "Idempotency-Key": key(stack, "dup-42")})
        assert other.status_code == 409
        assert other.headers["content-type"].startswith("application/problem+json")
        # another integrator's key space is separate
        third = await http.post("/v1/cases", json=body,
                                headers={**stack.token("portal-2", "integrator"), "Idempotency-Key": key(stack, "dup-42")})
        assert third.status_code == 201 and third.json()["case_id"] != first.json()["case_id"]
    with stack.sessions()() as s:
        assert s.scalar(select(func.count()).select_from(Akte).where(
            Akte.aktenzeichen == first.json()["aktenzeichen"])) == 1


async def test_idempotency_key_of_a_finished_case_still_answers_that_case(stack) -> None:
    portal = stack.token(*PORTAL)
    body = application(MAENGEL, Mangel="Laterne defekt")
    async with stack.client() as http:
        first = (await http.post("/v1/cases", json=body, headers={**portal, "Idempotency-Key": key(stack, "fin")})).json()
        await wait_for_case(http, first["case_id"], portal, status="completed")
        again = await http.post("/v1/cases", json=body, headers={**portal, "Idempotency-Key": key(stack, "fin")})
        assert again.status_code == 201 and again.json()["case_id"] == first["case_id"]
        changed = await http.post("/v1/cases", json=application(MAENGEL, Mangel="anders"),
                                  headers={**portal, "Idempotency-Key": key(stack, "fin")})
        assert changed.status_code == 409


async def test_unknown_service_key_is_refused_and_missing_one_goes_to_triage(stack) -> None:
    portal, mailroom = stack.token(*PORTAL), stack.token("post-1", "mailroom")
    async with stack.client() as http:
        bad = await http.post("/v1/cases", json=application("12345678901234"), headers=portal)
        assert bad.status_code == 422
        r = await http.post("/v1/cases", json=application(None), headers=portal)
        assert r.status_code == 201
        case = await wait_for_case(http, r.json()["case_id"], portal, status="triage")
        assert case["department"] is None
        assert (await http.get(f"/v1/cases/{case['case_id']}", headers=mailroom)).status_code == 200


async def test_the_mailroom_routes_a_case_without_service_and_it_runs_its_course(stack) -> None:
    portal, mailroom = stack.token(*PORTAL), stack.token("post-1", "mailroom")
    async with stack.client() as http:
        case_id = (await http.post("/v1/cases", json=application(None, Anliegen="Laterne kaputt"),
                                   headers=portal)).json()["case_id"]
        await wait_for_case(http, case_id, portal, status="triage")
        clerk = stack.token("clerk-bb", "clerk", "buergerbuero")
        assert (await http.post(f"/v1/cases/{case_id}/route", json={"service_key": MAENGEL},
                                headers=clerk)).status_code == 403
        assert (await http.post(f"/v1/cases/{case_id}/route", json={"service_key": "12345678901234"},
                                headers=mailroom)).status_code == 422
        r = await http.post(f"/v1/cases/{case_id}/route", json={"service_key": MAENGEL}, headers=mailroom)
        assert r.status_code == 200, r.text
        assert r.json()["department"] == "bauhof"
        again = await http.post(f"/v1/cases/{case_id}/route", json={"service_key": MAENGEL}, headers=mailroom)
        assert again.status_code in (404, 409)  # no longer in triage (and no longer the mailroom's to see)
        done = await wait_for_case(http, case_id, portal, status="completed")
        assert done["service_name"] == "Mängelmeldung" and done["department"] == "bauhof"


def _tiny_pdf() -> bytes:
    from io import BytesIO

    from reportlab.pdfgen.canvas import Canvas

    buf = BytesIO()
    c = Canvas(buf)
    c.drawString(72, 720, "Kopie Personalausweis")
    c.save()
    return buf.getvalue()


async def test_versions_are_hashed_and_point_to_stored_objects(stack) -> None:
    store = stack.store()
    with stack.sessions()() as s:
        versions = list(s.scalars(select(Version)))
    assert versions
    for v in versions[:20]:
        assert store.get_bytes(v.object_key, v.sha256)


async def test_an_upload_to_a_closed_case_is_refused_and_stores_nothing(stack) -> None:
    portal = stack.token(*PORTAL)
    async with stack.client() as http:
        r = await http.post("/v1/cases", json=application(MAENGEL, Mangel="Bank kaputt"), headers=portal)
        case_id = r.json()["case_id"]
        await wait_for_case(http, case_id, portal, status="completed")
        payload = _tiny_pdf() + uuid.uuid4().hex.encode()  # unique bytes: a new object
        sha = hashlib.sha256(payload).hexdigest()
        up = await http.post(f"/v1/cases/{case_id}/documents", headers=portal,
                             files={"file": ("spaet.pdf", payload, "application/pdf")})
        assert up.status_code == 409
        assert up.headers["content-type"].startswith("application/problem+json")
    assert not stack.store().exists(f"sha256/{sha[:2]}/{sha}")


async def test_health_readiness_and_the_public_catalog(stack) -> None:
    async with stack.client() as http:
        assert (await http.get("/healthz")).json() == {"status": "ok"}
        ready = await http.get("/readyz")
        assert ready.status_code == 200
        assert ready.json()["checks"] == {"temporal": "ok", "s3": "ok", "database": "ok"}
        services = (await http.get("/v1/services")).json()
        melde = next(s for s in services if s["key"] == MELDE)
        assert melde["department_name"] == "Bürgerbüro" and melde["fee_cents"] == 1000
        assert melde["required_documents"] and melde["processing_days"] == 5
        assert len(services) >= 6
        assert "/v1/cases" in (await http.get("/openapi.json")).json()["paths"]

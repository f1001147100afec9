"""The eAkte's access matrix, confidentiality, versions and notes, over the real stack.

Every role × own/other department × endpoint, guessed ids included: an id the caller may
not see answers exactly like an id that does not exist (404).
"""

from __future__ import annotations

import concurrent.futures
import io
import multiprocessing
import uuid

import pytest
from sqlalchemy import func, select

from eakte.models import Akte, AuditEvent, Vorgang
from tests.integration.helpers import HUND, MELDE, PDF, application, wait_for_case



def pdf(tag: str) -> bytes:
    return PDF + f"% {tag} {uuid.uuid4().hex}\n".encode()


@pytest.fixture(scope="module")
async def melde(stack) -> dict:
    """A Meldebescheinigung waiting for the Bürgerbüro's decision, with the applicant's upload."""
    portal = stack.token("portal-ra", "integrator")
    async with stack.client() as http:
        r = await http.post("/v1/cases", json=application(MELDE), headers=portal)
        assert r.status_code == 201, r.text
        case_id = r.json()["case_id"]
        await wait_for_case(http, case_id, portal, status="awaiting_decision")
        up = await http.post(f"/v1/cases/{case_id}/documents", headers=portal,
                             files={"file": ("ausweis.pdf", io.BytesIO(pdf("ausweis")), "application/pdf")})
        assert up.status_code == 201, up.text
    with stack.sessions()() as s:
        akte_id = s.scalar(select(Vorgang.akte_id).where(Vorgang.id == case_id))
    return {"case": case_id, "akte": akte_id, "doc": up.json()["document_id"]}


PRINCIPALS = {
    "admin": ("admin-ra", ["admin"], []),
    "clerk_own": ("clerk-ra-bb", ["clerk"], ["buergerbuero"]),
    "clerk_other": ("clerk-ra-sta", ["clerk"], ["standesamt"]),
    "integrator_own": ("portal-ra", ["integrator"], []),
    "integrator_other": ("portal-ra-x", ["integrator"], []),
    "mailroom": ("post-ra", ["mailroom"], []),
    "archivist": ("archiv-ra", ["archivist"], []),
}

# who sees what of an open case of the Bürgerbüro (200 = visible, 404 = indistinguishable from absent)
MATRIX = {
    #                   case  akte  doc   content(no reason)
    "admin":            (200, 200, 200, 403),
    "clerk_own":        (200, 200, 200, 200),
    "clerk_other":      (404, 404, 404, 404),
    "integrator_own":   (200, 200, 200, 200),
    "integrator_other": (404, 404, 404, 404),
    "mailroom":         (404, 404, 404, 404),
    "archivist":        (404, 404, 404, 404),
}


@pytest.mark.parametrize("who", list(MATRIX))
async def test_access_matrix_for_an_open_case(stack, melde, who) -> None:
    sub, roles, deps = PRINCIPALS[who]
    h = stack.token_for(sub, roles, deps)
    want = MATRIX[who]
    async with stack.client() as http:
        got = (
            (await http.get(f"/v1/cases/{melde['case']}", headers=h)).status_code,
            (await http.get(f"/v1/akten/{melde['akte']}", headers=h)).status_code,
            (await http.get(f"/v1/documents/{melde['doc']}", headers=h)).status_code,
            (await http.get(f"/v1/documents/{melde['doc']}/content", headers=h)).status_code,
        )
    assert got == want


@pytest.mark.parametrize("who", list(MATRIX))
async def test_guessed_ids_answer_like_ids_of_other_departments(stack, who) -> None:
    sub, roles, deps = PRINCIPALS[who]
    h = stack.token_for(sub, roles, deps)
    guess = uuid.uuid4().hex
    async with stack.client() as http:
        for url in (f"/v1/cases/case-{guess}", f"/v1/akten/{guess}", f"/v1/documents/{guess}",
                    f"/v1/documents/{guess}/content", f"/v1/documents/{guess}/versions/1/content"):
            r = await http.get(url, headers=h)
            assert r.status_code == 404, url
            assert r.headers["content-type"].startswith("application/problem+json")


async def test_admin_reads_content_only_with_a_reason_and_the_reason_is_audited(stack, melde) -> None:
    admin = stack.token("admin-reason", "admin")
    async with stack.client() as http:
        r = await http.get(f"/v1/documents/{melde['doc']}/content", headers=admin)
        assert r.status_code == 403 and "reason" in r.json()["detail"]
        r = await http.get(f"/v1/documents/{melde['doc']}/content", params={"reason": "short"}, headers=admin)
        assert r.status_code == 422
        reason = "Beschwerde 2026/17: Prüfung der Vorlage"
        r = await http.get(f"/v1/documents/{melde['doc']}/content", params={"reason": reason}, headers=admin)
        assert r.status_code == 200 and r.content.startswith(b"%PDF")
    with stack.sessions()() as s:
        ev = s.scalars(select(AuditEvent).where(AuditEvent.actor == "admin-reason",
                                                AuditEvent.action == "document.read")).all()
    assert [e.reason for e in ev] == [reason]
    assert ev[0].subject_id is not None  # the applicant concerned, for Auskunft requests


async def test_a_confidential_akte_is_seen_only_by_holders_of_its_named_roles(stack) -> None:
    portal = stack.token("portal-vs", "integrator")
    admin = stack.token("admin-vs", "admin")
    plain_clerk = stack.token("clerk-vs", "clerk", "buergerbuero")
    cleared_clerk = stack.token_for("clerk-vs-2", ["clerk", "meldegeheimnis"], ["buergerbuero"])
    async with stack.client() as http:
        r = await http.post("/v1/cases", json=application(MELDE, name="Auskunftssperre Person"), headers=portal)
        case_id = r.json()["case_id"]
        await wait_for_case(http, case_id, portal, status="awaiting_decision")
        akte_id = (await http.get(f"/v1/cases/{case_id}", headers=plain_clerk)).json()["aktenzeichen"]

        # a clerk without the named role may not lock colleagues (and themselves) out
        r = await http.put(f"/v1/akten/{akte_id}/confidentiality", headers=plain_clerk,
                           json={"confidential": True, "roles": ["meldegeheimnis"], "reason": "Auskunftssperre"})
        assert r.status_code == 403
        r = await http.put(f"/v1/akten/{akte_id}/confidentiality", headers=admin,
                           json={"confidential": True, "roles": ["clerk"], "reason": "Auskunftssperre"})
        assert r.status_code == 422  # system roles are no confidentiality roles
        r = await http.put(f"/v1/akten/{akte_id}/confidentiality", headers=admin,
                           json={"confidential": True, "roles": ["meldegeheimnis"],
                                 "reason": "Auskunftssperre nach § 51 BMG"})
        assert r.status_code == 200 and r.json()["confidential"] is True

        assert (await http.get(f"/v1/cases/{case_id}", headers=plain_clerk)).status_code == 404
        tasks = (await http.get("/v1/tasks", headers=plain_clerk)).json()
        assert case_id not in [t["case_id"] for t in tasks]
        r = await http.post(f"/v1/cases/{case_id}/decision", json={"decision": "approve"}, headers=plain_clerk)
        assert r.status_code == 404
        assert (await http.get(f"/v1/cases/{case_id}", headers=cleared_clerk)).status_code == 200
        tasks = (await http.get("/v1/tasks", headers=cleared_clerk)).json()
        assert case_id in [t["case_id"] for t in tasks]
        assert (await http.get(f"/v1/cases/{case_id}", headers=admin)).status_code == 200
        # the portal that submitted it still follows the status
        assert (await http.get(f"/v1/cases/{case_id}", headers=portal)).status_code == 200

        # a cleared clerk of the department may lift the marking again
        r = await http.put(f"/v1/akten/{akte_id}/confidentiality", headers=cleared_clerk,
                           json={"confidential": False, "reason": "Sperre aufgehoben"})
        assert r.status_code == 200
        assert (await http.get(f"/v1/cases/{case_id}", headers=plain_clerk)).status_code == 200
    with stack.sessions()() as s:
        reasons = s.scalars(select(AuditEvent.reason).where(AuditEvent.action == "akte.confidentiality",
                                                             AuditEvent.case_id == case_id)
                            .order_by(AuditEvent.seq)).all()
    assert reasons == ["Auskunftssperre nach § 51 BMG", "Sperre aufgehoben"]


async def test_a_change_is_a_new_version_and_earlier_versions_stay_readable(stack, melde) -> None:
    portal = stack.token("portal-ra", "integrator")
    first = second = b""
    async with stack.client() as http:
        first = (await http.get(f"/v1/documents/{melde['doc']}/content", headers=portal)).content
        second = pdf("ausweis, Rückseite ergänzt")
        files = {"file": ("ausweis.pdf", io.BytesIO(second), "application/pdf")}
        r = await http.post(f"/v1/documents/{melde['doc']}/versions", headers=portal, files=files)
        assert r.status_code == 422  # a reason is required
        files = {"file": ("ausweis.pdf", io.BytesIO(second), "application/pdf")}
        r = await http.post(f"/v1/documents/{melde['doc']}/versions", headers=portal, files=files,
                            data={"reason": "Rückseite fehlte"})
        assert r.status_code == 201, r.text
        from PIL import Image

        buf = io.BytesIO()
        Image.new("RGB", (40, 30), "white").save(buf, "PNG")
        png = {"file": ("foto.png", io.BytesIO(buf.getvalue()), "image/png")}  # a real PNG: only the type differs
        r = await http.post(f"/v1/documents/{melde['doc']}/versions", headers=portal, files=png,
                            data={"reason": "anderes Format"})
        assert r.status_code == 415
        detail = (await http.get(f"/v1/documents/{melde['doc']}", headers=portal)).json()
        assert [v["number"] for v in detail["versions"]] == [1, 2]
        assert detail["versions"][1]["reason"] == "Rückseite fehlte"
        assert detail["versions"][1]["created_by"] == "portal-ra"
        assert (await http.get(f"/v1/documents/{melde['doc']}/content", headers=portal)).content == second
        v1 = await http.get(detail["versions"][0]["download_url"], headers=portal)
        assert v1.status_code == 200 and v1.content == first
        stranger = stack.token("portal-ra-x", "integrator")
        r = await http.post(f"/v1/documents/{melde['doc']}/versions", headers=stranger, data={"reason": "x" * 5},
                            files={"file": ("a.pdf", io.BytesIO(pdf("x")), "application/pdf")})
        assert r.status_code == 404


async def test_internal_notes_are_documents_the_applicant_never_sees(stack, melde) -> None:
    clerk = stack.token("clerk-ra-bb", "clerk", "buergerbuero")
    portal = stack.token("portal-ra", "integrator")
    async with stack.client() as http:
        r = await http.post(f"/v1/cases/{melde['case']}/notes", headers=clerk,
                            json={"title": "Telefonat", "text": "Antragstellerin rief an, Ausweis folgt."})
        assert r.status_code == 201, r.text
        note_id = r.json()["document_id"]
        docs = (await http.get(f"/v1/cases/{melde['case']}", headers=clerk)).json()["documents"]
        assert any(d["id"] == note_id and d["kind"] == "Vermerk" for d in docs)
        body = (await http.get(f"/v1/documents/{note_id}/content", headers=clerk)).text
        assert "Ausweis folgt" in body and "clerk-ra-bb" in body
        docs = (await http.get(f"/v1/cases/{melde['case']}", headers=portal)).json()["documents"]
        assert note_id not in [d["id"] for d in docs]
        assert (await http.get(f"/v1/documents/{note_id}", headers=portal)).status_code == 404
        assert (await http.post(f"/v1/cases/{melde['case']}/notes", headers=portal,
                                json={"text": "x"})).status_code == 403
        other = stack.token("clerk-ra-sta", "clerk", "standesamt")
        assert (await http.post(f"/v1/cases/{melde['case']}/notes", headers=other,
                                json={"text": "x"})).status_code == 404


async def test_the_akte_is_filed_under_the_aktenplan(stack, melde) -> None:
    clerk = stack.token("clerk-ra-bb", "clerk", "buergerbuero")
    async with stack.client() as http:
        plan = (await http.get("/v1/aktenplan", headers=clerk)).json()
        melde_entry = next(e for e in plan if e["number"] == "32.10")
        assert melde_entry["title"] == "Meldewesen" and melde_entry["appraisal"] in "ABV"
        akte = (await http.get(f"/v1/akten/{melde['akte']}", headers=clerk)).json()
        assert akte["file_plan"] == "32.10" and akte["file_plan_title"] == "Meldewesen"
        assert akte["aktenzeichen"].startswith("32.10-")
        assert melde["case"] in [v["case_id"] for v in akte["vorgaenge"]]
        found = (await http.get("/v1/akten", params={"aktenzeichen": akte["aktenzeichen"]}, headers=clerk)).json()
        assert [a["id"] for a in found] == [melde["akte"]]
        other = stack.token("clerk-ra-sta", "clerk", "standesamt")
        assert (await http.get("/v1/akten", params={"aktenzeichen": akte["aktenzeichen"]}, headers=other)).json() == []


def _open_akten(database_url: str, plan: str, n: int, worker: int) -> list[str]:
    """Runs in a separate process: its own engine, its own transactions."""
    from eakte import records
    from eakte.db import make_engine, make_session_factory, transaction

    engine = make_engine(database_url)
    sessions = make_session_factory(engine)
    out = []
    for i in range(n):
        with transaction(sessions) as s:
            v = records.open_case(
                s, case_id=f"case-par-{plan}-{worker}-{i}-{uuid.uuid4().hex[:6]}", file_plan=plan, year=2026,
                title="Parallel", service_key=None, service_name=None, integrator="bench", applicant={},
                form={}, fingerprint="-", fee_cents=0, retention_years=1, status="received")
            out.append(v.aktenzeichen)
    engine.dispose()
    return out


def test_aktenzeichen_stay_unique_and_gapless_when_parallel_processes_open_akten(stack) -> None:
    plan = f"{uuid.uuid4().int % 80 + 10}.{uuid.uuid4().int % 90 + 10}"
    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(4, mp_context=ctx) as pool:
        futures = [pool.submit(_open_akten, stack.settings.database_url, plan, 15, w) for w in range(4)]
        numbers = [az for f in futures for az in f.result(timeout=300)]
    assert len(numbers) == len(set(numbers)) == 60
    assert sorted(int(az.rsplit("-", 1)[1]) for az in numbers) == list(range(1, 61))
    with stack.sessions()() as s:
        assert s.scalar(select(func.count()).select_from(Akte).where(Akte.file_plan == plan)) == 60


async def test_a_decision_is_filed_as_a_note_with_who_and_why(stack) -> None:
    portal = stack.token("portal-dv", "integrator")
    clerk = stack.token("clerk-dv", "clerk", "buergerbuero")
    async with stack.client() as http:
        case_id = (await http.post("/v1/cases", json=application(MELDE), headers=portal)).json()["case_id"]
        await wait_for_case(http, case_id, portal, status="awaiting_decision")
        reason = "Keine Wohnung in Musterstadt gemeldet."
        r = await http.post(f"/v1/cases/{case_id}/decision", json={"decision": "reject", "reason": reason},
                            headers=clerk)
        assert r.status_code == 200, r.text
        case = await wait_for_case(http, case_id, clerk, status="rejected")
        notes = [d for d in case["documents"] if d["kind"] == "Vermerk"]
        assert [n["title"] for n in notes] == ["Entscheidungsvermerk"]
        text = (await http.get(notes[0]["download_url"], headers=clerk)).text
        assert "Antrag abgelehnt" in text and "clerk-dv" in text and reason in text
        seen_by_portal = (await http.get(f"/v1/cases/{case_id}", headers=portal)).json()["documents"]
        assert notes[0]["id"] not in [d["id"] for d in seen_by_portal]


async def test_archivists_see_closed_akten_but_read_content_only_with_a_reason(stack) -> None:
    portal = stack.token("portal-ar", "integrator")
    archivist = stack.token("archiv-ar", "archivist")
    async with stack.client() as http:
        open_case = (await http.post("/v1/cases", json=application(MELDE), headers=portal)).json()["case_id"]
        closed_case = (await http.post("/v1/cases", json=application(HUND), headers=portal)).json()["case_id"]
        case = await wait_for_case(http, closed_case, portal, status="completed")
        await wait_for_case(http, open_case, portal, status="awaiting_decision")
        assert (await http.get(f"/v1/cases/{open_case}", headers=archivist)).status_code == 404
        seen = await http.get(f"/v1/cases/{closed_case}", headers=archivist)
        assert seen.status_code == 200
        cert = next(d for d in case["documents"] if d["kind"] == "Urkunde")
        assert (await http.get(f"/v1/documents/{cert['id']}", headers=archivist)).status_code == 200
        assert (await http.get(cert["download_url"], headers=archivist)).status_code == 403
        r = await http.get(cert["download_url"], params={"reason": "Bewertung zur Aussonderung"}, headers=archivist)
        assert r.status_code == 200 and r.content.startswith(b"%PDF")

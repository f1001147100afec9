"""The citizen's status page: GET /v1/status/{aktenzeichen} with the access code.

Public milestones only — never clerk names, notes, reasons, audit data; a wrong code is
indistinguishable from an unknown Aktenzeichen; guessing is throttled with 429.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from typing import Any

import pytest
from sqlalchemy import select, update

from eakte.inbox import access_code
from eakte.models import TimelineEvent, Vorgang
from tests.integration.helpers import MAENGEL, MELDE, application, wait_for_case


async def _start(stack, service: str = MELDE, status: str = "awaiting_decision", **form: str) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    portal = stack.token("portal-status", "integrator")
    async with stack.client() as http:
        r = await http.post("/v1/cases", json=application(service, **form), headers=portal,
                            params=None)
        assert r.status_code == 201, r.text
        created = r.json()
        await wait_for_case(http, created["case_id"], portal, status=status)
    code = access_code(stack.settings.certificate_code_secret, created["case_id"])
    if created.get("access_code") is not None:  # the submission answers the same code
        assert created["access_code"] == code
    return {**created, "code": code}


def _code_header(code: str) -> dict[str, str]:
    return {"X-Access-Code": code}


def _event(stack, case_id: str, step: str, status: str, message: str, public: bool = True) -> None:  # type: ignore[no-untyped-def]
    with stack.sessions()() as s, s.begin():
        s.add(TimelineEvent(key=f"{case_id}:test:{uuid.uuid4().hex}", vorgang_id=case_id, step=step, status=status,
                            public=public, message=message))


def _set(stack, case_id: str, **cols: Any) -> None:  # type: ignore[no-untyped-def]
    with stack.sessions()() as s, s.begin():
        s.execute(update(Vorgang).where(Vorgang.id == case_id).values(**cols))


async def test_the_applicant_sees_the_public_milestones_with_the_access_code(stack) -> None:
    case = await _start(stack)
    async with stack.client() as http:
        r = await http.get(f"/v1/status/{case['aktenzeichen']}", headers=_code_header(case["code"]))
        assert r.status_code == 200, r.text
        st = r.json()
        assert st["aktenzeichen"] == case["aktenzeichen"] and st["service_name"] == "Meldebescheinigung"
        assert st["responsible_office"] == "Bürgerbüro"
        assert [m["code"] for m in st["timeline"]] == ["received", "in_progress"]
        assert [m["label"] for m in st["timeline"]] == ["Antrag eingegangen", "In Bearbeitung"]
        assert st["status"] == "in_progress" and st["waiting_for"] is None and st["payment"] is None
        # typed sloppily (lower case, a space instead of the dash): the same code
        sloppy = case["code"].replace("-", " ").lower()
        assert (await http.get(f"/v1/status/{case['aktenzeichen']}", headers=_code_header(sloppy))).status_code == 200


async def test_wrong_or_missing_code_answers_like_an_unknown_aktenzeichen(stack) -> None:
    case, other = await _start(stack), await _start(stack)
    az = case["aktenzeichen"]
    async with stack.client() as http:
        answers = {
            "wrong code": await http.get(f"/v1/status/{az}", headers=_code_header("ABCDE-FGHJK")),
            "another case's code": await http.get(f"/v1/status/{az}", headers=_code_header(other["code"])),
            "no code": await http.get(f"/v1/status/{az}"),
            "unknown Aktenzeichen": await http.get("/v1/status/99.99-2026-999999", headers=_code_header(case["code"])),
        }
        for what, r in answers.items():
            assert r.status_code == 404, (what, r.text)
            assert r.headers["content-type"].startswith("application/problem+json")
            body = r.json()
            body.pop("instance")
            assert body == {"type": "urn:aktenlauf:problem:not-found", "title": "Not found", "status": 404,
                            "detail": "no case with this Aktenzeichen and access code"}, what
        assert (await http.get("/v1/status/a%20b", headers=_code_header(case["code"]))).status_code == 422


async def test_no_internal_data_ever_reaches_the_status_page(stack) -> None:
    case = await _start(stack)
    cid, az = case["case_id"], case["aktenzeichen"]
    clerk_sub, lead_sub = "clerk-geheim-4711", "teamlead-geheim-0815"
    clerk = stack.token(clerk_sub, "clerk", "buergerbuero")
    async with stack.client() as http:
        note = await http.post(f"/v1/cases/{cid}/notes", headers=clerk,
                               json={"title": "Interner Vermerk", "text": "Nachbar hat angerufen: VERTRAULICH-NOTIZ"})
        assert note.status_code == 201, note.text
        assert (await http.post(f"/v1/tasks/{cid}/claim", headers=clerk)).status_code == 200
    # whatever a workflow step might write: internal events, a clerk's name in a public message,
    # reasons, the co-signing clerks, an escalation
    _event(stack, cid, "decision", "awaiting_decision", f"Eskaliert an {lead_sub}: INTERNE-ESKALATION", public=False)
    _event(stack, cid, "decision", "awaiting_cosign", f"Erstentscheidung durch {clerk_sub}")
    _set(stack, cid, first_decision_by=clerk_sub, cosigned_by=lead_sub, decision_reason="INTERNE-BEGRUENDUNG",
         escalated_at=dt.datetime.now(dt.UTC), priority="urgent")
    async with stack.client() as http:
        r = await http.get(f"/v1/status/{az}", headers=_code_header(case["code"]))
    assert r.status_code == 200, r.text
    text = json.dumps(r.json(), ensure_ascii=False)
    with stack.sessions()() as s:
        v = s.scalar(select(Vorgang).where(Vorgang.id == cid))
        applicant = v.applicant
    for secret in (clerk_sub, lead_sub, "VERTRAULICH-NOTIZ", "Interner Vermerk", "INTERNE-ESKALATION",
                   "INTERNE-BEGRUENDUNG", "Erstentscheidung", "Eskaliert", "urgent", "portal-status", cid,
                   applicant["name"], applicant["email"], applicant["id"], "Hauptstraße", "Vorlage beim Arbeitgeber",
                   "buergerbuero", "audit", "sha256", "document"):
        assert secret not in text, f"{secret!r} leaked into the status page: {text}"
    st = r.json()
    assert set(st) == {"aktenzeichen", "service_name", "responsible_office", "status", "status_label", "waiting_for",
                       "payment", "timeline"}
    assert all(set(m) == {"code", "label", "at", "details"} for m in st["timeline"])
    # the co-signature step is internal: for the citizen the case is simply in progress
    assert [m["code"] for m in st["timeline"]] == ["received", "in_progress"]


async def test_waiting_for_documents_and_payment_due_show_what_the_citizen_must_do(stack) -> None:
    case = await _start(stack)
    cid, az, hdr = case["case_id"], case["aktenzeichen"], _code_header(case["code"])
    until = dt.date.today() + dt.timedelta(days=14)
    _event(stack, cid, "decision", "awaiting_documents", "Unterlagen nachgefordert")
    _set(stack, cid, status="awaiting_documents", waiting_for=["Kopie Personalausweis", "Meldebestätigung"],
         waiting_until=until)
    async with stack.client() as http:
        st = (await http.get(f"/v1/status/{az}", headers=hdr)).json()
        assert st["status"] == "waiting_for_you"
        assert st["waiting_for"] == {"documents": ["Kopie Personalausweis", "Meldebestätigung"],
                                     "until": until.isoformat()}
        assert st["timeline"][-1]["details"] == st["waiting_for"]

        _event(stack, cid, "decision", "awaiting_decision", "Unterlagen eingegangen")
        _event(stack, cid, "decision", "approved", "Antrag bewilligt")
        _event(stack, cid, "payment", "awaiting_payment", "Gebühr fällig")
        _set(stack, cid, status="awaiting_payment", decision="approved", waiting_for=[], waiting_until=None,
             payment_status="open", payment_url="https://pay.example.org/p/123")
        st = (await http.get(f"/v1/status/{az}", headers=hdr)).json()
        assert [m["code"] for m in st["timeline"]] == ["received", "in_progress", "waiting_for_you", "in_progress",
                                                       "decided", "payment_due"]
        assert st["timeline"][4]["label"] == "Antrag bewilligt"
        assert st["timeline"][2]["details"] == {}  # the past request's details are not kept
        assert st["payment"] == {"amount_cents": 1000, "amount": "10,00 EUR", "currency": "EUR",
                                 "payment_url": "https://pay.example.org/p/123"}

        _event(stack, cid, "payment", "issuing", "Gebühr bezahlt")
        _event(stack, cid, "certificate", "issuing", "Bescheid wird erstellt")
        _event(stack, cid, "dispatch", "issuing", "Bescheid im Postfach bereitgestellt")
        _event(stack, cid, "archive", "completed", "Abgeschlossen")
        _set(stack, cid, status="completed", payment_status="paid")
        st = (await http.get(f"/v1/status/{az}", headers=hdr)).json()
        assert [m["label"] for m in st["timeline"]][-4:] == ["Gebühr fällig", "Gebühr bezahlt", "Bescheid zugestellt",
                                                             "Abgeschlossen"]
        assert st["status"] == "closed" and st["payment"] is None


async def test_a_maengelmeldung_reads_eingegangen_in_bearbeitung_erledigt(stack) -> None:
    case = await _start(stack, MAENGEL, status="completed", Ort="Gehweg Lindenallee 3", Mangel="Schlagloch")
    async with stack.client() as http:
        r = await http.get(f"/v1/status/{case['aktenzeichen']}", headers=_code_header(case["code"]))
    assert r.status_code == 200, r.text
    st = r.json()
    assert st["service_name"] == "Mängelmeldung" and st["responsible_office"] == "Bauhof und Stadtreinigung"
    assert [m["label"] for m in st["timeline"]] == ["Meldung eingegangen", "In Bearbeitung", "Erledigt"]
    assert st["status"] == "closed" and st["status_label"] == "Erledigt"


async def test_a_withdrawn_application_says_so(stack) -> None:
    case = await _start(stack)
    _event(stack, case["case_id"], "withdraw", "withdrawn", "Antrag zurückgezogen")
    _event(stack, case["case_id"], "archive", "withdrawn", "Zurückgezogen")
    _set(stack, case["case_id"], status="withdrawn")
    async with stack.client() as http:
        st = (await http.get(f"/v1/status/{case['aktenzeichen']}", headers=_code_header(case["code"]))).json()
    assert [m["code"] for m in st["timeline"]] == ["received", "in_progress", "withdrawn"]
    assert st["status_label"] == "Zurückgezogen"


async def test_guessing_is_throttled_with_429_and_retry_after(stack) -> None:
    case, other = await _start(stack), await _start(stack)
    az = case["aktenzeichen"]
    async with stack.client() as http:
        for i in range(10):
            r = await http.get(f"/v1/status/{az}", headers=_code_header(f"WRONG-{i:05d}"))
            assert r.status_code == 404, (i, r.text)
        blocked = await http.get(f"/v1/status/{az}", headers=_code_header("WRONG-99999"))
        assert blocked.status_code == 429, blocked.text
        assert blocked.headers["content-type"].startswith("application/problem+json")
        assert 1 <= int(blocked.headers["Retry-After"]) <= 600
        assert "try again" in blocked.json()["detail"]
        # while blocked even the right code is not checked: a guesser learns nothing
        assert (await http.get(f"/v1/status/{az}", headers=_code_header(case["code"]))).status_code == 429
        # another case from the same address is unaffected
        ok = await http.get(f"/v1/status/{other['aktenzeichen']}", headers=_code_header(other["code"]))
        assert ok.status_code == 200, ok.text


@pytest.mark.parametrize("code", ["", "x" * 65, "ÄÖÜ-ÄÖÜÄÖ"])
async def test_odd_codes_are_refused_without_a_server_error(stack, code) -> None:
    async with stack.client() as http:
        r = await http.get("/v1/status/99.99-2026-000001", headers={"X-Access-Code": code.encode("utf-8")})
    assert r.status_code in (404, 422), r.text

"""Casework end to end through the HTTP API, against the real servers: four-eyes, payment before
the decision with a refund when rejected, Nachforderung resumed by an upload, forwarding,
withdrawal with its compensations, fee rules (per item, exemption), payment failure modes."""

from __future__ import annotations

import asyncio


from sqlalchemy import func, select

from eakte.models import AuditEvent, Dokument, SandboxPayment, TimelineEvent, Vorgang
from tests.integration.helpers import GEBURT, MELDE, PDF, application, pay, wait_for_case

PORTAL = ("portal-cw", "integrator")
BB1, BB2 = ("clerk-bb-1", "clerk", "buergerbuero"), ("clerk-bb-2", "clerk", "buergerbuero")
SA1, SA2 = ("clerk-sa-1", "clerk", "standesamt"), ("clerk-sa-2", "clerk", "standesamt")


def _audit(stack, case_id: str) -> list[str]:  # type: ignore[no-untyped-def]
    with stack.sessions()() as s:
        return list(s.scalars(select(AuditEvent.action).where(AuditEvent.case_id == case_id).order_by(AuditEvent.id)))


def _timeline(stack, case_id: str) -> list[str]:  # type: ignore[no-untyped-def]
    with stack.sessions()() as s:
        return list(s.scalars(select(TimelineEvent.message).where(TimelineEvent.vorgang_id == case_id)
                              .order_by(TimelineEvent.id)))


async def _submit(http, stack, service: str = MELDE, **form: str) -> dict:  # type: ignore[no-untyped-def]
    r = await http.post("/v1/cases", json=application(service, **form), headers=stack.token(*PORTAL))
    assert r.status_code == 201, r.text
    return r.json()


async def _approved(http, stack, **form: str) -> tuple[str, dict]:  # type: ignore[no-untyped-def]
    """A Meldebescheinigung submitted and approved by the Bürgerbüro: (case id, the decision's answer)."""
    cid = (await _submit(http, stack, MELDE, **form))["case_id"]
    await wait_for_case(http, cid, stack.token(*PORTAL), status="awaiting_decision")
    d = await http.post(f"/v1/cases/{cid}/decision", json={"decision": "approve"}, headers=stack.token(*BB1))
    return cid, d.json()


async def test_four_eyes_with_payment_before_the_decision_and_a_fee_per_copy(stack) -> None:
    portal = stack.token(*PORTAL)
    async with stack.client() as http:
        case = await _submit(http, stack, GEBURT, anzahl="3", Zweck="Familienbuch")
        cid = case["case_id"]
        # Vorkasse: 12,00 EUR + 2 further copies at 6,00 EUR, before any clerk looks at it
        due = await wait_for_case(http, cid, portal, status="awaiting_payment")
        assert due["fee_cents"] == 2400 and due["payment_url"]
        assert (await http.post(f"/v1/cases/{cid}/decision", json={"decision": "approve"},
                                headers=stack.token(*SA1))).status_code == 409  # not yet: unpaid
        await pay(http, due["payment_url"])
        await wait_for_case(http, cid, portal, status="awaiting_decision")

        first = await http.post(f"/v1/cases/{cid}/decision", json={"decision": "approve"}, headers=stack.token(*SA1))
        assert first.status_code == 200, first.text
        assert first.json()["status"] == "awaiting_cosign"
        # the first clerk can't co-sign their own decision; a clerk of another department doesn't see the case
        own = await http.post(f"/v1/cases/{cid}/cosign", json={"agree": True}, headers=stack.token(*SA1))
        assert own.status_code == 403 and "Vier-Augen" in own.json()["detail"]
        assert (await http.post(f"/v1/cases/{cid}/cosign", json={"agree": True},
                                headers=stack.token(*BB2))).status_code == 404
        ok = await http.post(f"/v1/cases/{cid}/cosign", json={"agree": True}, headers=stack.token(*SA2))
        assert ok.status_code == 200, ok.text
        done = await wait_for_case(http, cid, portal, status="completed")
        assert [d for d in done["documents"] if d["kind"] == "Urkunde"]
    with stack.sessions()() as s:
        v = s.get(Vorgang, cid)
        assert (v.first_decision_by, v.cosigned_by, v.decided_by) == ("clerk-sa-1", "clerk-sa-2", "clerk-sa-1")
        assert v.payment_status == "paid"
    actions = _audit(stack, cid)
    assert "case.approved.first" in actions and "case.approved" in actions


async def test_cosign_refused_goes_back_and_a_rejection_after_payment_refunds_the_fee(stack) -> None:
    portal = stack.token(*PORTAL)
    async with stack.client() as http:
        cid = (await _submit(http, stack, GEBURT))["case_id"]
        due = await wait_for_case(http, cid, portal, status="awaiting_payment")
        assert due["fee_cents"] == 1200
        await pay(http, due["payment_url"])
        await wait_for_case(http, cid, portal, status="awaiting_decision")
        await http.post(f"/v1/cases/{cid}/decision", json={"decision": "approve"}, headers=stack.token(*SA1))
        no_reason = await http.post(f"/v1/cases/{cid}/cosign", json={"agree": False}, headers=stack.token(*SA2))
        assert no_reason.status_code == 422
        refused = await http.post(f"/v1/cases/{cid}/cosign", json={"agree": False, "reason": "Abstammung ungeklärt"},
                                  headers=stack.token(*SA2))
        assert refused.status_code == 200 and refused.json()["status"] == "awaiting_decision"
        # back with the first clerk: now a rejection, co-signed by the second
        rej = await http.post(f"/v1/cases/{cid}/decision", json={"decision": "reject", "reason": "Kein Eintrag im "
                              "Geburtenregister der Stadt"}, headers=stack.token(*SA1))
        assert rej.json()["status"] == "awaiting_cosign"
        await http.post(f"/v1/cases/{cid}/cosign", json={"agree": True}, headers=stack.token(*SA2))
        done = await wait_for_case(http, cid, portal, status="rejected")
        assert done["payment_status"] == "refunded"
        assert any(d["kind"] in ("Bescheid", "Schreiben") for d in done["documents"])
    with stack.sessions()() as s:
        v = s.get(Vorgang, cid)
        assert s.get(SandboxPayment, v.payment_id).status == "refunded"
    assert any("erstattet" in m for m in _timeline(stack, cid))
    assert "case.compensation.refund" in _audit(stack, cid) and "case.cosign.refused" in _audit(stack, cid)


async def test_nachforderung_waits_for_the_citizen_and_an_upload_resumes_it(stack) -> None:
    portal, clerk = stack.token(*PORTAL), stack.token(*BB1)
    async with stack.client() as http:
        cid = (await _submit(http, stack))["case_id"]
        await wait_for_case(http, cid, portal, status="awaiting_decision")
        bad = await http.post(f"/v1/cases/{cid}/decision", json={"decision": "request_documents"}, headers=clerk)
        assert bad.status_code == 422
        r = await http.post(f"/v1/cases/{cid}/decision", headers=clerk, json={
            "decision": "request_documents", "missing": ["Wohnungsgeberbestätigung"], "days": 14,
            "reason": "Für die Anmeldung fehlt die Bestätigung des Vermieters."})
        assert r.status_code == 200 and r.json()["status"] == "awaiting_documents", r.text
        await wait_for_case(http, cid, portal, status="awaiting_documents")
        for _ in range(150):  # the Nachforderung is issued (and sealed) right after the status changes
            waiting = (await http.get(f"/v1/cases/{cid}", headers=portal)).json()
            if [d for d in waiting["documents"] if d["kind"] in ("Bescheid", "Schreiben")]:
                break
            await asyncio.sleep(0.2)
        else:
            raise AssertionError(f"no Nachforderung for the citizen: {waiting['documents']}")
        assert (await http.post(f"/v1/cases/{cid}/decision", json={"decision": "approve"},
                                headers=clerk)).status_code == 409
        up = await http.post(f"/v1/cases/{cid}/documents", headers=portal,
                             files={"file": ("wgb.pdf", PDF, "application/pdf")}, data={"kind": "Nachweis"})
        assert up.status_code == 201, up.text
        await wait_for_case(http, cid, portal, status="awaiting_decision")
        d = await http.post(f"/v1/cases/{cid}/decision", json={"decision": "approve"}, headers=clerk)
        assert d.json()["status"] == "awaiting_payment"
        await pay(http, d.json()["payment_url"])
        await wait_for_case(http, cid, portal, status="completed")
    msgs = _timeline(stack, cid)
    assert any("Unterlagen nachgefordert: Wohnungsgeberbestätigung" in m for m in msgs)
    assert any("Bearbeitung wird fortgesetzt" in m for m in msgs)


async def test_nachforderung_answered_by_a_letter_by_post(stack) -> None:
    """The citizen answers the Nachforderung on paper: the mailroom's scan quotes the Aktenzeichen, the
    letter is filed into the case by itself (OCR), and the case goes on."""
    from tests.integration.test_mailroom import _scanned_letter

    portal, clerk, mailroom = stack.token(*PORTAL), stack.token(*BB1), stack.token("post-cw", "mailroom")
    async with stack.client() as http:
        case = await _submit(http, stack)
        cid, az = case["case_id"], case["aktenzeichen"]
        await wait_for_case(http, cid, portal, status="awaiting_decision")
        r = await http.post(f"/v1/cases/{cid}/decision", headers=clerk, json={
            "decision": "request_documents", "missing": ["Kopie des Personalausweises"], "days": 14})
        assert r.status_code == 200, r.text
        await wait_for_case(http, cid, portal, status="awaiting_documents")
        scan = await http.post("/v1/mailroom/scans", headers=mailroom,
                               files=[("files", ("antwort.png", _scanned_letter(az), "image/png"))])
        assert scan.status_code == 202, scan.text
        await wait_for_case(http, cid, portal, status="awaiting_decision", timeout=240)
    msgs = _timeline(stack, cid)
    assert any("Schreiben" in m and "eingegangen" in m for m in msgs), msgs  # filed by the mailroom
    assert any("Bearbeitung wird fortgesetzt" in m for m in msgs)


async def test_forward_moves_the_case_to_another_department(stack) -> None:
    portal = stack.token(*PORTAL)
    async with stack.client() as http:
        cid = (await _submit(http, stack))["case_id"]
        await wait_for_case(http, cid, portal, status="awaiting_decision")
        no_reason = await http.post(f"/v1/cases/{cid}/decision", json={"decision": "forward", "department": "standesamt"},
                                    headers=stack.token(*BB1))
        assert no_reason.status_code == 422
        unknown = await http.post(f"/v1/cases/{cid}/decision", headers=stack.token(*BB1),
                                  json={"decision": "forward", "department": "nirgendwo", "reason": "x"})
        assert unknown.status_code == 422
        fw = await http.post(f"/v1/cases/{cid}/decision", headers=stack.token(*BB1),
                             json={"decision": "forward", "department": "standesamt", "reason": "Personenstandsfall"})
        assert fw.status_code == 200, fw.text
        assert (await http.post(f"/v1/cases/{cid}/decision", json={"decision": "approve"},
                                headers=stack.token(*BB1))).status_code == 404  # no longer theirs
        d = await http.post(f"/v1/cases/{cid}/decision", json={"decision": "approve"}, headers=stack.token(*SA1))
        assert d.status_code == 200 and d.json()["status"] == "awaiting_payment", d.text
    with stack.sessions()() as s:
        assert s.get(Vorgang, cid).department == "standesamt"
    assert "case.forward" in _audit(stack, cid)


async def test_withdrawal_before_the_decision_cancels_or_refunds_and_not_after(stack) -> None:
    portal = stack.token(*PORTAL)
    async with stack.client() as http:
        # no payment yet: withdrawn, a confirmation is issued
        cid = (await _submit(http, stack))["case_id"]
        await wait_for_case(http, cid, portal, status="awaiting_decision")
        other = stack.token("portal-other", "integrator")
        assert (await http.post(f"/v1/cases/{cid}/withdraw", json={}, headers=other)).status_code == 404
        w = await http.post(f"/v1/cases/{cid}/withdraw", json={"reason": "Hat sich erledigt"}, headers=portal)
        assert w.status_code == 200 and w.json()["status"] == "withdrawn", w.text
        done = await wait_for_case(http, cid, portal, status="withdrawn")
        assert any(d["kind"] in ("Bescheid", "Schreiben") for d in done["documents"])
        assert (await http.post(f"/v1/cases/{cid}/withdraw", json={}, headers=portal)).status_code == 409

        # paid in advance (Geburtsurkunde): the fee is refunded
        gid = (await _submit(http, stack, GEBURT))["case_id"]
        due = await wait_for_case(http, gid, portal, status="awaiting_payment")
        await pay(http, due["payment_url"])
        await wait_for_case(http, gid, portal, status="awaiting_decision")
        await http.post(f"/v1/cases/{gid}/withdraw", json={"reason": "Urkunde liegt doch vor"}, headers=portal)
        refunded = await wait_for_case(http, gid, portal, status="withdrawn")
        assert refunded["payment_status"] == "refunded"

        # after the decision: too late
        lid = (await _submit(http, stack))["case_id"]
        await wait_for_case(http, lid, portal, status="awaiting_decision")
        await http.post(f"/v1/cases/{lid}/decision", json={"decision": "approve"}, headers=stack.token(*BB1))
        late = await http.post(f"/v1/cases/{lid}/withdraw", json={}, headers=portal)
        assert late.status_code == 409
    assert "case.withdrawn" in _audit(stack, gid) and "case.compensation.refund" in _audit(stack, gid)


async def test_text_a_case_could_not_store_is_refused_before_it_reaches_the_case(stack) -> None:
    """A NUL character cannot be stored in PostgreSQL text: the reason of a deadline extension, decision,
    withdrawal or note with one is refused with 422 (it used to make the activity retry for ever)."""
    portal, clerk = stack.token(*PORTAL), stack.token(*BB1)
    async with stack.client() as http:
        cid = (await _submit(http, stack))["case_id"]
        await wait_for_case(http, cid, portal, status="awaiting_decision")
        for url, who, body in (
                (f"/v1/cases/{cid}/deadline", clerk, {"days": 3, "reason": "Rückfrage\x00"}),
                (f"/v1/cases/{cid}/decision", clerk, {"decision": "reject", "reason": "nein\x00"}),
                (f"/v1/cases/{cid}/decision", clerk, {"decision": "request_documents", "missing": ["A\x00"]}),
                (f"/v1/cases/{cid}/notes", clerk, {"text": "Vermerk\x00"}),
                (f"/v1/cases/{cid}/withdraw", portal, {"reason": "\x00"})):
            r = await http.post(url, json=body, headers=who)
            assert r.status_code == 422, (url, r.text)
            assert r.headers["content-type"].startswith("application/problem+json")
        ok = await http.post(f"/v1/cases/{cid}/deadline", json={"days": 3, "reason": "Rückfrage"}, headers=clerk)
        assert ok.status_code == 200, ok.text
        case = (await http.get(f"/v1/cases/{cid}", headers=portal)).json()
        assert case["status"] == "awaiting_decision"


async def test_fee_exemption_skips_the_payment(stack) -> None:
    portal = stack.token(*PORTAL)
    async with stack.client() as http:
        cid, d = await _approved(http, stack, zweck="Rente")
        assert d["payment_url"] is None
        done = await wait_for_case(http, cid, portal, status="completed")
        assert done["fee_cents"] == 0 and done["payment_status"] == "exempt"
    assert any("Gebührenbefreiung: Vorlage bei einem Sozialleistungsträger" in m for m in _timeline(stack, cid))


async def test_declined_payment_gets_a_new_payment_request(stack) -> None:
    portal = stack.token(*PORTAL)
    async with stack.client() as http:
        cid, d = await _approved(http, stack)
        first_url = d["payment_url"]
        await pay(http, first_url, action="decline")
        for _ in range(100):
            case = (await http.get(f"/v1/cases/{cid}", headers=portal)).json()
            if case["payment_url"] and case["payment_url"] != first_url:
                break
            await asyncio.sleep(0.2)
        else:
            raise AssertionError(f"no new payment request: {case}")
        await pay(http, case["payment_url"])
        await wait_for_case(http, cid, portal, status="completed")
    with stack.sessions()() as s:
        assert s.scalar(select(func.count()).select_from(SandboxPayment)
                        .where(SandboxPayment.reference == case["aktenzeichen"])) == 2
    assert any("Zahlung abgelehnt" in m for m in _timeline(stack, cid))


async def test_lost_callback_is_found_by_the_status_poll(stack) -> None:
    portal = stack.token(*PORTAL)
    async with stack.client() as http:
        cid, d = await _approved(http, stack)
        await pay(http, d["payment_url"], action="pay_lost_callback")
        await wait_for_case(http, cid, portal, status="completed", timeout=60)


async def test_a_callback_delivered_five_times_pays_once(stack) -> None:
    portal = stack.token(*PORTAL)
    async with stack.client() as http:
        cid, d = await _approved(http, stack)
        await pay(http, d["payment_url"], action="pay_duplicate_callback")
        await wait_for_case(http, cid, portal, status="completed")
    with stack.sessions()() as s:
        certs = s.scalar(select(func.count()).select_from(Dokument).where(Dokument.vorgang_id == cid,
                                                                         Dokument.kind == "Urkunde"))
        assert certs == 1
    assert sum("Gebühr bezahlt" in m for m in _timeline(stack, cid)) == 1



"""Record the replay histories from real runs of the current code.

Not collected by a plain `pytest` run (the name does not start with test_); run it on purpose:
    .venv/bin/python -m pytest -q -p no:cacheprovider tests/histories/record_scenarios.py
Each scenario drives a real case, letter or disposal round through the HTTP API of a test
stack (Temporal dev server, SeaweedFS, SQLite), or on the time-skipping server where days must
pass, and writes the workflow's history to tests/histories/<name>.json. Existing files are
kept (older recordings guard the cases still running from older code); set
RECORD_OVERWRITE=1 to record them anew (RECORD_DIR=... writes elsewhere, e.g. to try the
scenarios out). Payloads are encrypted with the development key.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import uuid
from pathlib import Path

from sqlalchemy import select, update
from temporalio.client import Client

from eakte.models import Akte
from tests.conftest import CORPUS
from tests.integration.helpers import GEBURT, HUND, MELDE, PDF, application, pay, wait_for_case, wait_for_mail
from tests.integration import test_mailroom_triage as triage_pages
from tests.integration.test_mailroom import _scanned_letter
from tests.workflow.conftest import case_worker_on, start_time_skipping, start_until_decision
from workflows import contracts as c
from workflows import disposal_contracts as d
from workflows.case import CaseWorkflow
from workflows.disposal import DisposalWorkflow

HERE = Path(os.environ.get("RECORD_DIR") or Path(__file__).resolve().parent)  # where the JSON files go
PORTAL = ("portal-rec", "integrator")
CLERK = ("clerk-rec", "clerk", "buergerbuero")
MAILROOM = ("post-rec", "mailroom")
ARCHIVIST = ("archiv-rec", "archivist")


def _wanted(name: str) -> bool:
    return os.environ.get("RECORD_OVERWRITE") == "1" or not (HERE / f"{name}.json").exists()


async def _dump(client: Client, workflow_id: str, name: str) -> None:
    handle = client.get_workflow_handle(workflow_id)
    for _ in range(600):  # a finished workflow's history is complete; wait for the close
        desc = await handle.describe()
        if desc.close_time is not None:
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError(f"{workflow_id} did not finish")
    history = await handle.fetch_history()
    (HERE / f"{name}.json").write_text(history.to_json())
    print(f"recorded {name}: {len(history.events)} events")


async def _case(stack, http, body, status: str):  # type: ignore[no-untyped-def]
    portal = stack.token(*PORTAL)
    r = await http.post("/v1/cases", json=body, headers=portal)
    assert r.status_code == 201, r.text
    return await wait_for_case(http, r.json()["case_id"], portal, status=status)


async def _scan(stack, http, name: str, data: bytes, ctype: str = "application/pdf"):  # type: ignore[no-untyped-def]
    r = await http.post("/v1/mailroom/scans", headers=stack.token(*MAILROOM), files=[("files", (name, data, ctype))])
    assert r.status_code == 202, r.text
    item_id = r.json()["items"][0]["id"]
    return await wait_for_mail(http, item_id, stack.token(*MAILROOM))


async def test_record_case_happy_path(stack) -> None:
    if not _wanted("case_happy_path"):
        return
    async with stack.client() as http:
        case = await _case(stack, http, application(MELDE), "awaiting_decision")
        r = await http.post(f"/v1/cases/{case['case_id']}/decision", json={"decision": "approve"},
                            headers=stack.token(*CLERK))
        assert r.status_code == 200, r.text
        await pay(http, r.json()["payment_url"])
        await wait_for_case(http, case["case_id"], stack.token(*PORTAL), status="completed")
    await _dump(await stack.temporal(), case["case_id"], "case_happy_path")


async def test_record_case_rejected(stack) -> None:
    if not _wanted("case_rejected"):
        return
    async with stack.client() as http:
        case = await _case(stack, http, application(MELDE), "awaiting_decision")
        r = await http.post(f"/v1/cases/{case['case_id']}/decision", headers=stack.token(*CLERK),
                            json={"decision": "reject", "reason": "Nachweis fehlt"})
        assert r.status_code == 200, r.text
        await wait_for_case(http, case["case_id"], stack.token(*PORTAL), status="rejected")
    await _dump(await stack.temporal(), case["case_id"], "case_rejected")


async def test_record_case_triage_then_routed(stack) -> None:
    if not _wanted("case_triage_then_routed"):
        return
    async with stack.client() as http:
        case = await _case(stack, http, application(None), "triage")
        r = await http.post(f"/v1/cases/{case['case_id']}/route", json={"service_key": HUND},
                            headers=stack.token(*MAILROOM))
        assert r.status_code == 200, r.text
        await wait_for_case(http, case["case_id"], stack.token(*PORTAL), status="completed")
    await _dump(await stack.temporal(), case["case_id"], "case_triage_then_routed")


async def test_record_mail_filed_by_reference(stack) -> None:
    if not _wanted("mail_filed"):
        return
    async with stack.client() as http:
        case = await _case(stack, http, application(MELDE), "awaiting_decision")
        item = await _scan(stack, http, "brief.png", _scanned_letter(case["aktenzeichen"]), "image/png")
        assert item["status"] == "filed", item
    await _dump(await stack.temporal(), item["id"], "mail_filed")


async def test_record_mail_triage_then_assigned(stack) -> None:
    if not _wanted("mail_triage_then_assigned"):
        return
    async with stack.client() as http:
        case = await _case(stack, http, application(MELDE), "awaiting_decision")
        item = await _scan(stack, http, "linn.pdf", (CORPUS / "linn.pdf").read_bytes())
        assert item["status"] == "triage", item
        r = await http.post(f"/v1/mailroom/items/{item['id']}/assign", headers=stack.token(*MAILROOM),
                            json={"aktenzeichen": case["aktenzeichen"]})
        assert r.status_code == 200 and r.json()["status"] == "filed", r.text
    await _dump(await stack.temporal(), item["id"], "mail_triage_then_assigned")


async def test_record_mail_failed(stack) -> None:
    if not _wanted("mail_failed_invalid"):
        return
    async with stack.client() as http:
        item = await _scan(stack, http, "invalid.pdf", (CORPUS / "invalid.pdf").read_bytes())
        assert item["status"] == "failed", item
    await _dump(await stack.temporal(), item["id"], "mail_failed_invalid")


async def _round(stack) -> str:  # type: ignore[no-untyped-def]
    client = await stack.temporal()
    round_id = f"disposal-rec-{uuid.uuid4().hex[:12]}"
    await client.start_workflow(DisposalWorkflow.run, d.DisposalInput(confirm_days=1), id=round_id,
                                task_queue=stack.settings.task_queue)
    return round_id


async def test_record_disposal_round_with_nothing_due(stack) -> None:
    if not _wanted("disposal_nothing_due"):
        return
    round_id = await _round(stack)
    await _dump(await stack.temporal(), round_id, "disposal_nothing_due")


async def test_record_disposal_round_offered_then_destroyed(stack) -> None:
    if not _wanted("disposal_destroyed"):
        return
    archivist = stack.token(*ARCHIVIST)
    async with stack.client() as http:
        done = await _case(stack, http, application(HUND, name="Hanna Hundehalterin"), "completed")
        with stack.sessions()() as s, s.begin():
            s.execute(update(Akte).where(Akte.aktenzeichen == done["aktenzeichen"])
                      .values(retention_until=dt.date.today() - dt.timedelta(days=1)))
            akte_id = s.scalar(select(Akte.id).where(Akte.aktenzeichen == done["aktenzeichen"]))
        round_id = await _round(stack)
        for _ in range(150):
            offers = (await http.get("/v1/admin/disposal", headers=archivist)).json()
            if any(o["akte_id"] == akte_id and o["round_id"] == round_id for o in offers):
                break
            await asyncio.sleep(0.2)
        r = await http.post(f"/v1/admin/disposal/{akte_id}/confirm", headers=archivist,
                            json={"action": "destroy", "reason": "Aufbewahrungsfrist abgelaufen"})
        assert r.status_code == 200 and r.json()["action"] == "destroyed", r.text
    await _dump(await stack.temporal(), round_id, "disposal_destroyed")


async def test_record_case_payment_expired(stack) -> None:
    """Fourteen days pass without payment: recorded on the time-skipping server."""
    if not _wanted("case_payment_expired"):
        return
    env = await start_time_skipping()
    try:
        async with case_worker_on(env, stack, "rec-cases"):
            _, handle = await start_until_decision(env, stack, fingerprint="e" * 64, task_queue="rec-cases",
                                                   integrator=PORTAL[0])
            await handle.execute_update(CaseWorkflow.decide, c.Decision(
                actor=c.Actor(sub=CLERK[0], roles=["clerk"], departments=["buergerbuero"]), approve=True))
            result: c.CaseResult = await handle.result()
            assert result.status == c.CANCELLED
            history = await handle.fetch_history()
        (HERE / "case_payment_expired.json").write_text(history.to_json())
        print(f"recorded case_payment_expired: {len(history.events)} events")
    finally:
        await env.shutdown()



# -- mailroom v2 (codes, recognition, classification, triage actions) ----------------------------
async def _letter(stack, http, name: str, data: bytes, ctype: str, wanted: tuple[str, ...]):  # type: ignore[no-untyped-def]
    r = await http.post("/v1/mailroom/scans", headers=stack.token(*MAILROOM), files=[("files", (name, data, ctype))])
    assert r.status_code == 202, r.text
    return await wait_for_mail(http, r.json()["items"][0]["id"], stack.token(*MAILROOM), status=wanted)


async def test_record_mail_v2_filed_by_applicant_ref(stack) -> None:
    if not _wanted("mail_v2_filed_applicant_ref"):
        return
    async with stack.client() as http:
        case = await _case(stack, http, application(MELDE), "awaiting_decision")
        page = triage_pages.page([*triage_pages.sender("rec"), f"Meine Vorgangsnummer: {case['applicant_ref']}",
                                  "anbei die Unterlagen."])
        item = await _letter(stack, http, "ref.png", triage_pages.png(page), "image/png", ("filed", "triage"))
        assert item["status"] == "filed" and item["match_method"] == "applicant_ref", item
    await _dump(await stack.temporal(), item["id"], "mail_v2_filed_applicant_ref")


async def test_record_mail_v2_classified_new_case(stack) -> None:
    if not _wanted("mail_v2_classified_new_case"):
        return
    page = triage_pages.page(["Karl Hundmann", "Lindenweg 12", "12345 Musterstadt", "", "Betreff: Anmeldung meines "
                              "Hundes zur Hundesteuer", "hiermit melde ich meinen neuen Hund an.",
                              "Die Chipnummer und der Nachweis der Hundehaftpflicht liegen bei."])
    async with stack.client() as http:
        item = await _letter(stack, http, "hund.png", triage_pages.png(page), "image/png", ("filed", "triage"))
        assert item["status"] == "filed" and item["match_method"] == "classified", item
    await _dump(await stack.temporal(), item["id"], "mail_v2_classified_new_case")


async def test_record_mail_v2_split_stack(stack) -> None:
    if not _wanted("mail_v2_split_stack"):
        return
    pages = [triage_pages.page([*triage_pages.sender("a"), "Betreff: Frage"]), triage_pages.separator_scan(),
             triage_pages.page([*triage_pages.sender("b"), "Betreff: Beschwerde"])]
    async with stack.client() as http:
        item = await _letter(stack, http, "stapel.pdf", triage_pages.pdf(pages), "application/pdf", ("split", "triage"))
        assert item["status"] == "split", item
        child = await wait_for_mail(http, f"{item['id']}-1", stack.token(*MAILROOM), status=("triage",))
        r = await http.post(f"/v1/mailroom/items/{child['id']}/close", json={"reason": "erledigt"},
                            headers=stack.token(*MAILROOM))
        assert r.status_code == 200, r.text
    await _dump(await stack.temporal(), item["id"], "mail_v2_split_stack")
    await _dump(await stack.temporal(), child["id"], "mail_v2_split_part")


async def test_record_mail_v2_routed_then_closed(stack) -> None:
    if not _wanted("mail_v2_routed_closed"):
        return
    page = triage_pages.page([*triage_pages.sender("r"), "Betreff: Allgemeine Anfrage", "ich habe eine Frage."])
    async with stack.client() as http:
        item = await _letter(stack, http, "anfrage.png", triage_pages.png(page), "image/png", ("triage",))
        r = await http.post(f"/v1/mailroom/items/{item['id']}/route", json={"department": "buergerbuero"},
                            headers=stack.token(*MAILROOM))
        assert r.status_code == 200, r.text
        r = await http.post(f"/v1/mailroom/items/{item['id']}/close", json={"reason": "telefonisch erledigt"},
                            headers=stack.token(*CLERK))
        assert r.status_code == 200, r.text
    await _dump(await stack.temporal(), item["id"], "mail_v2_routed_closed")


async def test_record_mail_v2_merged_then_new_case(stack) -> None:
    if not _wanted("mail_v2_merge_new_case"):
        return
    async with stack.client() as http:
        items = []
        for n in (1, 2):
            page = triage_pages.page([*triage_pages.sender(f"m{n}"), f"Betreff: Unterlagen Teil {n}"])
            items.append(await _letter(stack, http, f"t{n}.png", triage_pages.png(page), "image/png", ("triage",)))
        r = await http.post(f"/v1/mailroom/items/{items[0]['id']}/merge", json={"item_ids": [items[1]["id"]]},
                            headers=stack.token(*MAILROOM))
        assert r.status_code == 200, r.text
        await wait_for_mail(http, items[1]["id"], stack.token(*MAILROOM), status=("merged",))
        r = await http.post(f"/v1/mailroom/items/{items[0]['id']}/new-case", json={"service_key": MELDE},
                            headers=stack.token(*MAILROOM))
        assert r.status_code == 200 and r.json()["status"] == "filed", r.text
    await _dump(await stack.temporal(), items[0]["id"], "mail_v2_merge_new_case")
    await _dump(await stack.temporal(), items[1]["id"], "mail_v2_merged")


# -- casework v2 (four eyes, Nachforderung, payment modes, withdrawal, cancel, deadlines) ---------
SA1, SA2 = ("standesamt-rec-1", "clerk", "standesamt"), ("standesamt-rec-2", "clerk", "standesamt")
ADMIN = ("admin-rec", "admin")


async def _post(http, url: str, who, body: dict) -> dict:  # type: ignore[no-untyped-def]
    r = await http.post(url, json=body, headers=who)
    assert r.status_code == 200, r.text
    return r.json()


async def _approved_and_paid(stack, name: str) -> None:  # type: ignore[no-untyped-def]
    """A Meldebescheinigung approved, paid and completed, recorded as ``name``."""
    if not _wanted(name):
        return
    async with stack.client() as http:
        case = await _case(stack, http, application(MELDE), "awaiting_decision")
        out = await _post(http, f"/v1/cases/{case['case_id']}/decision", stack.token(*CLERK), {"decision": "approve"})
        await pay(http, out["payment_url"])
        await wait_for_case(http, case["case_id"], stack.token(*PORTAL), status="completed")
    await _dump(await stack.temporal(), case["case_id"], name)


async def test_record_case_v2_happy_path(stack) -> None:
    await _approved_and_paid(stack, "case_v2_happy_path")


async def test_record_case_alongside_happy_path(stack) -> None:
    """Progress steps recorded alongside the next activity (patch progress-alongside): approval, payment,
    certificate, dispatch, archive."""
    await _approved_and_paid(stack, "case_alongside_happy_path")


async def test_record_case_alongside_rejected(stack) -> None:
    if not _wanted("case_alongside_rejected"):
        return
    async with stack.client() as http:
        case = await _case(stack, http, application(MELDE), "awaiting_decision")
        await _post(http, f"/v1/cases/{case['case_id']}/decision", stack.token(*CLERK),
                    {"decision": "reject", "reason": "keine Meldung unter dieser Anschrift"})
        await wait_for_case(http, case["case_id"], stack.token(*PORTAL), status="rejected")
    await _dump(await stack.temporal(), case["case_id"], "case_alongside_rejected")


async def test_record_case_v2_four_eyes_prepaid_rejected_refunded(stack) -> None:
    if not _wanted("case_v2_four_eyes_refund"):
        return
    async with stack.client() as http:
        case = await _case(stack, http, application(GEBURT, anzahl="2"), "awaiting_payment")
        await pay(http, case["payment_url"])
        cid = case["case_id"]
        await wait_for_case(http, cid, stack.token(*PORTAL), status="awaiting_decision")
        await _post(http, f"/v1/cases/{cid}/decision", stack.token(*SA1), {"decision": "approve"})
        await _post(http, f"/v1/cases/{cid}/cosign", stack.token(*SA2), {"agree": False, "reason": "ungeklärt"})
        await _post(http, f"/v1/cases/{cid}/decision", stack.token(*SA1), {"decision": "reject", "reason": "kein Eintrag"})
        await _post(http, f"/v1/cases/{cid}/cosign", stack.token(*SA2), {"agree": True})
        await wait_for_case(http, cid, stack.token(*PORTAL), status="rejected")
    await _dump(await stack.temporal(), cid, "case_v2_four_eyes_refund")


async def test_record_case_v2_nachforderung_resumed_payment_declined(stack) -> None:
    if not _wanted("case_v2_nachforderung_declined"):
        return
    portal = stack.token(*PORTAL)
    async with stack.client() as http:
        case = await _case(stack, http, application(MELDE), "awaiting_decision")
        cid = case["case_id"]
        await _post(http, f"/v1/cases/{cid}/decision", stack.token(*CLERK),
                    {"decision": "request_documents", "missing": ["Wohnungsgeberbestätigung"], "days": 14})
        await wait_for_case(http, cid, portal, status="awaiting_documents")
        await asyncio.sleep(3)  # the notice is issued and sent
        r = await http.post(f"/v1/cases/{cid}/documents", headers=portal, files={"file": ("wgb.pdf", PDF, "application/pdf")})
        assert r.status_code == 201, r.text
        await wait_for_case(http, cid, portal, status="awaiting_decision")
        out = await _post(http, f"/v1/cases/{cid}/decision", stack.token(*CLERK), {"decision": "approve"})
        await pay(http, out["payment_url"], action="decline")
        for _ in range(100):
            now = (await http.get(f"/v1/cases/{cid}", headers=portal)).json()
            if now["payment_url"] and now["payment_url"] != out["payment_url"]:
                break
            await asyncio.sleep(0.2)
        await pay(http, now["payment_url"])
        await wait_for_case(http, cid, portal, status="completed")
    await _dump(await stack.temporal(), cid, "case_v2_nachforderung_declined")


async def test_record_case_v2_withdrawn_after_payment(stack) -> None:
    if not _wanted("case_v2_withdrawn"):
        return
    portal = stack.token(*PORTAL)
    async with stack.client() as http:
        case = await _case(stack, http, application(GEBURT), "awaiting_payment")
        await pay(http, case["payment_url"])
        cid = case["case_id"]
        await wait_for_case(http, cid, portal, status="awaiting_decision")
        await _post(http, f"/v1/cases/{cid}/withdraw", portal, {"reason": "erledigt"})
        await wait_for_case(http, cid, portal, status="withdrawn")
    await _dump(await stack.temporal(), cid, "case_v2_withdrawn")


async def test_record_case_v2_forwarded_then_cancelled(stack) -> None:
    if not _wanted("case_v2_forwarded_cancelled"):
        return
    async with stack.client() as http:
        case = await _case(stack, http, application(MELDE), "awaiting_decision")
        cid = case["case_id"]
        await _post(http, f"/v1/cases/{cid}/decision", stack.token(*CLERK),
                    {"decision": "forward", "department": "standesamt", "reason": "Personenstand"})
        r = await http.post(f"/v1/admin/cases/{cid}/cancel", json={"reason": "Doppelantrag"}, headers=stack.token(*ADMIN))
        assert r.status_code == 200, r.text
        await wait_for_case(http, cid, stack.token(*PORTAL), status="cancelled")
    await _dump(await stack.temporal(), cid, "case_v2_forwarded_cancelled")


async def test_record_case_v2_deadline_escalated_extended_lapsed(stack) -> None:
    """Reminder, escalation, extension and a Nachforderung that lapses: on the time-skipping server."""
    if not _wanted("case_v2_deadline_lapsed"):
        return
    env = await start_time_skipping()
    clerk = c.Actor(sub=CLERK[0], roles=["clerk"], departments=["buergerbuero"])
    try:
        async with case_worker_on(env, stack, "rec-cases"):
            _, handle = await start_until_decision(env, stack, name="Frist Gerecht", address_lines=("Zeitweg 5",),
                                                   fingerprint="d" * 64, task_queue="rec-cases",
                                                   integrator=PORTAL[0])
            await env.sleep(dt.timedelta(days=5, hours=1))  # reminder, then escalation
            await handle.execute_update(CaseWorkflow.extend_deadline, c.ExtendDeadline(
                actor=clerk, days=2, reason="Rückfrage"))
            await handle.execute_update(CaseWorkflow.decide, c.Decision(
                actor=clerk, approve=False, action="request_documents", missing=["Ausweiskopie"], days=3))
            result: c.CaseResult = await handle.result()
            assert result.status == c.REJECTED
            history = await handle.fetch_history()
        (HERE / "case_v2_deadline_lapsed.json").write_text(history.to_json())
        print(f"recorded case_v2_deadline_lapsed: {len(history.events)} events")
    finally:
        await env.shutdown()

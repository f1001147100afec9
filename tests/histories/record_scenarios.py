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
import concurrent.futures
import datetime as dt
import os
import uuid
from pathlib import Path

from sqlalchemy import select, update
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from aktenlauf.settings import Settings
from aktenlauf.temporal import data_converter
from eakte.models import Akte
from intake.catalog import load_catalog
from tests.conftest import CORPUS
from tests.integration.helpers import HUND, MELDE, application, pay, wait_for_case, wait_for_mail
from tests.integration import test_mailroom_triage as triage_pages
from tests.integration.test_mailroom import _scanned_letter
from tests.servers import temporal_test_server_path
from worker import Dependencies, case_activities
from workflows import contracts as c
from workflows import disposal_contracts as d
from workflows.case import CaseWorkflow
from workflows.disposal import DisposalWorkflow
from workflows.search import ALL as ALL_SEARCH_ATTRIBUTES

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
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=temporal_test_server_path(),
        data_converter=data_converter(Settings(environment="test")))  # type: ignore[call-arg]
    try:
        await env.client.operator_service.add_search_attributes(AddSearchAttributesRequest(
            namespace=env.client.namespace,
            search_attributes={n: IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD for n in ALL_SEARCH_ATTRIBUTES}))
        deps = Dependencies.build(stack.settings)
        service = load_catalog(stack.settings.catalog_path).service(MELDE)
        case_id = "case-rec-" + uuid.uuid4().hex
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            async with Worker(env.client, task_queue="rec-cases", workflows=[CaseWorkflow],
                              activities=case_activities(deps), activity_executor=pool):
                handle = await env.client.start_workflow(CaseWorkflow.run, c.CaseInput(
                    case_id=case_id, integrator=PORTAL[0], fingerprint="e" * 64,
                    applicant=c.Applicant(name="Zeit Reisende", address_lines=["Uhrweg 1"]), service=service,
                    requested_service_key=MELDE, form={}), id=case_id, task_queue="rec-cases")
                for _ in range(200):
                    if (await handle.query(CaseWorkflow.query_status)).status == c.AWAITING_DECISION:
                        break
                    await asyncio.sleep(0.05)
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

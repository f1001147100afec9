"""Aussonderung end to end: real cases, the Temporal Schedule on the dev server, the disposal
round run by the worker, the archivist's confirmation through the API, real S3."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import uuid
from typing import Any

from sqlalchemy import select, text, update
from temporalio.client import ScheduleActionStartWorkflow, ScheduleHandle, ScheduleOverlapPolicy
from temporalio.service import RPCError, RPCStatusCode

from eakte.models import Akte, AuditEvent, DisposalRecord, Dokument, DokumentSearch, Notification, Version, Vorgang
from tests.integration.helpers import HUND, MELDE, application, wait_for_case
from workflows import disposal_contracts as d

PORTAL = ("portal-dispo", "integrator")
ARCHIVIST = ("archiv-1", "archivist")
ADMIN = ("admin-1", "admin")
CLERK = ("clerk-hund", "clerk", "steueramt")


async def completed_case(stack, http, service: str = HUND) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    portal = stack.token(*PORTAL)
    r = await http.post("/v1/cases", json=application(service, name="Hanna Hundehalterin", Rasse="Dackel"),
                        headers=portal)
    assert r.status_code == 201, r.text
    return await wait_for_case(http, r.json()["case_id"], portal, status="completed")


def past_retention(stack, aktenzeichen: str) -> str:  # type: ignore[no-untyped-def]
    """Years pass: the Akte's retention period ends yesterday. Returns the Akte id."""
    with stack.sessions()() as s, s.begin():
        s.execute(update(Akte).where(Akte.aktenzeichen == aktenzeichen)
                  .values(retention_until=dt.date.today() - dt.timedelta(days=1)))
        return s.scalar(select(Akte.id).where(Akte.aktenzeichen == aktenzeichen))


async def schedule(stack) -> ScheduleHandle:  # type: ignore[no-untyped-def]
    """The disposal schedule, once the worker (started in the background) has set it up."""
    handle = (await stack.temporal()).get_schedule_handle(stack.settings.disposal_schedule_id)
    for _ in range(150):
        try:
            await handle.describe()
            return handle
        except RPCError as exc:
            if exc.status != RPCStatusCode.NOT_FOUND:
                raise
        await asyncio.sleep(0.2)
    raise AssertionError(f"schedule {stack.settings.disposal_schedule_id} was not created by the worker")


async def run_round(stack) -> None:  # type: ignore[no-untyped-def]
    """Start a disposal round now through the schedule (as its daily 02:00 run would)."""
    await (await schedule(stack)).trigger(overlap=ScheduleOverlapPolicy.ALLOW_ALL)


async def wait_offered(stack, http, akte_id: str, timeout: float = 30) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    archivist = stack.token(*ARCHIVIST)
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        r = await http.get("/v1/admin/disposal", headers=archivist)
        assert r.status_code == 200, r.text
        mine = [o for o in r.json() if o["akte_id"] == akte_id and o["round_id"]]
        if mine:
            return mine[0]
        await asyncio.sleep(0.3)
    raise AssertionError(f"Akte {akte_id} was not offered")


async def test_the_daily_disposal_schedule_exists_once_the_worker_runs(stack) -> None:
    desc = await (await schedule(stack)).describe()
    cal = desc.schedule.spec.calendars[0]
    assert (cal.hour[0].start, cal.minute[0].start) == (2, 0)
    assert desc.schedule.spec.time_zone_name == "Europe/Berlin"
    assert desc.schedule.policy.overlap == ScheduleOverlapPolicy.SKIP
    assert not desc.schedule.state.paused
    action = desc.schedule.action
    assert isinstance(action, ScheduleActionStartWorkflow)
    assert action.workflow == d.WORKFLOW and action.task_queue == stack.settings.task_queue
    nxt = desc.info.next_action_times[0].astimezone(dt.timezone(dt.timedelta(hours=1)))  # CET
    assert nxt.minute == 0 and nxt.hour in (1, 2)  # 02:00 Berlin: 02:00 CET or 01:00 CET in summer (CEST)


async def test_confirmed_destruction_removes_objects_and_personal_data_but_keeps_aktenzeichen_and_record(stack) -> None:
    portal, archivist, admin = stack.token(*PORTAL), stack.token(*ARCHIVIST), stack.token(*ADMIN)
    async with stack.client() as http:
        done = await completed_case(stack, http)
        az, case_id = done["aktenzeichen"], done["case_id"]
        cert = next(x for x in done["documents"] if x["kind"] == "Urkunde")
        antrag = next(x for x in done["documents"] if x["kind"] == "Antrag")
        cert_pdf = (await http.get(cert["download_url"], headers=portal)).content
        # the citizen hands the certificate in as proof in another, still open procedure: one object, two records
        other = await http.post("/v1/cases", json=application(MELDE), headers=portal)
        other_id = other.json()["case_id"]
        up = await http.post(f"/v1/cases/{other_id}/documents", headers=portal, data={"kind": "Nachweis"},
                             files={"file": ("hundeanmeldung.pdf", cert_pdf, "application/pdf")})
        assert up.status_code == 201, up.text

        akte_id = past_retention(stack, az)
        with stack.sessions()() as s:  # a message about the case, as a reminder or escalation leaves one
            s.add(Notification(key=f"{case_id}:notify:test:0", vorgang_id=case_id, department="steueramt",
                               audience="applicant", subject="Erinnerung", text=f"Ihr Antrag {az}", channel="portal"))
            s.commit()
        index_rows = search_index_rows(stack, case_id)
        assert index_rows  # the documents are findable by full-text search before
        await run_round(stack)
        offer = await wait_offered(stack, http, akte_id)
        assert offer["aktenzeichen"] == az and offer["proposed_action"] == "destroy"
        assert offer["rule"].startswith("Aktenplan 21.30 Hundesteuer, 10 Jahre nach Abschluss (§ 147 AO")

        r = await http.post(f"/v1/admin/disposal/{akte_id}/confirm", headers=archivist,
                            json={"action": "destroy", "reason": "Aufbewahrungsfrist abgelaufen"})
        assert r.status_code == 200, r.text
        out = r.json()
        assert out["action"] == "destroyed" and out["documents"] == 2
        assert out["objects_removed"] == 1 and out["objects_kept_shared"] == 1

        store = stack.store()
        assert not store.exists(f"sha256/{antrag['sha256'][:2]}/{antrag['sha256']}")
        assert store.exists(f"sha256/{cert['sha256'][:2]}/{cert['sha256']}")  # still the other case's proof
        other_case = await http.get(f"/v1/cases/{other_id}", headers=portal)
        proof = next(x for x in other_case.json()["documents"] if x["kind"] == "Nachweis")
        dl = await http.get(proof["download_url"], headers=portal)
        assert dl.status_code == 200 and hashlib.sha256(dl.content).hexdigest() == cert["sha256"]

        again = await http.post(f"/v1/admin/disposal/{akte_id}/confirm", headers=archivist,
                                json={"action": "destroy"})
        assert again.status_code == 409, again.text

        recs = await http.get("/v1/admin/disposal/records", params={"aktenzeichen": az}, headers=admin)
        assert recs.status_code == 200
        [rec] = recs.json()
        assert rec["action"] == "destroyed" and rec["confirmed_by"] == "archiv-1" and rec["rule"] == offer["rule"]
        assert {i["sha256"] for i in rec["inventory"]} == {antrag["sha256"], cert["sha256"]}

        found = await http.get("/v1/akten", params={"aktenzeichen": az}, headers=admin)
        assert found.status_code == 200 and found.json()[0]["disposal_status"] == "destroyed"
        assert found.json()[0]["documents"] == []

    with stack.sessions()() as s:
        v = s.get(Vorgang, case_id)
        assert v.aktenzeichen == az and v.applicant == {} and v.form == {} and v.applicant_id is None
        assert s.scalars(select(Dokument).where(Dokument.vorgang_id == case_id)).all() == []
        assert s.scalars(select(Notification).where(Notification.vorgang_id == case_id)).all() == []
        assert s.scalars(select(Version).where(Version.object_key.like(f"%{antrag['sha256']}"))).all() == []
        assert s.scalar(select(DisposalRecord).where(DisposalRecord.akte_id == akte_id)).bytes_removed == antrag["size"]
        actions = set(s.scalars(select(AuditEvent.action).where(AuditEvent.target_id == akte_id)))
        assert {"akte.disposal_offered", "akte.destroyed"} <= actions
        assert s.scalars(select(DokumentSearch).where(DokumentSearch.id.in_(index_rows))).all() == []
        if stack.backend == "sqlite":  # the FTS5 table is not covered by the foreign key's cascade
            left = s.execute(text(f"SELECT count(*) FROM dokument_fts WHERE rowid IN ({','.join(map(str, index_rows))})"))
            assert left.scalar() == 0


def search_index_rows(stack, case_id: str) -> list[int]:  # type: ignore[no-untyped-def]
    with stack.sessions()() as s:
        return list(s.scalars(select(DokumentSearch.id).join(Dokument, Dokument.id == DokumentSearch.dokument_id)
                              .where(Dokument.vorgang_id == case_id)))


async def test_a_legal_hold_withdraws_the_offer_and_refuses_confirmation(stack) -> None:
    archivist = stack.token(*ARCHIVIST)
    async with stack.client() as http:
        done = await completed_case(stack, http)
        akte_id = past_retention(stack, done["aktenzeichen"])
        await run_round(stack)
        await wait_offered(stack, http, akte_id)

        no_reason = await http.put(f"/v1/admin/akten/{akte_id}/legal-hold", headers=archivist, json={})
        assert no_reason.status_code == 422
        hold = await http.put(f"/v1/admin/akten/{akte_id}/legal-hold", headers=archivist,
                              json={"reason": "Widerspruchsverfahren anhängig"})
        assert hold.status_code == 200, hold.text
        assert hold.json()["legal_hold"] is True and hold.json()["disposal_status"] is None

        r = await http.post(f"/v1/admin/disposal/{akte_id}/confirm", headers=archivist, json={"action": "destroy"})
        assert r.status_code == 409 and r.json()["type"].endswith("legal-hold")

        await run_round(stack)  # the next round passes it over
        await asyncio.sleep(2)
        listed = (await http.get("/v1/admin/disposal", headers=archivist)).json()
        assert akte_id not in [o["akte_id"] for o in listed]

        released = await http.request("DELETE", f"/v1/admin/akten/{akte_id}/legal-hold", headers=archivist,
                                      json={"reason": "Verfahren abgeschlossen"})
        assert released.status_code == 200 and released.json()["legal_hold"] is False
        twice = await http.request("DELETE", f"/v1/admin/akten/{akte_id}/legal-hold", headers=archivist,
                                   json={"reason": "Verfahren abgeschlossen"})
        assert twice.status_code == 409

    with stack.sessions()() as s:
        assert s.scalars(select(Dokument).where(Dokument.akte_id == akte_id)).all() != []
        actions = set(s.scalars(select(AuditEvent.action).where(AuditEvent.target_id == akte_id)))
        assert {"akte.legal_hold", "akte.legal_hold_released"} <= actions


async def test_disposal_endpoints_refuse_other_roles_unknown_ids_and_bad_requests(stack) -> None:
    archivist, clerk = stack.token(*ARCHIVIST), stack.token(*CLERK)
    unknown = uuid.uuid4().hex
    async with stack.client() as http:
        assert (await http.get("/v1/admin/disposal", headers=clerk)).status_code == 403
        assert (await http.post(f"/v1/admin/disposal/{unknown}/confirm", headers=archivist,
                                json={"action": "destroy"})).status_code == 404
        assert (await http.put(f"/v1/admin/akten/{unknown}/legal-hold", headers=archivist,
                               json={"reason": "Prüfung durch RPA"})).status_code == 404
        assert (await http.post(f"/v1/admin/disposal/{unknown}/confirm", headers=archivist,
                                json={"action": "shred"})).status_code == 422

        done = await completed_case(stack, http)  # closed, but years from the end of its retention
        with stack.sessions()() as s:
            akte_id = s.scalar(select(Akte.id).where(Akte.aktenzeichen == done["aktenzeichen"]))
        not_offered = await http.post(f"/v1/admin/disposal/{akte_id}/confirm", headers=archivist,
                                      json={"action": "destroy"})
        assert not_offered.status_code == 409 and not_offered.json()["type"].endswith("not-offered")
        keep = await http.post(f"/v1/admin/disposal/{akte_id}/confirm", headers=archivist, json={"action": "keep"})
        assert keep.status_code == 422


async def test_archiving_hands_an_xdomea_package_to_the_archive_and_then_removes_the_akte(stack) -> None:
    import io
    import zipfile

    archivist = stack.token(*ARCHIVIST)
    async with stack.client() as http:
        done = await completed_case(stack, http)
        antrag = next(x for x in done["documents"] if x["kind"] == "Antrag")
        akte_id = past_retention(stack, done["aktenzeichen"])
        await run_round(stack)
        await wait_offered(stack, http, akte_id)
        r = await http.post(f"/v1/admin/disposal/{akte_id}/confirm", headers=archivist,
                            json={"action": "archive", "reason": "archivwürdig nach Einzelfallbewertung"})
        assert r.status_code == 200, r.text
        out = r.json()
        assert out["action"] == "archived" and out["archive_key"].startswith(f"archive/21.30/{done['aktenzeichen']}/")

    store = stack.store()
    package = store.get_bytes(out["archive_key"], out["archive_sha256"])  # refuses a hash mismatch
    with zipfile.ZipFile(io.BytesIO(package)) as zf:
        names = zf.namelist()
        manifest = next(n for n in names if n.endswith(".xml"))
        assert "Aussonderung" in manifest and done["aktenzeichen"] in zf.read(manifest).decode()
        assert any(hashlib.sha256(zf.read(n)).hexdigest() == antrag["sha256"] for n in names if n != manifest)
    assert not store.exists(f"sha256/{antrag['sha256'][:2]}/{antrag['sha256']}")
    with stack.sessions()() as s:
        rec = s.scalar(select(DisposalRecord).where(DisposalRecord.akte_id == akte_id))
        assert rec.action == "archived" and rec.archive_key == out["archive_key"]
        assert rec.archive_sha256 == hashlib.sha256(package).hexdigest()
        assert s.get(Akte, akte_id).disposal_status == "archived"
        assert s.scalars(select(Dokument).where(Dokument.akte_id == akte_id)).all() == []
        actions = set(s.scalars(select(AuditEvent.action).where(AuditEvent.target_id == akte_id)))
        assert {"akte.disposal_offered", "akte.exported", "akte.archived"} <= actions


async def test_the_setting_disables_the_schedule_by_pausing_it_and_enabling_resumes_it(stack) -> None:
    from aktenlauf.schedules import ensure_disposal_schedule

    handle = await schedule(stack)
    client = await stack.temporal()
    off = stack.settings.model_copy(update={"disposal_schedule_enabled": False})
    try:
        desc = await ensure_disposal_schedule(client, off)
        assert desc.schedule.state.paused and "DISPOSAL_SCHEDULE_ENABLED" in desc.schedule.state.note
        assert (await handle.describe()).schedule.state.paused
    finally:
        desc = await ensure_disposal_schedule(client, stack.settings)
    assert not desc.schedule.state.paused

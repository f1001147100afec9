"""Integrity verification (`aktenlauf eakte verify`), the orphan sweep (`aktenlauf eakte sweep`)
and the audit API, on a stack of their own: a fresh database and a fresh bucket, so that
"clean" means clean and what these tests break (and restore) touches no other test.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import select, text

from aktenlauf import cli
from eakte import sweep as sweep_module
from eakte.models import AuditEvent, AuditHead, Version
from eakte.verify import Orphan
from tests.conftest import Stack, fresh_database, running_stack
from tests.integration.helpers import HUND, application, wait_for_case

CliRun = Callable[..., tuple[int, Any]]


@pytest.fixture(scope="module")
def own_stack(database_url: str, temporal_server, s3_server,  # type: ignore[no-untyped-def]
              tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with fresh_database(database_url, tmp_path_factory) as url, running_stack(url, temporal_server, s3_server) as st:
        yield st


async def _completed_case(stack: Stack, portal_sub: str) -> dict[str, Any]:
    portal = stack.token(portal_sub, "integrator")
    body = application(HUND)
    async with stack.client() as http:
        r = await http.post("/v1/cases", json=body, headers=portal)
        assert r.status_code == 201, r.text
        case = await wait_for_case(http, r.json()["case_id"], portal, status="completed")
    case["applicant_id"] = body["applicant"]["id"]
    case["portal"] = portal_sub
    return case


@pytest.fixture(scope="module")
async def cases(own_stack: Stack) -> list[dict[str, Any]]:
    """Two completed cases of two applicants, submitted by two portals."""
    return [await _completed_case(own_stack, "portal-va-1"), await _completed_case(own_stack, "portal-va-2")]


@pytest.fixture
def run_cli(own_stack: Stack, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> CliRun:
    """`aktenlauf …` in-process, configured like an operator's shell (environment variables)."""
    s = own_stack.settings
    for name, value in (("ENVIRONMENT", "test"), ("DATABASE_URL", s.database_url), ("S3_ENDPOINT", s.s3_endpoint),
                        ("S3_ACCESS_KEY", s.s3_access_key), ("S3_SECRET_KEY", s.s3_secret_key),
                        ("S3_BUCKET", s.s3_bucket), ("S3_SECURE", "false")):
        monkeypatch.setenv(name, value)

    def run(*argv: str) -> tuple[int, Any]:
        capsys.readouterr()
        rc = cli.main(list(argv))
        out = capsys.readouterr().out
        return rc, json.loads(out) if "--json" in argv else out

    return run


def _version(stack: Stack, document_id: str) -> Version:
    with stack.sessions()() as s:
        v = s.scalar(select(Version).where(Version.dokument_id == document_id))
        assert v is not None
        return v


def _cert(case: dict[str, Any]) -> dict[str, Any]:
    return next(d for d in case["documents"] if d["kind"] == "Urkunde")


# ----------------------------------------------------------------------------- verify


def test_verify_is_clean_after_completed_cases(cases, run_cli: CliRun) -> None:
    rc, report = run_cli("eakte", "verify", "--json", "--grace-seconds", "0")
    assert report["findings"] == []
    assert rc == 0
    assert report["versions_checked"] >= 4 and report["objects_hashed"] >= 4  # Antrag + Urkunde per case
    assert report["audit_events_checked"] >= 4
    assert report["checked"] == ["objects", "orphans", "audit_chain"]


def test_verify_names_the_document_whose_object_was_tampered_with(own_stack: Stack, cases, run_cli: CliRun) -> None:
    cert = _cert(cases[0])
    v = _version(own_stack, cert["id"])
    store = own_stack.store()
    original = store.get_bytes(v.object_key, v.sha256)
    store.client.put_object(store.bucket, v.object_key, io.BytesIO(b"%PDF-forged"), 11)
    try:
        rc, report = run_cli("eakte", "verify", "--json", "--grace-seconds", "0")
        rc_text, out = run_cli("eakte", "verify", "--grace-seconds", "0")
    finally:
        store.client.put_object(store.bucket, v.object_key, io.BytesIO(original), len(original))
    assert rc == 1 and rc_text == 1
    assert [(f["kind"], f["document_id"], f["version"], f["aktenzeichen"]) for f in report["findings"]] == [
        ("altered", cert["id"], 1, cases[0]["aktenzeichen"])]
    assert cert["id"] in out and "altered" in out


def test_verify_reports_a_missing_object(own_stack: Stack, cases, run_cli: CliRun) -> None:
    antrag = next(d for d in cases[1]["documents"] if d["kind"] == "Antrag")
    v = _version(own_stack, antrag["id"])
    store = own_stack.store()
    original = store.get_bytes(v.object_key, v.sha256)
    store.remove(v.object_key)
    try:
        rc, report = run_cli("eakte", "verify", "--json", "--skip-chain")
    finally:
        store.client.put_object(store.bucket, v.object_key, io.BytesIO(original), len(original))
    assert rc == 1
    assert [(f["kind"], f["document_id"], f["key"]) for f in report["findings"]] == [
        ("missing", antrag["id"], v.object_key)]


def test_verify_reports_a_wrong_recorded_size(own_stack: Stack, cases, run_cli: CliRun) -> None:
    v = _version(own_stack, _cert(cases[1])["id"])
    with own_stack.sessions()() as s, s.begin():
        s.execute(text("UPDATE version SET size = size + 1 WHERE id = :id"), {"id": v.id})
    try:
        rc, report = run_cli("eakte", "verify", "--json", "--skip-chain", "--skip-orphans")
    finally:
        with own_stack.sessions()() as s, s.begin():
            s.execute(text("UPDATE version SET size = :size WHERE id = :id"), {"id": v.id, "size": v.size})
    assert rc == 1
    assert [(f["kind"], f["document_id"]) for f in report["findings"]] == [("size_mismatch", v.dokument_id)]


# ----------------------------------------------------------------------------- orphans and the sweep


def test_an_unreferenced_object_is_an_orphan_until_swept(own_stack: Stack, cases, run_cli: CliRun) -> None:
    store = own_stack.store()
    ref = store.put_bytes(b"left behind by a crash " + uuid.uuid4().bytes)

    rc, report = run_cli("eakte", "verify", "--json", "--grace-seconds", "0")
    assert rc == 1
    assert [(f["kind"], f["key"]) for f in report["findings"]] == [("orphan", ref.key)]

    rc, report = run_cli("eakte", "verify", "--json")  # default grace period: an upload in flight, not an orphan
    assert rc == 0 and report["orphans_in_grace"] == 1

    rc, swept = run_cli("eakte", "sweep", "--json", "--grace-seconds", "0", "--actor", "ops-test")
    assert rc == 0
    assert [o["key"] for o in swept["removed"]] == [ref.key]
    assert not store.exists(ref.key)
    with own_stack.sessions()() as s:
        ev = s.scalar(select(AuditEvent).where(AuditEvent.action == "object.swept",
                                               AuditEvent.target_id == ref.sha256))
    assert ev is not None and ev.actor == "ops-test" and ev.details["key"] == ref.key

    rc, report = run_cli("eakte", "verify", "--json", "--grace-seconds", "0")
    assert rc == 0 and report["findings"] == []


def test_a_dry_run_sweep_removes_nothing(own_stack: Stack, cases, run_cli: CliRun) -> None:
    store = own_stack.store()
    ref = store.put_bytes(b"dry run " + uuid.uuid4().bytes)
    try:
        rc, swept = run_cli("eakte", "sweep", "--json", "--grace-seconds", "0", "--dry-run")
        assert rc == 0 and [o["key"] for o in swept["removed"]] == [ref.key]
        assert store.exists(ref.key)
    finally:
        store.remove(ref.key)


def test_the_sweep_spares_an_object_that_became_referenced_after_listing(
        own_stack: Stack, cases, monkeypatch: pytest.MonkeyPatch) -> None:
    """An upload's row committed between the sweep's listing and its delete keeps the object."""
    v = _version(own_stack, _cert(cases[0])["id"])
    stale = Orphan(own_stack.settings.s3_bucket, v.object_key, v.size, dt.datetime(2000, 1, 1, tzinfo=dt.UTC), None)
    monkeypatch.setattr(sweep_module, "find_orphans", lambda *a, **k: ([stale], 1, 0))
    store = own_stack.store()
    report = sweep_module.sweep(own_stack.sessions(), store, actor="ops-test", grace_seconds=0)
    assert report.removed == [] and [(o.key, why) for o, why in report.kept] == [
        (v.object_key, "a record points to it now")]
    assert store.exists(v.object_key)


def test_a_deduplicated_upload_renews_an_old_objects_age(own_stack: Stack) -> None:
    """Identical bytes are stored once, but reusing an object older than the refresh window
    rewrites it, so a sweep's grace period protects it until the new upload's row exists."""
    from eakte import blobstore

    store = own_stack.store()
    data = b"stored twice " + uuid.uuid4().bytes
    first = store.put_bytes(data)
    born = store.client.stat_object(store.bucket, first.key).last_modified
    store.put_bytes(data)  # within the window: not written again
    assert store.client.stat_object(store.bucket, first.key).last_modified == born
    try:
        blobstore.REFRESH_AFTER_S = 0
        import time

        time.sleep(1.1)  # S3 timestamps have one-second resolution
        store.put_bytes(data)
    finally:
        blobstore.REFRESH_AFTER_S = 600
    assert store.client.stat_object(store.bucket, first.key).last_modified > born
    store.remove(first.key)


# ----------------------------------------------------------------------------- audit chain


def _chain_findings(report: dict[str, Any]) -> list[dict[str, Any]]:
    return [f for f in report["findings"] if f["kind"] == "audit_chain"]


def test_editing_one_audit_row_breaks_the_chain_exactly_there(own_stack: Stack, cases, run_cli: CliRun) -> None:
    with own_stack.sessions()() as s:
        ev = s.scalar(select(AuditEvent).where(AuditEvent.action == "case.create",
                                               AuditEvent.case_id == cases[1]["case_id"]))
        assert ev is not None and ev.seq > 1
    with own_stack.sessions()() as s, s.begin():
        s.execute(text("UPDATE audit_event SET actor = 'someone-else' WHERE seq = :seq"), {"seq": ev.seq})
    try:
        rc, report = run_cli("eakte", "verify", "--json", "--skip-objects", "--skip-orphans")
    finally:
        with own_stack.sessions()() as s, s.begin():
            s.execute(text("UPDATE audit_event SET actor = :a WHERE seq = :seq"), {"a": ev.actor, "seq": ev.seq})
    assert rc == 1
    assert [(f["seq"], f["event_id"]) for f in _chain_findings(report)] == [(ev.seq, ev.id)]
    assert "altered" in _chain_findings(report)[0]["detail"]
    rc, report = run_cli("eakte", "verify", "--json", "--skip-objects", "--skip-orphans")
    assert rc == 0, report  # restored: intact again


def test_deleting_the_last_audit_event_is_reported(own_stack: Stack, cases, run_cli: CliRun) -> None:
    sessions = own_stack.sessions()
    with sessions() as s:
        last = s.scalar(select(AuditEvent).order_by(AuditEvent.seq.desc()).limit(1))
        assert last is not None
        row = {c.name: getattr(last, c.key) for c in AuditEvent.__table__.columns}
    with sessions() as s, s.begin():
        s.execute(text("DELETE FROM audit_event WHERE seq = :seq"), {"seq": last.seq})
    try:
        rc, report = run_cli("eakte", "verify", "--json", "--skip-objects", "--skip-orphans")
    finally:
        with sessions() as s, s.begin():
            s.execute(AuditEvent.__table__.insert().values(**row))
    assert rc == 1
    findings = _chain_findings(report)
    assert [f["seq"] for f in findings] == [last.seq]
    assert "removed at the end" in findings[0]["detail"]
    with sessions() as s:
        assert s.get(AuditHead, 1).seq == last.seq  # type: ignore[union-attr]


# ----------------------------------------------------------------------------- audit API


def _admin(stack: Stack) -> dict[str, str]:
    return stack.token("dsb-admin", "admin")


async def _all_pages(http: httpx.AsyncClient, headers: dict[str, str], params: dict[str, Any]) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor = None
    for _ in range(100):
        page = {**params, "cursor": cursor} if cursor is not None else params
        r = await http.get("/v1/admin/audit", headers=headers, params=page)
        assert r.status_code == 200, r.text
        items += r.json()["items"]
        cursor = r.json()["next_cursor"]
        if cursor is None:
            return items
    raise AssertionError("pagination did not end")


async def test_audit_filters_by_case(own_stack: Stack, cases) -> None:
    a, b = cases
    async with own_stack.client() as http:
        r = await http.get("/v1/admin/audit", headers=_admin(own_stack), params={"case_id": a["case_id"]})
    items = r.json()["items"]
    assert r.status_code == 200
    assert {e["case_id"] for e in items} == {a["case_id"]}
    assert {"case.create", "case.read", "document.issue.certificate"} <= {e["action"] for e in items}
    assert [e["seq"] for e in items] == sorted((e["seq"] for e in items), reverse=True)  # newest first


async def test_audit_filters_by_actor_and_action(own_stack: Stack, cases) -> None:
    a = cases[0]
    admin = _admin(own_stack)
    async with own_stack.client() as http:
        by_actor = (await http.get("/v1/admin/audit", headers=admin, params={"actor": a["portal"]})).json()["items"]
        prefix = (await http.get("/v1/admin/audit", headers=admin, params={"action": "case.", "limit": 500})).json()
        star = (await http.get("/v1/admin/audit", headers=admin, params={"action": "case.*", "limit": 500})).json()
        exact = (await http.get("/v1/admin/audit", headers=admin, params={"action": "case.create"})).json()["items"]
    assert by_actor and {e["actor"] for e in by_actor} == {a["portal"]}
    assert {"case.create", "case.read"} <= {e["action"] for e in prefix["items"]}
    assert all(e["action"].startswith("case.") for e in prefix["items"])
    assert star["items"] == prefix["items"]
    assert {e["action"] for e in exact} == {"case.create"} and len(exact) >= 2


async def test_audit_filters_by_time_range(own_stack: Stack, cases) -> None:
    admin = _admin(own_stack)
    case_id = cases[0]["case_id"]
    async with own_stack.client() as http:
        everything = (await http.get("/v1/admin/audit", headers=admin, params={"case_id": case_id,
                                                                               "order": "asc"})).json()["items"]
        pivot = everything[len(everything) // 2]
        after = (await http.get("/v1/admin/audit", headers=admin,
                                params={"case_id": case_id, "from": pivot["at"], "order": "asc"})).json()["items"]
        before = (await http.get("/v1/admin/audit", headers=admin,
                                 params={"case_id": case_id, "to": pivot["at"], "order": "asc"})).json()["items"]
    assert pivot["seq"] in [e["seq"] for e in after] and pivot["seq"] not in [e["seq"] for e in before]
    assert {e["seq"] for e in before} | {e["seq"] for e in after} >= {e["seq"] for e in everything}
    at = dt.datetime.fromisoformat(pivot["at"])
    assert all(dt.datetime.fromisoformat(e["at"]) < at for e in before)
    assert all(dt.datetime.fromisoformat(e["at"]) >= at for e in after)


async def test_audit_pages_by_seq_without_gaps_or_repeats(own_stack: Stack, cases) -> None:
    admin = _admin(own_stack)
    params = {"case_id": cases[1]["case_id"], "order": "asc"}
    async with own_stack.client() as http:
        for n in range(4):  # four more readers: four more events on this case
            r = await http.get(f"/v1/cases/{cases[1]['case_id']}", headers=own_stack.token(f"clerk-page-{n}", "clerk", "steueramt"))
            assert r.status_code == 200
        whole = (await http.get("/v1/admin/audit", headers=admin, params={**params, "limit": 500})).json()
        paged = await _all_pages(http, admin, {**params, "limit": 2})
    assert whole["next_cursor"] is None and len(whole["items"]) >= 5
    assert [e["seq"] for e in paged][: len(whole["items"])] == [e["seq"] for e in whole["items"]]
    assert len({e["seq"] for e in paged}) == len(paged)


async def test_audit_rejects_malformed_parameters(own_stack: Stack) -> None:
    admin = _admin(own_stack)
    async with own_stack.client() as http:
        bad_date = await http.get("/v1/admin/audit", headers=admin, params={"from": "31.12.2025"})
        reversed_range = await http.get("/v1/admin/audit", headers=admin,
                                        params={"from": "2026-01-02T00:00:00Z", "to": "2026-01-01T00:00:00Z"})
        bad_action = await http.get("/v1/admin/audit", headers=admin, params={"action": "case%' OR 1=1"})
        bad_limit = await http.get("/v1/admin/audit", headers=admin, params={"limit": 0})
    for r in (bad_date, reversed_range, bad_action, bad_limit):
        assert r.status_code == 422, r.text
        assert r.headers["content-type"].startswith("application/problem+json")


async def test_only_admins_read_the_audit_trail(own_stack: Stack, cases) -> None:
    async with own_stack.client() as http:
        for headers in (own_stack.token("clerk-1", "clerk", "ordnungsamt"),
                        own_stack.token("portal-va-1", "integrator"),
                        own_stack.token("arch-1", "archivist"), own_stack.token("post-1", "mailroom")):
            for url in ("/v1/admin/audit", f"/v1/admin/audit/subject/{cases[0]['applicant_id']}"):
                r = await http.get(url, headers=headers)
                assert r.status_code == 403, (url, r.text)
        assert (await http.get("/v1/admin/audit")).status_code == 401


async def test_reading_the_audit_trail_is_audited(own_stack: Stack, cases) -> None:
    reader = f"dsb-{uuid.uuid4().hex[:6]}"
    async with own_stack.client() as http:
        r = await http.get("/v1/admin/audit", headers=own_stack.token(reader, "admin"),
                           params={"case_id": cases[0]["case_id"], "action": "document."})
        assert r.status_code == 200
    with own_stack.sessions()() as s:
        reads = list(s.scalars(select(AuditEvent).where(AuditEvent.actor == reader)))
    assert [(e.action, e.role, e.case_id, e.subject_id) for e in reads] == [
        ("audit.read", "admin", cases[0]["case_id"], cases[0]["applicant_id"])]
    assert reads[0].details["filters"] == {"case_id": cases[0]["case_id"], "action": "document."}


async def test_subject_request_returns_that_persons_cases_and_events_only(own_stack: Stack, cases) -> None:
    a, b = cases
    async with own_stack.client() as http:
        r = await http.get(f"/v1/admin/audit/subject/{a['applicant_id']}", headers=_admin(own_stack),
                           params={"reason": "Auskunftsersuchen DSB-2026-17"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["subject_id"] == a["applicant_id"]
    assert [c["case_id"] for c in body["cases"]] == [a["case_id"]]
    assert {d["kind"] for d in body["cases"][0]["documents"]} == {"Antrag", "Urkunde"}
    events = body["events"]["items"]
    assert {"case.create", "case.read", "document.issue.certificate"} <= {e["action"] for e in events}
    assert all(e["subject_id"] == a["applicant_id"] for e in events)
    assert b["case_id"] not in {e["case_id"] for e in events}
    with own_stack.sessions()() as s:  # the Auskunft itself is on the person's record
        given = s.scalar(select(AuditEvent).where(AuditEvent.action == "audit.read",
                                                  AuditEvent.target_type == "subject",
                                                  AuditEvent.subject_id == a["applicant_id"]))
    assert given is not None and given.reason == "Auskunftsersuchen DSB-2026-17"


async def test_subject_request_for_an_unknown_person_is_empty(own_stack: Stack, cases) -> None:
    async with own_stack.client() as http:
        r = await http.get("/v1/admin/audit/subject/bund-id-nobody", headers=_admin(own_stack))
    assert r.status_code == 200
    assert r.json()["cases"] == [] and r.json()["events"]["items"] == []


async def test_viewing_a_case_is_an_audited_read(own_stack: Stack, cases) -> None:
    a = cases[0]
    reads_of_a = select(AuditEvent).where(AuditEvent.action == "case.read", AuditEvent.case_id == a["case_id"])
    with own_stack.sessions()() as s:
        before = len(list(s.scalars(reads_of_a)))
    async with own_stack.client() as http:
        r = await http.get(f"/v1/cases/{a['case_id']}", headers=own_stack.token("clerk-viewer", "clerk", "steueramt"))
        assert r.status_code == 200
    with own_stack.sessions()() as s:
        reads = list(s.scalars(reads_of_a.order_by(AuditEvent.seq)))
    assert len(reads) == before + 1
    assert (reads[-1].actor, reads[-1].role, reads[-1].subject_id) == ("clerk-viewer", "clerk", a["applicant_id"])
    # the submitting portal's status polls while the case ran were recorded as well
    assert ("portal-va-1", "integrator") in {(e.actor, e.role) for e in reads}


async def test_repeated_views_by_one_caller_are_covered_by_one_event_per_window(own_stack: Stack, cases) -> None:
    """A portal polling a case's status writes one read event per window (AUDIT_READ_WINDOW_S),
    which says so; another caller, or the same caller after the window, writes its own."""
    a = cases[0]
    window = own_stack.settings.audit_read_window_s
    assert window > 0  # the stacks run with the production default
    reads_of_a = select(AuditEvent).where(AuditEvent.action == "case.read", AuditEvent.case_id == a["case_id"])
    with own_stack.sessions()() as s:
        before = {e.id for e in s.scalars(reads_of_a)}
    async with own_stack.client() as http:
        for _ in range(3):  # a portal that did not submit the case: 404, and no read to record
            r = await http.get(f"/v1/cases/{a['case_id']}", headers=own_stack.token("portal-poll", "integrator"))
            assert r.status_code == 404
        clerk = own_stack.token("clerk-window", "clerk", "steueramt")  # Hundeanmeldung
        for _ in range(3):
            assert (await http.get(f"/v1/cases/{a['case_id']}", headers=clerk)).status_code == 200
    with own_stack.sessions()() as s:
        new = [e for e in s.scalars(reads_of_a.order_by(AuditEvent.seq)) if e.id not in before]
    # the clerk's three views: one event, which says how long it stands for
    assert [(e.actor, e.details) for e in new] == [("clerk-window", {"covers_repeated_reads_for_s": window})]


def test_the_chain_check_reads_one_snapshot_while_events_are_appended(own_stack: Stack, cases) -> None:
    """A live system keeps auditing during `verify`: appends after the walk began are no finding."""
    import threading

    from eakte import records
    from eakte.db import transaction
    from eakte.verify import VerifyReport, check_audit_chain

    sessions = own_stack.sessions()
    stop = threading.Event()

    def keep_auditing() -> None:
        while not stop.is_set():
            with transaction(sessions) as s:
                records.audit(s, actor="load", role="system", action="test.append", target_type="test", target_id="x")

    writer = threading.Thread(target=keep_auditing)
    writer.start()
    try:
        reports = []
        for _ in range(15):
            report = VerifyReport(bucket="-", started_at=dt.datetime.now(dt.UTC))
            check_audit_chain(sessions, report)
            reports.append(report)
    finally:
        stop.set()
        writer.join()
    assert [f for r in reports for f in r.findings] == []
    assert reports[-1].audit_events_checked > reports[0].audit_events_checked  # appends did happen meanwhile

"""A real PostgreSQL stopped under a running stack — crashed (``pg_ctl stop -m immediate``) or
shut down cleanly (``-m fast``) — and started again: while it is down every API call that
needs it answers 503 with Retry-After as problem+json (never 500) and /readyz names the
database; the case waiting for a clerk carries on once it is back, a decision the workflow
accepted during the outage is not lost, and the case ends with exactly one Akte, one
certificate, one dispatch and one payment, with an intact audit chain. The connection pools
(API and worker) recover by themselves (``pool_pre_ping``): no stale-connection errors.

The tests own their PostgreSQL (``tests.servers.PrivatePostgres``: initdb into a temporary
directory, its own port and socket directory) and never touch a shared server; they run on
PostgreSQL only, whatever ``TEST_DATABASE_URL`` says. Without initdb/pg_ctl they fail, never skip.
When run as root, initdb/pg_ctl run as the OS user ``postgres`` (initdb refuses root).

What a clerk sees: the decision endpoint reads the case from the database before it asks the
workflow, so while the database is down the clerk gets 503 and repeats the decision later
(the clean-stop test). A clerk whose request got past that read just before the crash has
handed the decision to the workflow (and waits for its outcome until the database is back);
the crash test stands in for that request with the Temporal Update itself
(accepted by the workflow while the database is down) and checks that it is carried out.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator

import httpx
import psycopg
import pytest
from sqlalchemy import func, select
from temporalio.client import WorkflowUpdateStage

from activities.payment import sign
from eakte.audit import verify_chain
from eakte.models import Akte, Dispatch, Dokument, SandboxPayment, Vorgang
from tests.conftest import Stack, running_stack
from tests.integration.helpers import HUND, MELDE, PDF, application, pay, wait_for_case
from tests.servers import PrivatePostgres, require_server
from workflows import contracts as c
from workflows.case import CaseWorkflow

OUTAGE_S = 12.0  # how long the database stays down in the crash test (activity retries: 1, 2, 4, 8 s ...)


@pytest.fixture(scope="module")
def private_pg() -> Iterator[PrivatePostgres]:
    try:
        pg = PrivatePostgres.create()
        pg.start()
    except Exception as exc:  # noqa: BLE001
        require_server("initdb/pg_ctl (a private PostgreSQL cluster of the test's own)", exc)
    try:
        yield pg
    finally:
        pg.destroy()


@pytest.fixture(scope="module")
def pg_stack(private_pg: PrivatePostgres, temporal_server, s3_server) -> Iterator[Stack]:  # type: ignore[no-untyped-def]
    with running_stack(private_pg.url(), temporal_server, s3_server, register_timeout_s=3.0) as st:
        yield st


def assert_503(r: httpx.Response, what: str) -> None:
    """The answer an API call gets while a backing service is down."""
    assert r.status_code == 503, (what, r.status_code, r.text)
    assert int(r.headers["retry-after"]) > 0, what
    assert r.headers["content-type"].startswith("application/problem+json"), (what, r.headers["content-type"])
    assert r.json()["status"] == 503, (what, r.text)


async def until_ok(http: httpx.AsyncClient, method: str, url: str, headers: dict[str, str], *,
                   timeout: float = 30, **kw) -> tuple[httpx.Response, list[int]]:  # type: ignore[no-untyped-def]
    """Repeat a request until it succeeds; every answer before that must be a 503 (never a 500)."""
    seen: list[int] = []
    deadline = time.monotonic() + timeout
    while True:
        r = await http.request(method, url, headers=headers, **kw)
        seen.append(r.status_code)
        if r.status_code < 300:
            return r, seen
        assert r.status_code == 503, (url, seen, r.text)
        assert time.monotonic() < deadline, (url, "still 503 after the database is back", seen, r.text)
        await asyncio.sleep(0.25)


def stale_client_connections(pg: PrivatePostgres) -> int:
    with psycopg.connect(host="127.0.0.1", port=pg.port, user="postgres", dbname="postgres", autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' "
                           "AND pid <> pg_backend_pid()").fetchone()
    return int(row[0]) if row else 0


def assert_exactly_once(st: Stack, case_id: str, *, integrator: str, service_key: str, paid: bool) -> None:
    with st.sessions()() as s:
        v = s.get(Vorgang, case_id)
        assert v is not None and v.status == c.COMPLETED, v and v.status
        assert s.scalar(select(func.count()).select_from(Vorgang).where(
            Vorgang.integrator == integrator, Vorgang.service_key == service_key)) == 1
        assert s.scalar(select(func.count()).select_from(Akte).join(Vorgang, Vorgang.akte_id == Akte.id)
                        .where(Vorgang.id == case_id)) == 1
        assert s.scalar(select(func.count()).select_from(Dokument).where(
            Dokument.vorgang_id == case_id, Dokument.kind == "Urkunde")) == 1
        assert s.scalar(select(func.count()).select_from(Dispatch).where(Dispatch.vorgang_id == case_id)) == 1
        if paid:
            assert v.payment_status == "paid"
            assert s.scalar(select(func.count()).select_from(SandboxPayment).where(
                SandboxPayment.reference == v.aktenzeichen)) == 1
        assert verify_chain(s) == []


async def test_the_pools_reconnect_after_a_crash_without_a_single_failed_request(pg_stack, private_pg) -> None:
    """Connections pooled before the crash are dead afterwards; with pool_pre_ping the first
    requests after the restart get fresh ones and succeed (no 500, not even a 503)."""
    clerk = pg_stack.token("clerk-pool", "clerk", "buergerbuero")
    async with pg_stack.client() as http:
        for r in await asyncio.gather(*(http.get("/v1/tasks", headers=clerk) for _ in range(8))):
            assert r.status_code == 200, r.text
        assert (await http.get("/readyz")).status_code == 200
        assert stale_client_connections(private_pg) >= 2  # the API's (and the worker's) idle pooled connections
        private_pg.stop("immediate")
        private_pg.start()
        answers = await asyncio.gather(*(http.get("/v1/tasks", headers=clerk) for _ in range(8)),
                                       http.get("/readyz"))
        assert [r.status_code for r in answers] == [200] * len(answers), [(r.status_code, r.text) for r in answers]


async def test_a_database_crash_mid_case_gives_503_and_loses_neither_case_nor_decision(pg_stack, private_pg) -> None:
    tag = uuid.uuid4().hex[:8]
    portal_sub, clerk_sub = f"portal-crash-{tag}", f"clerk-crash-{tag}"
    portal = pg_stack.token(portal_sub, "integrator")
    clerk = pg_stack.token(clerk_sub, "clerk", "buergerbuero")
    temporal = await pg_stack.temporal()
    async with pg_stack.client() as http:
        # (a cold worker may need longer than register_timeout_s: repeat with the key, as integrators do)
        r, _ = await until_ok(http, "POST", "/v1/cases", {**portal, "Idempotency-Key": tag}, json=application(MELDE))
        assert r.status_code == 201, r.text
        case_id = r.json()["case_id"]
        await wait_for_case(http, case_id, portal, status="awaiting_decision")

        private_pg.stop("immediate")  # a crash: the server dies without a checkpoint
        down_since = time.monotonic()
        try:
            assert_503(await http.get(f"/v1/cases/{case_id}", headers=clerk), "GET case (clerk)")
            assert_503(await http.get(f"/v1/cases/{case_id}", headers=portal), "GET case (integrator)")
            assert_503(await http.get("/v1/tasks", headers=clerk), "GET inbox")
            assert_503(await http.post(f"/v1/cases/{case_id}/decision", json={"decision": "approve"},
                                       headers=clerk), "POST decision")
            # with an Idempotency-Key the API looks the key up first: refused before anything starts
            r = await http.post("/v1/cases", json=application(HUND, name="Ida Key"),
                                headers={**portal, "Idempotency-Key": f"{tag}-down"})
            assert_503(r, "POST case with Idempotency-Key")
            # without one the workflow is started and cannot register: 503, but the case is accepted
            r = await http.post("/v1/cases", json=application(HUND, name="Nora Nokey"), headers=portal)
            assert_503(r, "POST case without Idempotency-Key")
            nokey_id = r.json()["case_id"]  # the answer names the accepted case, so nobody sends it twice
            assert nokey_id in r.json()["detail"] and "do not send it again" in r.json()["detail"]
            ready = await http.get("/readyz")
            assert ready.status_code == 503 and int(ready.headers["retry-after"]) > 0
            checks = ready.json()["checks"]
            assert checks["database"].startswith("unavailable"), checks
            assert checks["temporal"] == "ok" and checks["s3"] == "ok", checks

            # the clerk's decision reaches the workflow (as a request that got past the API's read
            # just before the crash would): accepted, then its activities fail on the dead database
            handle = temporal.get_workflow_handle(case_id)
            decision = await handle.start_update(
                CaseWorkflow.decide, c.Decision(actor=c.Actor(sub=clerk_sub, roles=["clerk"],
                                                              departments=["buergerbuero"]), approve=True),
                wait_for_stage=WorkflowUpdateStage.ACCEPTED)
            retried = None
            while retried is None and time.monotonic() - down_since < OUTAGE_S:
                pending = (await handle.describe()).raw_description.pending_activities
                # recording the decision retries against the dead database (the payment request runs
                # alongside it and retries too: the sandbox provider lives on the same database)
                retried = next((a for a in pending if a.activity_type.name == c.ACT_RECORD_PROGRESS
                                and a.attempt >= 2 and a.last_failure.message), None)
                await asyncio.sleep(0.5)
            assert retried is not None, "recording the decision did not retry against the dead database"
            # (the server may shorten a big failure to "Failure exceeds size limit." with the error as its cause)
            failure, types = retried.last_failure, []
            while failure.message:
                types.append(failure.application_failure_info.type)
                failure = failure.cause
            assert "OperationalError" in types, retried.last_failure
            result = asyncio.ensure_future(decision.result())
            await asyncio.wait({result}, timeout=0.5)
            assert not result.done(), "the decision completed without a database"
            await asyncio.sleep(max(0.0, OUTAGE_S - (time.monotonic() - down_since)))
            assert_503(await http.get(f"/v1/cases/{case_id}", headers=clerk), "GET case, still down")
        finally:
            private_pg.start()  # crash recovery from the WAL, then connections are accepted

        # the first requests after the restart: 200 (or 503 while recovering), never 500
        r, _ = await until_ok(http, "GET", f"/v1/cases/{case_id}", clerk)
        await until_ok(http, "GET", "/v1/tasks", clerk)
        await until_ok(http, "GET", "/readyz", {})

        outcome = await asyncio.wait_for(result, 60)  # the accepted decision is carried out
        assert outcome.decision == "approved" and outcome.status == c.AWAITING_PAYMENT and outcome.payment_url
        case = await wait_for_case(http, case_id, clerk, status="awaiting_payment")
        assert case["decision"] == "approved"
        # the clerk repeating the decision after the outage is told it is decided (no second one)
        r = await http.post(f"/v1/cases/{case_id}/decision", json={"decision": "approve"}, headers=clerk)
        assert r.status_code == 409, r.text
        await pay(http, outcome.payment_url)
        await wait_for_case(http, case_id, portal, status="completed", timeout=60)

        # the case accepted without an Idempotency-Key during the outage was not lost either
        with pg_stack.sessions()() as s:
            nokey = list(s.scalars(select(Vorgang.id).where(Vorgang.integrator == portal_sub,
                                                            Vorgang.service_key == HUND)))
        assert nokey == [nokey_id]
        await wait_for_case(http, nokey[0], portal, status="completed", timeout=60)

    with pg_stack.sessions()() as s:
        v = s.get(Vorgang, case_id)
        assert v is not None and v.decision == "approved" and v.decided_by == clerk_sub
    assert_exactly_once(pg_stack, case_id, integrator=portal_sub, service_key=MELDE, paid=True)
    assert_exactly_once(pg_stack, nokey[0], integrator=portal_sub, service_key=HUND, paid=False)


async def test_a_clean_database_stop_the_clerk_retries_and_the_case_finishes(pg_stack, private_pg) -> None:
    tag = uuid.uuid4().hex[:8]
    portal_sub = f"portal-fast-{tag}"
    portal = pg_stack.token(portal_sub, "integrator")
    clerk = pg_stack.token(f"clerk-fast-{tag}", "clerk", "buergerbuero")
    async with pg_stack.client() as http:
        # (a cold worker may need longer than register_timeout_s: repeat with the key, as integrators do)
        r, _ = await until_ok(http, "POST", "/v1/cases", {**portal, "Idempotency-Key": tag}, json=application(MELDE))
        assert r.status_code == 201, r.text
        case_id = r.json()["case_id"]
        await wait_for_case(http, case_id, portal, status="awaiting_decision")
        second = {**portal, "Idempotency-Key": f"{tag}-2"}
        body = application(HUND, name="Kai Später")
        r = await http.get(f"/v1/cases/{case_id}", headers=clerk)
        antrag, aktenzeichen = r.json()["documents"][0]["id"], r.json()["aktenzeichen"]
        admin = pg_stack.token(f"admin-fast-{tag}", "admin")
        mailroom = pg_stack.token(f"mailroom-fast-{tag}", "mailroom")
        secret = pg_stack.settings.payment_webhook_secret
        event = json.dumps({"event_id": f"ev-{tag}", "payment_id": f"pay-{tag}", "reference": aktenzeichen,
                            "status": "paid", "amount_cents": 1000}).encode()

        private_pg.stop("fast")  # a clean shutdown: sessions are told to go, then the server stops
        try:
            assert_503(await http.get(f"/v1/cases/{case_id}", headers=clerk), "GET case")
            assert_503(await http.get("/v1/tasks", headers=clerk), "GET inbox")
            assert_503(await http.post(f"/v1/cases/{case_id}/decision", json={"decision": "approve"},
                                       headers=clerk), "POST decision")
            assert_503(await http.post("/v1/cases", json=body, headers=second), "POST case")
            ready = await http.get("/readyz")
            assert ready.status_code == 503 and ready.json()["checks"]["database"].startswith("unavailable")
            # the rest of the API that needs the database: 503 as well, never 500
            for method, url, headers, kw in (
                ("GET", f"/v1/documents/{antrag}", clerk, {}),
                ("GET", f"/v1/documents/{antrag}/content", clerk, {}),
                ("POST", f"/v1/cases/{case_id}/documents", portal,
                 {"files": {"file": ("nachweis.pdf", PDF, "application/pdf")}}),
                ("POST", f"/v1/cases/{case_id}/notes", clerk, {"json": {"text": "Rückruf vereinbart"}}),
                ("GET", "/v1/search?q=Antrag", clerk, {}),
                ("GET", f"/v1/akten?aktenzeichen={aktenzeichen}", clerk, {}),
                ("GET", f"/v1/admin/cases/{case_id}", admin, {}),  # the case part is read from the database
                ("GET", "/v1/admin/audit", admin, {}),
                ("GET", "/v1/admin/disposal", admin, {}),
                ("GET", "/v1/mailroom/items", mailroom, {}),
                ("GET", "/v1/verify/ABCD-EFGH-JKLM", {}, {}),
                ("GET", "/sandbox-pay/pay/pay-0123456789", {}, {}),
                # a payment provider's confirmation: refused with 503, so the provider delivers it again
                ("POST", "/v1/payments/webhook", {"X-Payment-Signature": sign(secret, int(time.time()), event)},
                 {"content": event}),
            ):
                assert_503(await http.request(method, url, headers=headers, **kw), f"{method} {url}")
            # the admin's case list comes from Temporal's visibility store, not the database
            assert (await http.get("/v1/admin/cases", headers=admin)).status_code == 200
            await asyncio.sleep(5)
        finally:
            private_pg.start()

        # the clerk repeats the decision as Retry-After says: 503 until the database answers, then 200
        r, seen = await until_ok(http, "POST", f"/v1/cases/{case_id}/decision", clerk, json={"decision": "approve"})
        assert set(seen) <= {200, 503}, seen
        payment_url = r.json()["payment_url"]
        assert payment_url
        # the integrator repeats its submission with the same key: one case
        r, _ = await until_ok(http, "POST", "/v1/cases", second, json=body)
        assert r.status_code == 201
        later = r.json()["case_id"]
        await pay(http, payment_url)
        await wait_for_case(http, case_id, portal, status="completed", timeout=60)
        await wait_for_case(http, later, portal, status="completed", timeout=60)
    assert_exactly_once(pg_stack, case_id, integrator=portal_sub, service_key=MELDE, paid=True)
    assert_exactly_once(pg_stack, later, integrator=portal_sub, service_key=HUND, paid=False)

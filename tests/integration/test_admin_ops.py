"""Admin views and operations: filters, counts, a readable history, retry / cancel / terminate /
reroute and batches, each with a reason and audited.

The stack here has its own database and a payment provider address nobody listens on, so an
approved Meldebescheinigung gets stuck in ``request_payment`` (a real activity failing against
a real refused connection): that is what the stuck filter and the retry operation are tested on.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from temporalio.client import WorkflowExecutionStatus

from aktenlauf import devstack
from tests.conftest import Stack, fresh_database, running_stack
from tests.integration.helpers import HUND, MELDE, application, wait_for_case

ADMIN_DEPT = "buergerbuero"


@pytest.fixture(scope="module")
def ops_stack(database_url: str, temporal_server, s3_server,  # type: ignore[no-untyped-def]
              tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    dead = f"http://127.0.0.1:{devstack.free_port()}"  # nothing listens here: payments cannot be requested
    with (fresh_database(database_url, tmp_path_factory) as url,
          running_stack(url, temporal_server, s3_server, payment_provider_url=dead, update_timeout_s=3.0) as st):
        yield st


async def _start(http: httpx.AsyncClient, st: Stack, service: str = MELDE) -> str:
    portal = st.token("portal-ops", "integrator")
    r = await http.post("/v1/cases", json=application(service), headers=portal)
    assert r.status_code == 201, r.text
    return r.json()["case_id"]


async def _waiting(http: httpx.AsyncClient, st: Stack) -> str:
    case_id = await _start(http, st)
    await wait_for_case(http, case_id, st.token("portal-ops", "integrator"), status="awaiting_decision")
    return case_id


async def _listed(http: httpx.AsyncClient, admin: dict[str, str], case_id: str, params: dict[str, Any],
                  timeout: float = 30) -> list[dict[str, Any]]:
    """The list for ``params`` once it shows ``case_id`` (visibility is eventually consistent)."""
    deadline = time.monotonic() + timeout
    rows: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        r = await http.get("/v1/admin/cases", params=params, headers=admin)
        assert r.status_code == 200, r.text
        rows = r.json()
        if case_id in [x["case_id"] for x in rows]:
            return rows
        await asyncio.sleep(0.3)
    raise AssertionError(f"{case_id} not listed for {params}: {rows}")


@pytest.fixture(scope="module")
async def stuck_case(ops_stack: Stack) -> str:
    """A Meldebescheinigung approved by the clerk, now failing in request_payment."""
    st = ops_stack
    clerk = st.token("clerk-ops", "clerk", ADMIN_DEPT)
    async with st.client() as http:
        case_id = await _waiting(http, st)
        r = await http.post(f"/v1/cases/{case_id}/decision", json={"decision": "approve"}, headers=clerk)
        assert r.status_code == 503, r.text  # the payment cannot be requested: the decision waits, carried out later
        return case_id


async def _op(http: httpx.AsyncClient, headers: dict[str, str], case_id: str, op: str,
              **body: Any) -> httpx.Response:
    """POST /v1/admin/cases/{case_id}/{op} with ``body`` as JSON."""
    return await http.post(f"/v1/admin/cases/{case_id}/{op}", json=body, headers=headers)


async def _view(http: httpx.AsyncClient, admin: dict[str, str], case_id: str) -> dict[str, Any]:
    """The admin's view of one case (GET /v1/admin/cases/{case_id})."""
    return (await http.get(f"/v1/admin/cases/{case_id}", headers=admin)).json()  # type: ignore[no-any-return]


def _audited(view: dict[str, Any], op: str) -> list[dict[str, Any]]:
    """The view's audit events of the admin operation ``op``."""
    return [a for a in view["audit"] if a["action"] == f"admin.case.{op}"]


async def _pending(http: httpx.AsyncClient, admin: dict[str, str], case_id: str) -> list[dict[str, Any]]:
    r = await http.get(f"/v1/admin/cases/{case_id}", headers=admin)
    assert r.status_code == 200, r.text
    return r.json()["pending_activities"]


# --------------------------------------------------------------------------- listing


async def test_the_list_filters_by_status_service_department_and_step(ops_stack: Stack) -> None:
    st = ops_stack
    admin = st.token("admin-ops", "admin")
    async with st.client() as http:
        waiting = await _waiting(http, st)
        done = await _start(http, st, HUND)  # no decision, no fee: completes on its own
        await wait_for_case(http, done, st.token("portal-ops", "integrator"), status="completed")
        rows = await _listed(http, admin, waiting, {"status": "awaiting_decision", "service": MELDE,
                                                    "department": ADMIN_DEPT, "step": "decision", "open": "true"})
        assert all(x["status"] == "awaiting_decision" and x["service_key"] == MELDE for x in rows)
        assert done not in [x["case_id"] for x in rows]
        closed = await _listed(http, admin, done, {"status": "completed", "open": "false"})
        assert all(x["workflow_status"] == "COMPLETED" and x["closed_at"] for x in closed)
        # date ranges over StartTime / CloseTime
        future = (dt.datetime.now(dt.UTC) + dt.timedelta(days=1)).isoformat()
        past = (dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)).isoformat()
        assert (await http.get("/v1/admin/cases", params={"started_from": future}, headers=admin)).json() == []
        await _listed(http, admin, done, {"closed_from": past, "closed_to": future})
        r = await http.get("/v1/admin/cases", params={"closed_to": past}, headers=admin)
        assert done not in [x["case_id"] for x in r.json()]
        # the overdue filter: a fresh case's deadline lies ahead
        r = await http.get("/v1/admin/cases", params={"overdue": "true"}, headers=admin)
        assert r.status_code == 200 and waiting not in [x["case_id"] for x in r.json()]


async def test_the_list_pages_with_a_next_page_token(ops_stack: Stack) -> None:
    st = ops_stack
    admin = st.token("admin-ops", "admin")
    async with st.client() as http:
        for _ in range(3):
            await _start(http, st, HUND)
        await asyncio.sleep(1)
        first = await http.get("/v1/admin/cases", params={"limit": 2}, headers=admin)
        assert first.status_code == 200 and len(first.json()) == 2
        token = first.headers["Next-Page-Token"]
        second = await http.get("/v1/admin/cases", params={"limit": 2, "page_token": token}, headers=admin)
        assert second.status_code == 200 and second.json()
        assert not {x["case_id"] for x in first.json()} & {x["case_id"] for x in second.json()}


@pytest.mark.parametrize("params", [{"status": "x' OR 1=1"}, {"service": "a b"}, {"department": "x'"},
                                    {"step": "decision' OR 'a'='a"}, {"page_token": "not a token!"},
                                    {"started_from": "yesterday"}, {"stuck_minutes": "-1"}, {"limit": "0"}])
async def test_filter_values_that_could_break_the_query_are_refused(ops_stack: Stack, params: dict[str, str]) -> None:
    async with ops_stack.client() as http:
        r = await http.get("/v1/admin/cases", params=params, headers=ops_stack.token("admin-ops", "admin"))
        assert r.status_code == 422, r.text
        assert r.headers["content-type"].startswith("application/problem+json")


async def test_counts_per_status_come_from_the_read_model(ops_stack: Stack) -> None:
    st = ops_stack
    admin = st.token("admin-ops", "admin")
    async with st.client() as http:
        before = (await http.get("/v1/admin/cases/counts", headers=admin)).json()
        await _waiting(http, st)
        after = (await http.get("/v1/admin/cases/counts", headers=admin)).json()
        assert after["total"] == before["total"] + 1
        by = {x["status"]: x for x in after["by_status"]}
        assert by["awaiting_decision"]["count"] >= 1 and by["awaiting_decision"]["final"] is False
        assert after["by_service"][MELDE]["awaiting_decision"] >= 1
        assert after["open"] == sum(x["count"] for x in after["by_status"] if not x["final"])


# --------------------------------------------------------------------------- one case


async def test_the_case_view_has_a_readable_history_and_the_audit_trail(ops_stack: Stack) -> None:
    st = ops_stack
    admin = st.token("admin-ops", "admin")
    clerk = st.token("clerk-read", "clerk", ADMIN_DEPT)
    async with st.client() as http:
        case_id = await _waiting(http, st)
        r = await http.post(f"/v1/cases/{case_id}/decision", json={"decision": "reject", "reason": "unvollständig"},
                            headers=clerk)
        assert r.status_code == 200, r.text
        await wait_for_case(http, case_id, admin, status="rejected")
        await (await st.temporal()).get_workflow_handle(case_id).result()  # the rejection notice is sent and filed
        r = await http.get(f"/v1/admin/cases/{case_id}", headers=admin)
        assert r.status_code == 200, r.text
        view = r.json()
        texts = [e["text"] for e in view["history"]]
        assert texts[0].startswith("workflow CaseWorkflow started")
        assert "activity open_case completed" in texts
        assert "update decide by clerk-read accepted" in texts
        assert "update decide completed" in texts
        assert texts[-1] == "workflow completed"
        decide = next(e for e in view["history"] if e["text"] == "update decide by clerk-read accepted")
        assert decide["actor"] == "clerk-read" and decide["step"] == "decision" and decide["result"] == "accepted"
        assert all(not e["type"].startswith("WORKFLOW_TASK") for e in view["history"])  # bookkeeping left out
        # the applicant's name and address are in the workflow's input, never in the readable history
        assert "Mustermann" not in str(view["history"]) and "Hauptstraße" not in str(view["history"])
        actions = [a["action"] for a in view["audit"]]
        assert "case.create" in actions and "case.rejected" in actions
        assert all(a["case_id"] == case_id for a in view["audit"])
        assert view["workflow"]["status"] == "COMPLETED"
        assert (await http.get("/v1/admin/cases/case-doesnotexist", headers=admin)).status_code == 404


# --------------------------------------------------------------------------- stuck and retry


async def test_a_failing_activity_makes_the_case_stuck_with_its_last_failure(ops_stack: Stack, stuck_case: str) -> None:
    st = ops_stack
    admin = st.token("admin-ops", "admin")
    async with st.client() as http:
        rows = await _listed(http, admin, stuck_case, {"stuck": "true", "stuck_minutes": "0"}, timeout=60)
        row = next(x for x in rows if x["case_id"] == stuck_case)
        failing = row["stuck"][0]
        assert failing["activity_type"] == "request_payment"
        assert failing["attempt"] > 1
        # the server keeps a failure up to a size limit (Python stack traces with a cause chain exceed it)
        assert any(m in failing["last_failure"] for m in ("payment provider unreachable", "exceeds size limit"))
        assert failing["failing_since"]
        # not failing for ten minutes yet
        r = await http.get("/v1/admin/cases", params={"stuck": "true"}, headers=admin)
        assert stuck_case not in [x["case_id"] for x in r.json()]


async def test_retry_makes_the_failing_activity_run_again_at_once(ops_stack: Stack, stuck_case: str) -> None:
    st = ops_stack
    admin = st.token("admin-ops", "admin")
    async with st.client() as http:
        deadline = time.monotonic() + 90
        attempt = 0
        while time.monotonic() < deadline:  # back-off grows: 1, 2, 4, 8 s ... between attempts
            pending = [a for a in await _pending(http, admin, stuck_case) if a["activity_type"] == "request_payment"]
            attempt = pending[0]["attempt"] if pending else 0
            if attempt >= 5:
                break
            await asyncio.sleep(1)
        assert attempt >= 5, attempt
        assert (await _op(http, admin, stuck_case, "retry")).status_code == 422
        r = await _op(http, admin, stuck_case, "retry", reason="Zahlungsdienst wieder da")
        assert r.status_code == 200, r.text
        assert r.json()["result"]["activities"][0]["attempt"] >= 5
        # the next attempt runs at once, counted from 1 again (it fails again: the provider is still gone)
        await asyncio.sleep(2)
        pending = [a for a in await _pending(http, admin, stuck_case) if a["activity_type"] == "request_payment"]
        assert pending and pending[0]["attempt"] < attempt
        retried = _audited(await _view(http, admin, stuck_case), "retry")
        assert len(retried) == 1 and retried[0]["actor"] == "admin-ops"
        assert retried[0]["reason"] == "Zahlungsdienst wieder da"


async def test_retry_refuses_a_case_without_a_failing_activity_and_an_unknown_case(ops_stack: Stack) -> None:
    st = ops_stack
    admin = st.token("admin-ops", "admin")
    async with st.client() as http:
        waiting = await _waiting(http, st)
        r = await _op(http, admin, waiting, "retry", reason="Test")
        assert r.status_code == 409, r.text
        r = await _op(http, admin, "case-unknown", "retry", reason="Test")
        assert r.status_code == 404


# --------------------------------------------------------------------------- terminate


async def test_terminate_stops_the_workflow_and_closes_the_case_as_terminated(ops_stack: Stack) -> None:
    st = ops_stack
    admin = st.token("admin-ops", "admin")
    async with st.client() as http:
        case_id = await _waiting(http, st)
        r = await _op(http, admin, case_id, "terminate", reason="  ")
        assert r.status_code == 422
        r = await _op(http, admin, case_id, "terminate", reason="Doppelter Antrag")
        assert r.status_code == 200, r.text
        assert r.json()["result"] == {"status": "terminated"}
        client = await st.temporal()
        desc = await client.get_workflow_handle(case_id).describe()
        assert desc.status == WorkflowExecutionStatus.TERMINATED
        case = (await http.get(f"/v1/cases/{case_id}", headers=admin)).json()
        assert case["status"] == "terminated" and case["closed_at"]
        view = await _view(http, admin, case_id)
        audit = _audited(view, "terminate")
        assert len(audit) == 1 and audit[0]["reason"] == "Doppelter Antrag" and audit[0]["actor"] == "admin-ops"
        assert view["history"][-1]["result"] == "terminated"
        # the Akte stays (open, with its documents)
        from eakte.models import Akte, Vorgang

        with st.sessions()() as s:
            v = s.get(Vorgang, case_id)
            assert v is not None and s.get(Akte, v.akte_id).status == "open"
        again = await _op(http, admin, case_id, "terminate", reason="nochmal")
        assert again.status_code == 409
        unknown = await _op(http, admin, "case-unknown", "terminate", reason="x y z")
        assert unknown.status_code == 404


async def test_operations_are_for_admins_only(ops_stack: Stack) -> None:
    st = ops_stack
    clerk = st.token("clerk-ops", "clerk", ADMIN_DEPT)
    async with st.client() as http:
        case_id = await _waiting(http, st)
        for op, body in (("retry", {"reason": "x y z"}), ("cancel", {"reason": "x y z"}),
                         ("terminate", {"reason": "x y z"}), ("reroute", {"reason": "x y z", "department": "standesamt"})):
            assert (await _op(http, clerk, case_id, op, **body)).status_code == 403
        r = await http.post("/v1/admin/cases/batch", json={"operation": "terminate", "filter": {}, "reason": "x y z"},
                            headers=clerk)
        assert r.status_code == 403


# --------------------------------------------------------------------------- cancel and reroute (Updates)


async def test_cancel_goes_through_the_workflow_and_ends_the_case_cancelled(ops_stack: Stack) -> None:
    st = ops_stack
    admin = st.token("admin-ops", "admin")
    async with st.client() as http:
        case_id = await _waiting(http, st)
        assert (await _op(http, admin, case_id, "cancel")).status_code == 422
        r = await _op(http, admin, case_id, "cancel", reason="Antragsteller verstorben")
        assert r.status_code == 200, r.text
        await wait_for_case(http, case_id, admin, status="cancelled")
        view = await _view(http, admin, case_id)
        assert "update admin_cancel by admin-ops accepted" in [e["text"] for e in view["history"]]
        assert [a["reason"] for a in _audited(view, "cancel")] == ["Antragsteller verstorben"]
        again = await _op(http, admin, case_id, "cancel", reason="nochmal")
        assert again.status_code == 409


async def test_reroute_forwards_the_case_to_another_department(ops_stack: Stack) -> None:
    st = ops_stack
    admin = st.token("admin-ops", "admin")
    async with st.client() as http:
        case_id = await _waiting(http, st)
        bad = await _op(http, admin, case_id, "reroute", reason="x y z", department="mond")
        assert bad.status_code == 422 and "unknown department" in bad.json()["detail"]
        same = await _op(http, admin, case_id, "reroute", reason="x y z", department=ADMIN_DEPT)
        assert same.status_code == 409
        r = await _op(http, admin, case_id, "reroute", reason="falsch zugeordnet", department="standesamt")
        assert r.status_code == 200, r.text
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            case = (await http.get(f"/v1/cases/{case_id}", headers=admin)).json()
            if case["department"] == "standesamt":
                break
            await asyncio.sleep(0.3)
        assert case["department"] == "standesamt" and case["status"] == "awaiting_decision"
        audit = _audited(await _view(http, admin, case_id), "reroute")
        assert audit and audit[0]["details"] == {"from": ADMIN_DEPT, "to": "standesamt"}


# --------------------------------------------------------------------------- batch


async def test_batch_dry_run_lists_and_changes_nothing_then_the_batch_runs_per_case(ops_stack: Stack) -> None:
    st = ops_stack
    admin = st.token("admin-ops", "admin")
    async with st.client() as http:
        cases = [await _waiting(http, st) for _ in range(2)]
        since = (dt.datetime.now(dt.UTC) - dt.timedelta(seconds=60)).isoformat()
        flt = {"status": "awaiting_decision", "service": MELDE, "started_from": since}
        for c in cases:
            await _listed(http, admin, c, {"status": "awaiting_decision", "started_from": since})
        bad = await http.post("/v1/admin/cases/batch", json={"operation": "terminate", "filter": flt, "reason": "x y z",
                                                              "limit": 501}, headers=admin)
        assert bad.status_code == 422
        bad = await http.post("/v1/admin/cases/batch", json={"operation": "reroute", "filter": flt, "reason": "x y z"},
                              headers=admin)
        assert bad.status_code == 422  # a reroute needs a department
        dry = await http.post("/v1/admin/cases/batch", json={"operation": "terminate", "filter": flt,
                                                              "reason": "Testlauf", "dry_run": True}, headers=admin)
        assert dry.status_code == 200, dry.text
        listed = {x["case_id"] for x in dry.json()["results"]}
        assert set(cases) <= listed and dry.json()["dry_run"] is True
        for c in cases:
            assert (await http.get(f"/v1/cases/{c}", headers=admin)).json()["status"] == "awaiting_decision"
        unconfirmed = await http.post("/v1/admin/cases/batch", json={"operation": "terminate", "filter": flt,
                                                                      "reason": "Testlauf"}, headers=admin)
        assert unconfirmed.status_code == 422  # dry run first, then confirm the count
        wrong = await http.post("/v1/admin/cases/batch", json={"operation": "terminate", "filter": flt,
                                                                "reason": "Testlauf", "confirm_count": len(listed) + 1},
                                headers=admin)
        assert wrong.status_code == 409
        for c in cases:
            assert (await http.get(f"/v1/cases/{c}", headers=admin)).json()["status"] == "awaiting_decision"
        run = await http.post("/v1/admin/cases/batch", json={"operation": "terminate", "filter": flt,
                                                              "reason": "Testlauf", "confirm_count": len(listed)},
                              headers=admin)
        assert run.status_code == 200, run.text
        results = {x["case_id"]: x for x in run.json()["results"]}
        for c in cases:
            assert results[c]["ok"] is True
            assert (await http.get(f"/v1/cases/{c}", headers=admin)).json()["status"] == "terminated"
        assert run.json()["succeeded"] == sum(1 for x in results.values() if x["ok"])

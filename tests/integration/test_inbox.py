"""The clerk's work lists: department inbox and filters, 'mine', claim/unclaim/reassign,
priorities, deputies (Vertretung), and the rule the decision endpoints ask (check_may_act).

Cases are real (started over the API, waiting for their decision in the workflow). Each
test moves its cases into a department of its own on the read model, so the lists it reads
hold exactly its cases, and sets the casework columns (co-signature, Nachforderung,
deadlines) there directly: assignment is read-model bookkeeping and needs no decision.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from typing import Any

import pytest
from sqlalchemy import select, update

from aktenlauf.errors import Conflict
from eakte import inbox
from eakte.access import Principal
from eakte.models import Akte, AuditEvent, Vorgang
from tests.integration.helpers import MELDE, application, wait_for_case

NOW = lambda: dt.datetime.now(dt.UTC)  # noqa: E731


async def _start_cases(stack, n: int) -> list[str]:  # type: ignore[no-untyped-def]
    portal = stack.token("portal-inbox", "integrator")
    async with stack.client() as http:
        async def one() -> str:
            r = await http.post("/v1/cases", json=application(MELDE), headers=portal)
            assert r.status_code == 201, r.text
            await wait_for_case(http, r.json()["case_id"], portal, status="awaiting_decision")
            return str(r.json()["case_id"])
        return list(await asyncio.gather(*(one() for _ in range(n))))


@pytest.fixture(scope="module")
async def pool(stack) -> list[str]:  # type: ignore[no-untyped-def]
    """Cases waiting for their decision, handed out to the tests one by one."""
    return await _start_cases(stack, 30)


def _take(pool: list[str], n: int) -> list[str]:
    assert len(pool) >= n, "the module's case pool is used up: enlarge it"
    return [pool.pop() for _ in range(n)]


def _move(stack, case_ids: list[str], department: str, **cols: Any) -> None:  # type: ignore[no-untyped-def]
    """Put the cases into ``department`` (a fresh one per test) and set read-model columns."""
    with stack.sessions()() as s, s.begin():
        for cid in case_ids:
            s.execute(update(Vorgang).where(Vorgang.id == cid).values(department=department, **cols))
            akte_id = s.scalar(select(Vorgang.akte_id).where(Vorgang.id == cid))
            s.execute(update(Akte).where(Akte.id == akte_id).values(department=department))


def _set(stack, case_id: str, **cols: Any) -> None:  # type: ignore[no-untyped-def]
    with stack.sessions()() as s, s.begin():
        s.execute(update(Vorgang).where(Vorgang.id == case_id).values(**cols))


def _dept() -> str:
    return "t-" + uuid.uuid4().hex[:10]


def _audit(stack, case_id: str, action: str) -> list[AuditEvent]:  # type: ignore[no-untyped-def]
    with stack.sessions()() as s:
        return list(s.scalars(select(AuditEvent).where(AuditEvent.case_id == case_id, AuditEvent.action == action)
                              .order_by(AuditEvent.id)))


def _problem(r, status: int) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json"), r.headers
    return r.json()  # type: ignore[no-any-return]


# --------------------------------------------------------------------------- the lists


async def test_inbox_items_show_assignee_priority_due_date_and_flags(stack, pool) -> None:
    dep = _dept()
    plain, late, escalated, waiting = _take(pool, 4)
    today = NOW().date()
    _move(stack, [plain, late, escalated, waiting], dep)
    _set(stack, late, deadline_at=NOW() - dt.timedelta(hours=1), due_on=today - dt.timedelta(days=1))
    _set(stack, escalated, escalated_at=NOW(), deadline_at=NOW() + dt.timedelta(days=3))
    _set(stack, waiting, status="awaiting_documents", waiting_for=["Kopie Personalausweis"],
         waiting_until=today + dt.timedelta(days=14), deadline_at=None, due_on=today - dt.timedelta(days=5))
    clerk = stack.token("clerk-list", "clerk", dep)
    async with stack.client() as http:
        r = await http.get("/v1/tasks", headers=clerk)
        assert r.status_code == 200, r.text
        items = {t["case_id"]: t for t in r.json()}
        # by default the cases waiting for a clerk, not the one waiting for the citizen
        assert set(items) == {plain, late, escalated}
        assert items[plain]["assignee"] is None and items[plain]["priority"] == "normal"
        assert items[plain]["overdue"] is False and items[plain]["escalated"] is False
        assert items[plain]["due_on"] is not None and items[plain]["waiting_for"] == []
        assert items[late]["overdue"] is True
        assert items[escalated]["escalated"] is True and items[escalated]["overdue"] is False

        r = await http.get("/v1/tasks", params={"status": "awaiting_documents"}, headers=clerk)
        [w] = r.json()
        # waiting for the citizen: the deadline is paused, so never overdue however old the due date
        assert w["case_id"] == waiting and w["waiting_for"] == ["Kopie Personalausweis"]
        assert w["waiting_until"] == (today + dt.timedelta(days=14)).isoformat() and w["overdue"] is False

        r = await http.get("/v1/tasks", params={"overdue": "true"}, headers=clerk)
        assert [t["case_id"] for t in r.json()] == [late]
        r = await http.get("/v1/tasks", params={"overdue": "false"}, headers=clerk)
        assert {t["case_id"] for t in r.json()} == {plain, escalated}


async def test_inbox_filters_sort_and_pages(stack, pool) -> None:
    dep = _dept()
    a, b, c, d = _take(pool, 4)
    today = NOW().date()
    _move(stack, [a, b, c, d], dep)
    for cid, prio, days in ((a, "low", 9), (b, "urgent", 20), (c, "high", 3), (d, "normal", 12)):
        _set(stack, cid, priority=prio, due_on=today + dt.timedelta(days=days), deadline_at=None)
    _set(stack, a, assignee="clerk-f1", assigned_at=NOW())
    _set(stack, d, assignee="clerk-other", assigned_at=NOW())
    clerk = stack.token("clerk-f1", "clerk", dep)

    async def ids(**params: Any) -> list[str]:
        r = await http.get("/v1/tasks", params=params, headers=clerk)
        assert r.status_code == 200, r.text
        return [t["case_id"] for t in r.json()]

    async with stack.client() as http:
        assert await ids() == [c, a, d, b]  # due date, earliest first
        assert await ids(sort="due_on", order="desc") == [b, d, a, c]
        assert await ids(sort="priority", order="desc") == [b, c, d, a]
        assert await ids(sort="priority") == [a, d, c, b]
        assert await ids(priority=["urgent", "high"]) == [c, b]
        assert await ids(due_before=(today + dt.timedelta(days=10)).isoformat()) == [c, a]
        assert await ids(assignee="me") == [a]
        assert await ids(assignee="none") == [c, b]
        assert await ids(assignee="clerk-other") == [d]
        assert await ids(limit=2) == [c, a]
        assert await ids(limit=2, offset=2) == [d, b]
        assert await ids(limit=2, offset=4) == []
        for bad in ({"status": "completed"}, {"priority": "extreme"}, {"sort": "applicant"}, {"order": "up"},
                    {"limit": 0}, {"due_before": "morgen"}):
            _problem(await http.get("/v1/tasks", params=bad, headers=clerk), 422)


async def test_a_clerk_is_never_offered_to_cosign_their_own_decision(stack, pool) -> None:
    dep = _dept()
    [case_id] = _take(pool, 1)
    _move(stack, [case_id], dep, status="awaiting_cosign", first_decision_by="clerk-first",
          assignee="clerk-first", assigned_at=NOW())
    first, second = stack.token("clerk-first", "clerk", dep), stack.token("clerk-second", "clerk", dep)
    async with stack.client() as http:
        [mine] = (await http.get("/v1/tasks", headers=first)).json()
        assert mine["status"] == "awaiting_cosign" and mine["may_cosign"] is False
        assert (await http.get("/v1/tasks", params={"cosignable": "true"}, headers=first)).json() == []
        [theirs] = (await http.get("/v1/tasks", params={"cosignable": "true"}, headers=second)).json()
        assert theirs["case_id"] == case_id and theirs["may_cosign"] is True
        # the first decider cannot take the co-signature; the second clerk takes the case over
        body = _problem(await http.post(f"/v1/tasks/{case_id}/claim", headers=first), 409)
        assert "another clerk" in body["detail"]
        r = await http.post(f"/v1/tasks/{case_id}/claim", headers=second)
        assert r.status_code == 200, r.text
        assert r.json()["assignee"] == "clerk-second"


# --------------------------------------------------------------------------- claims


async def test_claim_takes_a_case_and_a_second_clerk_gets_409(stack, pool) -> None:
    dep = _dept()
    [case_id] = _take(pool, 1)
    _move(stack, [case_id], dep)
    anna, ben = stack.token("clerk-anna", "clerk", dep), stack.token("clerk-ben", "clerk", dep)
    async with stack.client() as http:
        r = await http.post(f"/v1/tasks/{case_id}/claim", headers=anna)
        assert r.status_code == 200, r.text
        assert r.json()["assignee"] == "clerk-anna" and r.json()["assigned_at"] is not None
        again = await http.post(f"/v1/tasks/{case_id}/claim", headers=anna)  # idempotent for the holder
        assert again.status_code == 200 and again.json()["assigned_at"] == r.json()["assigned_at"]
        body = _problem(await http.post(f"/v1/tasks/{case_id}/claim", headers=ben), 409)
        assert body["assignee"] == "clerk-anna"
        [item] = (await http.get("/v1/tasks", headers=ben)).json()
        assert item["assignee"] == "clerk-anna"
    events = _audit(stack, case_id, "task.claim")
    assert [(e.actor, e.role) for e in events] == [("clerk-anna", "clerk")]  # the repeat changed nothing


async def test_two_clerks_claiming_at_once_one_wins_the_other_gets_409(stack, pool) -> None:
    dep = _dept()
    cases = _take(pool, 3)
    _move(stack, cases, dep)
    clerks = [stack.token(f"clerk-race-{i}", "clerk", dep) for i in range(4)]
    async with stack.client() as http:
        for case_id in cases:
            answers = await asyncio.gather(*(http.post(f"/v1/tasks/{case_id}/claim", headers=h) for h in clerks))
            codes = sorted(a.status_code for a in answers)
            assert codes == [200, 409, 409, 409], [a.text for a in answers]
            winner = next(a.json()["assignee"] for a in answers if a.status_code == 200)
            with stack.sessions()() as s:
                assert s.scalar(select(Vorgang.assignee).where(Vorgang.id == case_id)) == winner
            assert [e.actor for e in _audit(stack, case_id, "task.claim")] == [winner]


async def test_claims_are_refused_for_invisible_closed_and_foreign_cases(stack, pool) -> None:
    dep = _dept()
    open_case, closed = _take(pool, 2)
    _move(stack, [open_case, closed], dep)
    _set(stack, closed, status="withdrawn")
    async with stack.client() as http:
        stranger = stack.token("clerk-stranger", "clerk", "standesamt")
        _problem(await http.post(f"/v1/tasks/{open_case}/claim", headers=stranger), 404)
        _problem(await http.post(f"/v1/tasks/case-{uuid.uuid4().hex}/claim", headers=stranger), 404)
        _problem(await http.post(f"/v1/tasks/{open_case}/claim", headers=stack.token("portal-x", "integrator")), 403)
        own = stack.token("clerk-own", "clerk", dep)
        _problem(await http.post(f"/v1/tasks/{closed}/claim", headers=own), 409)
        # a confidential Akte stays invisible to a clerk without its named role
        with stack.sessions()() as s, s.begin():
            akte_id = s.scalar(select(Vorgang.akte_id).where(Vorgang.id == open_case))
            s.execute(update(Akte).where(Akte.id == akte_id).values(confidential=True, confidential_roles=["personalrat"]))
        _problem(await http.post(f"/v1/tasks/{open_case}/claim", headers=own), 404)
        assert (await http.get("/v1/tasks", headers=own)).json() == []
        cleared = stack.token_for("clerk-pr", ["clerk", "personalrat"], [dep])
        assert (await http.post(f"/v1/tasks/{open_case}/claim", headers=cleared)).status_code == 200


async def test_unclaim_by_the_assignee_their_active_deputy_or_a_teamlead(stack, pool) -> None:
    dep = _dept()
    c1, c2, c3 = _take(pool, 3)
    _move(stack, [c1, c2, c3], dep, assignee="clerk-ua", assigned_at=NOW())
    owner = stack.token("clerk-ua", "clerk", dep)
    colleague = stack.token("clerk-ub", "clerk", dep)
    lead = stack.token_for("lead-u", ["teamlead"], [dep])
    async with stack.client() as http:
        _problem(await http.post(f"/v1/tasks/{c1}/unclaim", headers=colleague), 403)
        r = await http.post(f"/v1/tasks/{c1}/unclaim", json={"reason": "zurück in den Pool"}, headers=owner)
        assert r.status_code == 200 and r.json()["assignee"] is None, r.text
        _problem(await http.post(f"/v1/tasks/{c1}/unclaim", headers=owner), 409)  # nobody holds it now
        assert (await http.post(f"/v1/tasks/{c2}/unclaim", headers=lead)).json()["assignee"] is None
        # a deputy only while the Vertretung runs
        r = await http.post("/v1/deputies", headers=owner, json={
            "deputy": "clerk-ub", "department": dep, "valid_until": (NOW() + dt.timedelta(days=7)).isoformat(),
            "reason": "Urlaub"})
        assert r.status_code == 201, r.text
        assert (await http.post(f"/v1/tasks/{c3}/unclaim", headers=colleague)).status_code == 200
    [ev] = _audit(stack, c1, "task.unclaim")
    assert ev.actor == "clerk-ua" and ev.reason == "zurück in den Pool" and ev.details["before"] == "clerk-ua"
    assert _audit(stack, c3, "task.unclaim")[0].actor == "clerk-ub"


async def test_only_a_teamlead_of_the_department_reassigns_and_sets_priority(stack, pool) -> None:
    dep = _dept()
    [case_id] = _take(pool, 1)
    _move(stack, [case_id], dep, assignee="clerk-ra", assigned_at=NOW())
    clerk = stack.token("clerk-ra", "clerk", dep)
    lead = stack.token_for("lead-r", ["teamlead"], [dep])
    other_lead = stack.token_for("lead-other", ["teamlead"], ["standesamt"])
    body = {"to": "clerk-rb", "reason": "Krankheitsvertretung"}
    async with stack.client() as http:
        _problem(await http.post(f"/v1/tasks/{case_id}/reassign", json=body, headers=clerk), 403)
        _problem(await http.post(f"/v1/tasks/{case_id}/reassign", json=body, headers=other_lead), 404)
        _problem(await http.post(f"/v1/tasks/{case_id}/reassign", json={"to": "clerk-rb"}, headers=lead), 422)
        _problem(await http.post(f"/v1/tasks/{case_id}/reassign", json={"to": "", "reason": "x" * 5},
                                 headers=lead), 422)
        r = await http.post(f"/v1/tasks/{case_id}/reassign", json=body, headers=lead)
        assert r.status_code == 200 and r.json()["assignee"] == "clerk-rb", r.text

        _problem(await http.put(f"/v1/tasks/{case_id}/priority", json={"priority": "urgent"}, headers=clerk), 403)
        _problem(await http.put(f"/v1/tasks/{case_id}/priority", json={"priority": "sofort"}, headers=lead), 422)
        r = await http.put(f"/v1/tasks/{case_id}/priority", json={"priority": "urgent", "reason": "Presseanfrage"},
                           headers=lead)
        assert r.status_code == 200 and r.json()["priority"] == "urgent", r.text
        [item] = (await http.get("/v1/tasks", headers=lead)).json()  # a team lead works cases like a clerk
        assert item["priority"] == "urgent" and item["assignee"] == "clerk-rb"
    [ev] = _audit(stack, case_id, "task.reassign")
    assert (ev.actor, ev.role, ev.reason) == ("lead-r", "teamlead", "Krankheitsvertretung")
    assert ev.details == {"before": "clerk-ra", "after": "clerk-rb"}
    [ev] = _audit(stack, case_id, "task.priority")
    assert ev.details == {"before": "normal", "after": "urgent"} and ev.reason == "Presseanfrage"


# --------------------------------------------------------------------------- mine and deputies


async def test_mine_lists_own_cases_and_those_of_colleagues_one_stands_in_for(stack, pool) -> None:
    dep, dep2 = _dept(), _dept()
    own, theirs, unrelated, elsewhere = _take(pool, 4)
    _move(stack, [own, theirs, unrelated], dep)
    _move(stack, [elsewhere], dep2)
    _set(stack, own, assignee="clerk-m1", assigned_at=NOW(), status="awaiting_documents")
    _set(stack, theirs, assignee="clerk-m2", assigned_at=NOW())
    _set(stack, unrelated, assignee="clerk-m3", assigned_at=NOW())
    _set(stack, elsewhere, assignee="clerk-m2", assigned_at=NOW())
    me = stack.token("clerk-m1", "clerk", dep, dep2)
    principal = stack.token("clerk-m2", "clerk", dep, dep2)
    async with stack.client() as http:
        assert [t["case_id"] for t in (await http.get("/v1/tasks/mine", headers=me)).json()] == [own]
        # clerk-m2 names clerk-m1 as deputy for dep only
        r = await http.post("/v1/deputies", headers=principal, json={
            "deputy": "clerk-m1", "department": dep, "valid_until": (NOW() + dt.timedelta(days=3)).isoformat()})
        assert r.status_code == 201, r.text
        deputy_id = r.json()["id"]
        items = {t["case_id"]: t for t in (await http.get("/v1/tasks/mine", headers=me)).json()}
        assert set(items) == {own, theirs}  # not the principal's case in the other department
        assert items[theirs]["acting_for"] == "clerk-m2" and items[own]["acting_for"] is None
        # standing in lets the deputy release the principal's claim; ending the Vertretung ends that
        assert (await http.delete(f"/v1/deputies/{deputy_id}", headers=principal)).status_code == 204
        assert [t["case_id"] for t in (await http.get("/v1/tasks/mine", headers=me)).json()] == [own]
        _problem(await http.post(f"/v1/tasks/{theirs}/unclaim", headers=me), 403)


async def test_a_future_vertretung_does_not_apply_yet(stack, pool) -> None:
    dep = _dept()
    [case_id] = _take(pool, 1)
    _move(stack, [case_id], dep, assignee="clerk-fp", assigned_at=NOW())
    principal, deputy = stack.token("clerk-fp", "clerk", dep), stack.token("clerk-fd", "clerk", dep)
    async with stack.client() as http:
        r = await http.post("/v1/deputies", headers=principal, json={
            "deputy": "clerk-fd", "department": dep, "valid_from": (NOW() + dt.timedelta(days=1)).isoformat(),
            "valid_until": (NOW() + dt.timedelta(days=5)).isoformat(), "reason": "Fortbildung"})
        assert r.status_code == 201 and r.json()["active"] is False, r.text
        assert (await http.get("/v1/tasks/mine", headers=deputy)).json() == []
        _problem(await http.post(f"/v1/tasks/{case_id}/unclaim", headers=deputy), 403)


async def test_who_may_name_list_and_end_deputies(stack) -> None:
    dep = _dept()
    until = (NOW() + dt.timedelta(days=10)).isoformat()
    clerk = stack.token("clerk-d1", "clerk", dep)
    deputy = stack.token("clerk-d2", "clerk", dep)
    lead = stack.token_for("lead-d", ["teamlead"], [dep])
    stranger = stack.token("clerk-d9", "clerk", "standesamt")
    async with stack.client() as http:
        async def post(h: dict[str, str], **body: Any):  # type: ignore[no-untyped-def]
            return await http.post("/v1/deputies", headers=h, json={"department": dep, "valid_until": until, **body})

        own = await post(clerk, deputy="clerk-d2", reason="Urlaub")
        assert own.status_code == 201 and own.json()["principal"] == "clerk-d1" and own.json()["active"], own.text
        _problem(await post(clerk, principal="clerk-d3", deputy="clerk-d2"), 403)  # not for somebody else
        _problem(await post(stranger, deputy="clerk-d2"), 403)  # not in a department that is not theirs
        by_lead = await post(lead, principal="clerk-d3", deputy="clerk-d4", reason="Elternzeit")
        assert by_lead.status_code == 201 and by_lead.json()["created_by"] == "lead-d", by_lead.text
        _problem(await post(clerk, deputy="clerk-d1"), 422)  # oneself
        _problem(await post(clerk, deputy="clerk-d2", valid_from=until,
                            valid_until=(NOW() + dt.timedelta(days=1)).isoformat()), 422)
        _problem(await post(clerk, deputy="clerk-d2", valid_until="2026-12-01T00:00:00"), 422)  # no time zone
        _problem(await post(clerk, deputy="clerk-d2", valid_until=(NOW() - dt.timedelta(days=1)).isoformat()), 422)
        _problem(await post(clerk, deputy="clerk-d2", bogus=1), 422)

        def ids(r) -> set[str]:  # type: ignore[no-untyped-def]
            assert r.status_code == 200, r.text
            return {d["id"] for d in r.json()}

        assert ids(await http.get("/v1/deputies", headers=clerk)) == {own.json()["id"]}
        assert ids(await http.get("/v1/deputies", headers=deputy)) == {own.json()["id"]}
        assert ids(await http.get("/v1/deputies", headers=lead)) == {own.json()["id"], by_lead.json()["id"]}
        assert ids(await http.get("/v1/deputies", headers=stranger)) == set()
        # the deputy cannot end it, a stranger does not see it, the team lead may
        _problem(await http.delete(f"/v1/deputies/{own.json()['id']}", headers=deputy), 403)
        _problem(await http.delete(f"/v1/deputies/{own.json()['id']}", headers=stranger), 404)
        assert (await http.delete(f"/v1/deputies/{own.json()['id']}", headers=lead)).status_code == 204
        assert (await http.delete(f"/v1/deputies/{own.json()['id']}", headers=clerk)).status_code == 204  # again
        assert ids(await http.get("/v1/deputies", headers=clerk)) == set()
        past = (await http.get("/v1/deputies", params={"include_past": "true"}, headers=clerk)).json()
        assert [(d["revoked_by"], d["active"]) for d in past] == [("lead-d", False)]
    with stack.sessions()() as s:
        actions = [a for a, in s.execute(select(AuditEvent.action).where(
            AuditEvent.target_type == "vertretung", AuditEvent.target_id.in_([own.json()["id"], by_lead.json()["id"]]))
            .order_by(AuditEvent.id))]
    assert actions == ["deputy.create", "deputy.create", "deputy.revoke"]


# --------------------------------------------------------------------------- the decision endpoints' check


def _p(sub: str, dep: str, *roles: str) -> Principal:
    return Principal(sub=sub, roles=roles or ("clerk",), departments=(dep,))


async def test_check_may_act_claims_unclaimed_cases_and_refuses_someone_elses(stack, pool) -> None:
    dep = _dept()
    free, held, cosign = _take(pool, 3)
    _move(stack, [free, held, cosign], dep)
    _set(stack, held, assignee="clerk-h", assigned_at=NOW())
    _set(stack, cosign, status="awaiting_cosign", first_decision_by="clerk-h", assignee="clerk-h", assigned_at=NOW())
    sessions = stack.sessions()

    def act(case_id: str, p: Principal) -> str | None:
        with sessions() as s, s.begin():
            v = s.get(Vorgang, case_id)
            inbox.check_may_act(s, p, v, NOW())
            return v.assignee

    # unclaimed: the acting clerk claims it in the same transaction (audited as implicit)
    assert act(free, _p("clerk-x", dep)) == "clerk-x"
    [ev] = _audit(stack, free, "task.claim")
    assert ev.actor == "clerk-x" and ev.details["implicit"] is True
    assert act(free, _p("clerk-x", dep)) == "clerk-x"  # the holder again: nothing changes
    # held by someone else: refused, unless teamlead or the holder's active deputy
    with pytest.raises(Conflict, match="claimed by another clerk"):
        act(held, _p("clerk-x", dep))
    assert act(held, _p("lead-x", dep, "teamlead")) == "clerk-h"  # allowed, the claim stays
    with pytest.raises(Conflict):
        act(held, _p("lead-x", "standesamt", "teamlead"))  # a team lead of another department is no help
    with sessions() as s, s.begin():
        inbox.create_deputy(s, _p("clerk-h", dep), principal="clerk-h", deputy="clerk-x", department=dep,
                            valid_from=NOW() - dt.timedelta(minutes=1), valid_until=NOW() + dt.timedelta(hours=1),
                            reason=None, now=NOW())
    assert act(held, _p("clerk-x", dep)) == "clerk-h"
    # a decision waiting for its co-signature: the first decider's claim does not block the second clerk
    assert act(cosign, _p("clerk-h", dep)) == "clerk-h"
    assert act(cosign, _p("clerk-y", dep)) == "clerk-y"
    with pytest.raises(Conflict):
        act(cosign, _p("clerk-z", dep))  # now clerk-y holds it


async def test_check_may_act_reads_the_claim_afresh_for_a_case_loaded_earlier(stack, pool) -> None:
    """The decision endpoints load the case in an earlier transaction (a detached object that
    may be stale): the claim that counts is the one in the database now."""
    dep = _dept()
    stale, fresh = _take(pool, 2)
    _move(stack, [stale, fresh], dep)
    sessions = stack.sessions()
    with sessions() as s:
        old, new = s.get(Vorgang, stale), s.get(Vorgang, fresh)
    assert old.assignee is None
    with sessions() as s, s.begin():
        inbox.claim(s, _p("clerk-q", dep), stale, NOW())
    with pytest.raises(Conflict, match="clerk-q"), sessions() as s, s.begin():
        inbox.check_may_act(s, _p("clerk-x", dep), old, NOW())
    with sessions() as s, s.begin():
        inbox.check_may_act(s, _p("clerk-q", dep), old, NOW())
        inbox.check_may_act(s, _p("clerk-x", dep), new, NOW())
    assert new.assignee == "clerk-x"  # the caller's object tells the new assignee too
    with sessions() as s:
        assert s.scalar(select(Vorgang.assignee).where(Vorgang.id == fresh)) == "clerk-x"

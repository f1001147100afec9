"""The processing deadline as a durable timer, on the time-skipping test server with the real
activities: a reminder before it expires, a pause while the case waits for the citizen
(Nachforderung) that resumes with the real remaining time, escalation to the team lead when it
passes, an extension with a reason, and a Nachforderung whose own deadline ends the case."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from datetime import timedelta

from sqlalchemy import select

from eakte.models import AuditEvent, Dokument, Notification, TimelineEvent, Vorgang
from workflows import contracts as c
from workflows.case import CaseWorkflow
from tests.workflow.conftest import start_until_decision

MELDE = "99115005012000"  # processing_days 5, deadline_reminder_days 2 (default), documents_days 14
CLERK = c.Actor(sub="clerk-ts", roles=["clerk"], departments=["buergerbuero"])
LEAD = c.Actor(sub="lead-ts", roles=["teamlead"], departments=["buergerbuero"])


async def _start(env, stack):  # type: ignore[no-untyped-def]
    return await start_until_decision(env, stack, name="Frist Gerecht",
                                      address_lines=("Zeitweg 5", "12345 Musterstadt"))


def _notes(stack, case_id: str, name: str) -> list[Notification]:  # type: ignore[no-untyped-def]
    with stack.sessions()() as s:
        return list(s.scalars(select(Notification).where(Notification.vorgang_id == case_id,
                                                         Notification.key.like(f"%:notify:{name}:%"))))


async def _settle(handle, pred, what: str):  # type: ignore[no-untyped-def]
    """Wait (real time, bounded) until the workflow's state satisfies ``pred``."""
    for _ in range(200):
        st = await handle.query(CaseWorkflow.query_status)
        if pred(st):
            return st
        await asyncio.sleep(0.05)
    raise AssertionError(f"never reached: {what} (last: {st.status}, {st.deadline_remaining_s})")


async def test_deadline_reminds_pauses_for_the_citizen_resumes_escalates_and_extends(env, stack, case_worker) -> None:
    case_id, handle = await _start(env, stack)
    st = await handle.query(CaseWorkflow.query_status)
    assert st.deadline_remaining_s is not None and abs(st.deadline_remaining_s - 5 * 86400) < 3600

    # day 3 + 1 h: the reminder (2 days before) has gone to the department, no escalation yet
    await env.sleep(timedelta(days=3, hours=1))
    await _settle(handle, lambda s: any("Erinnerung" in h.message for h in s.history), "reminder")
    assert len(_notes(stack, case_id, "deadline-reminder")) == 1
    assert _notes(stack, case_id, "deadline-escalation") == []

    # Nachforderung: the deadline pauses with ~1 day 23 h left
    out = await handle.execute_update(CaseWorkflow.decide, c.Decision(
        actor=CLERK, approve=False, action="request_documents", missing=["Wohnungsgeberbestätigung"], days=10,
        reason="Die Bestätigung des Vermieters fehlt."))
    assert out.status == c.AWAITING_DOCUMENTS
    paused = await _settle(handle, lambda s: s.deadline_at is None and s.deadline_remaining_s is not None, "pause")
    left = paused.deadline_remaining_s
    assert abs(left - (2 * 86400 - 3600)) < 600
    with stack.sessions()() as s:
        v = s.get(Vorgang, case_id)
        assert v.status == c.AWAITING_DOCUMENTS and v.deadline_at is None
        assert v.waiting_for == ["Wohnungsgeberbestätigung"] and v.waiting_until is not None
    for _ in range(200):  # issued (and sealed) right after the status changed
        with stack.sessions()() as s:
            notice = s.scalars(select(Dokument).where(Dokument.idempotency_key == f"{case_id}:issue:nachforderung")
                               ).one_or_none()
        if notice is not None:
            break
        await asyncio.sleep(0.05)
    assert notice is not None and notice.public  # the citizen gets the Nachforderung

    # 7 days waiting for the citizen: the paused deadline neither passes nor escalates
    await env.sleep(timedelta(days=7))
    st = await handle.query(CaseWorkflow.query_status)
    assert st.status == c.AWAITING_DOCUMENTS and st.deadline_remaining_s == left
    assert _notes(stack, case_id, "deadline-escalation") == []

    # the citizen uploads the document: the case resumes with the real remaining time
    store = stack.store()
    blob = store.put_bytes(b"%PDF-1.4\n% Wohnungsgeberbestaetigung\n", "application/pdf")
    await handle.execute_update(CaseWorkflow.add_document, c.AddDocument(
        actor=c.Actor(sub="portal-ts", roles=["integrator"]), upload_id=uuid.uuid4().hex, kind="Nachweis",
        ref=c.DocumentRef(bucket=blob.bucket, key=blob.key, sha256=blob.sha256, size=blob.size,
                          filename="wgb.pdf", content_type="application/pdf")))
    resumed = await _settle(handle, lambda s: s.status == c.AWAITING_DECISION and s.deadline_at, "resume")
    assert abs(resumed.deadline_remaining_s - left) < 600
    with stack.sessions()() as s:
        v = s.get(Vorgang, case_id)
        assert v.deadline_at is not None and v.waiting_for == []

    # the remaining time passes: escalation to the team lead
    await env.sleep(timedelta(seconds=left + 3600))
    await _settle(handle, lambda s: any("eskaliert" in h.message for h in s.history), "escalation")
    esc = _notes(stack, case_id, "deadline-escalation")
    assert len(esc) == 1 and esc[0].audience == "teamlead"
    with stack.sessions()() as s:
        assert s.get(Vorgang, case_id).escalated_at is not None
        assert s.scalar(select(AuditEvent.id).where(AuditEvent.case_id == case_id,
                                                    AuditEvent.action == "case.escalated")) is not None

    # the team lead extends by 3 days with a reason: the escalation is lifted, the deadline moves
    due = await handle.execute_update(CaseWorkflow.extend_deadline, c.ExtendDeadline(
        actor=LEAD, days=3, reason="Rückfrage beim Einwohnermeldeamt Nachbarstadt"))
    new_due = dt.datetime.fromisoformat(due)
    with stack.sessions()() as s:
        ext = s.scalars(select(AuditEvent).where(AuditEvent.case_id == case_id,
                                                 AuditEvent.action == "case.deadline.extend")).one()
        assert ext.actor == "lead-ts" and "Rückfrage" in (ext.reason or "")
        v = s.get(Vorgang, case_id)
        assert v.escalated_at is None and v.deadline_at is not None
        assert abs((v.deadline_at - new_due).total_seconds()) < 1
    await env.sleep(timedelta(days=3, hours=2))
    await _settle(handle, lambda s: len(_notes(stack, case_id, "deadline-escalation")) == 2, "second escalation")

    # the case is still decidable; approve, pay, done
    out = await handle.execute_update(CaseWorkflow.decide, c.Decision(actor=CLERK, approve=True))
    assert out.status == c.AWAITING_PAYMENT
    await handle.terminate("test done")


async def test_a_nachforderung_whose_deadline_passes_ends_the_case(env, stack, case_worker) -> None:
    case_id, handle = await _start(env, stack)
    await handle.execute_update(CaseWorkflow.decide, c.Decision(
        actor=CLERK, approve=False, action="request_documents", missing=["Personalausweis (Kopie)"], days=3))
    result: c.CaseResult = await handle.result()  # three days pass without a document
    assert result.status == c.REJECTED and result.issued_document_id
    with stack.sessions()() as s:
        v = s.get(Vorgang, case_id)
        assert v.status == c.REJECTED and v.closed_at is not None and v.waiting_for == []
        assert "Personalausweis" in (v.decision_reason or "")
        msgs = [e.message for e in s.scalars(select(TimelineEvent).where(TimelineEvent.vorgang_id == case_id))]
        assert any("Frist für die nachgeforderten Unterlagen abgelaufen" in m for m in msgs)
    assert _notes(stack, case_id, "deadline-escalation") == []  # paused all along

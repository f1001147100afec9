"""Deadlines on the time-skipping test server: a payment deadline that passes cancels the case.

The workflow runs on Temporal's time-skipping test server with the real activities (real
database, real S3, the sandbox payment provider of the running test API)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from temporalio.client import WorkflowUpdateFailedError

from sqlalchemy import select

from eakte.models import Dokument, Notification, SandboxPayment, Vorgang
from workflows import contracts as c
from workflows.case import CaseWorkflow
from tests.workflow.conftest import start_until_decision

MELDE = "99115005012000"


async def _run_until_payment(env, stack):  # type: ignore[no-untyped-def]
    case_id, handle = await start_until_decision(env, stack)
    out = await handle.execute_update(CaseWorkflow.decide, c.Decision(
        actor=c.Actor(sub="clerk-ts", roles=["clerk"], departments=["buergerbuero"]), approve=True))
    assert out.status == c.AWAITING_PAYMENT and out.payment_url
    return case_id, handle


async def test_payment_deadline_passing_cancels_the_case_and_the_payment(env, stack, case_worker) -> None:
    case_id, handle = await _run_until_payment(env, stack)
    await env.sleep(timedelta(days=13))
    assert (await handle.query(CaseWorkflow.query_status)).status == c.AWAITING_PAYMENT
    result: c.CaseResult = await handle.result()  # the remaining day passes by itself
    assert result.status == c.CANCELLED and result.issued_document_id is not None  # the Storno notice
    with stack.sessions()() as s:
        v = s.get(Vorgang, case_id)
        assert v.status == c.CANCELLED and v.payment_status == "expired" and v.closed_at is not None
        assert s.get(SandboxPayment, v.payment_id).status == "cancelled"
        assert s.get(Dokument, result.issued_document_id).kind == "Bescheid"
        # the citizen was reminded once, payment_reminder_days (3) before the deadline
        reminders = s.scalars(select(Notification).where(Notification.vorgang_id == case_id,
                                                         Notification.key.like("%payment-reminder%"))).all()
        assert len(reminders) == 1 and reminders[0].audience == "applicant"


async def test_a_decision_from_the_wrong_department_is_refused_by_the_workflow(env, stack, case_worker) -> None:
    _, handle = await start_until_decision(env, stack)
    with pytest.raises(WorkflowUpdateFailedError) as err:
        await handle.execute_update(CaseWorkflow.decide, c.Decision(
            actor=c.Actor(sub="clerk-x", roles=["clerk"], departments=["standesamt"]), approve=True))
    assert err.value.cause.type == c.ERR_FORBIDDEN  # type: ignore[union-attr]
    await handle.terminate("test done")

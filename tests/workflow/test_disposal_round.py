"""The disposal round (Aussonderung) on the time-skipping test server: offer → wait for the
archivist → execute; a legal hold stops it; unconfirmed offers outlast the round untouched.

The round runs with the real disposal activities (real database, real S3 of the test stack).
Akten are made closed and past retention directly through eakte.records, as years of
operation would have left them. (The Temporal Schedule that starts rounds daily is tested
against the dev server in tests/integration/test_disposal.py: the time-skipping server has
no schedules.)"""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime as dt
import uuid
from dataclasses import dataclass
from datetime import timedelta

import pytest
from sqlalchemy import select
from temporalio.client import WorkflowHandle, WorkflowUpdateFailedError
from temporalio.service import RPCError
from temporalio.worker import Worker

from eakte import records
from eakte.db import transaction
from eakte.models import Akte, DisposalRecord, Dokument, Version, Vorgang
from worker import Dependencies, disposal_activities
from workflows import contracts as c
from workflows import disposal_contracts as d
from workflows.disposal import DisposalWorkflow

QUEUE = "ts-disposal"
ARCHIVIST = c.Actor(sub="archiv-1", roles=["archivist"])


@pytest.fixture
async def disposal_worker(env, stack):  # type: ignore[no-untyped-def]
    deps = Dependencies.build(stack.settings)
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        async with Worker(env.client, task_queue=QUEUE, workflows=[DisposalWorkflow],
                          activities=disposal_activities(deps), activity_executor=pool) as worker:
            yield worker


@dataclass
class OldAkte:
    akte_id: str
    case_id: str
    aktenzeichen: str
    object_key: str


def closed_akte(stack, *, closed_on: dt.date = dt.date(2015, 3, 1)) -> OldAkte:  # type: ignore[no-untyped-def]
    """A Meldewesen Akte (32.10, 5 years) closed long ago, with one stored document."""
    store = stack.store()
    store.ensure_bucket()
    case_id = "case-old-" + uuid.uuid4().hex
    ref = store.put_bytes(f"Antrag {case_id}: Alt Bürgerin, Altweg 1".encode(), "text/plain")
    with transaction(stack.sessions()) as s:
        v = records.open_case(
            s, case_id=case_id, file_plan="32.10", year=closed_on.year, title="Meldebescheinigung",
            service_key="99115005012000", service_name="Meldebescheinigung", integrator="portal-old",
            applicant={"name": "Alt Bürgerin", "address_lines": ["Altweg 1"], "id": "bund-id-" + case_id[-8:]},
            form={"Zweck": "Rente"}, fingerprint="f" * 64, fee_cents=1000, retention_years=5, status=c.COMPLETED)
        records.file_document(s, key=f"{case_id}:application", ref=ref, kind="Antrag", title="Antrag",
                              filename="antrag.txt", content_type="text/plain", created_by="portal-old",
                              channel="api", akte_id=v.akte_id, vorgang_id=case_id)
        akte = records.close_case(s, case_id=case_id,
                                  closed_at=dt.datetime.combine(closed_on, dt.time(10), tzinfo=dt.UTC))
        assert akte.retention_until == dt.date(closed_on.year + 5, closed_on.month, closed_on.day)
        return OldAkte(akte.id, case_id, akte.aktenzeichen, ref.key)


async def start_round(env, **kw) -> WorkflowHandle:  # type: ignore[no-untyped-def]
    return await env.client.start_workflow(DisposalWorkflow.run, d.DisposalInput(**kw),
                                           id="disposal-ts-" + uuid.uuid4().hex, task_queue=QUEUE)


async def offered_in(handle: WorkflowHandle, akte_id: str) -> d.RoundStatus:
    for _ in range(300):
        st: d.RoundStatus = await handle.query(DisposalWorkflow.status)
        if st.accepting and akte_id in [o.akte_id for o in st.offers]:
            return st
        await asyncio.sleep(0.05)
    raise AssertionError(f"Akte {akte_id} was never offered")


async def end(handle: WorkflowHandle) -> None:
    """Stop a round that still waits for decisions on Akten other tests left offered."""
    try:
        await handle.terminate("test done")
    except RPCError:
        pass  # every offer was decided: the round has finished by itself


def akte_row(stack, akte_id: str) -> Akte:  # type: ignore[no-untyped-def]
    with stack.sessions()() as s:
        return s.get(Akte, akte_id)


async def test_a_due_akte_is_offered_waits_for_the_archivist_and_is_destroyed_on_confirmation(
        env, stack, disposal_worker) -> None:
    old = closed_akte(stack)
    handle = await start_round(env, confirm_days=30)
    st = await offered_in(handle, old.akte_id)
    offer = next(o for o in st.offers if o.akte_id == old.akte_id)
    assert offer.proposed_action == "destroy"  # appraisal V
    assert offer.rule == "Aktenplan 32.10 Meldewesen, 5 Jahre nach Abschluss (§ 14 BMG), Frist bis 2020-03-01"
    row = akte_row(stack, old.akte_id)
    assert row.disposal_status == "offered" and row.disposal_round == handle.id

    await env.sleep(timedelta(days=10))  # nobody decided yet: nothing happens by itself
    assert stack.store().exists(old.object_key)
    assert akte_row(stack, old.akte_id).disposal_status == "offered"

    out: d.DisposalOutcome = await handle.execute_update(DisposalWorkflow.confirm, d.DisposalDecision(
        actor=ARCHIVIST, akte_id=old.akte_id, action="destroy", reason="Frist abgelaufen, Bewertung V"))
    assert out.action == "destroyed" and out.documents == 1 and out.objects_removed == 1

    assert not stack.store().exists(old.object_key)
    with stack.sessions()() as s:
        akte = s.get(Akte, old.akte_id)
        assert akte.disposal_status == "destroyed" and akte.disposed_at is not None
        assert akte.aktenzeichen == old.aktenzeichen
        assert s.scalars(select(Dokument).where(Dokument.akte_id == old.akte_id)).all() == []
        assert s.scalars(select(Version).where(Version.object_key == old.object_key)).all() == []
        v = s.get(Vorgang, old.case_id)
        assert v.applicant == {} and v.form == {} and v.applicant_id is None
        rec = s.scalar(select(DisposalRecord).where(DisposalRecord.akte_id == old.akte_id))
        assert rec.action == "destroyed" and rec.confirmed_by == "archiv-1" and rec.documents == 1
        assert rec.rule == offer.rule and rec.inventory[0]["removed"] is True

    result: d.DisposalResult = await handle.result()
    assert result.destroyed == 1 and old.akte_id not in result.pending


async def test_only_archivists_and_admins_confirm_and_keeping_needs_a_reason(env, stack, disposal_worker) -> None:
    old = closed_akte(stack)
    handle = await start_round(env)
    await offered_in(handle, old.akte_id)
    clerk = c.Actor(sub="clerk-1", roles=["clerk"], departments=["buergerbuero"])
    with pytest.raises(WorkflowUpdateFailedError) as err:
        await handle.execute_update(DisposalWorkflow.confirm, d.DisposalDecision(
            actor=clerk, akte_id=old.akte_id, action="destroy"))
    assert err.value.cause.type == c.ERR_FORBIDDEN  # type: ignore[union-attr]
    with pytest.raises(WorkflowUpdateFailedError) as err:
        await handle.execute_update(DisposalWorkflow.confirm, d.DisposalDecision(
            actor=ARCHIVIST, akte_id=old.akte_id, action="keep"))
    assert err.value.cause.type == c.ERR_INVALID  # type: ignore[union-attr]

    out = await handle.execute_update(DisposalWorkflow.confirm, d.DisposalDecision(
        actor=ARCHIVIST, akte_id=old.akte_id, action="keep", reason="Rechtsstreit angekündigt",
        retain_until="2040-01-01"))
    assert out.action == "kept" and out.retention_until == "2040-01-01"
    row = akte_row(stack, old.akte_id)
    assert row.disposal_status is None and row.retention_until == dt.date(2040, 1, 1)
    assert stack.store().exists(old.object_key)
    await end(handle)


async def test_a_legal_hold_placed_after_the_offer_stops_the_destruction(env, stack, disposal_worker) -> None:
    old = closed_akte(stack)
    handle = await start_round(env)
    await offered_in(handle, old.akte_id)
    with transaction(stack.sessions()) as s:  # placed behind the round's back: the execution re-checks
        akte = s.get(Akte, old.akte_id)
        akte.legal_hold, akte.legal_hold_reason = True, "Klage vor dem VG anhängig"

    with pytest.raises(WorkflowUpdateFailedError) as err:
        await handle.execute_update(DisposalWorkflow.confirm, d.DisposalDecision(
            actor=ARCHIVIST, akte_id=old.akte_id, action="destroy"))
    assert err.value.cause.type == c.ERR_STATE and "legal hold" in str(err.value.cause)  # type: ignore[union-attr]

    assert stack.store().exists(old.object_key)
    with stack.sessions()() as s:
        assert s.scalars(select(Dokument).where(Dokument.akte_id == old.akte_id)).all() != []
        assert s.scalar(select(DisposalRecord).where(DisposalRecord.akte_id == old.akte_id)) is None
        assert s.get(Vorgang, old.case_id).applicant["name"] == "Alt Bürgerin"
    await end(handle)


async def test_an_akte_under_legal_hold_is_not_offered(env, stack, disposal_worker) -> None:
    held, due = closed_akte(stack), closed_akte(stack)
    with transaction(stack.sessions()) as s:
        s.get(Akte, held.akte_id).legal_hold = True
    handle = await start_round(env)
    st = await offered_in(handle, due.akte_id)
    assert held.akte_id not in [o.akte_id for o in st.offers]
    assert akte_row(stack, held.akte_id).disposal_status is None
    await end(handle)


async def test_unconfirmed_offers_outlast_the_round_untouched_and_are_offered_again(env, stack, disposal_worker) -> None:
    old = closed_akte(stack)
    handle = await start_round(env, confirm_days=30)
    await offered_in(handle, old.akte_id)
    result: d.DisposalResult = await handle.result()  # 30 days pass without a decision
    assert old.akte_id in result.pending and result.destroyed == 0

    row = akte_row(stack, old.akte_id)
    assert row.disposal_status == "offered" and row.disposal_round is None and row.disposed_at is None
    assert stack.store().exists(old.object_key)
    with stack.sessions()() as s:
        assert s.scalar(select(DisposalRecord).where(DisposalRecord.akte_id == old.akte_id)) is None

    nxt = await start_round(env)
    await offered_in(nxt, old.akte_id)
    assert akte_row(stack, old.akte_id).disposal_round == nxt.id
    await end(nxt)

"""A worker killed with SIGKILL at every activity of a case: a new worker finishes every case,
and every side effect happened exactly once.

One crash worker (tests/crash_worker.py: the normal case worker plus a parking interceptor)
runs one case per (activity, pause point). Each case's plan parks one activity execution
forever, either *before* the activity function runs or *after* it returned (its rows are
committed, its HTTP calls made) but before Temporal has the result: the nasty case, where
the retry on the new worker must not repeat the side effect. When every case is parked the
worker is killed with SIGKILL, once; a fresh worker (the normal ``aktenlauf worker``) picks
the activities up after their start-to-close timeout and finishes every case. Then each case
must have exactly one Akte/Aktenzeichen, one payment, one certificate, one dispatch, one
timeline entry per milestone and one audit event per once-only action.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker
from temporalio.client import WorkflowHandle, WorkflowUpdateRPCTimeoutOrCancelledError
from temporalio.service import RPCError

from eakte.models import Akte, AuditEvent, Dispatch, Dokument, SandboxPayment, TimelineEvent, Version, Vorgang
from intake.catalog import load_catalog
from tests.integration.helpers import MELDE, pay
from workflows import contracts as c
from workflows.case import ACTIVITY_TIMEOUT, CaseWorkflow

ROOT = Path(__file__).resolve().parents[2]
SLOTS_PER_WORKER = 16  # worker.build_workers: max_concurrent_activities
Sessions = sessionmaker[Session]


@dataclass(frozen=True)
class Step:
    """One activity execution of a case, identified by its type and first argument."""

    activity: str
    match: dict[str, Any]
    path: str  # "paid": the happy path with decision, fee and certificate; "expired": the fee is never paid

    @property
    def label(self) -> str:
        return "/".join([self.activity, *(str(v) for v in self.match.values())])


def _progress(step: str, status: str, path: str = "paid") -> Step:
    return Step(c.ACT_RECORD_PROGRESS, {"step": step, "status": status}, path)


# Every activity CaseWorkflow executes, in order, for a Meldebescheinigung (clerk decision,
# 10 EUR fee, certificate) ...
PAID_PATH = [
    Step(c.ACT_OPEN_CASE, {}, "paid"),                    # Akte + Aktenzeichen, Antrag, audit case.create
    _progress("routing", c.RECEIVED),
    _progress("decision", c.AWAITING_DECISION),
    _progress("decision", c.APPROVED),                     # + Entscheidungsvermerk, audit case.approved
    Step(c.ACT_REQUEST_PAYMENT, {}, "paid"),              # payment at the provider
    _progress("payment", c.AWAITING_PAYMENT),
    _progress("payment", c.ISSUING),                       # paid
    _progress("certificate", c.ISSUING),
    Step(c.ACT_ISSUE_DOCUMENT, {}, "paid"),               # the Urkunde, audit document.issue.certificate
    Step(c.ACT_DISPATCH_V2, {}, "paid"),                 # portal mailbox (the service's default channel)
    _progress("dispatch", c.ISSUING),
    Step(c.ACT_ARCHIVE, {}, "paid"),                      # Akte closed, retention date set
    _progress("archive", c.COMPLETED),
]
# ... and the steps only the payment-expiry path has (the same service without a decision and
# with a payment period of 0 days: the workflow's timer fires at once).
EXPIRED_PATH = [
    Step(c.ACT_CANCEL_PAYMENT, {}, "expired"),
    _progress("payment", c.CANCELLED, "expired"),
    _progress("certificate", c.CANCELLED, "expired"),     # the notice that the case is closed (Einstellung)
    Step(c.ACT_ISSUE_DOCUMENT, {"kind": "cancellation"}, "expired"),
    Step(c.ACT_DISPATCH_V2, {}, "expired"),
    _progress("dispatch", c.CANCELLED, "expired"),
]
PAID_TIMELINE = [("intake", c.RECEIVED), ("routing", c.RECEIVED), ("decision", c.AWAITING_DECISION),
                 ("decision", c.APPROVED), ("payment", c.AWAITING_PAYMENT), ("payment", c.ISSUING),
                 ("certificate", c.ISSUING), ("dispatch", c.ISSUING), ("archive", c.COMPLETED)]
EXPIRED_TIMELINE = [("intake", c.RECEIVED), ("routing", c.RECEIVED), ("payment", c.AWAITING_PAYMENT),
                    ("payment", c.CANCELLED), ("certificate", c.CANCELLED), ("dispatch", c.CANCELLED),
                    ("archive", c.CANCELLED)]
CLERK = c.Actor(sub="clerk-bb", roles=["clerk"], departments=["buergerbuero"])


@dataclass
class Case:
    id: str
    step: Step
    when: str  # "before" | "after"
    handle: WorkflowHandle[Any, Any] | None = None
    footprint_at_kill: tuple[Any, ...] = ()


def _env(settings, task_queue: str) -> dict[str, str]:  # type: ignore[no-untyped-def]
    env = dict(os.environ)
    for name, value in settings.model_dump().items():
        if value is not None and name != "catalog_path":
            env[name.upper()] = str(value)
    env["TASK_QUEUE"] = task_queue
    # a worker of its own: its own (paused) disposal schedule, never the stack's
    env["DISPOSAL_SCHEDULE_ID"] = f"{settings.disposal_schedule_id}-{task_queue}"
    env["DISPOSAL_SCHEDULE_ENABLED"] = "false"
    env["LOG_FORMAT"] = "json"
    return env


def _spawn(args: list[str], settings, task_queue: str, log: Path) -> subprocess.Popen[bytes]:  # type: ignore[no-untyped-def]
    return subprocess.Popen([sys.executable, *args], env=_env(settings, task_queue), cwd=ROOT,
                            stdout=log.open("ab"), stderr=subprocess.STDOUT)


async def _until_status(sessions: Sessions, case_id: str, status: str, timeout: float = 150) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with sessions() as s:
            if s.scalar(select(Vorgang.status).where(Vorgang.id == case_id)) == status:
                return
        await asyncio.sleep(0.3)
    raise AssertionError(f"case {case_id} never reached {status}")


async def _decide(handle: WorkflowHandle[Any, Any], case_id: str) -> c.DecisionOutcome:
    # The update may be sent while the worker dies: it is re-sent under the same update id,
    # which Temporal deduplicates (never a second decision).
    while True:
        try:
            return await handle.execute_update(CaseWorkflow.decide, c.Decision(actor=CLERK, approve=True),
                                               id=f"{case_id}-decide")
        except (WorkflowUpdateRPCTimeoutOrCancelledError, RPCError):
            # the SDK reports the cancellation of this task as WorkflowUpdateRPCTimeoutOrCancelledError:
            # a driver cancelled by the test's clean-up must stop, not retry (it kept the session's loop
            # from closing)
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise
            await asyncio.sleep(0.5)


async def _drive(sessions: Sessions, http: httpx.AsyncClient, case: Case) -> c.CaseResult:
    """What clerk and citizen do for this case; runs across the crash."""
    assert case.handle is not None
    if case.step.path == "paid":
        await _until_status(sessions, case.id, c.AWAITING_DECISION)
        outcome = await _decide(case.handle, case.id)
        assert outcome.status == c.AWAITING_PAYMENT and outcome.payment_url, outcome
        await pay(http, outcome.payment_url)
    return await case.handle.result()


def _footprint(sessions: Sessions, case_id: str) -> tuple[Any, ...]:
    """Every row a case's activities write, counted: differs between before and after a side effect."""
    with sessions() as s:
        v = s.get(Vorgang, case_id)
        if v is None:
            return ("no case",)
        payments = sorted(s.scalars(select(SandboxPayment.status).where(SandboxPayment.reference == v.aktenzeichen)))
        return (
            s.scalar(select(func.count()).select_from(TimelineEvent).where(TimelineEvent.vorgang_id == case_id)),
            tuple(sorted(s.scalars(select(Dokument.kind).where(Dokument.vorgang_id == case_id)))),
            s.scalar(select(func.count()).select_from(Dispatch).where(Dispatch.vorgang_id == case_id)),
            s.scalar(select(func.count()).select_from(AuditEvent).where(AuditEvent.case_id == case_id)),
            tuple(payments), v.payment_id is not None, v.akte.status,
        )


def _parked(markers: Path, case: Case) -> dict[str, Any] | None:
    marker = markers / case.id
    return json.loads(marker.read_text()) if marker.exists() else None


async def _wait_parked(markers: Path, cases: list[Case], drivers: list[asyncio.Task[Any]],
                       worker: subprocess.Popen[bytes], timeout: float = 120) -> None:
    """Until every case is parked in an attempt that will not time out in the next seconds.

    On a slow machine the first-parked attempts may reach their start-to-close timeout before
    the last case is parked: Temporal retries them on the crash worker, which parks them again;
    this waits for those fresh attempts rather than killing while one is between attempts."""
    fresh = ACTIVITY_TIMEOUT.total_seconds() - 5
    deadline = time.monotonic() + timeout
    missing = cases
    while time.monotonic() < deadline:
        now = time.time()
        missing = [k for k in cases if (m := _parked(markers, k)) is None or now - m["started"] > fresh]
        if not missing:
            return
        for d in drivers:
            if d.done():
                d.result()  # a driver that failed before the crash: show why
        assert worker.poll() is None, "the crash worker died on its own"
        await asyncio.sleep(0.2)
    raise AssertionError(f"not parked: {[(k.step.label, k.when) for k in missing]}")


async def test_worker_killed_in_every_activity_before_and_after_its_side_effect(stack, tmp_path) -> None:
    queue = "crash-" + uuid.uuid4().hex[:8]
    log = tmp_path / "worker.log"
    markers = tmp_path / "parked"
    markers.mkdir()
    tag = uuid.uuid4().hex[:8]
    cases = [Case(f"case-crash-{tag}-{i:02d}-{when}", step, when)
             for i, step in enumerate(PAID_PATH + EXPIRED_PATH) for when in ("before", "after")]
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({
        "markers": str(markers),
        # every parked attempt holds an activity slot: enough workers for all of them, and one more
        # for the activities of the cases on their way and for attempts parked again after a timeout
        "workers": -(-len(cases) // SLOTS_PER_WORKER) + 1,
        "pauses": {k.id: {"activity": k.step.activity, "when": k.when, "match": k.step.match} for k in cases},
    }))
    melde = load_catalog(stack.settings.catalog_path).service(MELDE)
    assert melde.decision_required and melde.fee_cents > 0 and melde.certificate
    expiring = dataclasses.replace(melde, decision_required=False, payment_days=0)
    client = await stack.temporal()
    sessions: Sessions = stack.sessions()  # one engine (each stack.sessions() call makes a new pool)

    crash = _spawn(["-m", "tests.crash_worker", str(plan)], stack.settings, queue, log)
    recovery: subprocess.Popen[bytes] | None = None
    drivers: dict[str, asyncio.Task[c.CaseResult]] = {}
    try:
        async with stack.client() as http:
            for k in reversed(cases):  # the cases parked late in the flow first: they have the longest way
                svc = melde if k.step.path == "paid" else expiring
                k.handle = await client.start_workflow(CaseWorkflow.run, c.CaseInput(
                    case_id=k.id, integrator="portal-crash", fingerprint="0" * 64,
                    applicant=c.Applicant(name="Kim Absturz", address_lines=["Ringstraße 9"]), service=svc,
                    requested_service_key=MELDE), id=k.id, task_queue=queue)
                drivers[k.id] = asyncio.create_task(_drive(sessions, http, k))
            await _wait_parked(markers, cases, list(drivers.values()), crash)
            crash.send_signal(signal.SIGKILL)  # kill -9: no graceful shutdown, no activity reports back
            killed_at = time.time()
            assert crash.wait(10) == -signal.SIGKILL
            for k in cases:  # what the dead worker left behind; no worker writes until the next one starts
                k.footprint_at_kill = _footprint(sessions, k.id)
            recovery = _spawn(["-m", "aktenlauf.cli", "worker", "--queues", "cases"], stack.settings, queue, log)
            results = await asyncio.wait_for(asyncio.gather(*(drivers[k.id] for k in cases)), 150)
    finally:
        for d in drivers.values():
            d.cancel()
        if crash.poll() is None:
            crash.kill()
            crash.wait(10)
        if recovery is not None:
            recovery.terminate()
            recovery.wait(30)
        sessions.kw["bind"].dispose()

    for k in cases:  # each case was parked where the plan put it ...
        parked = _parked(markers, k)
        assert parked is not None and (parked["activity"], parked["when"]) == (k.step.activity, k.when), k.id
        # ... in an attempt still running when the worker died (not yet timed out and retried)
        assert killed_at - parked["started"] < ACTIVITY_TIMEOUT.total_seconds(), (k.id, parked)
    twins: dict[str, dict[str, tuple[Any, ...]]] = {}
    for k in cases:
        twins.setdefault(k.step.label + k.step.path, {})[k.when] = k.footprint_at_kill
    for label, fp in twins.items():  # "after" really is after the side effect, "before" before it
        assert fp["before"] != fp["after"], f"{label}: killed before and after its side effect look alike: {fp}"

    store = stack.store()
    for k, result in zip(cases, results, strict=True):
        paid = k.step.path == "paid"
        what = f"{k.id} ({k.step.label}, killed {k.when})"
        with sessions() as s:
            v = s.get(Vorgang, k.id)
            assert v is not None, what
            assert result.status == (c.COMPLETED if paid else c.CANCELLED), what
            assert result.aktenzeichen == v.aktenzeichen, what
            assert v.status == result.status and v.closed_at is not None, what
            assert v.payment_status == ("paid" if paid else "expired"), what
            # one Akte, one Aktenzeichen
            akten = s.scalars(select(Akte).where(Akte.aktenzeichen == v.aktenzeichen)).all()
            assert [a.id for a in akten] == [v.akte_id], what
            assert akten[0].status == "closed" and akten[0].retention_until is not None, what
            # one payment at the provider, paid (or cancelled when it expired)
            payments = s.scalars(select(SandboxPayment).where(SandboxPayment.reference == v.aktenzeichen)).all()
            assert [(p.id, p.status) for p in payments] == [(v.payment_id, "paid" if paid else "cancelled")], what
            # one Antrag, one Entscheidungsvermerk, one certificate; each with one stored version
            docs = s.scalars(select(Dokument).where(Dokument.vorgang_id == k.id)).all()
            # (an expired case gets the notice that it was closed: a Bescheid)
            assert sorted(d.kind for d in docs) == (["Antrag", "Urkunde", "Vermerk"] if paid else ["Antrag", "Bescheid"]), what
            for d in docs:
                versions = s.scalars(select(Version).where(Version.dokument_id == d.id)).all()
                assert len(versions) == 1, (what, d.kind)
                assert store.exists(versions[0].object_key), (what, d.kind)
            issued = next(d for d in docs if d.kind == ("Urkunde" if paid else "Bescheid"))
            assert result.issued_document_id == issued.id, what
            # one dispatch, of that certificate (notice), sent once
            dispatches = s.scalars(select(Dispatch).where(Dispatch.vorgang_id == k.id)).all()
            assert [(d.dokument_id, d.status) for d in dispatches] == [(result.issued_document_id, "sent")], what
            # one timeline entry per milestone, in order
            timeline = s.execute(select(TimelineEvent.step, TimelineEvent.status).where(
                TimelineEvent.vorgang_id == k.id).order_by(TimelineEvent.id)).all()
            assert [tuple(t) for t in timeline] == (PAID_TIMELINE if paid else EXPIRED_TIMELINE), what
            # the once-only audit events, once
            actions = Counter(s.scalars(select(AuditEvent.action).where(AuditEvent.case_id == k.id)))
            expected = {"case.create": 1, "case.approved": 1, "document.issue.certificate": 1,
                        "document.dispatch": 1} if paid \
                else {"case.create": 1, "document.issue.cancellation": 1, "document.dispatch": 1}
            assert dict(actions) == expected, what
    sessions.kw["bind"].dispose()

"""Admin views and operations on cases.

* ``GET /v1/admin/cases`` lists cases from Temporal's visibility store (the search attributes of
  workflows/search.py), filtered by status, service, department, step, overdue processing
  deadline, stuck activities and start/close time, one page at a time (``Next-Page-Token``
  header). It needs no database, so admins can still look while the database is down.
* ``GET /v1/admin/cases/counts``: open and closed cases per status, from the read model.
* ``GET /v1/admin/cases/{id}``: the read model, the workflow history as a readable timeline,
  the pending activities with attempts and last failure, and the case's audit trail.
* ``POST /v1/admin/cases/{id}/retry|cancel|terminate|reroute`` and ``POST /v1/admin/cases/batch``:
  operations, each with a reason and each audited (``admin.case.<operation>``).

Filter values are quoted into Temporal's list query, so they are restricted to a safe alphabet
(no quotes, no spaces) before they get there; dates are formatted by us, never passed through.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import structlog
from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from temporalio.api.common.v1 import WorkflowExecution as WorkflowExecutionProto
from temporalio.api.enums.v1 import EventType, PendingActivityState
from temporalio.api.history.v1 import HistoryEvent
from temporalio.api.workflowservice.v1 import ResetActivityRequest
from temporalio.client import Client, WorkflowExecution, WorkflowExecutionDescription, WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from aktenlauf.errors import AktenlaufError, Conflict, InvalidInput, NotFound
from api.auth import CurrentPrincipal, require_role
from api.context import ApiContext, Ctx
from api.routers.audit import AuditEventOut
from api.routers.cases import _actor, get_case
from api.schemas import NO_NUL, AdminCaseOut, CaseOut
from api.temporal_errors import TEMPORAL_ERRORS, bounded, translate
from eakte import records
from eakte.access import Principal
from eakte.models import AuditEvent, Vorgang, utcnow
from workflows import contracts as c
from workflows import search

router = APIRouter(prefix="/v1/admin", tags=["admin"], dependencies=[require_role("admin")])
log = structlog.get_logger(__name__)

_KEYWORD = r"^[A-Za-z0-9_.\-]+$"
_TOKEN = r"^[A-Za-z0-9_\-]+={0,2}$"  # base64url of Temporal's opaque page token
#: at most this many open cases are described (one RPC each) per request when looking for stuck ones
STUCK_SCAN_LIMIT = 1000
DESCRIBE_CONCURRENCY = 16
BATCH_CONCURRENCY = 8
FAILURE_CHARS = 300  # a failure message is technical, but kept short

Reason = Annotated[str, StringConstraints(strip_whitespace=True, min_length=3, max_length=1000, pattern=NO_NUL)]


# --------------------------------------------------------------------------- models


class FailingActivity(BaseModel):
    activity_id: str
    activity_type: str
    attempt: int
    state: str
    last_failure: str | None = Field(description="the last attempt's failure message (shortened)")
    failing_since: dt.datetime | None = Field(default=None, description="when the activity was first scheduled")
    next_attempt_at: dt.datetime | None = None
    paused: bool = False


class AdminCaseRow(AdminCaseOut):
    deadline_at: dt.datetime | None = None
    overdue: bool = False
    stuck: list[FailingActivity] = Field(default_factory=list,
                                         description="only with ?stuck=true: the activities failing for too long")


class StatusCount(BaseModel):
    status: str
    count: int
    final: bool


class CaseCounts(BaseModel):
    total: int
    open: int
    by_status: list[StatusCount]
    by_service: dict[str, dict[str, int]] = Field(description="service key (or 'none') → status → count")


class TimelineEntry(BaseModel):
    id: int
    time: dt.datetime
    type: str = Field(description="Temporal event type without the EVENT_TYPE_ prefix")
    step: str | None = Field(description="the case's step (search attribute) when the event happened")
    actor: str | None = None
    result: str = Field(description="e.g. completed, failed, accepted, fired")
    text: str = Field(description="readable: 'activity open_case completed', 'update decide by clerk-1 accepted'")


class AdminCaseDetail(BaseModel):
    case: dict[str, Any]
    workflow: dict[str, Any] | None
    history: list[TimelineEntry]
    pending_activities: list[FailingActivity]
    audit: list[AuditEventOut]


class ReasonIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: Reason


class RerouteIn(ReasonIn):
    department: Annotated[str, StringConstraints(pattern=_KEYWORD, max_length=64)]


class OperationOut(BaseModel):
    case_id: str
    operation: str
    ok: bool = True
    status: int = 200
    detail: str = ""
    result: Any = None


class CaseFilter(BaseModel):
    model_config = ConfigDict(extra="forbid")
    status: Annotated[str | None, StringConstraints(pattern=_KEYWORD, max_length=40)] = None
    service: Annotated[str | None, StringConstraints(pattern=_KEYWORD, max_length=40)] = None
    department: Annotated[str | None, StringConstraints(pattern=_KEYWORD, max_length=64)] = None
    step: Annotated[str | None, StringConstraints(pattern=_KEYWORD, max_length=40)] = None
    overdue: bool = False
    stuck: bool = False
    stuck_minutes: Annotated[int, Field(ge=0, le=60 * 24 * 30)] = 10
    open: bool | None = Field(default=None, description="true: running workflows only; false: closed only")
    started_from: dt.datetime | None = None
    started_to: dt.datetime | None = None
    closed_from: dt.datetime | None = None
    closed_to: dt.datetime | None = None


class BatchIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    operation: Literal["retry", "cancel", "terminate", "reroute"]
    filter: CaseFilter
    reason: Reason
    department: Annotated[str | None, StringConstraints(pattern=_KEYWORD, max_length=64)] = None
    dry_run: bool = False
    limit: Annotated[int, Field(ge=1, le=500)] = 100
    confirm_count: Annotated[int | None, Field(ge=0, le=500, description=(
        "required unless dry_run: the number of cases the dry run matched. If the filter matches a different "
        "number now, nothing is done (409), so a batch never reaches cases nobody looked at"))] = None


class BatchOut(BaseModel):
    operation: str
    dry_run: bool
    matched: int
    succeeded: int
    failed: int
    results: list[OperationOut]


# --------------------------------------------------------------------------- listing


def _when(value: dt.datetime) -> str:
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    try:
        return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    except OverflowError as exc:  # e.g. 0001-01-01 with a positive offset
        raise InvalidInput(f"date out of range: {value.isoformat()}") from exc


def list_query(ctx: ApiContext, f: CaseFilter, *, now: dt.datetime | None = None) -> str:
    """Temporal's list query for the filter. Keyword values have passed ``_KEYWORD``; the task
    queue (from settings) is checked too, so no value can close the quotes."""
    import re

    queue = ctx.settings.task_queue
    if not re.match(_KEYWORD, queue):
        raise InvalidInput("the configured task queue name cannot be used in a list query")
    clauses = ["WorkflowType = 'CaseWorkflow'", f"TaskQueue = '{queue}'"]
    for key, value in ((search.STATUS, f.status), (search.SERVICE, f.service), (search.DEPARTMENT, f.department),
                       (search.STEP, f.step)):
        if value:
            if not re.match(_KEYWORD, value):
                raise InvalidInput(f"{key.name}: only letters, digits, '_', '.', '-' are allowed")
            clauses.append(f"{key.name} = '{value}'")
    if f.overdue:  # the deadline is unset while paused, so waiting cases never match
        clauses.append(f"{search.DEADLINE.name} < '{_when(now or utcnow())}'")
    if f.overdue or f.stuck or f.open:
        clauses.append("ExecutionStatus = 'Running'")
    elif f.open is False:
        clauses.append("ExecutionStatus != 'Running'")
    for column, op, value in (("StartTime", ">=", f.started_from), ("StartTime", "<=", f.started_to),
                              ("CloseTime", ">=", f.closed_from), ("CloseTime", "<=", f.closed_to)):
        if value is not None:
            clauses.append(f"{column} {op} '{_when(value)}'")
    return " AND ".join(clauses)


def _sa(wf: WorkflowExecution, key: Any) -> Any:
    return wf.typed_search_attributes.get(key)


def _row(wf: WorkflowExecution, now: dt.datetime) -> AdminCaseRow:
    deadline = _sa(wf, search.DEADLINE)
    running = wf.status == WorkflowExecutionStatus.RUNNING
    return AdminCaseRow(
        case_id=wf.id, workflow_status=wf.status.name if wf.status else "UNKNOWN",
        status=_sa(wf, search.STATUS), service_key=_sa(wf, search.SERVICE), department=_sa(wf, search.DEPARTMENT),
        step=_sa(wf, search.STEP), aktenzeichen=_sa(wf, search.AKTENZEICHEN), started_at=wf.start_time,
        closed_at=wf.close_time, deadline_at=deadline, overdue=bool(running and deadline and deadline < now))


def _ts(value: Any) -> dt.datetime | None:
    return value.ToDatetime(tzinfo=dt.UTC) if value is not None and value.seconds else None


def pending_activities(desc: WorkflowExecutionDescription) -> list[FailingActivity]:
    out = []
    for a in desc.raw_description.pending_activities:
        out.append(FailingActivity(
            activity_id=a.activity_id, activity_type=a.activity_type.name, attempt=a.attempt,
            state=PendingActivityState.Name(a.state).removeprefix("PENDING_ACTIVITY_STATE_"),
            last_failure=(a.last_failure.message[:FAILURE_CHARS] or None) if a.HasField("last_failure") else None,
            next_attempt_at=_ts(a.next_attempt_schedule_time) if a.HasField("next_attempt_schedule_time") else None,
            paused=a.paused))
    return out


async def _first_scheduled(client: Client, case_id: str, run_id: str | None) -> dict[str, dt.datetime]:
    """activity id → when it was first scheduled (retries add no history events)."""
    history = await client.get_workflow_handle(case_id, run_id=run_id).fetch_history()
    return {e.activity_task_scheduled_event_attributes.activity_id: e.event_time.ToDatetime(tzinfo=dt.UTC)
            for e in history.events if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED}


async def failing_activities(client: Client, case_id: str, *, min_minutes: int | None = None,
                             ) -> tuple[WorkflowExecutionDescription, list[FailingActivity]]:
    """The case's pending activities that have failed at least once (attempt > 1), with the time
    they were first scheduled; with ``min_minutes`` only those failing for at least that long."""
    desc = await client.get_workflow_handle(case_id).describe()
    failing = [a for a in pending_activities(desc) if a.attempt > 1]
    if not failing:
        return desc, []
    since = await _first_scheduled(client, case_id, desc.run_id)
    now = utcnow()
    for a in failing:
        a.failing_since = since.get(a.activity_id)
    if min_minutes is not None:
        limit = dt.timedelta(minutes=min_minutes)
        failing = [a for a in failing if a.failing_since is not None and now - a.failing_since >= limit]
    return desc, failing


async def _stuck(client: Client, rows: list[AdminCaseRow], minutes: int) -> list[AdminCaseRow]:
    gate = asyncio.Semaphore(DESCRIBE_CONCURRENCY)

    async def check(row: AdminCaseRow) -> AdminCaseRow | None:
        async with gate:
            try:
                _, row.stuck = await failing_activities(client, row.case_id, min_minutes=minutes)
            except RPCError as exc:
                if exc.status == RPCStatusCode.NOT_FOUND:
                    return None  # closed and removed meanwhile
                raise
        return row if row.stuck else None

    return [r for r in await asyncio.gather(*(check(r) for r in rows)) if r is not None]


async def find_cases(ctx: ApiContext, f: CaseFilter, limit: int, token: bytes | None = None,
                     ) -> tuple[list[AdminCaseRow], bytes | None]:
    """One page of matching cases and the token of the next page (None on the last one). With
    ``stuck`` whole visibility pages are described until something is found or STUCK_SCAN_LIMIT
    cases were looked at, so a page may hold fewer than ``limit`` rows: follow the token."""
    now = utcnow()
    query = list_query(ctx, f, now=now)
    client = ctx.client()
    rows: list[AdminCaseRow] = []
    scanned = 0
    try:
        while True:
            it = client.list_workflows(query, page_size=limit, next_page_token=token)
            await it.fetch_next_page()
            page = [_row(wf, now) for wf in it.current_page]
            token = it.next_page_token or None
            scanned += len(page)
            rows += await _stuck(client, page, f.stuck_minutes) if f.stuck else page
            if not f.stuck or rows or token is None or scanned >= STUCK_SCAN_LIMIT:
                return rows, token
    except RPCError as exc:
        if exc.status == RPCStatusCode.INVALID_ARGUMENT:
            raise InvalidInput(f"Temporal refused the list query: {exc.message}") from exc
        raise translate(exc) from exc


@router.get("/cases", response_model=list[AdminCaseRow],
            responses={200: {"headers": {"Next-Page-Token": {
                "description": "pass as `page_token` for the next page; absent on the last page",
                "schema": {"type": "string"}}}}})
async def list_cases(
    ctx: Ctx,
    response: Response,
    status: Annotated[str | None, Query(pattern=_KEYWORD, max_length=40)] = None,
    service: Annotated[str | None, Query(pattern=_KEYWORD, max_length=40)] = None,
    department: Annotated[str | None, Query(pattern=_KEYWORD, max_length=64)] = None,
    step: Annotated[str | None, Query(pattern=_KEYWORD, max_length=40)] = None,
    overdue: Annotated[bool, Query(description="processing deadline passed, case still open")] = False,
    stuck: Annotated[bool, Query(description="open, with an activity failing for at least stuck_minutes")] = False,
    stuck_minutes: Annotated[int, Query(ge=0, le=60 * 24 * 30)] = 10,
    open: Annotated[bool | None, Query(description="true: running only; false: closed only")] = None,  # noqa: A002
    started_from: dt.datetime | None = None,
    started_to: dt.datetime | None = None,
    closed_from: dt.datetime | None = None,
    closed_to: dt.datetime | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    page_token: Annotated[str | None, Query(pattern=_TOKEN, max_length=4000)] = None,
) -> list[AdminCaseRow]:
    f = CaseFilter(status=status, service=service, department=department, step=step, overdue=overdue, stuck=stuck,
                   stuck_minutes=stuck_minutes, open=open, started_from=started_from, started_to=started_to,
                   closed_from=closed_from, closed_to=closed_to)
    token = None
    if page_token:
        try:
            token = base64.urlsafe_b64decode(page_token)
        except ValueError as exc:
            raise InvalidInput("page_token is not a token this API gave out") from exc
    rows, next_token = await find_cases(ctx, f, limit, token)
    if next_token:
        response.headers["Next-Page-Token"] = base64.urlsafe_b64encode(next_token).decode()
    return rows


@router.get("/cases/counts", response_model=CaseCounts)
async def case_counts(ctx: Ctx) -> CaseCounts:
    """Cases per status (and per service and status) from the read model: one grouped query."""
    def load(s: Session) -> list[Any]:
        return list(s.execute(select(Vorgang.service_key, Vorgang.status, func.count())
                              .group_by(Vorgang.service_key, Vorgang.status)))

    by_status: dict[str, int] = {}
    by_service: dict[str, dict[str, int]] = {}
    for service_key, status, n in await ctx.db(load):
        by_status[status] = by_status.get(status, 0) + n
        by_service.setdefault(service_key or "none", {})[status] = n
    total = sum(by_status.values())
    closed = sum(n for st, n in by_status.items() if st in c.FINAL_STATUSES)
    return CaseCounts(total=total, open=total - closed, by_service=by_service,
                      by_status=[StatusCount(status=st, count=n, final=st in c.FINAL_STATUSES)
                                 for st, n in sorted(by_status.items())])


# --------------------------------------------------------------------------- one case


@dataclass
class _Walk:
    """State while turning a history into a readable timeline."""

    step: str | None = None
    activities: dict[int, str] | None = None  # scheduled event id → activity type
    timers: dict[int, str] | None = None  # started event id → duration
    updates: dict[str, tuple[str, str | None]] | None = None  # protocol instance → (name, actor)


def _keyword(payload: Any) -> str | None:
    try:
        value = json.loads(payload.data)
    except (ValueError, UnicodeDecodeError):
        return None
    if isinstance(value, list):
        value = value[0] if value else None
    return value if isinstance(value, str) else None


def _duration(d: Any) -> str:
    s = d.seconds
    for unit, n in (("d", 86400), ("h", 3600), ("min", 60)):
        if s >= n and s % n == 0:
            return f"{s // n} {unit}"
    return f"{s} s"


async def _update_actor(client: Client, payloads: Any) -> str | None:
    """Only the acting person's id is taken from an Update's (encrypted) arguments; nothing else
    of them reaches the answer."""
    try:
        args = await client.data_converter.decode(list(payloads))
    except Exception:  # noqa: BLE001 - an undecodable argument just has no actor shown
        return None
    for arg in args:
        actor = arg.get("actor") if isinstance(arg, dict) else None
        if isinstance(actor, dict) and isinstance(actor.get("sub"), str):
            return actor["sub"][:200]
    return None


async def readable_history(client: Client, events: list[HistoryEvent]) -> list[TimelineEntry]:
    w = _Walk(activities={}, timers={}, updates={})
    out: list[TimelineEntry] = []
    T = EventType

    def add(e: HistoryEvent, result: str, text: str, actor: str | None = None) -> None:
        out.append(TimelineEntry(id=e.event_id, time=e.event_time.ToDatetime(tzinfo=dt.UTC),
                                 type=T.Name(e.event_type).removeprefix("EVENT_TYPE_"), step=w.step, actor=actor,
                                 result=result, text=text))

    def note_attributes(fields: Any) -> str:
        status = _keyword(fields[search.STATUS.name]) if search.STATUS.name in fields else None
        step = _keyword(fields[search.STEP.name]) if search.STEP.name in fields else None
        if step:
            w.step = step
        return ", ".join(x for x in (f"status {status}" if status else "", f"step {step}" if step else "") if x)

    for e in events:
        t = e.event_type
        if t == T.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED:
            a = e.workflow_execution_started_event_attributes
            moved = note_attributes(a.search_attributes.indexed_fields)
            add(e, "started", f"workflow {a.workflow_type.name} started" + (f" ({moved})" if moved else ""))
        elif t == T.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            w.activities[e.event_id] = e.activity_task_scheduled_event_attributes.activity_type.name  # type: ignore[index]
            add(e, "scheduled", f"activity {w.activities[e.event_id]} scheduled")  # type: ignore[index]
        elif t == T.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
            name = w.activities.get(e.activity_task_completed_event_attributes.scheduled_event_id, "?")  # type: ignore[union-attr]
            add(e, "completed", f"activity {name} completed")
        elif t == T.EVENT_TYPE_ACTIVITY_TASK_FAILED:
            a = e.activity_task_failed_event_attributes
            name = w.activities.get(a.scheduled_event_id, "?")  # type: ignore[union-attr]
            add(e, "failed", f"activity {name} failed: {a.failure.message[:FAILURE_CHARS]}")
        elif t == T.EVENT_TYPE_ACTIVITY_TASK_TIMED_OUT:
            name = w.activities.get(e.activity_task_timed_out_event_attributes.scheduled_event_id, "?")  # type: ignore[union-attr]
            add(e, "timed out", f"activity {name} timed out")
        elif t == T.EVENT_TYPE_ACTIVITY_TASK_CANCELED:
            name = w.activities.get(e.activity_task_canceled_event_attributes.scheduled_event_id, "?")  # type: ignore[union-attr]
            add(e, "cancelled", f"activity {name} cancelled")
        elif t == T.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED:
            a = e.workflow_execution_update_accepted_event_attributes
            name = a.accepted_request.input.name
            actor = await _update_actor(client, a.accepted_request.input.args.payloads)
            w.updates[a.accepted_request.meta.update_id] = (name, actor)  # type: ignore[index]
            add(e, "accepted", f"update {name}" + (f" by {actor}" if actor else "") + " accepted", actor)
        elif t == T.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_COMPLETED:
            a = e.workflow_execution_update_completed_event_attributes
            name, actor = w.updates.get(a.meta.update_id, ("?", None))  # type: ignore[union-attr]
            if a.outcome.HasField("failure"):
                add(e, "failed", f"update {name} failed: {a.outcome.failure.message[:FAILURE_CHARS]}", actor)
            else:
                add(e, "completed", f"update {name} completed", actor)
        elif t == T.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED:
            add(e, "received", f"signal {e.workflow_execution_signaled_event_attributes.signal_name}")
        elif t == T.EVENT_TYPE_TIMER_STARTED:
            a = e.timer_started_event_attributes
            w.timers[e.event_id] = _duration(a.start_to_fire_timeout)  # type: ignore[index]
            add(e, "started", f"timer started ({w.timers[e.event_id]})")  # type: ignore[index]
        elif t == T.EVENT_TYPE_TIMER_FIRED:
            d = w.timers.get(e.timer_fired_event_attributes.started_event_id)  # type: ignore[union-attr]
            add(e, "fired", "timer fired" + (f" ({d})" if d else ""))
        elif t == T.EVENT_TYPE_TIMER_CANCELED:
            add(e, "cancelled", "timer cancelled")
        elif t == T.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES:
            moved = note_attributes(e.upsert_workflow_search_attributes_event_attributes.search_attributes.indexed_fields)
            if moved:
                add(e, "recorded", moved)
        elif t == T.EVENT_TYPE_MARKER_RECORDED:
            add(e, "recorded", f"marker {e.marker_recorded_event_attributes.marker_name}")
        elif t == T.EVENT_TYPE_WORKFLOW_TASK_FAILED:
            add(e, "failed", f"workflow task failed: {e.workflow_task_failed_event_attributes.failure.message[:FAILURE_CHARS]}")
        elif t == T.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_INITIATED:
            a = e.start_child_workflow_execution_initiated_event_attributes
            add(e, "initiated", f"child workflow {a.workflow_type.name} {a.workflow_id} started")
        elif t == T.EVENT_TYPE_SIGNAL_EXTERNAL_WORKFLOW_EXECUTION_INITIATED:
            a = e.signal_external_workflow_execution_initiated_event_attributes
            add(e, "initiated", f"signal {a.signal_name} sent to {a.workflow_execution.workflow_id}")
        elif t == T.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED:
            add(e, "completed", "workflow completed")
        elif t == T.EVENT_TYPE_WORKFLOW_EXECUTION_FAILED:
            add(e, "failed", f"workflow failed: {e.workflow_execution_failed_event_attributes.failure.message[:FAILURE_CHARS]}")
        elif t == T.EVENT_TYPE_WORKFLOW_EXECUTION_TERMINATED:
            a = e.workflow_execution_terminated_event_attributes
            add(e, "terminated", f"workflow terminated: {a.reason[:FAILURE_CHARS]}", a.identity or None)
        elif t == T.EVENT_TYPE_WORKFLOW_EXECUTION_CANCELED:
            add(e, "cancelled", "workflow cancelled")
        elif t == T.EVENT_TYPE_WORKFLOW_EXECUTION_TIMED_OUT:
            add(e, "timed out", "workflow timed out")
        elif t == T.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW:
            add(e, "continued", "workflow continued as new")
        # workflow task scheduled/started/completed and the like are Temporal's bookkeeping: left out
    return out


@router.get("/cases/{case_id}", response_model=AdminCaseDetail)
async def admin_case(case_id: str, ctx: Ctx, p: CurrentPrincipal) -> AdminCaseDetail:
    case: CaseOut = await get_case(case_id, ctx, p)  # 404 for an unknown case; the read is audited
    handle = ctx.client().get_workflow_handle(case_id)
    workflow: dict[str, Any] | None = None
    history: list[TimelineEntry] = []
    pending: list[FailingActivity] = []
    try:
        desc = await handle.describe()
        raw = await handle.fetch_history()
    except RPCError as exc:
        if exc.status != RPCStatusCode.NOT_FOUND:  # else: the workflow's history is gone (retention)
            raise translate(exc) from exc
    else:
        workflow = {"id": desc.id, "run_id": desc.run_id, "status": desc.status.name if desc.status else None,
                    "task_queue": desc.task_queue, "history_length": desc.history_length,
                    "start_time": desc.start_time.isoformat(),
                    "close_time": desc.close_time.isoformat() if desc.close_time else None}
        history = await readable_history(ctx.client(), list(raw.events))
        pending = pending_activities(desc)

    def audit_rows(s: Session) -> list[AuditEvent]:
        return list(s.scalars(select(AuditEvent).where(AuditEvent.case_id == case_id)
                              .order_by(AuditEvent.seq, AuditEvent.id)))

    trail = [AuditEventOut.model_validate(e, from_attributes=True) for e in await ctx.db(audit_rows)]
    return AdminCaseDetail(case=case.model_dump(mode="json"), workflow=workflow, history=history,
                           pending_activities=pending, audit=trail)


# --------------------------------------------------------------------------- operations


async def _open_case(ctx: ApiContext, case_id: str) -> Vorgang:
    """The case from the read model: 404 if unknown, 409 if it is closed already."""
    def load(s: Session) -> Vorgang | None:
        v = s.get(Vorgang, case_id)
        if v is not None:
            s.expunge(v)
        return v

    v = await ctx.db(load)
    if v is None:
        raise NotFound(f"case {case_id} not found")
    if v.status in c.FINAL_STATUSES:
        raise Conflict(f"the case is closed already ({v.status})")
    return v


def _audit_row(s: Session, p: Principal, operation: str, case_id: str, reason: str,
               details: dict[str, Any] | None = None) -> None:
    """The operation's audit event (``admin.case.<operation>``), in the caller's transaction."""
    records.audit(s, actor=p.sub, role=p.primary_role, action=f"admin.case.{operation}", target_type="case",
                  target_id=case_id, case_id=case_id, reason=reason, details=details)


async def _audit(ctx: ApiContext, p: Principal, operation: str, case_id: str, reason: str,
                 details: dict[str, Any] | None = None) -> None:
    await ctx.db(lambda s: _audit_row(s, p, operation, case_id, reason, details))


async def retry_case(ctx: ApiContext, p: Principal, case_id: str, reason: str) -> OperationOut:
    """Make the case's failing activities retry now: Temporal's ResetActivity (server ≥ 1.28)
    drops the back-off, so the next attempt is dispatched at once, and resets the attempt count
    (the audit event keeps the count it had)."""
    await _open_case(ctx, case_id)
    client = ctx.client()
    try:
        desc = await client.get_workflow_handle(case_id).describe()
    except RPCError as exc:
        raise translate(exc, known_case=True) from exc
    if desc.status != WorkflowExecutionStatus.RUNNING:
        raise Conflict(f"the case's workflow is not running ({desc.status.name if desc.status else '?'})")
    failing = [a for a in pending_activities(desc) if a.attempt > 1 or a.last_failure or a.paused]
    if not failing:
        raise Conflict("no activity of this case is failing; nothing to retry")
    for a in failing:
        try:
            await client.workflow_service.reset_activity(ResetActivityRequest(
                namespace=client.namespace, execution=WorkflowExecutionProto(workflow_id=case_id, run_id=desc.run_id),
                identity=f"admin:{p.sub}"[:200], id=a.activity_id))
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:  # completed in the meantime: nothing left to retry
                continue
            if exc.status in (RPCStatusCode.UNIMPLEMENTED, RPCStatusCode.PERMISSION_DENIED):
                raise Conflict(f"this Temporal server does not allow resetting activities: {exc.message}") from exc
            raise translate(exc, known_case=True) from exc
    details = {"activities": [{"activity": a.activity_type, "attempt": a.attempt, "last_failure": a.last_failure}
                              for a in failing]}
    await _audit(ctx, p, "retry", case_id, reason, details)
    log.info("admin.case_retried", case_id=case_id, activities=[a.activity_type for a in failing])
    return OperationOut(case_id=case_id, operation="retry", result=details)


async def _update(ctx: ApiContext, case_id: str, name: str, arg: Any) -> Any:
    try:
        return await bounded(ctx.client().get_workflow_handle(case_id).execute_update(name, arg),
                             ctx.settings.update_timeout_s)
    except TEMPORAL_ERRORS as exc:
        raise translate(exc, known_case=True) from exc


async def cancel_case(ctx: ApiContext, p: Principal, case_id: str, reason: str) -> OperationOut:
    """Cancel through the workflow (Update ``admin_cancel``): it compensates (cancels or refunds the
    payment, tells the applicant) and records the cancellation itself."""
    await _open_case(ctx, case_id)
    result = await _update(ctx, case_id, "admin_cancel", c.AdminCancel(actor=_actor(p), reason=reason))
    await _audit(ctx, p, "cancel", case_id, reason)
    return OperationOut(case_id=case_id, operation="cancel", result=result)


async def reroute_case(ctx: ApiContext, p: Principal, case_id: str, reason: str, department: str) -> OperationOut:
    """Forward the case to another department (Update ``forward``; the workflow checks the state)."""
    if department not in ctx.catalog.departments:
        raise InvalidInput(f"unknown department {department!r}; known: {', '.join(sorted(ctx.catalog.departments))}")
    v = await _open_case(ctx, case_id)
    if v.department == department:
        raise Conflict(f"the case is with {department} already")
    result = await _update(ctx, case_id, "forward", c.Forward(actor=_actor(p), department=department, reason=reason))
    await _audit(ctx, p, "reroute", case_id, reason, {"from": v.department, "to": department})
    return OperationOut(case_id=case_id, operation="reroute", result=result)


async def terminate_case(ctx: ApiContext, p: Principal, case_id: str, reason: str) -> OperationOut:
    """Stop the workflow without compensation (Temporal terminate), then close the case in the
    read model as ``terminated``. The Akte and its documents stay. A repeat after a crash between
    the two steps finds the workflow terminated and completes the read model."""
    v = await _open_case(ctx, case_id)
    handle = ctx.client().get_workflow_handle(case_id)
    try:
        desc = await handle.describe()
        if desc.status == WorkflowExecutionStatus.RUNNING:
            await handle.terminate(reason=f"admin {p.sub}: {reason}"[:1000])
        elif desc.status != WorkflowExecutionStatus.TERMINATED:
            raise Conflict(f"the case's workflow has ended ({desc.status.name if desc.status else '?'})")
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            raise Conflict("the case's workflow no longer exists") from exc
        if exc.status == RPCStatusCode.FAILED_PRECONDITION or "already completed" in (exc.message or "").lower():
            raise Conflict(f"the case's workflow has ended meanwhile: {exc.message}") from exc
        raise translate(exc, known_case=True) from exc

    def close(s: Session) -> None:
        now = utcnow()
        if records.record_event(s, case_id=case_id, key=f"{case_id}:terminated", step="terminated",
                                status=c.TERMINATED, message="Vorgang durch die Verwaltung beendet",
                                fields={"deadline_at": None}):
            vorgang = records.get_case(s, case_id)
            vorgang.closed_at = vorgang.closed_at or now
            _audit_row(s, p, "terminate", case_id, reason, {"step": v.step, "status": v.status})

    await ctx.db(close)
    log.info("admin.case_terminated", case_id=case_id)
    return OperationOut(case_id=case_id, operation="terminate", result={"status": c.TERMINATED})


_OPS = {"retry": retry_case, "cancel": cancel_case, "terminate": terminate_case}

_ERRORS = {409: {"description": "the case is closed, or the operation does not apply to its state"},
           404: {"description": "unknown case"}}


@router.post("/cases/{case_id}/retry", response_model=OperationOut, responses=_ERRORS)
async def retry(case_id: str, body: ReasonIn, ctx: Ctx, p: CurrentPrincipal) -> OperationOut:
    return await retry_case(ctx, p, case_id, body.reason)


@router.post("/cases/{case_id}/cancel", response_model=OperationOut, responses=_ERRORS)
async def cancel(case_id: str, body: ReasonIn, ctx: Ctx, p: CurrentPrincipal) -> OperationOut:
    return await cancel_case(ctx, p, case_id, body.reason)


@router.post("/cases/{case_id}/terminate", response_model=OperationOut, responses=_ERRORS)
async def terminate(case_id: str, body: ReasonIn, ctx: Ctx, p: CurrentPrincipal) -> OperationOut:
    return await terminate_case(ctx, p, case_id, body.reason)


@router.post("/cases/{case_id}/reroute", response_model=OperationOut, responses=_ERRORS)
async def reroute(case_id: str, body: RerouteIn, ctx: Ctx, p: CurrentPrincipal) -> OperationOut:
    return await reroute_case(ctx, p, case_id, body.reason, body.department)


@router.post("/cases/batch", response_model=BatchOut,
             responses={409: {"description": "the filter matches a different number of cases than confirm_count"}})
async def batch(body: BatchIn, ctx: Ctx, p: CurrentPrincipal) -> BatchOut:
    """One operation on every case the filter matches (at most ``limit``). Each case is handled
    and audited on its own; one case's refusal does not stop the others. ``dry_run`` only lists."""
    if not body.dry_run and body.confirm_count is None:
        raise InvalidInput("run the batch with dry_run first, then repeat it with confirm_count set to the number "
                           "of cases it matched")
    if body.operation == "reroute":
        if not body.department:
            raise InvalidInput("reroute needs a department")
        if body.department not in ctx.catalog.departments:
            raise InvalidInput(f"unknown department {body.department!r}")
    f = body.filter
    if f.open is None:
        f = f.model_copy(update={"open": True})  # closed cases cannot be retried, cancelled, terminated, rerouted
    matched: list[AdminCaseRow] = []
    token: bytes | None = None
    while len(matched) < body.limit:
        rows, token = await find_cases(ctx, f, min(body.limit - len(matched), 500), token)
        matched += rows
        if token is None:
            break
    matched = matched[:body.limit]
    if not body.dry_run and body.confirm_count != len(matched):
        raise Conflict(f"the filter matches {len(matched)} cases now, not {body.confirm_count}: nothing was done; "
                       f"look at the dry run again")
    if body.dry_run:
        results = [OperationOut(case_id=r.case_id, operation=body.operation, status=0, detail="dry run",
                                result={"status": r.status, "step": r.step, "department": r.department})
                   for r in matched]
        return BatchOut(operation=body.operation, dry_run=True, matched=len(matched), succeeded=0, failed=0,
                        results=results)
    gate = asyncio.Semaphore(BATCH_CONCURRENCY)

    async def run(row: AdminCaseRow) -> OperationOut:
        async with gate:
            try:
                if body.operation == "reroute":
                    return await reroute_case(ctx, p, row.case_id, body.reason, body.department or "")
                return await _OPS[body.operation](ctx, p, row.case_id, body.reason)
            except AktenlaufError as exc:
                return OperationOut(case_id=row.case_id, operation=body.operation, ok=False, status=exc.status,
                                    detail=exc.detail)

    results = list(await asyncio.gather(*(run(r) for r in matched)))
    ok = sum(1 for r in results if r.ok)
    log.info("admin.batch", operation=body.operation, matched=len(matched), succeeded=ok)
    return BatchOut(operation=body.operation, dry_run=False, matched=len(matched), succeeded=ok,
                    failed=len(results) - ok, results=results)

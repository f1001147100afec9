"""The clerk's work lists: the department inbox, the own list ('mine'), claiming and handing
over cases, priorities, and deputies (Vertretung). The rules are in eakte/inbox.py."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query, Response
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints
from sqlalchemy.orm import Session

from api.auth import CurrentPrincipal, require_role
from api.context import Ctx
from api.schemas import TaskOut
from eakte import inbox
from eakte.models import Vertretung, Vorgang, utcnow

router = APIRouter(prefix="/v1/tasks", tags=["tasks"])
deputies = APIRouter(prefix="/v1/deputies", tags=["tasks"])

InboxStatus = Literal["awaiting_decision", "awaiting_cosign", "awaiting_documents"]
Priority = Literal["low", "normal", "high", "urgent"]
Subject = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200,
                                           pattern=r"^[^\x00-\x1f\x7f]+$")]
Reason = Annotated[str, StringConstraints(strip_whitespace=True, min_length=3, max_length=1000)]
CaseId = Annotated[str, Path(max_length=64)]


class TaskItemOut(TaskOut):
    assignee: str | None
    assigned_at: dt.datetime | None
    priority: Priority
    #: the processing deadline while it runs (paused, i.e. null, while waiting for the citizen)
    deadline_at: dt.datetime | None
    overdue: bool
    escalated: bool
    #: Nachforderung: what the citizen was asked for, and until when
    waiting_for: list[str]
    waiting_until: dt.date | None
    #: awaiting_cosign: who decided first; may_cosign is false for them (Vier-Augen-Prinzip)
    first_decision_by: str | None
    may_cosign: bool
    #: in 'mine': the colleague whose case this is when the caller stands in for them
    acting_for: str | None = None


class AssignmentOut(BaseModel):
    case_id: str
    aktenzeichen: str
    status: str
    assignee: str | None
    assigned_at: dt.datetime | None
    priority: str


def _assignment(v: Vorgang) -> AssignmentOut:
    return AssignmentOut(case_id=v.id, aktenzeichen=v.aktenzeichen, status=v.status, assignee=v.assignee,
                         assigned_at=v.assigned_at, priority=v.priority)


class ReasonIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: Reason | None = None


class ReassignIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    to: Subject
    reason: Reason


class PriorityIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    priority: Priority
    reason: Reason | None = None


def _filter(status: list[InboxStatus] | None, service_key: str | None, department: str | None,
            priority: list[Priority] | None, due_before: dt.date | None, overdue: bool | None, assignee: str | None,
            cosignable: bool | None, sort: str, order: str, limit: int, offset: int,
            default_statuses: tuple[str, ...]) -> inbox.InboxFilter:
    return inbox.InboxFilter(
        statuses=tuple(dict.fromkeys(status)) if status else default_statuses, service_key=service_key,
        department=department, priorities=tuple(priority or ()), due_before=due_before, overdue=overdue,
        assignee=assignee, cosignable=cosignable, sort=sort, descending=order == "desc", limit=limit, offset=offset)


# the same filters on both lists
StatusQ = Annotated[list[InboxStatus] | None, Query(
    description="repeatable; default: awaiting_decision and awaiting_cosign (inbox), all three (mine)")]
ServiceQ = Annotated[str | None, Query(max_length=32)]
DepartmentQ = Annotated[str | None, Query(max_length=64)]
PriorityQ = Annotated[list[Priority] | None, Query(description="repeatable")]
DueBeforeQ = Annotated[dt.date | None, Query(description="due date before this day")]
OverdueQ = Annotated[bool | None, Query(description="true: only overdue cases; false: only the others")]
AssigneeQ = Annotated[str | None, Query(max_length=200, description="me | none | a clerk's subject")]
CosignableQ = Annotated[bool | None, Query(
    description="true: only cases waiting for a co-signature the caller may give (not the ones they decided)")]
SortQ = Literal["due_on", "priority", "created_at", "status"]
OrderQ = Literal["asc", "desc"]
LimitQ = Annotated[int, Query(ge=1, le=500)]
OffsetQ = Annotated[int, Query(ge=0, le=2**63 - 1)]  # past 64 bits the database overflowed → 500


async def _list(ctx: Ctx, p: CurrentPrincipal, f: inbox.InboxFilter, mine: bool) -> list[TaskItemOut]:
    now = utcnow()
    rows = await ctx.db(lambda s: inbox.list_inbox(s, p, f, now, mine=mine))
    return [TaskItemOut(**r) for r in rows]


@router.get("", response_model=list[TaskItemOut], dependencies=[require_role("clerk")])
async def list_tasks(
    ctx: Ctx, p: CurrentPrincipal, status: StatusQ = None, service_key: ServiceQ = None,
    department: DepartmentQ = None, priority: PriorityQ = None, due_before: DueBeforeQ = None,
    overdue: OverdueQ = None, assignee: AssigneeQ = None, cosignable: CosignableQ = None,
    sort: SortQ = "due_on", order: OrderQ = "asc", limit: LimitQ = 100, offset: OffsetQ = 0,
) -> list[TaskItemOut]:
    """The open cases of the caller's departments, waiting for a clerk (by default) or for the citizen."""
    f = _filter(status, service_key, department, priority, due_before, overdue, assignee, cosignable, sort, order,
                limit, offset, inbox.DEFAULT_INBOX_STATUSES)
    return await _list(ctx, p, f, mine=False)


@router.get("/mine", response_model=list[TaskItemOut], dependencies=[require_role("clerk")])
async def my_tasks(
    ctx: Ctx, p: CurrentPrincipal, status: StatusQ = None, service_key: ServiceQ = None,
    department: DepartmentQ = None, priority: PriorityQ = None, due_before: DueBeforeQ = None,
    overdue: OverdueQ = None, cosignable: CosignableQ = None,
    sort: SortQ = "due_on", order: OrderQ = "asc", limit: LimitQ = 100, offset: OffsetQ = 0,
) -> list[TaskItemOut]:
    """Cases assigned to the caller, and to colleagues they stand in for right now (``acting_for``)."""
    f = _filter(status, service_key, department, priority, due_before, overdue, None, cosignable, sort, order,
                limit, offset, inbox.INBOX_STATUSES)
    return await _list(ctx, p, f, mine=True)


CONFLICTS = {404: {"description": "no such case, or not visible to the caller"},
             409: {"description": "claimed by someone else, or the case is closed"}}


@router.post("/{case_id}/claim", response_model=AssignmentOut, dependencies=[require_role("clerk")],
             responses=CONFLICTS)
async def claim(case_id: CaseId, ctx: Ctx, p: CurrentPrincipal) -> AssignmentOut:
    """Take the case (check-and-set: of two clerks claiming at once one wins, the other gets 409)."""
    now = utcnow()
    return await ctx.db(lambda s: _assignment(inbox.claim(s, p, case_id, now)))


@router.post("/{case_id}/unclaim", response_model=AssignmentOut, dependencies=[require_role("clerk")],
             responses=CONFLICTS)
async def unclaim(case_id: CaseId, ctx: Ctx, p: CurrentPrincipal, body: ReasonIn | None = None) -> AssignmentOut:
    """Give the case back to the department: the assignee, their active deputy, or a team lead."""
    now = utcnow()
    reason = body.reason if body else None
    return await ctx.db(lambda s: _assignment(inbox.unclaim(s, p, case_id, now, reason)))


@router.post("/{case_id}/reassign", response_model=AssignmentOut, dependencies=[require_role("teamlead")],
             responses=CONFLICTS)
async def reassign(case_id: CaseId, body: ReassignIn, ctx: Ctx, p: CurrentPrincipal) -> AssignmentOut:
    """A team lead of the department assigns the case to a clerk (audited with the reason)."""
    now = utcnow()
    return await ctx.db(lambda s: _assignment(inbox.reassign(s, p, case_id, body.to, body.reason, now)))


@router.put("/{case_id}/priority", response_model=AssignmentOut, dependencies=[require_role("teamlead")],
            responses=CONFLICTS)
async def set_priority(case_id: CaseId, body: PriorityIn, ctx: Ctx, p: CurrentPrincipal) -> AssignmentOut:
    now = utcnow()
    return await ctx.db(lambda s: _assignment(inbox.set_priority(s, p, case_id, body.priority, now, body.reason)))


# --------------------------------------------------------------------------- deputies


class DeputyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    principal: Subject | None = Field(default=None, description="whose deputy; default: the caller")
    deputy: Subject
    department: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    valid_from: AwareDatetime | None = Field(default=None, description="default: now")
    valid_until: AwareDatetime
    reason: Annotated[str, StringConstraints(strip_whitespace=True, max_length=1000)] | None = None


class DeputyOut(BaseModel):
    id: str
    principal: str
    deputy: str
    department: str
    valid_from: dt.datetime
    valid_until: dt.datetime
    reason: str | None
    created_by: str
    created_at: dt.datetime
    active: bool
    revoked_at: dt.datetime | None
    revoked_by: str | None


def _deputy_out(r: Vertretung, now: dt.datetime) -> DeputyOut:
    return DeputyOut(id=r.id, principal=r.principal, deputy=r.deputy, department=r.department,
                     valid_from=r.valid_from, valid_until=r.valid_until, reason=r.reason, created_by=r.created_by,
                     created_at=r.created_at, revoked_at=r.revoked_at, revoked_by=r.revoked_by,
                     active=r.revoked_at is None and r.valid_from <= now < r.valid_until)


@deputies.post("", status_code=201, response_model=DeputyOut, dependencies=[require_role("clerk")],
               responses={403: {"description": "not the caller's own deputy and not their team's lead"}})
async def create_deputy(body: DeputyIn, ctx: Ctx, p: CurrentPrincipal) -> DeputyOut:
    """Name a deputy: a clerk for themselves, a team lead for anyone in their department."""
    now = utcnow()

    def work(s: Session) -> DeputyOut:
        row = inbox.create_deputy(s, p, principal=body.principal or p.sub, deputy=body.deputy,
                                  department=body.department, valid_from=body.valid_from or now,
                                  valid_until=body.valid_until, reason=body.reason, now=now)
        return _deputy_out(row, now)

    return await ctx.db(work)


@deputies.get("", response_model=list[DeputyOut], dependencies=[require_role("clerk")])
async def list_deputies(ctx: Ctx, p: CurrentPrincipal, department: DepartmentQ = None,
                        include_past: bool = False) -> list[DeputyOut]:
    """The caller's own arrangements (either side); a team lead's also those of their departments."""
    now = utcnow()
    rows = await ctx.db(lambda s: inbox.list_deputies(s, p, now=now, include_past=include_past,
                                                      department=department))
    return [_deputy_out(r, now) for r in rows]


@deputies.delete("/{deputy_id}", status_code=204, dependencies=[require_role("clerk")],
                 responses={404: {"description": "no such Vertretung visible to the caller"}})
async def revoke_deputy(deputy_id: Annotated[str, Path(max_length=32)], ctx: Ctx,
                        p: CurrentPrincipal) -> Response:
    """End a Vertretung now (kept, marked revoked, for the record)."""
    now = utcnow()
    await ctx.db(lambda s: inbox.revoke_deputy(s, p, deputy_id, now=now))
    return Response(status_code=204)

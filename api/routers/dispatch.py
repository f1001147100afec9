"""Dispatch and notifications: the applicant's messages, the staff notifications, and the post
channel's daily print batch (activities/dispatch.py sends; eakte/printbatch.py prints).

* ``GET /v1/cases/{id}/messages``: the messages for the applicant of a case (reminders, "payment
  failed", ...), for whoever may see the case (its integrator shows them in the portal);
* ``GET /v1/notifications`` and ``POST /v1/notifications/{id}/read``: the staff notifications of
  the caller's departments (escalations to the team lead only for team leads);
* ``GET /v1/admin/print-batches`` and ``GET /v1/admin/print-batches/{date}``: the Poststelle's
  print batches (admin or mailroom): printing a day freezes and marks its letters; printing it
  again gives the same PDF. Both prints are audited.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query, Response
from pydantic import BaseModel, Field
from sqlalchemy import ColumnElement, and_, false, select, true
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from aktenlauf.errors import NotFound
from api.auth import CurrentPrincipal, require_role
from api.context import Ctx
from api.routers.cases import visible_case
from eakte import printbatch, records
from eakte.access import Principal, visible_cases
from eakte.models import Akte, Notification, Vorgang, utcnow

router = APIRouter(tags=["dispatch"])

StaffAudience = Literal["department", "assignee", "teamlead", "applicant"]
CaseId = Annotated[str, Path(max_length=64)]
Limit = Annotated[int, Query(ge=1, le=200)]


class MessageOut(BaseModel):
    """A message to the applicant: nothing internal (no staff names, no department inbox state)."""

    id: int
    subject: str
    text: str
    #: how it reached the applicant: email (also sent by e-mail) | portal (only here)
    channel: Literal["email", "portal"]
    created_at: dt.datetime


class MessagePage(BaseModel):
    items: list[MessageOut]
    next_cursor: int | None = Field(description="pass as `cursor` for the next page; null on the last page")


class NotificationOut(BaseModel):
    id: int
    case_id: str
    aktenzeichen: str
    department: str | None
    audience: str
    recipient: str | None = Field(description="assignee notifications: the clerk meant")
    subject: str
    text: str
    channel: str
    status: str
    created_at: dt.datetime
    read_at: dt.datetime | None
    read_by: str | None


class NotificationPage(BaseModel):
    items: list[NotificationOut]
    next_cursor: int | None = Field(description="pass as `cursor` for the next page; null on the last page")


class BatchDayOut(BaseModel):
    batch_date: dt.date
    letters: int = Field(description="letters for this day's batch (queued and printed)")
    queued: int = Field(description="letters still waiting to be printed")
    printed: int
    pages: int | None
    printed_at: dt.datetime | None
    printed_by: str | None


class BatchDayPage(BaseModel):
    items: list[BatchDayOut]
    next_before: dt.date | None = Field(description="pass as `before` for the next page; null on the last page")


# --------------------------------------------------------------------------- applicant messages


@router.get("/v1/cases/{case_id}/messages", response_model=MessagePage, tags=["cases"])
async def case_messages(case_id: CaseId, ctx: Ctx, p: CurrentPrincipal, limit: Limit = 50,
                        cursor: Annotated[int | None, Query(ge=0, le=2**31 - 1)] = None) -> MessagePage:
    """The case's messages to the applicant, oldest first (keyset pagination by ``cursor``)."""
    await visible_case(ctx, p, case_id)  # 404 for a case the caller may not see

    def load(s: Session) -> list[Notification]:
        q = (select(Notification).where(Notification.vorgang_id == case_id, Notification.audience == "applicant")
             .order_by(Notification.id).limit(limit + 1))
        if cursor is not None:
            q = q.where(Notification.id > cursor)
        rows = list(s.scalars(q))
        records.audit(s, actor=p.sub, role=p.primary_role, action="case.messages.read", target_type="case",
                      target_id=case_id, case_id=case_id, details={"count": min(len(rows), limit)})
        return rows

    rows = await ctx.db(load)
    page = rows[:limit]
    return MessagePage(
        items=[MessageOut(id=n.id, subject=n.subject, text=n.text, channel="email" if n.channel == "email" else "portal",
                          created_at=n.created_at) for n in page],
        next_cursor=page[-1].id if len(rows) > limit else None)


# --------------------------------------------------------------------------- staff notifications


def _visible_notifications(p: Principal) -> ColumnElement[bool]:
    """Admins: all. Clerks (team leads are clerks too): their departments' notifications on cases
    they may see (confidential Akten need the named role); those to the team lead only for team leads."""
    if p.has("admin"):
        return true()
    if not p.departments:
        return false()
    as_clerk = Principal(sub=p.sub, roles=("clerk", *p.named_roles), departments=p.departments)
    cond = and_(Notification.department.in_(p.departments), visible_cases(as_clerk))
    if not p.has("teamlead"):
        cond = and_(cond, Notification.audience != "teamlead")
    return cond


def _out(n: Notification, aktenzeichen: str) -> NotificationOut:
    return NotificationOut(id=n.id, case_id=n.vorgang_id, aktenzeichen=aktenzeichen, department=n.department,
                           audience=n.audience, recipient=n.recipient, subject=n.subject, text=n.text,
                           channel=n.channel, status=n.status, created_at=n.created_at, read_at=n.read_at,
                           read_by=n.read_by)


@router.get("/v1/notifications", response_model=NotificationPage, tags=["tasks"],
            dependencies=[require_role("clerk", "teamlead", "admin")])
async def list_notifications(
    ctx: Ctx, p: CurrentPrincipal,
    audience: StaffAudience | None = None,
    case_id: Annotated[str | None, Query(max_length=64)] = None,
    unread: bool | None = None,
    mine: Annotated[bool, Query(description="only assignee notifications meant for the caller")] = False,
    limit: Limit = 50,
    cursor: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
) -> NotificationPage:
    """Staff notifications, newest first. Without ``audience``: the staff ones (department,
    assignee, teamlead); ``audience=applicant`` shows what the applicants of the cases were told."""

    def load(s: Session) -> list[tuple[Notification, str]]:
        q = (select(Notification, Vorgang.aktenzeichen).join(Vorgang, Vorgang.id == Notification.vorgang_id)
             .join(Akte, Akte.id == Vorgang.akte_id).where(_visible_notifications(p))
             .order_by(Notification.id.desc()).limit(limit + 1))
        q = q.where(Notification.audience == audience) if audience else q.where(Notification.audience != "applicant")
        if case_id is not None:
            q = q.where(Notification.vorgang_id == case_id)
        if unread is True:
            q = q.where(Notification.read_at.is_(None))
        elif unread is False:
            q = q.where(Notification.read_at.is_not(None))
        if mine:
            q = q.where(Notification.recipient == p.sub)
        if cursor is not None:
            q = q.where(Notification.id < cursor)
        return [(n, az) for n, az in s.execute(q)]

    rows = await ctx.db(load)
    page = rows[:limit]
    return NotificationPage(items=[_out(n, az) for n, az in page],
                            next_cursor=page[-1][0].id if len(rows) > limit else None)


@router.post("/v1/notifications/{notification_id}/read", response_model=NotificationOut, tags=["tasks"],
             dependencies=[require_role("clerk", "teamlead", "admin")])
async def mark_read(notification_id: Annotated[int, Path(ge=1, le=2**31 - 1)], ctx: Ctx,
                    p: CurrentPrincipal) -> NotificationOut:
    """Mark a notification read (idempotent: the first reader and time are kept). Audited."""

    def mark(s: Session) -> NotificationOut:
        row = s.execute(select(Notification, Vorgang.aktenzeichen).join(Vorgang, Vorgang.id == Notification.vorgang_id)
                        .join(Akte, Akte.id == Vorgang.akte_id)
                        .where(Notification.id == notification_id, _visible_notifications(p))
                        .with_for_update(of=Notification)).one_or_none()
        if row is None:
            raise NotFound(f"notification {notification_id} not found")
        n, az = row
        if n.read_at is None:
            n.read_at, n.read_by = utcnow(), p.sub
            records.audit(s, actor=p.sub, role=p.primary_role, action="notification.read",
                          target_type="notification", target_id=str(n.id), case_id=n.vorgang_id)
            s.flush()
        return _out(n, az)

    return await ctx.db(mark)


# --------------------------------------------------------------------------- print batches


@router.get("/v1/admin/print-batches", response_model=BatchDayPage, tags=["admin"],
            dependencies=[require_role("admin", "mailroom")])
async def list_print_batches(ctx: Ctx, before: dt.date | None = None,
                             limit: Annotated[int, Query(ge=1, le=366)] = 31) -> BatchDayPage:
    """Days with letters for the post channel, newest first, with how many are queued and printed."""
    days = await ctx.db(lambda s: printbatch.list_days(s, before=before, limit=limit + 1))
    page = days[:limit]
    return BatchDayPage(items=[BatchDayOut(**d.__dict__) for d in page],
                        next_before=page[-1].batch_date if len(days) > limit else None)


@router.get("/v1/admin/print-batches/{batch_date}", response_class=Response, tags=["admin"],
            dependencies=[require_role("admin", "mailroom")],
            responses={200: {"content": {"application/pdf": {}},
                             "description": "the day's letters: per letter a cover page with the address "
                                            "(DIN 5008 window) and the document's pages"},
                       404: {"description": "no letters for that day"}})
async def get_print_batch(batch_date: dt.date, ctx: Ctx, p: CurrentPrincipal) -> Response:
    """The day's print batch as one PDF. The first call freezes the batch and marks its letters
    sent; later calls give the same bytes (a reprint, audited as such). Letters queued for the
    day after its batch was printed go to the next day's batch."""
    cat = ctx.catalog
    return_line = " · ".join(x for x in (cat.authority_name, *cat.authority_address) if x.strip())
    printed = await run_in_threadpool(printbatch.print_batch, ctx.sessions, ctx.store, batch_date, actor=p.sub,
                                      role=p.primary_role, return_line=return_line)
    return Response(printed.pdf, media_type="application/pdf", headers={
        "Content-Disposition": f'attachment; filename="druckstapel-{batch_date.isoformat()}.pdf"',
        "X-Letters": str(printed.letters), "X-Pages": str(printed.pages), "X-Content-SHA256": printed.sha256,
        "X-Reprint": "true" if printed.reprint else "false"})

"""The audit trail for admins and the data-protection officer.

``GET /v1/admin/audit`` filters the hash-chained audit events (case, actor, action or action
prefix, target, time range) with keyset pagination by ``seq``. ``GET /v1/admin/audit/subject/
{applicant_id}`` answers a data-protection request (Auskunft, Art. 15 DSGVO): every event
concerning that person plus the cases and documents held about them. Reading the audit
trail is itself an audit event (``audit.read``).
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, Field
from sqlalchemy import ColumnElement, Select, and_, func, or_, select
from sqlalchemy.orm import Session

from aktenlauf.errors import InvalidInput
from api.auth import CurrentPrincipal, require_role
from api.context import Ctx
from eakte import records
from eakte.models import AuditEvent, Dokument, Version, Vorgang

router = APIRouter(prefix="/v1/admin/audit", tags=["audit"], dependencies=[require_role("admin")])

ACTION_FILTER = r"^[a-z][a-z0-9_.]{0,39}\*?$"


class AuditEventOut(BaseModel):
    seq: int
    at: dt.datetime
    actor: str
    role: str
    action: str
    target_type: str
    target_id: str
    case_id: str | None
    subject_id: str | None
    reason: str | None
    details: dict[str, Any]
    hash: str | None = Field(description="SHA-256 of this event and its predecessor's hash (the chain)")
    prev_hash: str | None


class AuditPage(BaseModel):
    items: list[AuditEventOut]
    next_cursor: int | None = Field(description="pass as `cursor` for the next page; null on the last page")


class SubjectDocument(BaseModel):
    id: str
    kind: str
    title: str
    created_at: dt.datetime
    versions: int


class SubjectCase(BaseModel):
    case_id: str
    aktenzeichen: str
    service_name: str | None
    department: str | None
    status: str
    created_at: dt.datetime
    closed_at: dt.datetime | None
    documents: list[SubjectDocument]


class SubjectReport(BaseModel):
    """What the authority holds about one person, and who did what with it (Auskunft)."""

    subject_id: str
    cases: list[SubjectCase]
    events: AuditPage


def _utc(value: dt.datetime | None) -> dt.datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def _event_out(e: AuditEvent) -> AuditEventOut:
    return AuditEventOut(seq=int(e.seq or 0), at=e.at, actor=e.actor, role=e.role, action=e.action,
                         target_type=e.target_type, target_id=e.target_id, case_id=e.case_id, subject_id=e.subject_id,
                         reason=e.reason, details=dict(e.details or {}), hash=e.hash, prev_hash=e.prev_hash)


def _page(s: Session, where: list[ColumnElement[bool]], *, cursor: int | None, limit: int, order: str) -> AuditPage:
    q: Select[tuple[AuditEvent]] = select(AuditEvent).where(AuditEvent.seq.is_not(None), *where)
    if order == "desc":
        if cursor is not None:
            q = q.where(AuditEvent.seq < cursor)
        q = q.order_by(AuditEvent.seq.desc())
    else:
        if cursor is not None:
            q = q.where(AuditEvent.seq > cursor)
        q = q.order_by(AuditEvent.seq.asc())
    rows = list(s.scalars(q.limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    return AuditPage(items=[_event_out(e) for e in rows], next_cursor=int(rows[-1].seq or 0) if more else None)


Cursor = Annotated[int | None, Query(ge=0, le=2**63 - 1,  # seq is a 64-bit integer; larger ones overflowed → 500
                                     description="the `next_cursor` of the previous page")]
Limit = Annotated[int, Query(ge=1, le=500)]
Order = Annotated[Literal["asc", "desc"], Query(description="by seq: desc = newest first")]


@router.get("", response_model=AuditPage)
async def list_events(
    ctx: Ctx, p: CurrentPrincipal,
    case_id: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
    actor: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
    action: Annotated[str | None, Query(pattern=ACTION_FILTER, description=(
        "exact action (`document.read`), or a prefix ending in `.` or `*` (`document.`, `case.*`)"))] = None,
    target: Annotated[str | None, Query(min_length=1, max_length=64, description="target id")] = None,
    target_type: Annotated[str | None, Query(pattern=r"^[a-z_]{1,32}$")] = None,
    from_: Annotated[dt.datetime | None, Query(alias="from", description="ISO 8601; without offset = UTC")] = None,
    to: Annotated[dt.datetime | None, Query(description="ISO 8601, exclusive; without offset = UTC")] = None,
    cursor: Cursor = None, limit: Limit = 100, order: Order = "desc",
) -> AuditPage:
    start, end = _utc(from_), _utc(to)
    if start is not None and end is not None and start >= end:
        raise InvalidInput("`from` must be before `to`")
    where: list[ColumnElement[bool]] = []
    if case_id is not None:
        where.append(AuditEvent.case_id == case_id)
    if actor is not None:
        where.append(AuditEvent.actor == actor)
    if action is not None:
        if action.endswith(("*", ".")):
            where.append(AuditEvent.action.startswith(action.rstrip("*"), autoescape=True))
        else:
            where.append(AuditEvent.action == action)
    if target is not None:
        where.append(AuditEvent.target_id == target)
    if target_type is not None:
        where.append(AuditEvent.target_type == target_type)
    if start is not None:
        where.append(AuditEvent.at >= start)
    if end is not None:
        where.append(AuditEvent.at < end)
    filters = {k: v for k, v in (("case_id", case_id), ("actor", actor), ("action", action), ("target", target),
                                 ("target_type", target_type), ("from", start and start.isoformat()),
                                 ("to", end and end.isoformat()), ("cursor", cursor)) if v is not None}

    def run(s: Session) -> AuditPage:
        page = _page(s, where, cursor=cursor, limit=limit, order=order)
        records.audit(s, actor=p.sub, role=p.primary_role, action="audit.read", target_type="audit",
                      target_id=case_id or "query", case_id=case_id,
                      details={"filters": filters, "returned": len(page.items)})
        return page

    return await ctx.db(run)


@router.get("/subject/{applicant_id}", response_model=SubjectReport)
async def subject_report(
    ctx: Ctx, p: CurrentPrincipal,
    applicant_id: Annotated[str, Path(min_length=1, max_length=200)],
    reason: Annotated[str | None, Query(max_length=500, description="e.g. the request's file number")] = None,
    cursor: Cursor = None, limit: Limit = 500, order: Order = "asc",
) -> SubjectReport:
    """Auskunft nach Art. 15 DSGVO: the person's cases and documents, and every audit event about them."""

    def run(s: Session) -> SubjectReport:
        cases = list(s.scalars(select(Vorgang).where(Vorgang.applicant_id == applicant_id)
                               .order_by(Vorgang.created_at)))
        case_ids = [v.id for v in cases]
        docs: dict[str, list[SubjectDocument]] = {cid: [] for cid in case_ids}
        if case_ids:
            counts = (select(Dokument.id, Dokument.vorgang_id, Dokument.kind, Dokument.title, Dokument.created_at,
                             func.count(Version.id))
                      .join(Version, Version.dokument_id == Dokument.id)
                      .where(Dokument.vorgang_id.in_(case_ids))
                      .group_by(Dokument.id, Dokument.vorgang_id, Dokument.kind, Dokument.title, Dokument.created_at)
                      .order_by(Dokument.created_at))
            for doc_id, vorgang_id, kind, title, created_at, n in s.execute(counts):
                docs[vorgang_id].append(SubjectDocument(id=doc_id, kind=kind, title=title, created_at=created_at,
                                                        versions=int(n)))
        concerns = AuditEvent.subject_id == applicant_id
        if case_ids:
            concerns = or_(concerns, and_(AuditEvent.subject_id.is_(None), AuditEvent.case_id.in_(case_ids)))
        page = _page(s, [concerns], cursor=cursor, limit=limit, order=order)
        records.audit(s, actor=p.sub, role=p.primary_role, action="audit.read", target_type="subject",
                      target_id=applicant_id[:64], subject_id=applicant_id, reason=reason,
                      details={"endpoint": "subject", "cases": len(cases), "returned": len(page.items),
                               "cursor": cursor})
        return SubjectReport(
            subject_id=applicant_id,
            cases=[SubjectCase(case_id=v.id, aktenzeichen=v.aktenzeichen, service_name=v.service_name,
                               department=v.department, status=v.status, created_at=v.created_at,
                               closed_at=v.closed_at, documents=docs[v.id]) for v in cases],
            events=page)

    return await ctx.db(run)

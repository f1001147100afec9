"""The file plan (Aktenplan) and the Akte as a whole: metadata, its Vorgänge and documents,
and its confidentiality marking (Vertraulichkeit)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from aktenlauf.errors import Forbidden, InvalidInput, NotFound
from api.auth import CurrentPrincipal
from api.context import Ctx
from eakte import records, search
from eakte.access import NAMED_ROLE, ROLES, Principal, can_read_vorgang
from eakte.models import Akte, Dokument, Vorgang

router = APIRouter(tags=["akten"])


class PlanEntryOut(BaseModel):
    number: str
    title: str
    group: str
    group_title: str
    retention_years: int
    appraisal: str
    legal_basis: str
    retired: bool


class VorgangSummary(BaseModel):
    case_id: str
    service_name: str | None
    status: str
    created_at: dt.datetime
    closed_at: dt.datetime | None


class DocumentSummary(BaseModel):
    id: str
    case_id: str | None
    kind: str
    title: str
    versions: int
    created_at: dt.datetime
    url: str


class AkteOut(BaseModel):
    id: str
    aktenzeichen: str
    title: str
    file_plan: str
    file_plan_title: str | None
    department: str | None
    status: str
    created_at: dt.datetime
    closed_at: dt.datetime | None
    retention_years: int
    retention_until: dt.date | None
    legal_hold: bool
    disposal_status: str | None
    confidential: bool
    confidential_roles: list[str]
    vorgaenge: list[VorgangSummary]
    documents: list[DocumentSummary]


class ConfidentialityIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    confidential: bool
    roles: list[Annotated[str, StringConstraints(pattern=NAMED_ROLE.pattern)]] = Field(default_factory=list,
                                                                                      max_length=20)
    reason: Annotated[str, StringConstraints(min_length=5, max_length=500, strip_whitespace=True)]


@router.get("/v1/aktenplan", response_model=list[PlanEntryOut])
async def aktenplan(ctx: Ctx, _: CurrentPrincipal) -> list[PlanEntryOut]:
    """The file plan every Akte is filed under (numbers, retention, archival appraisal A/B/V)."""
    plan = ctx.catalog.aktenplan
    if plan is None:
        return []
    return [PlanEntryOut(**e.__dict__) for e in sorted(plan.entries.values(), key=lambda e: e.number)]


def _visible_akte(s: Session, p: Principal, akte_id: str) -> tuple[Akte, list[Vorgang]]:
    """The Akte if the caller may see one of its Vorgänge; 404 otherwise."""
    akte = s.get(Akte, akte_id) or s.scalar(select(Akte).where(Akte.aktenzeichen == akte_id))
    if akte is None:
        raise NotFound("Akte not found")
    vorgaenge = list(s.scalars(select(Vorgang).where(Vorgang.akte_id == akte.id)
                               .options(selectinload(Vorgang.akte)).order_by(Vorgang.created_at)))
    if not any(can_read_vorgang(p, v) for v in vorgaenge):
        raise NotFound("Akte not found")
    return akte, vorgaenge


def _akte_out(ctx: Ctx, s: Session, p: Principal, akte: Akte, vorgaenge: list[Vorgang]) -> AkteOut:
    internal = p.has("clerk") or p.has("admin") or p.has("archivist")
    docs = []
    q = select(Dokument).where(Dokument.akte_id == akte.id).options(selectinload(Dokument.versions))
    for d in s.scalars(q.order_by(Dokument.created_at)):
        if not internal and not d.public and d.created_by != p.sub:
            continue
        docs.append(DocumentSummary(id=d.id, case_id=d.vorgang_id, kind=d.kind, title=d.title,
                                    versions=len(d.versions), created_at=d.created_at, url=f"/v1/documents/{d.id}"))
    entry = ctx.catalog.aktenplan.entry(akte.file_plan) if ctx.catalog.aktenplan else None
    return AkteOut(
        id=akte.id, aktenzeichen=akte.aktenzeichen, title=akte.title, file_plan=akte.file_plan,
        file_plan_title=entry.title if entry else None, department=akte.department, status=akte.status,
        created_at=akte.created_at, closed_at=akte.closed_at, retention_years=akte.retention_years,
        retention_until=akte.retention_until, legal_hold=akte.legal_hold, disposal_status=akte.disposal_status,
        confidential=akte.confidential, confidential_roles=list(akte.confidential_roles or []),
        vorgaenge=[VorgangSummary(case_id=v.id, service_name=v.service_name, status=v.status,
                                  created_at=v.created_at, closed_at=v.closed_at) for v in vorgaenge],
        documents=docs)


@router.get("/v1/akten/{akte_id}", response_model=AkteOut)
async def get_akte(akte_id: Annotated[str, Path(max_length=64)], ctx: Ctx, p: CurrentPrincipal) -> AkteOut:
    """One Akte (by id or Aktenzeichen) with its Vorgänge and document list (metadata only)."""

    def load(s: Session) -> AkteOut:
        akte, vorgaenge = _visible_akte(s, p, akte_id)
        return _akte_out(ctx, s, p, akte, vorgaenge)

    return await ctx.db(load)


@router.put("/v1/akten/{akte_id}/confidentiality", response_model=AkteOut)
async def set_confidentiality(akte_id: Annotated[str, Path(max_length=64)], body: ConfidentialityIn, ctx: Ctx, p: CurrentPrincipal) -> AkteOut:
    """Mark an Akte confidential so that only holders of the named roles (within its department)
    see it, or lift the marking. Admins may always; a clerk of the department only when they
    hold one of the named roles themselves (nobody locks themselves out by accident)."""
    roles = sorted(set(body.roles))
    if body.confidential and not roles:
        raise InvalidInput("a confidential Akte needs at least one named role that may see it")
    if any(r in ROLES for r in roles):
        raise InvalidInput(f"system roles ({', '.join(ROLES)}) cannot be confidentiality roles; name a function")

    def change(s: Session) -> AkteOut:
        akte, vorgaenge = _visible_akte(s, p, akte_id)
        if not p.has("admin"):
            in_department = p.has("clerk") and akte.department is not None and akte.department in p.departments
            keeps_access = not body.confidential or any(p.has(r) for r in roles)
            if not (in_department and keeps_access):
                raise Forbidden("only admins, or clerks of the department holding one of the named roles, "
                                "may change the confidentiality of this Akte")
        before = {"confidential": akte.confidential, "roles": list(akte.confidential_roles or [])}
        akte.confidential = body.confidential
        akte.confidential_roles = roles if body.confidential else []
        search.refresh_akte(s, akte)  # search results follow the marking at once
        records.audit(s, actor=p.sub, role=p.primary_role, action="akte.confidentiality", target_type="akte",
                      target_id=akte.id, case_id=vorgaenge[0].id if vorgaenge else None, reason=body.reason,
                      details={"before": before, "after": {"confidential": akte.confidential, "roles": roles}})
        s.flush()
        return _akte_out(ctx, s, p, akte, vorgaenge)

    return await ctx.db(change)


@router.get("/v1/akten", response_model=list[AkteOut])
async def find_akten(
    ctx: Ctx, p: CurrentPrincipal,
    aktenzeichen: Annotated[str, Query(min_length=3, max_length=40, pattern=r"^[0-9.\-]+$")],
) -> list[AkteOut]:
    """Look an Akte up by its Aktenzeichen (exact); empty when none is visible to the caller."""

    def load(s: Session) -> list[AkteOut]:
        try:
            akte, vorgaenge = _visible_akte(s, p, aktenzeichen)
        except NotFound:
            return []
        return [_akte_out(ctx, s, p, akte, vorgaenge)]

    return await ctx.db(load)

"""The digital mailroom (Poststelle): the list of letters and triage.

Letters come in through api/routers/mailroom_intake.py (scans, e-mails), the watched folder
and the IMAP poller. Here mailroom clerks see what OCR, reference detection and the
classifier made of them and act on the ones waiting in triage: file into a case, route to a
department, start a case, split, merge, close without action. Every action goes through the
letter's workflow (an Update with a validator) and is audited there. Clerks of a department
see the letters routed to it and may file them, start a case or close them.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from sqlalchemy import select
from sqlalchemy.orm import Session

from aktenlauf.errors import Forbidden, InvalidInput, NotFound
from api.auth import CurrentPrincipal, Principal, require_role
from api.context import ApiContext, Ctx
from api.schemas import NO_NUL, AssignIn, MailDocumentOut, MailItemOut, SuggestionOut
from api.temporal_errors import TEMPORAL_ERRORS, bounded, translate
from eakte.models import Dokument, MailItem
from intake.separator import render_separator_sheet
from workflows import contracts as c
from workflows.mailroom import MailItemWorkflow

router = APIRouter(prefix="/v1/mailroom", tags=["mailroom"], dependencies=[require_role("mailroom", "admin", "clerk")])

STATUSES = ("received", "processing", "triage", "routed", "filed", "split", "merged", "closed", "failed", "duplicate")
Text = Annotated[str, StringConstraints(strip_whitespace=True, max_length=2000, pattern=NO_NUL)]
Reason = Annotated[str, StringConstraints(strip_whitespace=True, min_length=3, max_length=2000, pattern=NO_NUL)]
ItemId = Annotated[str, StringConstraints(pattern=r"^mail-[A-Za-z0-9_\-]{1,120}$")]


class RouteIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    department: Annotated[str, StringConstraints(pattern=r"^[a-z0-9_]{1,64}$")]
    reason: Text = ""


class NewCaseIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    service_key: Annotated[str, StringConstraints(pattern=r"^\d{14}$")]


class SplitIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    #: page ranges [first, last] (1-based, inclusive), one per letter; pages left out are dropped
    parts: Annotated[list[Annotated[list[Annotated[int, Field(ge=1, le=100_000)]], Field(min_length=2, max_length=2)]],
                     Field(min_length=2, max_length=100)]
    reason: Text = ""


class MergeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    #: letters waiting in triage whose pages are appended to this one, in this order
    item_ids: Annotated[list[ItemId], Field(min_length=1, max_length=50)]
    reason: Text = ""


class CloseIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: Reason


def item_out(m: MailItem, documents: list[Dokument] | None = None) -> MailItemOut:
    return MailItemOut(
        id=m.id, received_at=m.received_at, channel=m.channel, filename=m.filename, content_type=m.content_type,
        sha256=m.sha256, size=m.size, status=m.status, reason_code=m.reason_code, reason=m.reason, pages=m.pages,
        blank_pages=list((m.blank_pages or {}).get("pages", [])), detected_reference=m.detected_reference,
        case_id=m.case_id, text_preview=m.text_preview, document_id=m.dokument_id,
        duplicate_of=m.duplicate_of, parent_id=m.parent_id, department=m.department, match_method=m.match_method,
        origin={str(k): str(v) for k, v in (m.origin or {}).items()},
        suggestions=[SuggestionOut(**_suggestion(x)) for x in (m.suggestions or [])],
        documents=None if documents is None else [
            MailDocumentOut(id=d.id, title=d.title, filename=d.filename, content_type=d.content_type,
                            download_url=f"/v1/documents/{d.id}/content") for d in documents],
    )


def _suggestion(x: dict[str, Any]) -> dict[str, Any]:
    return {"service_key": str(x.get("service_key", "")), "department": str(x.get("department", "")),
            "score": float(x.get("score", 0.0)), "reasons": [str(r) for r in x.get("reasons", [])]}


def _mailroom(p: Principal) -> bool:
    return p.has("mailroom") or p.has("admin")


def _may_see(p: Principal, m: MailItem) -> bool:
    """The mailroom sees every letter; a clerk the letters routed to one of their departments."""
    return _mailroom(p) or (p.has("clerk") and m.department is not None and m.department in p.departments)


@router.get("/items", response_model=list[MailItemOut])
async def list_items(ctx: Ctx, p: CurrentPrincipal,
                     status: Annotated[str | None, Query(pattern="^(" + "|".join(STATUSES) + ")$")] = None,
                     department: Annotated[str | None, Query(pattern=r"^[a-z0-9_]{1,64}$")] = None,
                     channel: Annotated[str | None, Query(pattern=r"^[a-z0-9_]{1,32}$")] = None,
                     parent_id: Annotated[str | None, Query(pattern=r"^mail-[A-Za-z0-9_\-]{1,120}$")] = None,
                     limit: Annotated[int, Query(ge=1, le=500)] = 100,
                     offset: Annotated[int, Query(ge=0, le=2**63 - 1)] = 0) -> list[MailItemOut]:  # 64-bit OFFSET
    """Letters, newest first. Clerks see only letters routed to their departments."""
    def load(s: Session) -> list[MailItem]:
        q = select(MailItem)
        if not _mailroom(p):
            q = q.where(MailItem.department.in_(list(p.departments) or ["-"]))
        if status:
            q = q.where(MailItem.status == status)
        if department:
            q = q.where(MailItem.department == department)
        if channel:
            q = q.where(MailItem.channel == channel)
        if parent_id:
            q = q.where(MailItem.parent_id == parent_id)
        return list(s.scalars(q.order_by(MailItem.received_at.desc(), MailItem.id).limit(limit).offset(offset)))

    return [item_out(m) for m in await ctx.db(load)]


@router.get("/separator-sheet", response_class=Response,
            responses={200: {"content": {"application/pdf": {}}, "description": "printable separator sheet"}})
async def separator_sheet(ctx: Ctx) -> Response:
    """A separator sheet (Trennblatt) to print and put between letters of a scanned stack."""
    pdf = render_separator_sheet(ctx.settings.mailroom_separator_code)
    return Response(pdf, media_type="application/pdf",
                    headers={"Content-Disposition": 'inline; filename="trennblatt.pdf"'})


async def _item(ctx: ApiContext, p: Principal, item_id: str, *,
                documents: bool = True) -> tuple[MailItem, list[Dokument]]:
    """The letter if the caller may see it (404 otherwise), with its documents if asked for."""
    def load(s: Session) -> tuple[MailItem | None, list[Dokument]]:
        m = s.get(MailItem, item_id)
        docs = list(s.scalars(select(Dokument).where(Dokument.mail_item_id == item_id)
                              .order_by(Dokument.created_at, Dokument.id))) if m is not None and documents else []
        return m, docs

    m, docs = await ctx.db(load)
    if m is None or not _may_see(p, m):
        raise NotFound("mail item not found")
    return m, docs


@router.get("/items/{item_id}", response_model=MailItemOut)
async def get_item(item_id: str, ctx: Ctx, p: CurrentPrincipal) -> MailItemOut:
    """One letter with its suggestions and every document it brought (scan, e-mail body, attachments)."""
    m, docs = await _item(ctx, p, item_id)
    return item_out(m, docs)


def _actor(p: Principal) -> c.Actor:
    return c.Actor(sub=p.sub, roles=list(p.roles), departments=list(p.departments))


async def _update(ctx: ApiContext, p: Principal, item_id: str, update: Any, arg: Any) -> MailItemOut:
    await _item(ctx, p, item_id, documents=False)  # visibility only
    try:
        await bounded(ctx.client().get_workflow_handle(item_id).execute_update(update, arg),
                      ctx.settings.update_timeout_s)
    except TEMPORAL_ERRORS as exc:
        raise translate(exc, known_case=True) from exc
    m, docs = await _item(ctx, p, item_id)
    return item_out(m, docs)


_ACTION_ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"description": "no such letter (or not visible to you)"},
    409: {"description": "the letter is not waiting in triage"},
}


@router.post("/items/{item_id}/assign", response_model=MailItemOut, responses=_ACTION_ERRORS)
async def assign_item(item_id: str, body: AssignIn, ctx: Ctx, p: CurrentPrincipal) -> MailItemOut:
    """File the letter into the case with this Aktenzeichen (the case's workflow is told)."""
    return await _update(ctx, p, item_id, MailItemWorkflow.assign,
                         c.AssignLetter(actor=_actor(p), aktenzeichen=body.aktenzeichen))


@router.post("/items/{item_id}/route", response_model=MailItemOut, responses=_ACTION_ERRORS)
async def route_item(item_id: str, body: RouteIn, ctx: Ctx, p: CurrentPrincipal) -> MailItemOut:
    """Hand the letter to a department; its clerks then see it and decide. Teaches the classifier."""
    if not _mailroom(p):
        raise Forbidden("only the mailroom routes letters")
    if body.department not in ctx.catalog.departments:
        raise InvalidInput(f"unknown department {body.department}; see GET /v1/services")
    return await _update(ctx, p, item_id, MailItemWorkflow.route,
                         c.RouteLetter(actor=_actor(p), department=body.department, reason=body.reason))


@router.post("/items/{item_id}/new-case", response_model=MailItemOut, responses=_ACTION_ERRORS)
async def new_case_from_item(item_id: str, body: NewCaseIn, ctx: Ctx, p: CurrentPrincipal) -> MailItemOut:
    """Start a case for this service with the letter as its first document (the sender block
    becomes the applicant until a clerk corrects it). Teaches the classifier."""
    service = ctx.catalog.service(body.service_key)
    if service is None:
        raise InvalidInput(f"unknown service_key {body.service_key}; see GET /v1/services")
    if not _mailroom(p) and service.department not in p.departments:
        raise Forbidden("clerks start cases only for their own department's services")
    return await _update(ctx, p, item_id, MailItemWorkflow.new_case,
                         c.NewCaseFromLetter(actor=_actor(p), service_key=body.service_key))


@router.post("/items/{item_id}/split", response_model=MailItemOut, responses=_ACTION_ERRORS)
async def split_item(item_id: str, body: SplitIn, ctx: Ctx, p: CurrentPrincipal) -> MailItemOut:
    """Split a scanned stack into letters by page ranges; each part is processed as a letter of
    its own (GET /v1/mailroom/items?parent_id=...)."""
    return await _update(ctx, p, item_id, MailItemWorkflow.split,
                         c.SplitLetter(actor=_actor(p), parts=[list(x) for x in body.parts], reason=body.reason))


@router.post("/items/{item_id}/merge", response_model=MailItemOut, responses=_ACTION_ERRORS)
async def merge_items(item_id: str, body: MergeIn, ctx: Ctx, p: CurrentPrincipal) -> MailItemOut:
    """Append the pages of other letters in triage to this one (pages of one letter scanned as
    several); the others end as "merged"."""
    if not _mailroom(p):
        raise Forbidden("only the mailroom merges letters")
    return await _update(ctx, p, item_id, MailItemWorkflow.merge,
                         c.MergeLetters(actor=_actor(p), item_ids=list(body.item_ids), reason=body.reason))


@router.post("/items/{item_id}/close", response_model=MailItemOut, responses=_ACTION_ERRORS)
async def close_item(item_id: str, body: CloseIn, ctx: Ctx, p: CurrentPrincipal) -> MailItemOut:
    """Mark the letter as needing no action (advertising, a copy for information), with a reason."""
    return await _update(ctx, p, item_id, MailItemWorkflow.close, c.CloseLetter(actor=_actor(p), reason=body.reason))

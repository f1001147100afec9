"""The digital mailroom (Poststelle): scanned letters in, triage list out."""

from __future__ import annotations

import datetime as dt

import uuid
from typing import Annotated

from fastapi import APIRouter, File, Query, UploadFile
from sqlalchemy import select
from sqlalchemy.orm import Session
from temporalio.client import WorkflowUpdateFailedError
from temporalio.service import RPCError

from aktenlauf.errors import InvalidInput, NotFound
from api.auth import CurrentPrincipal, require_role
from api.context import ApiContext, Ctx
from api.schemas import AssignIn, MailAccepted, MailItemOut
from api.temporal_errors import TEMPORAL_ERRORS, bounded, translate
from api.uploads import discard_if_unreferenced, store_upload
from eakte.models import MailItem, utcnow
from workflows import contracts as c
from workflows.mailroom import MailItemWorkflow

router = APIRouter(prefix="/v1/mailroom", tags=["mailroom"], dependencies=[require_role("mailroom", "admin")])
MAX_BATCH = 50


def item_out(m: MailItem) -> MailItemOut:
    return MailItemOut(
        id=m.id, received_at=m.received_at, channel=m.channel, filename=m.filename, content_type=m.content_type,
        sha256=m.sha256, size=m.size, status=m.status, reason_code=m.reason_code, reason=m.reason, pages=m.pages,
        blank_pages=list((m.blank_pages or {}).get("pages", [])), detected_reference=m.detected_reference,
        case_id=m.case_id, text_preview=m.text_preview, document_id=m.dokument_id,
    )


@router.post("/scans", status_code=202, response_model=MailAccepted,
             responses={413: {"description": "file too large"}, 415: {"description": "not PDF/PNG/TIFF/JPEG"}})
async def upload_scans(ctx: Ctx, p: CurrentPrincipal,
                       files: Annotated[list[UploadFile], File(description="one or more scanned letters")]) -> MailAccepted:
    if not files:
        raise InvalidInput("no file was sent")
    if len(files) > MAX_BATCH:
        raise InvalidInput(f"at most {MAX_BATCH} files per request")
    refs = []
    received_at = dt.datetime.now(dt.UTC).isoformat()
    try:
        for f in files:  # check and store all first: a bad file refuses the whole batch
            refs.append(await store_upload(ctx, f, inspect=False))  # the OCR step inspects it (and keeps it)
    except Exception:
        for r in refs:
            await discard_if_unreferenced(ctx, r)
        raise
    items: list[MailItemOut] = []
    for ref in refs:
        item_id = "mail-" + uuid.uuid4().hex
        try:
            handle = await ctx.client().start_workflow(
                MailItemWorkflow.run,
                c.MailInput(item_id=item_id, ref=ref, channel="api", submitted_by=p.sub,
                            ocr_task_queue=ctx.settings.ocr_task_queue, received_at=received_at),
                id=item_id, task_queue=ctx.settings.task_queue)
        except RPCError as exc:
            await discard_if_unreferenced(ctx, ref)
            raise translate(exc) from exc
        items.append(item_out(MailItem(id=handle.id, received_at=utcnow(), channel="api", filename=ref.filename,
                                       content_type=ref.content_type, sha256=ref.sha256, size=ref.size,
                                       status="received", blank_pages={})))
    return MailAccepted(items=items)


@router.get("/items", response_model=list[MailItemOut])
async def list_items(ctx: Ctx, status: Annotated[str | None, Query(pattern="^(received|processing|filed|triage|failed)$")] = None,
                     limit: Annotated[int, Query(ge=1, le=500)] = 100,
                     offset: Annotated[int, Query(ge=0, le=2**63 - 1)] = 0) -> list[MailItemOut]:  # 64-bit OFFSET
    def load(s: Session) -> list[MailItem]:
        q = select(MailItem)
        if status:
            q = q.where(MailItem.status == status)
        return list(s.scalars(q.order_by(MailItem.received_at.desc()).limit(limit).offset(offset)))

    return [item_out(m) for m in await ctx.db(load)]


async def _item(ctx: ApiContext, item_id: str) -> MailItem:
    m = await ctx.db(lambda s: s.get(MailItem, item_id))
    if m is None:
        raise NotFound("mail item not found")
    return m


@router.get("/items/{item_id}", response_model=MailItemOut)
async def get_item(item_id: str, ctx: Ctx) -> MailItemOut:
    return item_out(await _item(ctx, item_id))


@router.post("/items/{item_id}/assign", response_model=MailItemOut)
async def assign_item(item_id: str, body: AssignIn, ctx: Ctx, p: CurrentPrincipal) -> MailItemOut:
    """File a letter waiting in triage into the case with this Aktenzeichen."""
    await _item(ctx, item_id)
    try:
        await bounded(ctx.client().get_workflow_handle(item_id).execute_update(
            MailItemWorkflow.assign,
            c.AssignLetter(actor=c.Actor(sub=p.sub, roles=list(p.roles), departments=list(p.departments)),
                           aktenzeichen=body.aktenzeichen)), ctx.settings.update_timeout_s)
    except TEMPORAL_ERRORS as exc:
        raise translate(exc, known_case=True) from exc
    return item_out(await _item(ctx, item_id))

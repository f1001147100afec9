"""Document download: access-checked, hash-verified, every read audited."""

from __future__ import annotations

from urllib.parse import quote

from fastapi import APIRouter
from fastapi.responses import StreamingResponse
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from aktenlauf.errors import IntegrityViolation, NotFound
from api.auth import CurrentPrincipal
from api.context import Ctx
from eakte import records
from eakte.access import can_read_case
from eakte.models import Dokument, MailItem, Version, Vorgang
from sqlalchemy import select

router = APIRouter(prefix="/v1/documents", tags=["documents"])


@router.get("/{document_id}/content", response_class=StreamingResponse,
            responses={200: {"content": {"application/pdf": {}, "application/json": {}}}})
async def download(document_id: str, ctx: Ctx, p: CurrentPrincipal) -> StreamingResponse:
    def find(s: Session) -> tuple[Dokument, Version]:
        d = s.get(Dokument, document_id)
        if d is None:
            raise NotFound("document not found")
        if d.vorgang_id is not None:
            v = s.get(Vorgang, d.vorgang_id)
            allowed = v is not None and can_read_case(p, department=v.department, integrator=v.integrator)
            if allowed and p.has("integrator") and not (p.has("clerk") or p.has("admin")):
                allowed = d.public or d.created_by == p.sub
        else:  # a letter still in the mailroom
            allowed = p.has("mailroom") or p.has("admin")
            allowed = allowed and s.scalar(select(MailItem.id).where(MailItem.dokument_id == d.id)) is not None
        if not allowed:
            raise NotFound("document not found")
        version = records.latest_version(s, d.id)
        records.audit(s, actor=p.sub, role=p.primary_role, action="document.read", target_type="document",
                      target_id=d.id, case_id=d.vorgang_id)
        return d, version

    doc, version = await ctx.db(find)
    try:
        spool = await run_in_threadpool(ctx.store.read_verified, version.object_key, version.sha256)
    except IntegrityViolation:
        await ctx.db(lambda s: records.audit(s, actor=p.sub, role=p.primary_role, action="document.integrity_failed",
                                             target_type="document", target_id=doc.id, case_id=doc.vorgang_id))
        raise

    def chunks():  # type: ignore[no-untyped-def]
        try:
            while data := spool.read(1024 * 1024):
                yield data
        finally:
            spool.close()

    headers = {
        "Content-Disposition": f"attachment; filename*=UTF-8''{quote(doc.filename)}",
        "Content-Length": str(version.size),
        "X-Content-SHA256": version.sha256,
        "ETag": f'"{version.sha256}"',
    }
    return StreamingResponse(chunks(), media_type=doc.content_type, headers=headers)

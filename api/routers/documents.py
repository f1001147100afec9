"""Documents: metadata with every version, downloads (access-checked, hash-verified, every
read audited) and new versions of a filed document (immutable: a change is a new Version)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, File, Form, Query, UploadFile
from fastapi.responses import StreamingResponse
from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload
from starlette.concurrency import run_in_threadpool

from aktenlauf.errors import Conflict, Forbidden, IntegrityViolation, NotFound, UnsupportedMediaType
from api.auth import CurrentPrincipal
from api.context import Ctx
from api.schemas import NO_NUL, DocumentCreated, DocumentDetail, VersionOut
from api.temporal_errors import TEMPORAL_ERRORS, bounded, not_applied, translate
from api.uploads import discard_if_unreferenced, store_upload
from eakte import records
from eakte.access import Principal, can_add_document_vorgang, can_read_vorgang, content_needs_reason
from eakte.blobstore import READ_CHUNK, VerifiedContent
from eakte.models import Dokument, MailItem, Version, Vorgang
from workflows import contracts as c
from workflows.case import CaseWorkflow

router = APIRouter(prefix="/v1/documents", tags=["documents"])
Reason = Annotated[str | None, Query(min_length=10, max_length=500,
                                     description="why you read this content (required for admins and archivists; "
                                                 "audited)")]


@dataclass
class _Found:
    doc: Dokument
    case: Vorgang | None
    versions: list[Version]


def _find(s: Session, p: Principal, document_id: str) -> _Found:
    """The document if the caller may see it; 404 otherwise (existence is not revealed)."""
    d = s.scalar(select(Dokument).where(Dokument.id == document_id).options(selectinload(Dokument.versions)))
    if d is None:
        raise NotFound("document not found")
    v: Vorgang | None = None
    if d.vorgang_id is not None:
        v = s.get(Vorgang, d.vorgang_id, options=[selectinload(Vorgang.akte)])
        allowed = v is not None and can_read_vorgang(p, v)
        if allowed and p.has("integrator") and not (p.has("clerk") or p.has("admin")):
            allowed = d.public or d.created_by == p.sub
    else:  # a letter still in the mailroom
        allowed = p.has("mailroom") or p.has("admin")
        allowed = allowed and s.scalar(select(MailItem.id).where(MailItem.dokument_id == d.id)) is not None
    if not allowed:
        raise NotFound("document not found")
    return _Found(d, v, sorted(d.versions, key=lambda x: x.number))


def _version_out(d: Dokument, v: Version) -> VersionOut:
    return VersionOut(number=v.number, sha256=v.sha256, size=v.size, role=v.role, created_by=v.created_by,
                      created_at=v.created_at, reason=v.reason,
                      download_url=f"/v1/documents/{d.id}/versions/{v.number}/content")


@router.get("/{document_id}", response_model=DocumentDetail)
async def document_detail(document_id: str, ctx: Ctx, p: CurrentPrincipal) -> DocumentDetail:
    """Metadata and every version. Admins see metadata without stating a reason."""
    f = await ctx.db(lambda s: _find(s, p, document_id))
    d = f.doc
    return DocumentDetail(
        id=d.id, kind=d.kind, title=d.title, filename=d.filename, content_type=d.content_type, channel=d.channel,
        sender=d.sender, received_at=d.received_at, created_by=d.created_by, created_at=d.created_at,
        case_id=d.vorgang_id, aktenzeichen=f.case.aktenzeichen if f.case else None, public=d.public,
        verification_code=d.verification_code, versions=[_version_out(d, v) for v in f.versions])


async def _download(ctx: Ctx, p: Principal, document_id: str, number: int | None, reason: str | None) -> StreamingResponse:
    loop = asyncio.get_running_loop()
    reading: list[asyncio.Future[VerifiedContent]] = []

    def start_read(key: str, sha256: str) -> None:  # on the event loop
        reading.append(asyncio.ensure_future(run_in_threadpool(ctx.store.read_verified, key, sha256)))

    def find(s: Session) -> tuple[Dokument, Version]:
        f = _find(s, p, document_id)
        if content_needs_reason(p, f.case) and not (reason or "").strip():
            raise Forbidden("admins and archivists read document content only with a stated reason "
                            "(query parameter `reason`, at least 10 characters); the read is audited")
        if not f.versions:
            raise NotFound(f"document {document_id} has no stored version")
        version = f.versions[-1] if number is None else next((v for v in f.versions if v.number == number), None)
        if version is None:
            raise NotFound(f"document {document_id} has no version {number}")
        # access is granted: the S3 read (and its hashing) overlaps writing and committing the audit row;
        # nothing is sent before both are done, and the read is dropped if the audit row fails
        loop.call_soon_threadsafe(start_read, version.object_key, version.sha256)
        records.audit(s, actor=p.sub, role=p.primary_role, action="document.read", target_type="document",
                      target_id=f.doc.id, case_id=f.doc.vorgang_id, reason=reason,
                      subject_id=f.case.applicant_id if f.case is not None else None,
                      details={"version": version.number})
        return f.doc, version

    try:
        doc, version = await ctx.db(find)
    except BaseException:
        for r in reading:  # started, but the read must not be served: release what it holds
            r.add_done_callback(_drop_read)
        raise
    try:
        content = await reading[0]
    except IntegrityViolation:
        await ctx.db(lambda s: records.audit(s, actor=p.sub, role=p.primary_role, action="document.integrity_failed",
                                             target_type="document", target_id=doc.id, case_id=doc.vorgang_id,
                                             details={"version": version.number, "sha256": version.sha256}))
        raise
    # nothing was sent before the whole object matched its hash; now it goes out as it is
    body = _from_memory(content) if content.in_memory else _from_spool(content)
    headers = {
        "Content-Disposition": f"attachment; filename*=UTF-8''{quote(doc.filename)}",
        "Content-Length": str(version.size),
        "X-Content-SHA256": version.sha256,
        "X-Document-Version": str(version.number),
        "ETag": f'"{version.sha256}"',
    }
    return StreamingResponse(body, media_type=doc.content_type, headers=headers)


def _drop_read(fut: asyncio.Future[VerifiedContent]) -> None:
    if not fut.cancelled() and fut.exception() is None:
        fut.result().close()


async def _from_memory(content: VerifiedContent) -> AsyncIterator[bytes]:
    """The verified chunks as they were read: no copy, no thread hop per chunk."""
    try:
        for chunk in content.chunks or ():
            yield chunk
    finally:
        content.close()


def _from_spool(content: VerifiedContent) -> Iterator[bytes]:
    """A verified object too large for memory, from its spool file (read in a thread)."""
    try:
        while data := content.read(READ_CHUNK):
            yield data
    finally:
        content.close()


_PDF = {200: {"content": {"application/pdf": {}, "application/octet-stream": {}}}}


@router.get("/{document_id}/content", response_class=StreamingResponse, responses=_PDF)
async def download(document_id: str, ctx: Ctx, p: CurrentPrincipal, reason: Reason = None) -> StreamingResponse:
    """The newest version's bytes."""
    return await _download(ctx, p, document_id, None, reason)


@router.get("/{document_id}/versions/{number}/content", response_class=StreamingResponse, responses=_PDF)
async def download_version(document_id: str, number: int, ctx: Ctx, p: CurrentPrincipal,
                           reason: Reason = None) -> StreamingResponse:
    """One version's bytes: earlier versions stay readable."""
    return await _download(ctx, p, document_id, number, reason)


@router.post("/{document_id}/versions", status_code=201, response_model=DocumentCreated,
             responses={409: {"description": "the case is closed"}, 413: {"description": "file too large"},
                        415: {"description": "not PDF/PNG/TIFF/JPEG"}})
async def add_version(
    document_id: str, ctx: Ctx, p: CurrentPrincipal,
    file: Annotated[UploadFile, File(description="PDF, PNG, TIFF or JPEG")],
    reason: Annotated[str, Form(min_length=3, max_length=500, pattern=NO_NUL, description="why the document changes")],
) -> DocumentCreated:
    """File a corrected or completed document as a new version; the earlier versions stay."""
    f = await ctx.db(lambda s: _find(s, p, document_id))
    if f.case is None:
        raise Conflict("a letter in the mailroom is changed through its mail item, not here")
    if not can_add_document_vorgang(p, f.case):
        raise Forbidden("you may not change documents of this case")
    if f.case.status in c.FINAL_STATUSES:
        raise Conflict(f"the case is closed ({f.case.status}); its documents can no longer change")
    if f.doc.kind in ("Bescheid", "Urkunde"):
        raise Conflict("issued notices and certificates are never changed; issue a new one instead")
    ref = await store_upload(ctx, file)
    if ref.content_type != f.doc.content_type:
        await discard_if_unreferenced(ctx, ref)
        raise UnsupportedMediaType(f"a new version must be of the same type as the document ({f.doc.content_type})")
    actor = c.Actor(sub=p.sub, roles=list(p.roles), departments=list(p.departments))
    try:
        doc_id: str = await bounded(ctx.client().get_workflow_handle(f.case.id).execute_update(
            CaseWorkflow.add_document,
            c.AddDocument(actor=actor, ref=ref, kind=f.doc.kind, title=f.doc.title, upload_id=uuid.uuid4().hex,
                          supersedes=f.doc.id, reason=reason)), ctx.settings.update_timeout_s)
    except TEMPORAL_ERRORS as exc:
        if not_applied(exc):  # otherwise the document may still be filed: the sweep's grace period decides
            await discard_if_unreferenced(ctx, ref)
        raise translate(exc, known_case=True) from exc
    return DocumentCreated(document_id=doc_id, sha256=ref.sha256, size=ref.size)

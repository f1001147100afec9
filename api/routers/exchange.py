"""Export and import of Akten as xdomea-style packages (admin).

An export contains document content, so it needs a stated reason, which is audited
(``akte.exported``) together with who exported what. An import validates the whole package
before anything is written and is audited as ``akte.imported``. See eakte/xdomea.py.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from typing import Annotated, Any, BinaryIO

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from aktenlauf.errors import IntegrityViolation, InvalidInput, UnsupportedMediaType
from api.auth import require_role
from api.context import Ctx
from eakte import records
from eakte.access import Principal
from eakte.xdomea import ExportSummary, PackageTooLarge, export_akte, import_package

router = APIRouter(prefix="/v1/admin/akten", tags=["exchange"])
Admin = Annotated[Principal, require_role("admin")]
SPOOL_IN_MEMORY = 8 * 1024 * 1024
ZIP_TYPES = ("application/zip", "application/x-zip-compressed", "application/octet-stream")


class ImportOut(BaseModel):
    akte_id: str
    aktenzeichen: str
    prozess_id: str
    source: str
    vorgaenge: int
    documents: int
    versions: int
    bytes_total: int
    objects_stored: int
    package_sha256: str


@router.get("/{akte_id}/export", response_class=StreamingResponse,
            responses={200: {"content": {"application/zip": {}}, "description": "the xdomea-style package"}})
async def export(
    akte_id: str, ctx: Ctx, p: Admin,
    reason: Annotated[str, Query(min_length=3, max_length=500,
                                 description="why the content is exported (audited; required)")],
    message_type: Annotated[str, Query(pattern="^(0401|0503)$",
                                       description="0401 Abgabe.Abgabe (default) or 0503 Aussonderung")] = "0401",
    recipient: Annotated[str | None, Query(min_length=1, max_length=150,
                                           description="the receiving authority or archive (Kopf/Empfaenger)")] = None,
) -> StreamingResponse:
    """The Akte with its Vorgänge, Dokumente, versions, metadata, hashes and files as one ZIP."""
    reason = reason.strip()
    if len(reason) < 3:
        raise InvalidInput("an export needs a reason (at least 3 characters)")
    aktenplan = ctx.catalog.aktenplan
    limit = ctx.settings.max_upload_bytes  # what another instance with these settings accepts on import

    def work() -> tuple[ExportSummary, BinaryIO]:
        spool: BinaryIO = tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY)  # type: ignore[assignment]
        try:
            with ctx.sessions() as s, s.begin():
                summary = export_akte(s, ctx.store, akte_id, spool, exported_by=p.sub, role=p.primary_role,
                                      reason=reason, sender=ctx.catalog.authority_name, recipient=recipient,
                                      message_type=message_type,
                                      max_bytes=limit, aktenplan=aktenplan)
        except BaseException:
            spool.close()
            raise
        spool.seek(0)
        return summary, spool

    try:
        summary, spool = await run_in_threadpool(work)
    except IntegrityViolation:
        await ctx.db(lambda s: records.audit(s, actor=p.sub, role=p.primary_role, action="akte.export_failed",
                                             target_type="akte", target_id=akte_id, reason=reason,
                                             details={"cause": "integrity-violation"}))
        raise

    def chunks() -> Iterator[bytes]:
        try:
            while data := spool.read(1024 * 1024):
                yield data
        finally:
            spool.close()

    headers = {"Content-Disposition": f'attachment; filename="{summary.filename}"',
               "X-Aktenzeichen": summary.aktenzeichen, "X-Xdomea-ProzessID": summary.prozess_id}
    if summary.package_size is not None:
        headers["Content-Length"] = str(summary.package_size)
    if summary.package_sha256:
        headers["X-Content-SHA256"] = summary.package_sha256
        headers["ETag"] = f'"{summary.package_sha256}"'
    return StreamingResponse(chunks(), media_type="application/zip", headers=headers)


@router.post("/import", status_code=201, response_model=ImportOut,
             responses={415: {"description": "neither application/zip nor multipart/form-data"}},
             openapi_extra={"requestBody": {"content": {
                 "application/zip": {"schema": {"type": "string", "format": "binary"}},
                 "multipart/form-data": {"schema": {"type": "object", "properties": {
                     "file": {"type": "string", "format": "binary"}}, "required": ["file"]}}}}})
async def import_(
    request: Request, ctx: Ctx, p: Admin,
    reason: Annotated[str | None, Query(max_length=500, description="why the Akte is imported (audited)")] = None,
) -> ImportOut:
    """Re-create an Akte from a package (raw ``application/zip`` body or multipart field ``file``).

    Everything is checked before anything is written; a refused package leaves no rows and no
    objects behind.
    """
    limit = ctx.settings.max_upload_bytes
    spool = await _receive(request, limit)
    try:
        summary = await run_in_threadpool(
            import_package, ctx.sessions, ctx.store, spool, imported_by=p.sub, role=p.primary_role,
            max_bytes=limit, reason=reason, aktenplan=ctx.catalog.aktenplan)
    finally:
        spool.close()
    return ImportOut(**summary.__dict__)


async def _receive(request: Request, limit: int) -> BinaryIO:
    """Spool the request's ZIP to a temp file, refusing more than ``limit`` bytes as they arrive."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    spool: Any = tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY)
    size = 0
    try:
        if content_type == "multipart/form-data":
            form = await request.form(max_files=1, max_fields=5)
            upload = form.get("file")
            if upload is None or isinstance(upload, str):
                raise InvalidInput("the multipart body needs a file field named 'file'")
            while chunk := await upload.read(1024 * 1024):
                size += len(chunk)
                if size > limit:
                    raise PackageTooLarge(f"the package is larger than {limit} bytes")
                spool.write(chunk)
        elif content_type in ZIP_TYPES:
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise PackageTooLarge(f"the package is larger than {limit} bytes")
                spool.write(chunk)
        else:
            raise UnsupportedMediaType("send the package as application/zip or as multipart/form-data field 'file'")
        if size == 0:
            raise InvalidInput("the request holds no package")
    except BaseException:
        spool.close()
        raise
    spool.seek(0)
    return spool  # type: ignore[no-any-return]

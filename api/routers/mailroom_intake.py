"""Mailroom intake over HTTP: scanned letters (one or a batch) and e-mails (.eml).

Both go through :func:`intake.channels.submit_letter`, like the watched folder and the IMAP
poller. The answer lists every item: a new one with status ``received`` (202), a re-delivered
file with status ``duplicate`` and ``duplicate_of`` naming the item that is processed (200 when
every file of the request was a duplicate: nothing new was started).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Response, UploadFile

from aktenlauf.errors import InvalidInput, PayloadTooLarge, UnsupportedMediaType
from api.auth import CurrentPrincipal, require_role
from api.context import Ctx
from api.schemas import MailAccepted, MailItemOut
from intake import channels
from intake.channels import Accept, Submitted
from intake.email_intake import looks_like_email
from intake.sniff import detect_kind

router = APIRouter(prefix="/v1/mailroom", tags=["mailroom"], dependencies=[require_role("mailroom", "admin")])
MAX_BATCH = 50
_RESPONSES: dict[int | str, dict[str, str]] = {
    200: {"description": "every file was a duplicate of an item already received (see duplicate_of)"},
    413: {"description": "file too large"},
}


def submitted_out(sub: Submitted) -> MailItemOut:
    return MailItemOut(
        id=sub.item_id, received_at=sub.received_at, channel=sub.channel, filename=sub.filename,
        content_type=sub.content_type, sha256=sub.sha256, size=sub.size, status=sub.status,
        reason_code="duplicate" if sub.duplicate else None, reason=None, pages=None, blank_pages=[],
        detected_reference=None, case_id=None, text_preview=None, document_id=None, duplicate_of=sub.duplicate_of,
        origin=dict(sub.origin),
    )


@router.post("/scans", status_code=202, response_model=MailAccepted,
             responses={**_RESPONSES, 415: {"description": "not PDF/PNG/TIFF/JPEG"}})
async def upload_scans(ctx: Ctx, p: CurrentPrincipal, response: Response,
                       files: Annotated[list[UploadFile], File(description="one or more scanned letters")]) -> MailAccepted:
    """Scanned letters: each becomes a mail item (OCR, reference match, filed or triage)."""
    return await _submit(ctx, p.sub, response, files, channel=channels.API, accept="scan")


@router.post("/emails", status_code=202, response_model=MailAccepted,
             responses={**_RESPONSES, 415: {"description": "not an e-mail (message/rfc822)"},
                        422: {"description": "an e-mail beyond the limits (attachments, nesting, header size)"}})
async def upload_emails(ctx: Ctx, p: CurrentPrincipal, response: Response,
                        files: Annotated[list[UploadFile], File(description="one or more e-mails (.eml)")]) -> MailAccepted:
    """E-mails saved as .eml: the body and every attachment become documents of the item."""
    return await _submit(ctx, p.sub, response, files, channel=channels.EMAIL, accept="email")


async def _submit(ctx: Ctx, sub: str, response: Response, files: list[UploadFile], *, channel: str,
                  accept: Accept) -> MailAccepted:
    if not files:
        raise InvalidInput("no file was sent")
    if len(files) > MAX_BATCH:
        raise InvalidInput(f"at most {MAX_BATCH} files per request")
    for f in files:  # cheap checks of every file first: a bad file refuses the whole batch, nothing stored
        await _precheck(ctx, f, accept)
    items = []
    for f in files:
        await f.seek(0)
        items.append(await channels.submit_letter(ctx, f.file, filename=f.filename, channel=channel,
                                                  submitted_by=sub, accept=accept))
    if all(i.duplicate for i in items):
        response.status_code = 200
    return MailAccepted(items=[submitted_out(i) for i in items])


async def _precheck(ctx: Ctx, f: UploadFile, accept: Accept) -> None:
    limit = ctx.settings.max_upload_bytes
    if f.size is not None and f.size > limit:
        raise PayloadTooLarge(f"the file is larger than {limit // (1024 * 1024)} MiB")
    head = await f.read(65536)
    if not head:
        raise InvalidInput("the file is empty")
    if accept == "scan" and detect_kind(head[:16]) is None:
        raise UnsupportedMediaType("only PDF, PNG, TIFF and JPEG files are accepted")
    if accept == "email" and not looks_like_email(head):
        raise UnsupportedMediaType("only e-mails (message/rfc822, .eml) are accepted")

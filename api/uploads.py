"""Receiving uploaded files: size limit while streaming, type from magic bytes, the intake
inspection (damaged, encrypted, decompression bombs, absurd image sizes), safe names, and removal
of the stored object again when the workflow refuses the document."""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

from fastapi import UploadFile
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from aktenlauf.errors import AktenlaufError, InvalidInput, PayloadTooLarge, UnacceptableFile, UnsupportedMediaType
from api.context import ApiContext
from eakte.blobstore import BlobRef, TooLarge
from eakte.verify import is_referenced
from intake.sniff import IntakeLimits, IntakeRejected, detect_kind, inspect_file, neutral_basename
from workflows.contracts import DocumentRef

CONTENT_TYPES = {"pdf": "application/pdf", "png": "image/png", "tiff": "image/tiff", "jpeg": "image/jpeg"}

#: intake.sniff's refusal codes -> problem codes (422) for a case document; the reason text is
#: the one the mailroom shows its clerks
REFUSAL_CODES = {
    "unreadable_pdf": "pdf-unreadable",
    "encrypted": "pdf-encrypted",
    "unsupported_pdf": "pdf-unsupported",
    "decompression_bomb": "decompression-bomb",
    "image_too_large": "image-too-large",
    "unreadable_image": "image-unreadable",
    "empty": "file-empty",
    "too_many_pages": "too-many-pages",
}
#: A case document is stored and viewed, not OCRed: the OCR job's page count and total raster
#: limits do not apply; every other rule of the inspection does (one page or image at most
#: max_page_pixels, the decompression caps, readable and not password-protected).
STORED_MAX_PAGES = 10_000
STORED_MAX_TOTAL_PIXELS = 10**15


class BodyTooLarge(PayloadTooLarge, StarletteHTTPException):
    """Raised from ``receive`` once a request body grows past the limit.

    A ``PayloadTooLarge`` first, so the app's domain handler answers 413 problem+json
    (``payload-too-large``); also a Starlette ``HTTPException``, so FastAPI's body/form parsing
    re-raises it instead of turning it into "400 error parsing the body"."""

    def __init__(self, limit: int) -> None:
        detail = f"requests are limited to {limit} bytes"
        Exception.__init__(self, detail)  # not the cooperative chain: HTTPException wants a status
        self.detail, self.extra = detail, {}
        self.status_code, self.headers = 413, None


class BodyLimit:
    """Count request body bytes as they arrive and stop at ``limit``.

    The Content-Length check in ``api.app`` only sees declared sizes; a chunked body (no
    Content-Length) would otherwise be read to its end: spooled to disk by the multipart
    parser before ``store_upload`` sees ``upload.size``, or held in memory by
    ``request.body()`` (JSON, codec, webhook). Here the read fails as soon as the limit is
    passed, so the 413 goes out without the rest being read (uvicorn then drops the connection)."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise BodyTooLarge(self.limit)
            return message

        await self.app(scope, limited, send)


def safe_filename(name: str | None, kind: str) -> str:
    """Strip paths, control characters and odd Unicode from a client-supplied filename."""
    base = neutral_basename(name)
    ext = {"pdf": ".pdf", "png": ".png", "tiff": ".tiff", "jpeg": ".jpg"}[kind]
    if not base:
        base = "dokument" + ext
    if not base.lower().endswith((ext, ".tif", ".jpeg")):
        base += ext
    return base


async def store_upload(ctx: ApiContext, upload: UploadFile, *, inspect: bool = True) -> DocumentRef:
    """Check and store one uploaded file; raises a 4xx domain error for bad input.

    With ``inspect`` (case documents and their versions) the spooled, size-checked file first
    goes through :func:`intake.sniff.inspect_file`, the same check the mailroom runs before OCR,
    in a thread: a PDF that cannot be opened, needs a password, is a decompression bomb or
    declares an absurd image size is refused with 422 before anything reaches S3. The mailroom
    passes ``inspect=False``: it keeps every letter and reports such a file as ``failed``."""
    limit = ctx.settings.max_upload_bytes
    too_large = f"the file is larger than {limit // (1024 * 1024)} MiB"
    if upload.size is not None and upload.size > limit:
        raise PayloadTooLarge(too_large)
    head = await upload.read(16)
    if not head:
        raise InvalidInput("the file is empty")
    kind = detect_kind(head)
    if kind is None:
        raise UnsupportedMediaType("only PDF, PNG, TIFF and JPEG files are accepted")
    await upload.seek(0)
    if inspect:
        ref = await run_in_threadpool(_inspect_and_put, ctx, upload.file, kind, limit, too_large)
    else:
        try:
            ref = await run_in_threadpool(ctx.store.put_stream, upload.file, CONTENT_TYPES[kind], max_bytes=limit)
        except ValueError as exc:
            raise PayloadTooLarge(too_large) from exc
    return DocumentRef(bucket=ref.bucket, key=ref.key, sha256=ref.sha256, size=ref.size,
                       filename=safe_filename(upload.filename, kind), content_type=CONTENT_TYPES[kind])


def _inspect_and_put(ctx: ApiContext, source: BinaryIO, kind: str, limit: int, too_large: str) -> BlobRef:
    """Spool to a private file (counting and hashing once), inspect it, and only then store it."""
    try:
        with ctx.store.spool(source, max_bytes=limit, suffix=f".{kind}") as spooled:
            check_file(spooled.path, limit)
            return ctx.store.put_spooled(spooled, CONTENT_TYPES[kind])
    except TooLarge as exc:  # more than max_bytes arrived
        raise PayloadTooLarge(too_large) from exc


def check_file(path: Path, max_bytes: int) -> None:
    """Refuse a file a clerk could not open, as problem+json; the rules are intake.sniff's."""
    limits = IntakeLimits(max_bytes=max_bytes, max_pages=STORED_MAX_PAGES,
                          max_total_pixels=STORED_MAX_TOTAL_PIXELS)
    try:
        inspect_file(path, limits, probe_text=False)
    except IntakeRejected as rejected:
        raise _as_problem(rejected) from rejected


def _as_problem(rejected: IntakeRejected) -> AktenlaufError:
    if rejected.code == "file_too_large":
        return PayloadTooLarge(rejected.reason)
    if rejected.code == "not_a_supported_file":
        return UnsupportedMediaType(rejected.reason)
    if rejected.code in REFUSAL_CODES:
        return UnacceptableFile(REFUSAL_CODES[rejected.code], rejected.reason)
    return AktenlaufError(f"the upload could not be checked ({rejected.code})")  # our storage: 500


async def discard_if_unreferenced(ctx: ApiContext, ref: DocumentRef) -> None:
    """Remove a stored object nobody records (the upload was refused): nothing half-stored."""

    def referenced(s: Session) -> bool:  # the same rule the orphan sweep uses
        return is_referenced(s, ref.bucket, ref.key)

    if not await ctx.db(referenced):
        await run_in_threadpool(ctx.store.remove, ref.key)

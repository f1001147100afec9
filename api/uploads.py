"""Receiving uploaded files: size limit while streaming, type from magic bytes, safe names,
and removal of the stored object again when the workflow refuses the document."""

from __future__ import annotations

import re
import unicodedata

from fastapi import UploadFile
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from aktenlauf.errors import InvalidInput, PayloadTooLarge, UnsupportedMediaType
from api.context import ApiContext
from eakte.blobstore import BlobRef
from eakte.verify import is_referenced
from intake.sniff import detect_kind
from workflows.contracts import DocumentRef

CONTENT_TYPES = {"pdf": "application/pdf", "png": "image/png", "tiff": "image/tiff", "jpeg": "image/jpeg"}


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
    base = (name or "").replace("\\", "/").rsplit("/", 1)[-1]
    base = unicodedata.normalize("NFC", base)
    base = "".join(ch for ch in base if unicodedata.category(ch)[0] != "C")
    base = re.sub(r"[^\w.\- ()äöüÄÖÜß]", "_", base).strip(" .")[:120]
    ext = {"pdf": ".pdf", "png": ".png", "tiff": ".tiff", "jpeg": ".jpg"}[kind]
    if not base:
        base = "dokument" + ext
    if not base.lower().endswith((ext, ".tif", ".jpeg")):
        base += ext
    return base


async def store_upload(ctx: ApiContext, upload: UploadFile) -> DocumentRef:
    """Check and store one uploaded file; raises a 4xx domain error for bad input."""
    limit = ctx.settings.max_upload_bytes
    if upload.size is not None and upload.size > limit:
        raise PayloadTooLarge(f"the file is larger than {limit // (1024 * 1024)} MiB")
    head = await upload.read(16)
    if not head:
        raise InvalidInput("the file is empty")
    kind = detect_kind(head)
    if kind is None:
        raise UnsupportedMediaType("only PDF, PNG, TIFF and JPEG files are accepted")
    await upload.seek(0)
    try:
        ref: BlobRef = await run_in_threadpool(ctx.store.put_stream, upload.file, CONTENT_TYPES[kind],
                                               max_bytes=limit)
    except ValueError as exc:
        raise PayloadTooLarge(f"the file is larger than {limit // (1024 * 1024)} MiB") from exc
    return DocumentRef(bucket=ref.bucket, key=ref.key, sha256=ref.sha256, size=ref.size,
                       filename=safe_filename(upload.filename, kind), content_type=CONTENT_TYPES[kind])


async def discard_if_unreferenced(ctx: ApiContext, ref: DocumentRef) -> None:
    """Remove a stored object nobody records (the upload was refused): nothing half-stored."""

    def referenced(s: Session) -> bool:  # the same rule the orphan sweep uses
        return is_referenced(s, ref.bucket, ref.key)

    if not await ctx.db(referenced):
        await run_in_threadpool(ctx.store.remove, ref.key)

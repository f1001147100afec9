"""Barcodes and QR codes on a letter's pages (OCR task queue: rendering pages is CPU work).

Finds the QR code printed on our own documents (it leads to the case) and separator sheets
(Trennblätter) that split a scanned stack into letters. Reads only; idempotent.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from pathlib import Path

import structlog
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from temporalio import activity

from activities.mailroom import bind_item
from eakte.blobstore import BlobStore
from eakte.db import transaction
from eakte.models import Dokument, MailItem, Version
from intake.barcodes import decode_pdf_barcodes
from intake.ocr import PAGE_SEPARATOR
from intake.separator import SeparatorConfig, separator_pages, split_ranges
from workflows import contracts as c

log = structlog.get_logger(__name__)
HEARTBEAT_S = 10.0


class CodeActivities:
    def __init__(self, sessions: sessionmaker[Session], store: BlobStore, separator: SeparatorConfig | None = None,
                 dpi: int = 150, work_root: Path | None = None) -> None:
        self.sessions = sessions
        self.store = store
        self.separator = separator or SeparatorConfig()
        self.dpi = dpi
        self.work_root = work_root

    @activity.defn(name=c.ACT_SCAN_CODES)
    async def scan_mail_codes(self, item_id: str) -> c.ScannedCodes:
        bind_item(item_id)
        src = await asyncio.to_thread(self._source, item_id)
        if src is None:  # not a PDF we can render (kept as-is): nothing to read
            return c.ScannedCodes()
        key, sha, texts = src
        work = Path(tempfile.mkdtemp(prefix=f"codes-{item_id[:16]}-", dir=self.work_root))
        try:
            pdf = work / "letter.pdf"
            await asyncio.to_thread(self.store.download_to, key, sha, pdf)
            task = asyncio.create_task(asyncio.to_thread(decode_pdf_barcodes, pdf, dpi=self.dpi))
            while not task.done():
                activity.heartbeat("reading barcodes")
                await asyncio.wait([task], timeout=HEARTBEAT_S)
            barcodes: dict[int, list[str]] = task.result()
        finally:
            shutil.rmtree(work, ignore_errors=True)
        separators = separator_pages(texts, barcodes, self.separator)
        parts = [list(r) for r in split_ranges(len(texts), separators)] if separators else []
        log.info("mail.codes", pages_with_codes=len(barcodes), separators=separators, parts=len(parts))
        return c.ScannedCodes(barcodes={str(k): v for k, v in barcodes.items() if v}, separators=separators,
                              parts=parts)

    def _source(self, item_id: str) -> tuple[str, str, list[str]] | None:
        with transaction(self.sessions) as s:
            item = s.get(MailItem, item_id)
            if item is None or item.dokument_id is None:
                raise RuntimeError(f"mail item {item_id} is not registered")
            doc = s.get(Dokument, item.dokument_id)
            versions = list(s.scalars(select(Version).where(Version.dokument_id == item.dokument_id)
                                      .order_by(Version.number.desc())))
            v = next((x for x in versions if x.role == "processed"), None)
            if v is None and item.content_type == "application/pdf":
                v = next((x for x in versions if x.role == "original"), None)
            if v is None or doc is None:
                return None
            texts = (doc.text or "").split(PAGE_SEPARATOR) if item.pages else []
            if item.pages and len(texts) != item.pages:
                texts = (texts + [""] * item.pages)[:item.pages]
            return v.object_key, v.sha256, texts

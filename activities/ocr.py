"""OCR activities: run on the OCR task queue (own worker), one ocrmypdf job per child process,
heartbeating; the result (text, processed PDF/A version, blank pages) is recorded on the mail item."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import structlog
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from temporalio import activity

from activities.mailroom import PREVIEW_CHARS, bind_item
from eakte import records, search
from eakte.blobstore import BlobRef, BlobStore
from eakte.db import transaction
from eakte.models import Dokument, MailItem, Version
from intake.ocr import OcrOutcome, run_ocr
from intake.sniff import IntakeLimits
from workflows import contracts as c

log = structlog.get_logger(__name__)


class OcrActivities:
    """Runs on the OCR task queue: one ocrmypdf job per child process, heartbeating."""

    def __init__(self, sessions: sessionmaker[Session], store: BlobStore, limits: IntakeLimits,
                 work_root: Path | None = None) -> None:
        self.sessions = sessions
        self.store = store
        self.limits = limits
        self.work_root = work_root

    @activity.defn(name=c.ACT_OCR_MAIL)
    async def ocr_mail_item(self, item_id: str) -> c.OcrSummary:
        bind_item(item_id)
        done = await asyncio.to_thread(self._already_done, item_id)
        if done is not None:
            return done
        src = await asyncio.to_thread(self._original, item_id)
        work = Path(tempfile.mkdtemp(prefix=f"ocr-{item_id[:16]}-", dir=self.work_root))
        try:
            suffix = Path(src.filename).suffix.lower()[:8] or ".bin"
            input_path = work / f"input{suffix}"
            await asyncio.to_thread(self.store.download_to, src.object_key, src.sha256, input_path)
            outcome = await run_ocr(input_path, work / "job", self.limits, heartbeat=lambda msg: activity.heartbeat(msg))
            processed: BlobRef | None = None
            if outcome.status == "processed" and outcome.output_path is not None and outcome.output_path.exists():
                processed = await asyncio.to_thread(self.store.put_file, outcome.output_path, "application/pdf")
            await asyncio.to_thread(self._record, item_id, outcome, processed)
            return c.OcrSummary(status=outcome.status, code=outcome.code, reason=outcome.reason,
                                pages=outcome.pages, empty=outcome.empty)
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def _already_done(self, item_id: str) -> c.OcrSummary | None:
        with transaction(self.sessions) as s:
            item = s.get(MailItem, item_id)
            if item is None:
                raise RuntimeError(f"mail item {item_id} is not registered")
            if item.pages is not None:
                return c.OcrSummary(status="processed", pages=item.pages,
                                    empty=bool(item.blank_pages.get("empty")))
            if item.status == "failed":
                return c.OcrSummary(status="failed", code=item.reason_code, reason=item.reason)
            return None

    def _original(self, item_id: str) -> _Src:
        with transaction(self.sessions) as s:
            item = s.get(MailItem, item_id)
            assert item is not None and item.dokument_id is not None
            v = s.scalar(select(Version).where(Version.dokument_id == item.dokument_id, Version.role == "original"))
            assert v is not None
            return _Src(v.object_key, v.sha256, item.filename)

    def _record(self, item_id: str, outcome: OcrOutcome, processed: BlobRef | None) -> None:
        with transaction(self.sessions) as s:
            item = s.get(MailItem, item_id)
            assert item is not None and item.dokument_id is not None
            doc = s.get(Dokument, item.dokument_id)
            assert doc is not None
            if outcome.status == "processed":
                item.pages = outcome.pages
                item.blank_pages = {"pages": list(outcome.blank_pages), "empty": bool(outcome.empty)}
                item.text_preview = (outcome.text or "")[:PREVIEW_CHARS]
                doc.text = outcome.text or ""
                search.index_document(s, doc)
                if processed is not None and not any(v.role == "processed" for v in doc.versions):
                    records.add_version(s, doc, processed, created_by="ocr", role="processed",
                                        reason="OCR (ocrmypdf, PDF/A)")


@dataclass(frozen=True)
class _Src:
    object_key: str
    sha256: str
    filename: str

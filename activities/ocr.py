"""OCR activities: run on the OCR task queue (own worker), one ocrmypdf job per child process,
heartbeating; the result (text, processed PDF/A version, blank pages) is recorded on the mail item.

An item whose original is an e-mail (message/rfc822) is opened up here instead: the body becomes
a document of its own (rendered as a PDF, its text the body), every attachment a document of the
item (PDFs and images OCRed, anything else kept as it is, without text), and the item's text is
subject + body + attachment texts, so reference matching and classification see all of it. Each
document is made in one transaction after its OCR, under an idempotency key of item and part, so a
retried activity skips what is done and never makes a second document."""

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
from intake.email_intake import (
    EML_CONTENT_TYPE,
    Attachment,
    EmailLimits,
    EmailRejected,
    ParsedEmail,
    parse_email_file,
    render_body_pdf,
)
from intake.ocr import OcrOutcome, run_ocr
from intake.sniff import IntakeLimits
from workflows import contracts as c

log = structlog.get_logger(__name__)

#: document kind of an e-mail's attachments (eakte.records.DOCUMENT_KINDS has no "Anlage" yet)
ATTACHMENT_KIND = "Nachweis"
BODY_KIND = "Scan"
#: the intake (intake.channels) enforces the configured e-mail limits before a message is
#: registered; here only their ceilings apply, so a registered message is always opened
EMAIL_CEILINGS = {"max_attachments": 500, "max_depth": 50, "max_header_bytes": 1024 * 1024}


class OcrActivities:
    """Runs on the OCR task queue: one ocrmypdf job per child process, heartbeating."""

    def __init__(self, sessions: sessionmaker[Session], store: BlobStore, limits: IntakeLimits,
                 work_root: Path | None = None, email_limits: EmailLimits | None = None) -> None:
        self.sessions = sessions
        self.store = store
        self.limits = limits
        self.work_root = work_root
        self.email_limits = email_limits or EmailLimits(max_bytes=limits.max_bytes, **EMAIL_CEILINGS)

    @activity.defn(name=c.ACT_OCR_MAIL)
    async def ocr_mail_item(self, item_id: str) -> c.OcrSummary:
        bind_item(item_id)
        done = await asyncio.to_thread(self._already_done, item_id)
        if done is not None:
            return done
        src = await asyncio.to_thread(self._original, item_id)
        if src.content_type == EML_CONTENT_TYPE:
            return await self._open_email(item_id, src)
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
            return _Src(v.object_key, v.sha256, item.filename, item.content_type,
                        item.received_at.isoformat(timespec="minutes") if item.received_at else "")

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


    # ------------------------------------------------------------------ e-mail

    async def _open_email(self, item_id: str, src: _Src) -> c.OcrSummary:
        work = Path(tempfile.mkdtemp(prefix=f"mail-{item_id[:16]}-", dir=self.work_root))
        try:
            eml = work / "message.eml"
            await asyncio.to_thread(self.store.download_to, src.object_key, src.sha256, eml)
            try:
                mail = await asyncio.to_thread(parse_email_file, eml, self.email_limits)
            except EmailRejected as rejected:  # the intake refuses these; kept for older items
                return c.OcrSummary(status="failed", code=rejected.code, reason=rejected.reason)
            activity.heartbeat("body")
            body_pdf = await asyncio.to_thread(render_body_pdf, mail, received_at=src.received_at)
            body_ref = await asyncio.to_thread(self.store.put_bytes, body_pdf, "application/pdf")
            pages = _pdf_pages(body_pdf)
            await asyncio.to_thread(self._file_part, item_id, f"{item_id}:email:body", body_ref, BODY_KIND,
                                    f"E-Mail: {mail.subject or '(ohne Betreff)'}", "nachricht.pdf", "application/pdf",
                                    mail.body, None)
            texts: list[str] = []
            notes: list[str] = []
            for att in mail.attachments:
                activity.heartbeat(f"attachment {att.index}")
                text, att_pages, note = await self._attachment(item_id, att, work)
                pages += att_pages
                if text:
                    texts.append(text)
                if note:
                    notes.append(f"{att.filename}: {note}")
            full = "\n\n".join(t for t in [f"Betreff: {mail.subject}" if mail.subject else "", mail.body, *texts]
                                if t and t.strip())
            await asyncio.to_thread(self._record_email, item_id, mail, full, pages, notes)
            empty = not full.strip()
            return c.OcrSummary(status="processed", pages=pages, empty=empty,
                                reason="The e-mail has no text and no readable attachment." if empty else None)
        finally:
            shutil.rmtree(work, ignore_errors=True)

    async def _attachment(self, item_id: str, att: Attachment, work: Path) -> tuple[str | None, int, str | None]:
        """File one attachment (after its OCR); returns its text, OCRed pages and a note on a problem."""
        key = f"{item_id}:email:attachment:{att.index}"
        done = await asyncio.to_thread(self._part_text, key)
        if done is not None:
            return done[0], done[1], None
        ref = await asyncio.to_thread(self.store.put_bytes, att.data, att.content_type)
        text, pages, note, processed = att.text, 0, None, None
        if att.kind in ("pdf", "png", "tiff", "jpeg"):
            path = work / f"attachment-{att.index}{Path(att.filename).suffix.lower()[:8]}"
            path.write_bytes(att.data)
            outcome = await run_ocr(path, work / f"job-{att.index}", self.limits,
                                    heartbeat=lambda msg: activity.heartbeat(msg))
            if outcome.status == "processed":
                text, pages = outcome.text or "", outcome.pages
                if outcome.output_path is not None and outcome.output_path.exists():
                    processed = await asyncio.to_thread(self.store.put_file, outcome.output_path, "application/pdf")
            else:
                note = outcome.reason or outcome.code or "OCR failed"
        await asyncio.to_thread(self._file_part, item_id, key, ref, ATTACHMENT_KIND,
                                f"Anlage {att.index}: {att.filename}", att.filename, att.content_type, text,
                                processed, pages)
        return text, pages, note

    def _part_text(self, key: str) -> tuple[str | None, int] | None:
        with transaction(self.sessions) as s:
            doc = s.scalar(select(Dokument).where(Dokument.idempotency_key == key))
            if doc is None:
                return None
            return doc.text, int(doc.text.count("\f") + 1 if doc.text else 0)

    def _file_part(self, item_id: str, key: str, ref: BlobRef, kind: str, title: str, filename: str,
                   content_type: str, text: str | None, processed: BlobRef | None, pages: int = 0) -> None:
        with transaction(self.sessions) as s:
            item = s.get(MailItem, item_id)
            assert item is not None
            doc = records.file_document(
                s, key=key, ref=ref, kind=kind, title=title, filename=filename, content_type=content_type,
                created_by=item.submitted_by, channel=item.channel, akte_id=None, vorgang_id=None, text=text or None,
                received_at=item.received_at)
            doc.mail_item_id = item_id
            if processed is not None and not any(v.role == "processed" for v in doc.versions):
                records.add_version(s, doc, processed, created_by="ocr", role="processed",
                                    reason="OCR (ocrmypdf, PDF/A)")
            search.index_document(s, doc)

    def _record_email(self, item_id: str, mail: ParsedEmail, text: str, pages: int, notes: list[str]) -> None:
        with transaction(self.sessions) as s:
            item = s.get(MailItem, item_id)
            assert item is not None and item.dokument_id is not None
            doc = s.get(Dokument, item.dokument_id)
            assert doc is not None
            doc.mail_item_id = item_id
            doc.text = text
            doc.title = f"E-Mail: {mail.subject or '(ohne Betreff)'}"[:300]
            search.index_document(s, doc)
            item.origin = {**(item.origin or {}), "message_id": mail.message_id, "from": mail.sender,
                           "subject": mail.subject, "date": mail.date, "attachments": len(mail.attachments),
                           "body": mail.body_source, **({"defects": mail.defects} if mail.defects else {}),
                           **({"attachment_problems": notes} if notes else {})}
            item.text_preview = text[:PREVIEW_CHARS]
            item.blank_pages = {"pages": [], "empty": not text.strip()}
            item.pages = pages  # last: marks the item done for a retried activity (_already_done)


def _pdf_pages(data: bytes) -> int:
    import io

    from pypdf import PdfReader

    return len(PdfReader(io.BytesIO(data)).pages)


@dataclass(frozen=True)
class _Src:
    object_key: str
    sha256: str
    filename: str
    content_type: str = ""
    received_at: str = ""

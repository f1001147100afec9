"""Mailroom activities: register a letter, run OCR (own task queue), match its reference,
file it into a case. Each is idempotent under the mail item id."""

from __future__ import annotations

import datetime as dt


import structlog
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from temporalio import activity
from temporalio.exceptions import ApplicationError

from eakte import records, search
from eakte.blobstore import BlobRef, BlobStore
from eakte.db import transaction
from eakte.models import Dokument, MailItem, Vorgang, utcnow
from intake.reference import find_references
from workflows import contracts as c

log = structlog.get_logger(__name__)
PREVIEW_CHARS = 2000


def bind_item(item_id: str) -> None:
    info = activity.info()
    structlog.contextvars.clear_contextvars()  # pool threads are reused across activities
    structlog.contextvars.bind_contextvars(mail_item_id=item_id, workflow_id=info.workflow_id,
                                           activity=info.activity_type, attempt=info.attempt)


class MailroomActivities:
    def __init__(self, sessions: sessionmaker[Session], store: BlobStore) -> None:
        self.sessions = sessions
        self.store = store

    @activity.defn(name=c.ACT_REGISTER_MAIL)
    def register_mail_item(self, inp: c.MailInput) -> None:
        bind_item(inp.item_id)
        ref = BlobRef(inp.ref.bucket, inp.ref.key, inp.ref.sha256, inp.ref.size)
        received_at = dt.datetime.fromisoformat(inp.received_at) if inp.received_at else utcnow()
        with transaction(self.sessions) as s:
            if s.get(MailItem, inp.item_id) is not None:
                return
            if not self.store.exists(ref.key):  # never a record without its object (e.g. swept meanwhile)
                raise ApplicationError(f"uploaded object {ref.key} is missing", type="MissingObject",
                                       non_retryable=True)
            doc = records.file_document(
                s, key=f"{inp.item_id}:original", ref=ref, kind="Scan", title=f"Posteingang {inp.ref.filename}",
                filename=inp.ref.filename, content_type=inp.ref.content_type, created_by=inp.submitted_by,
                channel=inp.channel, akte_id=None, vorgang_id=None, received_at=received_at,
            )
            s.add(MailItem(id=inp.item_id, channel=inp.channel, filename=inp.ref.filename,
                           content_type=inp.ref.content_type, sha256=inp.ref.sha256, size=inp.ref.size,
                           dokument_id=doc.id, status="received", submitted_by=inp.submitted_by,
                           received_at=received_at))
            records.audit(s, actor=inp.submitted_by, role="mailroom", action="mail.register", target_type="mail_item",
                          target_id=inp.item_id)
            log.info("mail.registered", filename=inp.ref.filename, size=inp.ref.size)

    @activity.defn(name=c.ACT_MAIL_STATUS)
    def set_mail_status(self, p: c.MailStatusParams) -> None:
        bind_item(p.item_id)
        with transaction(self.sessions) as s:
            item = s.get(MailItem, p.item_id)
            if item is None:
                return
            item.status, item.reason_code, item.reason = p.status, p.reason_code, p.reason
            if p.case_id:
                item.case_id = p.case_id
            item.updated_at = utcnow()
            log.info("mail.status", status=p.status, reason_code=p.reason_code)

    @activity.defn(name=c.ACT_MATCH_REFERENCE)
    def match_mail_reference(self, item_id: str, aktenzeichen: str | None) -> c.MatchedReference:
        """Match the letter's text (or a mailroom clerk's choice) to a case in the register."""
        bind_item(item_id)
        with transaction(self.sessions) as s:
            item = s.get(MailItem, item_id)
            candidates = [aktenzeichen] if aktenzeichen else []
            if not candidates and item is not None and item.dokument_id:
                doc = s.get(Dokument, item.dokument_id)
                candidates = find_references(doc.text or "") if doc else []
            for az in candidates:
                case = s.scalar(select(Vorgang).where(Vorgang.aktenzeichen == az))
                if case is not None:
                    if item is not None:
                        item.detected_reference = az
                    return c.MatchedReference(case_id=case.id, aktenzeichen=az)
            if item is not None and candidates:
                item.detected_reference = candidates[0]
            return c.MatchedReference(case_id=None, aktenzeichen=None)

    @activity.defn(name=c.ACT_FILE_LETTER)
    def file_letter(self, p: c.FileLetterParams) -> str:
        bind_item(p.item_id)
        with transaction(self.sessions) as s:
            item = s.get(MailItem, p.item_id)
            case = records.get_case(s, p.case_id)
            if item is None or item.dokument_id is None:
                raise RuntimeError(f"mail item {p.item_id} is not registered")
            doc = s.get(Dokument, item.dokument_id)
            assert doc is not None
            if doc.akte_id is None:
                doc.akte_id, doc.vorgang_id, doc.kind = case.akte_id, case.id, "Scan"
                s.flush()
                search.index_document(s, doc)  # now found under the case's Aktenzeichen and department
                records.record_event(s, case_id=case.id, key=f"{p.item_id}:filed", step=case.step, status=case.status,
                                     message="Schreiben per Post eingegangen")
                records.audit(s, actor=p.filed_by, role="mailroom", action="mail.file", target_type="document",
                              target_id=doc.id, case_id=case.id)
            item.case_id = case.id
            return doc.id

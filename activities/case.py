"""Case activities: every write to the eAkte a case workflow makes, each idempotent under a
key derived from the workflow id and the step."""

from __future__ import annotations

import datetime as dt
import io
import json
from dataclasses import asdict

import structlog
from pypdf import PdfReader
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from temporalio import activity
from temporalio.exceptions import ApplicationError

from aktenlauf.errors import NotFound
from eakte import records, search
from eakte.blobstore import BlobRef, BlobStore
from eakte.db import transaction
from eakte.models import Dokument, utcnow
from eakte.render import Authority, DocumentData, render_document, verification_code
from intake.catalog import Catalog
from workflows import contracts as c

log = structlog.get_logger(__name__)


class CaseActivities:
    def __init__(self, sessions: sessionmaker[Session], store: BlobStore, catalog: Catalog, *,
                 certificate_secret: str, verify_base_url: str) -> None:
        self.sessions = sessions
        self.store = store
        self.catalog = catalog
        self.certificate_secret = certificate_secret.encode()
        self.verify_base_url = verify_base_url

    def _bind(self, case_id: str) -> None:
        info = activity.info()
        structlog.contextvars.clear_contextvars()  # pool threads are reused across activities
        structlog.contextvars.bind_contextvars(case_id=case_id, workflow_id=info.workflow_id,
                                               activity=info.activity_type, attempt=info.attempt)

    def _plan_retention(self, file_plan: str) -> int:
        """The Aktenplan's retention period for an Akte filed without a service (unassigned mail)."""
        entry = self.catalog.aktenplan.entry(file_plan) if self.catalog.aktenplan else None
        return entry.retention_years if entry is not None else 10

    @activity.defn(name=c.ACT_OPEN_CASE)
    def open_case(self, p: c.OpenCaseParams) -> c.OpenedCase:
        self._bind(p.case_id)
        application = {
            "service_key": p.service.key if p.service else p.requested_service_key,
            "service_name": p.service.name if p.service else None,
            "applicant": asdict(p.applicant),
            "form": p.form,
            "channel": p.channel,
            "submitted_by": p.integrator,
        }
        body = json.dumps(application, ensure_ascii=False, sort_keys=True, indent=2).encode()
        ref = self.store.put_bytes(body, "application/json")  # object first, then the rows
        file_plan = p.service.file_plan if p.service else "00.00"
        with transaction(self.sessions) as s:
            v = records.open_case(
                s, case_id=p.case_id, file_plan=file_plan, year=p.year,
                title=f"{p.service.name if p.service else 'Anliegen'}",
                service_key=p.service.key if p.service else None,
                service_name=p.service.name if p.service else None, integrator=p.integrator,
                applicant=asdict(p.applicant), form=p.form, fingerprint=p.fingerprint,
                fee_cents=p.service.fee_cents if p.service else 0,
                retention_years=p.service.retention_years if p.service else self._plan_retention(file_plan),
                status=c.RECEIVED,
            )
            doc = records.file_document(
                s, key=f"{p.case_id}:application", ref=ref, kind="Antrag", title="Antrag", filename="antrag.json",
                content_type="application/json", created_by=p.integrator, channel=p.channel, akte_id=v.akte_id,
                vorgang_id=v.id, public=True,
            )
            # False on a retry whose earlier attempt committed: then the case was created (and audited) already
            if records.record_event(s, case_id=p.case_id, key=f"{p.case_id}:opened", step="intake",
                                    status=c.RECEIVED, message=f"Antrag eingegangen, Aktenzeichen {v.aktenzeichen}"):
                records.audit(s, actor=p.integrator, role="integrator", action="case.create", target_type="case",
                              target_id=p.case_id, case_id=p.case_id)
            log.info("case.opened", aktenzeichen=v.aktenzeichen)
            return c.OpenedCase(aktenzeichen=v.aktenzeichen, akte_id=v.akte_id, application_document_id=doc.id)

    @activity.defn(name=c.ACT_RECORD_PROGRESS)
    def record_progress(self, p: c.ProgressParams) -> None:
        self._bind(p.case_id)
        fields = {k: getattr(p, k) for k in ("department", "due_on", "decision", "decided_by", "decision_reason",
                                               "payment_status", "service_key", "service_name", "fee_cents",
                                               "retention_years") if getattr(p, k) is not None}
        note = None
        if p.decided_by:  # the decision is a document too: an Entscheidungsvermerk in the Akte
            verdict = {"approved": "Antrag bewilligt", "rejected": "Antrag abgelehnt"}.get(p.decision or "", p.decision)
            text = (f"Entscheidungsvermerk\n\nEntscheidung: {verdict}\nentschieden von: {p.decided_by}\n"
                    f"Begründung: {p.decision_reason or '-'}\n")
            note = (text, self.store.put_bytes(text.encode("utf-8"), "text/plain; charset=utf-8"))  # object first
        with transaction(self.sessions) as s:
            if records.record_event(s, case_id=p.case_id, key=p.key, step=p.step, status=p.status,
                                    message=p.message, public=p.public, fields=fields):
                if p.decided_by:
                    records.audit(s, actor=p.decided_by, role="clerk", action=f"case.{p.decision}",
                                  target_type="case", target_id=p.case_id, case_id=p.case_id,
                                  reason=p.decision_reason)
                if note is not None:
                    v = records.get_case(s, p.case_id)
                    records.file_document(
                        s, key=f"{p.key}:vermerk", ref=note[1], kind="Vermerk", title="Entscheidungsvermerk",
                        filename="entscheidungsvermerk.txt", content_type="text/plain; charset=utf-8",
                        created_by=p.decided_by or "system", channel="intern", akte_id=v.akte_id, vorgang_id=v.id,
                        text=note[0])
                log.info("case.progress", step=p.step, status=p.status)

    @activity.defn(name=c.ACT_FILE_DOCUMENT)
    def file_document(self, p: c.FileDocumentParams) -> str:
        self._bind(p.case_id)
        ref = BlobRef(p.ref.bucket, p.ref.key, p.ref.sha256, p.ref.size)
        if not self.store.exists(ref.key):
            raise ApplicationError(f"uploaded object {ref.key} is missing", type="MissingObject", non_retryable=True)
        text = self._pdf_text(self.store.get_bytes(ref.key, ref.sha256)) if p.ref.content_type == "application/pdf" \
            else None  # born-digital PDFs are found by their text
        with transaction(self.sessions) as s:
            v = records.get_case(s, p.case_id)
            if p.supersedes:
                try:
                    version = records.new_version(s, key=p.key, dokument_id=p.supersedes, vorgang_id=v.id, ref=ref,
                                                  created_by=p.created_by, reason=p.reason)
                except NotFound as exc:
                    raise ApplicationError(str(exc), type=c.ERR_INVALID, non_retryable=True) from exc
                changed = s.get(Dokument, p.supersedes)
                if changed is not None and text is not None and changed.text != text:
                    changed.text = text  # search finds the newest version's text
                    search.index_document(s, changed)
                records.audit(s, actor=p.created_by, role="user", action="document.version", target_type="document",
                              target_id=p.supersedes, case_id=p.case_id, reason=p.reason,
                              details={"version": version.number, "sha256": ref.sha256})
                return p.supersedes
            doc = records.file_document(
                s, key=p.key, ref=ref, kind=p.kind, title=p.title, filename=p.ref.filename,
                content_type=p.ref.content_type, created_by=p.created_by, channel=p.channel, akte_id=v.akte_id,
                vorgang_id=v.id, received_at=utcnow(), text=text,
            )
            records.audit(s, actor=p.created_by, role="user", action="document.create", target_type="document",
                          target_id=doc.id, case_id=p.case_id, details={"kind": doc.kind, "sha256": ref.sha256})
            return doc.id

    @activity.defn(name=c.ACT_ISSUE_DOCUMENT)
    def issue_document(self, p: c.IssueParams) -> str:
        self._bind(p.case_id)
        key = f"{p.case_id}:issue:{p.kind}"
        with transaction(self.sessions) as s:
            v = records.get_case(s, p.case_id)
            existing = s.scalar(select(Dokument).where(Dokument.idempotency_key == key))
            if existing is not None:
                return existing.id
            applicant = v.applicant or {}
            dept = self.catalog.departments.get(v.department or "")
            code = verification_code(self.certificate_secret, key)
            data = DocumentData(
                kind="certificate" if p.kind == "certificate" else "rejection",
                authority=Authority(name=self.catalog.authority_name, department=dept.name if dept else "",
                                    address_lines=self.catalog.authority_address,
                                    verify_base_url=self.verify_base_url),
                service_name=v.service_name or "Anliegen", aktenzeichen=v.aktenzeichen, applicant_ref=v.applicant_ref,
                applicant_name=str(applicant.get("name", "")),
                applicant_address_lines=tuple(str(x) for x in applicant.get("address_lines", [])),
                issued_on=dt.date.fromisoformat(p.issued_on) if p.issued_on else utcnow().date(),
                verification_code=code, facts=tuple((str(k), str(val)) for k, val in sorted((v.form or {}).items())),
                reason=p.reason, fee_cents=v.fee_cents,
            )
            aktenzeichen, akte_id = v.aktenzeichen, v.akte_id
        pdf = render_document(data)
        ref = self.store.put_bytes(pdf, "application/pdf")  # deterministic bytes: a retry stores the same object
        kind, title = ("Urkunde", v.service_name or "Bescheinigung") if p.kind == "certificate" else (
            "Bescheid", f"Ablehnungsbescheid {v.service_name or ''}".strip())
        with transaction(self.sessions) as s:
            doc = records.file_document(
                s, key=key, ref=ref, kind=kind, title=title, filename=f"{p.kind}-{aktenzeichen}.pdf",
                content_type="application/pdf", created_by="system", channel="system", akte_id=akte_id,
                vorgang_id=p.case_id, public=True, verification_code=code,
                text=self._pdf_text(pdf),
            )
            records.audit(s, actor="system", role="system", action=f"document.issue.{p.kind}", target_type="document",
                          target_id=doc.id, case_id=p.case_id)
            return doc.id

    @activity.defn(name=c.ACT_DISPATCH)
    def dispatch_document(self, p: c.DispatchParams) -> str:
        self._bind(p.case_id)
        with transaction(self.sessions) as s:
            d = records.record_dispatch(s, key=f"{p.case_id}:dispatch:{p.dokument_id}:{p.channel}",
                                        case_id=p.case_id, dokument_id=p.dokument_id, channel=p.channel)
            return d.id

    @activity.defn(name=c.ACT_ARCHIVE)
    def archive_case(self, p: c.ArchiveParams) -> None:
        self._bind(p.case_id)
        with transaction(self.sessions) as s:
            akte = records.close_case(s, case_id=p.case_id, closed_at=utcnow())
            log.info("case.archived", final_status=p.final_status, retention_until=str(akte.retention_until))

    @staticmethod
    def _pdf_text(data: bytes, max_pages: int = 300) -> str | None:
        """The text layer of a PDF (pypdf), or None when it has none or cannot be read."""
        try:
            reader = PdfReader(io.BytesIO(data))
            if reader.is_encrypted:
                reader.decrypt("")
            pages = [str(page.extract_text() or "") for page in reader.pages[:max_pages]]
        except Exception as exc:  # noqa: BLE001 - a PDF without readable text is still filed
            log.warning("document.text_unreadable", error=str(exc)[:200])
            return None
        return "\f".join(pages).replace("\x00", "").strip() or None

    def record_payment(self, case_id: str, payment_id: str, payment_url: str) -> None:
        with transaction(self.sessions) as s:
            v = records.get_case(s, case_id)
            v.payment_id, v.payment_url = payment_id, payment_url


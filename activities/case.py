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
from eakte.render import (
    Authority,
    DocumentData,
    document_text,
    format_date_de,
    format_eur,
    render_document,
    verification_code,
)
from eakte.seal import Seal
from intake.catalog import Catalog
from intake.templates import KINDS as NOTICE_KINDS
from intake.templates import Templates, load_templates
from workflows import contracts as c

log = structlog.get_logger(__name__)


class CaseActivities:
    def __init__(self, sessions: sessionmaker[Session], store: BlobStore, catalog: Catalog, *,
                 certificate_secret: str, verify_base_url: str, seal: Seal | None = None,
                 templates: Templates | None = None) -> None:
        self.sessions = sessions
        self.store = store
        self.catalog = catalog
        self.certificate_secret = certificate_secret.encode()
        self.verify_base_url = verify_base_url
        # the authority's electronic seal on every issued document (worker.py always passes one;
        # None only where a caller builds the activities without one: documents are then unsealed)
        self.seal = seal
        self.templates = templates if templates is not None else load_templates(catalog=catalog)

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
                status=c.RECEIVED, notify_url=p.notify_url,
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
                                               "retention_years", "deadline_at", "waiting_for", "waiting_until",
                                               "first_decision_by", "cosigned_by") if getattr(p, k) is not None}
        if p.escalated is not None:
            fields["escalated_at"] = utcnow() if p.escalated else None
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
                if p.audit_action:  # forward, co-sign, deadline extension, withdrawal, cancel, escalation
                    records.audit(s, actor=p.actor or "system", role="system" if not p.actor else "user",
                                  action=p.audit_action, target_type="case", target_id=p.case_id, case_id=p.case_id,
                                  reason=p.reason)
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

    #: Dokument kind and (fixed, personal-data-free) title of each issued kind
    _ISSUED_AS = {
        "certificate": ("Urkunde", "{service}"),
        "rejection": ("Bescheid", "Ablehnungsbescheid {service}"),
        "nachforderung": ("Schreiben", "Nachforderung von Unterlagen {service}"),
        "cancellation": ("Bescheid", "Einstellung des Verfahrens {service}"),
        "withdrawal": ("Schreiben", "Bestätigung der Antragsrücknahme {service}"),
    }

    @activity.defn(name=c.ACT_ISSUE_DOCUMENT)
    def issue_document(self, p: c.IssueParams) -> str:
        """Render the notice from its template, seal it, store it and file it in the Akte.

        Idempotent under ``{case_id}:issue:{kind}`` (``:{seq}`` appended for a further notice of the
        same kind): a retry returns the filed document. The sealed bytes are deterministic for the
        same inputs (issued_on from workflow time, signing time from it, RSA PKCS#1 v1.5), so a
        retry after a crash between the S3 put and the commit writes the same object."""
        self._bind(p.case_id)
        if p.kind not in NOTICE_KINDS:
            raise ApplicationError(f"unknown document kind {p.kind!r}; expected one of {NOTICE_KINDS}",
                                   type=c.ERR_INVALID, non_retryable=True)
        if p.seq < 0:
            raise ApplicationError(f"seq must not be negative, got {p.seq}", type=c.ERR_INVALID, non_retryable=True)
        key = f"{p.case_id}:issue:{p.kind}" if p.seq == 0 else f"{p.case_id}:issue:{p.kind}:{p.seq}"
        with transaction(self.sessions) as s:
            v = records.get_case(s, p.case_id)
            existing = s.scalar(select(Dokument).where(Dokument.idempotency_key == key))
            if existing is not None:
                return existing.id
            applicant = v.applicant or {}
            dept = self.catalog.departments.get(v.department or "")
            code = verification_code(self.certificate_secret, key)
            issued_on = dt.date.fromisoformat(p.issued_on) if p.issued_on else utcnow().date()
            try:
                due_on = dt.date.fromisoformat(p.due_on) if p.due_on else None
            except ValueError as exc:
                raise ApplicationError(f"due_on is not an ISO date: {p.due_on!r}", type=c.ERR_INVALID,
                                       non_retryable=True) from exc
            service_name = v.service_name or "Anliegen"
            applicant_name = str(applicant.get("name", ""))
            fee_printed = v.fee_cents if p.kind in ("certificate", "rejection") else 0
            filled = self.templates.fill(p.kind, v.service_key, {
                "service_name": service_name, "aktenzeichen": v.aktenzeichen, "applicant_name": applicant_name,
                "authority": self.catalog.authority_name, "department": dept.name if dept else "",
                "issued_on": format_date_de(issued_on), "fee": format_eur(v.fee_cents) if v.fee_cents else "",
                "due_on": format_date_de(due_on) if due_on else "", "items": ", ".join(p.items),
                "reason": p.reason or "",
            })
            try:
                data = DocumentData(
                    kind=p.kind,  # type: ignore[arg-type]  # checked against NOTICE_KINDS above
                    authority=Authority(name=self.catalog.authority_name, department=dept.name if dept else "",
                                        address_lines=self.catalog.authority_address,
                                        verify_base_url=self.verify_base_url),
                    service_name=service_name, aktenzeichen=v.aktenzeichen, applicant_ref=v.applicant_ref,
                    applicant_name=applicant_name,
                    applicant_address_lines=tuple(str(x) for x in applicant.get("address_lines", [])),
                    issued_on=issued_on, verification_code=code,
                    facts=tuple((str(k), str(val)) for k, val in sorted((v.form or {}).items()))
                    if p.kind in ("certificate", "rejection") else (),
                    reason=p.reason, fee_cents=fee_printed,
                    heading=filled.title, intro=filled.intro, closing=filled.closing,
                    items=tuple(p.items), due_on=due_on,
                    details=tuple((str(k), str(val)) for k, val in p.details.items()),
                    sealed=self.seal is not None,
                )
            except ValueError as exc:  # a nachforderung without items, a rejection without reason ...
                raise ApplicationError(str(exc), type=c.ERR_INVALID, non_retryable=True) from exc
            aktenzeichen, akte_id = v.aktenzeichen, v.akte_id
        pdf = render_document(data)
        if self.seal is not None:  # sealed before storing: the stored, filed and verified file is the sealed one
            pdf = self.seal.sign(pdf, self.seal.signing_time(issued_on), location=self.catalog.authority_name)
        ref = self.store.put_bytes(pdf, "application/pdf")  # deterministic bytes: a retry stores the same object
        doc_kind, title = self._ISSUED_AS[p.kind]
        title = title.format(service=service_name).strip() + (f" ({p.seq + 1})" if p.seq else "")
        suffix = f"-{p.seq}" if p.seq else ""
        text = document_text(data)  # the words of the letter, from its content (no PDF parsing)
        with transaction(self.sessions) as s:
            existing = s.scalar(select(Dokument).where(Dokument.idempotency_key == key))
            if existing is not None:  # a concurrent attempt filed it meanwhile (same bytes, same object)
                return existing.id
            doc = records.file_document(
                s, key=key, ref=ref, kind=doc_kind, title=title, filename=f"{p.kind}-{aktenzeichen}{suffix}.pdf",
                content_type="application/pdf", created_by="system", channel="system", akte_id=akte_id,
                vorgang_id=p.case_id, public=True, verification_code=code, text=text,
            )
            records.audit(s, actor="system", role="system", action=f"document.issue.{p.kind}", target_type="document",
                          target_id=doc.id, case_id=p.case_id,
                          details={"sha256": ref.sha256, "sealed": self.seal is not None, "seq": p.seq})
            log.info("document.issued", kind=p.kind, seq=p.seq, sealed=self.seal is not None)
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


"""Mailroom activities: register a letter, run OCR (own task queue), match its reference,
file it into a case. Each is idempotent under the mail item id."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import shutil
import tempfile
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path

import structlog
from pypdf import PdfWriter
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker
from temporalio import activity
from temporalio.exceptions import ApplicationError

from eakte import records, search
from eakte.blobstore import BlobRef, BlobStore
from eakte.db import transaction
from eakte.models import Dokument, MailItem, MailRoutingDecision, Version, Vorgang, utcnow
from intake.barcodes import verification_codes_from_payloads
from intake.catalog import Catalog
from intake.classify import Classifier, LearnedExample, terms
from intake.letters import sender_from_text
from intake.reference import find_applicant_refs, find_reference_candidates, find_references, near_variants
from intake.separator import split_pdf
from workflows import contracts as c

log = structlog.get_logger(__name__)
PREVIEW_CHARS = 2000


def bind_item(item_id: str) -> None:
    info = activity.info()
    structlog.contextvars.clear_contextvars()  # pool threads are reused across activities
    structlog.contextvars.bind_contextvars(mail_item_id=item_id, workflow_id=info.workflow_id,
                                           activity=info.activity_type, attempt=info.attempt)


#: triage actions that say where a letter belongs (the classifier learns from people's choices)
LEARNING_ACTIONS = ("route", "new_case", "file")
#: the most recent decisions the classifier learns from (older ones age out)
MAX_LEARNED = 5000
LETTER_CASE_NS = uuid.UUID("6f1c7d4e-8a53-4c1b-9a57-3b2e0d6c9f10")
#: the integrator of cases started from letters (integrators see the cases they started)
LETTER_INTEGRATOR = "poststelle"


@dataclass(frozen=True)
class Recognised:
    case: Vorgang | None
    method: str | None
    detected: str | None


def working_version(s: Session, dokument_id: str | None) -> Version:
    """The letter's current working copy: the newest processed version (OCR, merge), else the original."""
    versions = list(s.scalars(select(Version).where(Version.dokument_id == dokument_id)
                              .order_by(Version.number.desc())))
    return next((v for v in versions if v.role == "processed"), None) or next(v for v in versions if v.role == "original")


def join_pdfs(paths: list[Path], out: Path) -> None:
    """One PDF with the pages of ``paths`` in order."""
    writer = PdfWriter()
    for path in paths:
        writer.append(str(path))
    with out.open("wb") as f:
        writer.write(f)


def recognise(s: Session, text: str, codes: c.ScannedCodes | None) -> Recognised:
    """The case a letter refers to, strongest evidence first: an exact Aktenzeichen in the
    register, the QR code of a document we issued, the applicant's reference number, an
    Aktenzeichen one misread digit away that fits exactly one case."""
    candidates = find_reference_candidates(text)
    detected = candidates[0].value if candidates else None
    for cand in candidates:
        case = s.scalar(select(Vorgang).where(Vorgang.aktenzeichen == cand.value))
        if case is not None:
            return Recognised(case, "aktenzeichen", cand.value)
    payloads = [x for page in (codes.barcodes.values() if codes else []) for x in page]
    for code in verification_codes_from_payloads(payloads):
        case_id = s.scalar(select(Dokument.vorgang_id).where(Dokument.verification_code == code))
        case = s.get(Vorgang, case_id) if case_id else None
        if case is not None:
            return Recognised(case, "qr", code)
    for ref in find_applicant_refs(text):
        case = s.scalar(select(Vorgang).where(Vorgang.applicant_ref == ref))
        if case is not None:
            return Recognised(case, "applicant_ref", ref)
        detected = detected or ref
    for cand in candidates:
        near = list(s.scalars(select(Vorgang).where(Vorgang.aktenzeichen.in_(near_variants(cand.value))).limit(2)))
        if len(near) == 1:
            return Recognised(near[0], "aktenzeichen_near", cand.value)
    return Recognised(None, None, detected)


class RoutingLearning:
    """The classifier with the mailroom's routing decisions, rebuilt when new ones arrive."""

    def __init__(self, catalog: Catalog | None) -> None:
        self.catalog = catalog
        self._lock = threading.Lock()
        self._seen: tuple[int, int] = (-1, -1)
        self._classifier: Classifier | None = None

    def classifier(self, s: Session) -> Classifier:
        learning = MailRoutingDecision.learn.is_(True)
        count, last = s.execute(select(func.count(MailRoutingDecision.id),
                                       func.coalesce(func.max(MailRoutingDecision.id), 0)).where(learning)).one()
        with self._lock:
            if self._classifier is None or (count, last) != self._seen:
                learned = [LearnedExample(terms=list(d.terms or []), service_key=d.service_key, department=d.department)
                           for d in s.scalars(select(MailRoutingDecision).where(learning)
                                              .order_by(MailRoutingDecision.id.desc()).limit(MAX_LEARNED))]
                services = list(self.catalog.services.values()) if self.catalog is not None else []
                self._classifier = Classifier(services, learned)
                self._seen = (count, last)
            return self._classifier


class MailroomActivities:
    def __init__(self, sessions: sessionmaker[Session], store: BlobStore, catalog: Catalog | None = None,
                 auto_case_threshold: float = 0.75, ocr_task_queue: str = "aktenlauf-ocr") -> None:
        self.sessions = sessions
        self.store = store
        self.catalog = catalog
        self.auto_case_threshold = auto_case_threshold
        self.ocr_task_queue = ocr_task_queue
        self.learning = RoutingLearning(catalog)

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
            doc.mail_item_id = inp.item_id
            s.add(MailItem(id=inp.item_id, channel=inp.channel, filename=inp.ref.filename,
                           content_type=inp.ref.content_type, sha256=inp.ref.sha256, size=inp.ref.size,
                           dokument_id=doc.id, status="received", submitted_by=inp.submitted_by,
                           received_at=received_at, origin=dict(inp.origin), parent_id=inp.parent_id))
            records.audit(s, actor=inp.submitted_by, role="mailroom", action="mail.register", target_type="mail_item",
                          target_id=inp.item_id, details={"parent_id": inp.parent_id} if inp.parent_id else None)
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
            if p.department:
                item.department = p.department
            if p.match_method:
                item.match_method = p.match_method
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
        """File the letter and every document that came with it (e-mail body and attachments,
        merged letters) into the case's Akte; returns the letter's main document."""
        bind_item(p.item_id)
        with transaction(self.sessions) as s:
            item = s.get(MailItem, p.item_id)
            case = records.get_case(s, p.case_id)
            if item is None or item.dokument_id is None:
                raise RuntimeError(f"mail item {p.item_id} is not registered")
            docs = list(s.scalars(select(Dokument).where(Dokument.mail_item_id == p.item_id)
                                  .order_by(Dokument.created_at)))
            main = s.get(Dokument, item.dokument_id)
            assert main is not None
            if main not in docs:
                docs.insert(0, main)
            moved = [d for d in docs if d.akte_id is None]
            for doc in moved:
                doc.akte_id, doc.vorgang_id = case.akte_id, case.id
            if moved:
                s.flush()
                for doc in moved:
                    search.index_document(s, doc)  # now found under the case's Aktenzeichen and department
                how = {"email": "per E-Mail", "imap": "per E-Mail"}.get(item.channel, "per Post")
                records.record_event(s, case_id=case.id, key=f"{p.item_id}:filed", step=case.step, status=case.status,
                                     message=f"Schreiben {how} eingegangen")
                records.audit(s, actor=p.filed_by, role="mailroom", action="mail.file", target_type="document",
                              target_id=main.id, case_id=case.id,
                              details={"mail_item_id": p.item_id, "documents": [d.id for d in moved]})
            item.case_id = case.id
            return main.id

    # -- v2: references beyond the exact Aktenzeichen -----------------------------------------
    @activity.defn(name=c.ACT_MATCH_REFERENCE_V2)
    def match_mail_reference_v2(self, p: c.MatchParams) -> c.MatchedReference:
        """Find the letter's case: a clerk's Aktenzeichen; otherwise, from the letter, an exact
        Aktenzeichen, the QR code of one of our own documents, the applicant's reference number,
        or an Aktenzeichen one misread digit away that fits exactly one case."""
        bind_item(p.item_id)
        with transaction(self.sessions) as s:
            item = s.get(MailItem, p.item_id)
            if p.aktenzeichen:
                case = s.scalar(select(Vorgang).where(Vorgang.aktenzeichen == p.aktenzeichen.strip()))
                if case is None:
                    return c.MatchedReference(case_id=None, aktenzeichen=None)
                return c.MatchedReference(case_id=case.id, aktenzeichen=case.aktenzeichen, method="mailroom")
            text = ""
            if item is not None and item.dokument_id:
                doc = s.get(Dokument, item.dokument_id)
                text = (doc.text or "") if doc else ""
            found = recognise(s, text, p.codes)
            if item is not None:
                item.detected_reference = found.detected
                if found.case is not None:
                    item.match_method = found.method
            if found.case is None:
                return c.MatchedReference(case_id=None, aktenzeichen=None)
            log.info("mail.reference_matched", method=found.method, aktenzeichen=found.case.aktenzeichen)
            return c.MatchedReference(case_id=found.case.id, aktenzeichen=found.case.aktenzeichen, method=found.method)

    @activity.defn(name=c.ACT_CLASSIFY_MAIL)
    def classify_mail_item(self, item_id: str) -> c.Classified:
        """Score the letter against every service (catalog keywords and patterns, plus what the
        mailroom's past routing decisions taught); keep the suggestions on the item."""
        bind_item(item_id)
        with transaction(self.sessions) as s:
            item = s.get(MailItem, item_id)
            if item is None or item.dokument_id is None:
                raise RuntimeError(f"mail item {item_id} is not registered")
            doc = s.get(Dokument, item.dokument_id)
            ranked = self.learning.classifier(s).rank((doc.text or "") if doc else "", top=3)
            suggestions = [c.Suggestion(service_key=x.service_key or "", department=x.department or "",
                                        score=round(x.score, 3), reasons=list(x.reasons)[:5]) for x in ranked]
            item.suggestions = [dataclasses.asdict(x) for x in suggestions]
            confident = bool(suggestions) and bool(suggestions[0].service_key) \
                and suggestions[0].score >= self.auto_case_threshold
            log.info("mail.classified", top=suggestions[0].service_key if suggestions else None,
                     score=suggestions[0].score if suggestions else None, confident=confident)
            return c.Classified(suggestions=suggestions, confident=confident)

    @activity.defn(name=c.ACT_RECORD_TRIAGE)
    def record_mail_triage(self, r: c.TriageRecord) -> None:
        """Audit a triage action and keep it as a routing decision (people's routing choices teach
        the classifier). Idempotent under the action's key."""
        bind_item(r.item_id)
        with transaction(self.sessions) as s:
            if s.scalar(select(MailRoutingDecision.id).where(MailRoutingDecision.key == r.key)) is not None:
                return
            item = s.get(MailItem, r.item_id)
            service_key, department = r.service_key, r.department
            if r.case_id:
                case = s.get(Vorgang, r.case_id)
                if case is not None:
                    service_key, department = service_key or case.service_key, department or case.department
            records.audit(s, actor=r.actor, role=r.role, action=f"mail.{r.action}", target_type="mail_item",
                          target_id=r.item_id, case_id=r.case_id, reason=r.reason,
                          details={k: v for k, v in {"service_key": service_key, "department": department,
                                                     **r.details}.items() if v})
            learn = r.action in LEARNING_ACTIONS and r.role != "system" and bool(service_key or department)
            doc = s.get(Dokument, item.dokument_id) if item is not None and item.dokument_id else None
            suggested = (item.suggestions[0].get("service_key") if item is not None and item.suggestions else None)
            s.add(MailRoutingDecision(key=r.key, item_id=r.item_id, action=r.action, learn=learn,
                                      service_key=service_key, department=department,
                                      terms=terms((doc.text or "") if doc else "") if learn else [],
                                      suggested_service_key=suggested, actor=r.actor))

    @activity.defn(name=c.ACT_CASE_FROM_LETTER)
    def prepare_case_from_letter(self, p: c.CaseFromLetterParams) -> c.CaseFromLetter:
        """The case input for a letter that starts a case: the service from the catalog, the
        sender block as applicant; the case id is derived from the letter (one case per letter)."""
        bind_item(p.item_id)
        service = self.catalog.service(p.service_key) if self.catalog is not None else None
        if service is None:
            return c.CaseFromLetter()
        with transaction(self.sessions) as s:
            item = s.get(MailItem, p.item_id)
            doc = s.get(Dokument, item.dokument_id) if item is not None and item.dokument_id else None
            sender = sender_from_text((doc.text or "") if doc else "")
        case_id = "case-" + uuid.uuid5(LETTER_CASE_NS, p.item_id).hex
        fingerprint = hashlib.sha256(f"letter\x00{p.item_id}".encode()).hexdigest()
        return c.CaseFromLetter(case_id=case_id, case_input=c.CaseInput(
            case_id=case_id, integrator=LETTER_INTEGRATOR, fingerprint=fingerprint,
            applicant=c.Applicant(name=sender.name, address_lines=sender.address_lines),
            service=service, requested_service_key=service.key, form={"Eingang": "Schreiben per Post"},
            channel="post"))

    @activity.defn(name=c.ACT_AWAIT_CASE_OPEN)
    def await_case_open(self, case_id: str) -> str:
        """The case's Aktenzeichen once its workflow has opened it (retried until then)."""
        with self.sessions() as s:
            az = s.scalar(select(Vorgang.aktenzeichen).where(Vorgang.id == case_id))
        if az is None:
            raise ApplicationError(f"case {case_id} is not open yet", type="CaseNotOpenYet")
        return az

    @activity.defn(name=c.ACT_SPLIT_MAIL)
    def split_mail_item(self, p: c.SplitParams) -> c.SplitResult:
        """Cut the letter's (processed) PDF into one PDF per part; each becomes a letter of its
        own (a child item), the original stack stays with this item."""
        bind_item(p.item_id)
        with transaction(self.sessions) as s:
            item = s.get(MailItem, p.item_id)
            if item is None or item.dokument_id is None:
                raise RuntimeError(f"mail item {p.item_id} is not registered")
            source = working_version(s, item.dokument_id)
            channel, submitted_by = item.channel, item.submitted_by
            received_at = item.received_at.isoformat() if item.received_at else ""
            base = Path(item.filename).stem[:80] or "Schreiben"
            src_key, src_sha = source.object_key, source.sha256
        work = Path(tempfile.mkdtemp(prefix="split-"))
        try:
            pdf = work / "stack.pdf"
            self.store.download_to(src_key, src_sha, pdf)
            children: list[c.MailInput] = []
            try:
                pieces = split_pdf(pdf, [tuple(x) for x in p.parts], work)
            except ValueError as exc:  # e.g. pages outside the document: retrying will not help
                raise ApplicationError(str(exc), type=c.ERR_INVALID, non_retryable=True) from exc
            for n, part in enumerate(pieces, start=1):
                ref = self.store.put_file(part, "application/pdf")
                first, last = p.parts[n - 1]
                children.append(c.MailInput(
                    item_id=f"{p.item_id}-{n}", ref=c.DocumentRef(bucket=ref.bucket, key=ref.key, sha256=ref.sha256,
                                                                   size=ref.size, filename=f"{base}-Teil{n}.pdf",
                                                                   content_type="application/pdf"),
                    channel=channel, submitted_by=submitted_by, ocr_task_queue=self.ocr_task_queue,
                    received_at=received_at, origin={"split_from": p.item_id, "pages": f"{first}-{last}"},
                    parent_id=p.item_id))
        finally:
            shutil.rmtree(work, ignore_errors=True)
        with transaction(self.sessions) as s:
            records.audit(s, actor=p.actor, role="mailroom" if p.actor != "system" else "system",
                          action="mail.split", target_type="mail_item", target_id=p.item_id, reason=p.reason,
                          details={"parts": [list(x) for x in p.parts], "children": [ch.item_id for ch in children]})
        return c.SplitResult(children=children)

    @activity.defn(name=c.ACT_MERGE_MAIL)
    def merge_mail_items(self, p: c.MergeParams) -> int:
        """Append the other letters' pages to this one (a new processed version with the joint
        text); the others end as "merged" here. All or nothing: every other letter must still be
        waiting in triage."""
        bind_item(p.item_id)
        with transaction(self.sessions) as s:
            item = s.get(MailItem, p.item_id)
            if item is None or item.dokument_id is None:
                raise RuntimeError(f"mail item {p.item_id} is not registered")
            others = {m.id: m for m in s.scalars(select(MailItem).where(MailItem.id.in_(p.others)))}
            if all(m.status == "merged" and m.parent_id == p.item_id for m in others.values()) \
                    and len(others) == len(p.others):
                return item.pages or 0  # done before a retry
            bad = [i for i in p.others if i not in others or others[i].status != "triage"]
            if bad:
                raise ApplicationError(f"not waiting in triage: {', '.join(bad)}", type=c.ERR_STATE,
                                       non_retryable=True)
            sources = []
            for mid in [p.item_id, *p.others]:
                m = item if mid == p.item_id else others[mid]
                v = working_version(s, m.dokument_id)
                sources.append((v.object_key, v.sha256, v.dokument_id))
        work = Path(tempfile.mkdtemp(prefix="merge-"))
        try:
            paths = []
            for n, (key, sha, _) in enumerate(sources):
                path = work / f"{n}.pdf"
                self.store.download_to(key, sha, path)
                paths.append(path)
            merged = work / "merged.pdf"
            join_pdfs(paths, merged)
            ref = self.store.put_file(merged, "application/pdf")
        finally:
            shutil.rmtree(work, ignore_errors=True)
        with transaction(self.sessions) as s:
            item = s.get(MailItem, p.item_id)
            assert item is not None and item.dokument_id is not None
            doc = s.get(Dokument, item.dokument_id)
            assert doc is not None
            texts = [doc.text or ""]
            # lock the others: only letters still in triage are taken (a concurrent action loses)
            taken = s.execute(update(MailItem).where(MailItem.id.in_(p.others), MailItem.status == "triage")
                              .values(status="merged", parent_id=p.item_id, updated_at=utcnow(),
                                      reason=f"zusammengeführt mit {p.item_id}")).rowcount
            if taken != len(p.others):
                raise ApplicationError("another action took one of the letters meanwhile", type=c.ERR_STATE,
                                       non_retryable=True)
            for other_id in p.others:
                other = s.get(MailItem, other_id)
                assert other is not None
                for d in s.scalars(select(Dokument).where(Dokument.mail_item_id == other_id)):
                    d.mail_item_id = p.item_id
                    if d.id == other.dokument_id:
                        texts.append(d.text or "")
            records.add_version(s, doc, ref, created_by=p.actor, role="processed",
                                reason="Zusammengeführt: " + ", ".join(p.others))
            doc.text = "\f".join(t for t in texts if t)
            item.text_preview = doc.text[:PREVIEW_CHARS]
            item.pages = (item.pages or 0) + sum((s.get(MailItem, o).pages or 0) for o in p.others)  # type: ignore[union-attr]
            search.index_document(s, doc)
            return item.pages

"""Operations on the eAkte records. Each is idempotent under a caller-supplied key, so an
activity retried after a crash never creates a second Akte, document or event.

Write order everywhere: the object is in S3 before the row that points to it is committed,
so a crash leaves at worst an unreferenced object (swept later), never a dangling record.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from aktenlauf.errors import NotFound
from eakte import audit as audit_log
from eakte import search
from eakte.blobstore import BlobRef
from eakte.models import (
    Akte,
    AktenzeichenCounter,
    Dispatch,
    Dokument,
    TimelineEvent,
    Version,
    Vorgang,
    utcnow,
)

DOCUMENT_KINDS = ("Antrag", "Nachweis", "Scan", "Bescheid", "Urkunde", "Vermerk", "Schreiben")


def format_aktenzeichen(file_plan: str, year: int, seq: int) -> str:
    return f"{file_plan}-{year}-{seq:06d}"


def next_sequence(session: Session, file_plan: str, year: int) -> int:
    """Allocate the next sequence number for (file plan, year). Row-locked; never reused."""
    stmt = (
        update(AktenzeichenCounter)
        .where(AktenzeichenCounter.file_plan == file_plan, AktenzeichenCounter.year == year)
        .values(last_seq=AktenzeichenCounter.last_seq + 1)
        .returning(AktenzeichenCounter.last_seq)
    )
    seq = session.execute(stmt).scalar_one_or_none()
    if seq is not None:
        return seq
    try:
        with session.begin_nested():
            session.execute(insert(AktenzeichenCounter).values(file_plan=file_plan, year=year, last_seq=1))
        return 1
    except IntegrityError:  # a concurrent first allocation won the insert: take the next one
        return session.execute(stmt).scalar_one()


def get_case(session: Session, case_id: str) -> Vorgang:
    vorgang = session.get(Vorgang, case_id)
    if vorgang is None:
        raise NotFound(f"case {case_id} not found")
    return vorgang


def _free_applicant_ref(session: Session, case_id: str) -> str:
    """The case's applicant reference number (printed on its letters; the mailroom recognises
    it): derived from the case id, another derivation on the rare clash."""
    from intake.reference import applicant_ref_for

    for attempt in range(20):
        ref = applicant_ref_for(case_id, attempt)
        if session.scalar(select(Vorgang.id).where(Vorgang.applicant_ref == ref)) is None:
            return ref
    raise RuntimeError("no free applicant reference number")  # 20 clashes in a row: not by chance


def open_case(
    session: Session,
    *,
    case_id: str,
    file_plan: str,
    year: int,
    title: str,
    service_key: str | None,
    service_name: str | None,
    integrator: str,
    applicant: dict[str, Any],
    form: dict[str, Any],
    fingerprint: str,
    fee_cents: int,
    retention_years: int,
    status: str,
    notify_url: str | None = None,
) -> Vorgang:
    existing = session.get(Vorgang, case_id)
    if existing is not None:
        return existing
    seq = next_sequence(session, file_plan, year)
    az = format_aktenzeichen(file_plan, year, seq)
    akte = Akte(aktenzeichen=az, file_plan=file_plan, year=year, seq=seq, title=title, retention_years=retention_years)
    session.add(akte)
    session.flush()
    vorgang = Vorgang(
        id=case_id, akte_id=akte.id, aktenzeichen=az, applicant_ref=_free_applicant_ref(session, case_id),
        service_key=service_key, service_name=service_name,
        department=None, status=status, step="intake", integrator=integrator,
        applicant_id=applicant.get("id"), applicant=applicant, form=form, fingerprint=fingerprint, fee_cents=fee_cents,
        notify_url=notify_url,
    )
    session.add(vorgang)
    session.flush()
    return vorgang


def file_document(
    session: Session,
    *,
    key: str,
    ref: BlobRef,
    kind: str,
    title: str,
    filename: str,
    content_type: str,
    created_by: str,
    channel: str,
    akte_id: str | None,
    vorgang_id: str | None,
    public: bool = False,
    verification_code: str | None = None,
    text: str | None = None,
    role: str = "original",
    sender: str | None = None,
    received_at: dt.datetime | None = None,
) -> Dokument:
    existing = session.scalar(select(Dokument).where(Dokument.idempotency_key == key))
    if existing is not None:
        return existing
    if kind not in DOCUMENT_KINDS:
        raise ValueError(f"unknown document kind {kind!r}")
    doc = Dokument(
        idempotency_key=key, akte_id=akte_id, vorgang_id=vorgang_id, kind=kind, title=title[:300],
        filename=filename[:300], content_type=content_type, created_by=created_by, channel=channel,
        public=public, verification_code=verification_code, text=text, sender=sender, received_at=received_at,
    )
    session.add(doc)
    session.flush()
    add_version(session, doc, ref, created_by=created_by, role=role, reason="filed")
    search.index_document(session, doc)  # same transaction: filed and findable together
    return doc


def add_version(session: Session, doc: Dokument, ref: BlobRef, *, created_by: str, role: str, reason: str) -> Version:
    number = (session.scalar(select(func.max(Version.number)).where(Version.dokument_id == doc.id)) or 0) + 1
    version = Version(
        dokument_id=doc.id, number=number, sha256=ref.sha256, size=ref.size, bucket=ref.bucket,
        object_key=ref.key, role=role, created_by=created_by, reason=reason,
    )
    session.add(version)
    session.flush()
    return version


def new_version(
    session: Session, *, key: str, dokument_id: str, vorgang_id: str, ref: BlobRef, created_by: str, reason: str,
) -> Version:
    """A change to a filed document: a new Version (who, when, why); the old ones stay.

    Idempotent under ``key``: a retried activity finds the version it already added.
    """
    doc = session.get(Dokument, dokument_id)
    if doc is None or doc.vorgang_id != vorgang_id:
        raise NotFound(f"document {dokument_id} is not part of this case")
    done = session.scalar(select(Version).where(Version.idempotency_key == key))
    if done is not None:
        return done
    version = add_version(session, doc, ref, created_by=created_by, role="original", reason=reason.strip())
    version.idempotency_key = key
    session.flush()
    return version


def latest_version(session: Session, dokument_id: str) -> Version:
    v = session.scalar(select(Version).where(Version.dokument_id == dokument_id).order_by(Version.number.desc()).limit(1))
    if v is None:
        raise NotFound(f"document {dokument_id} has no stored version")
    return v


def record_event(
    session: Session, *, case_id: str, key: str, step: str, status: str, message: str, public: bool = True,
    fields: dict[str, Any] | None = None,
) -> bool:
    """Move the read model to (step, status) and add a timeline entry; False if already recorded."""
    if session.scalar(select(TimelineEvent.id).where(TimelineEvent.key == key)) is not None:
        return False
    vorgang = get_case(session, case_id)
    # an empty step/status keeps the case where it is: events recorded beside the main flow
    # (deadline reminders, escalations, notes) must not move the read model back
    step = step or vorgang.step
    status = status or vorgang.status
    vorgang.step = step
    vorgang.status = status
    vorgang.updated_at = utcnow()
    fields = dict(fields or {})
    if "retention_years" in fields:  # kept on the Akte: it decides the retention date at closing
        vorgang.akte.retention_years = int(fields.pop("retention_years"))
    for name, value in fields.items():
        if name in ("due_on", "waiting_until") and isinstance(value, str):
            value = dt.date.fromisoformat(value) if value else None
        elif name == "deadline_at" and isinstance(value, str):
            value = dt.datetime.fromisoformat(value) if value else None
        setattr(vorgang, name, value)
    if "department" in fields:
        if vorgang.akte.department and vorgang.akte.department != vorgang.department:
            vorgang.assignee = vorgang.assigned_at = None  # forwarded: open to the new department's clerks
        vorgang.akte.department = vorgang.department
    if "service_name" in fields:
        vorgang.akte.title = str(fields["service_name"])
    if "department" in fields or "service_name" in fields or "service_key" in fields:
        session.flush()
        search.reindex_case(session, case_id)  # the index carries department and service
    session.add(TimelineEvent(key=key, vorgang_id=case_id, step=step, status=status, message=message, public=public))
    session.flush()
    return True


def record_dispatch(session: Session, *, key: str, case_id: str, dokument_id: str, channel: str) -> Dispatch:
    existing = session.scalar(select(Dispatch).where(Dispatch.key == key))
    if existing is not None:
        return existing
    d = Dispatch(key=key, vorgang_id=case_id, dokument_id=dokument_id, channel=channel)
    session.add(d)
    session.flush()
    return d


def close_case(session: Session, *, case_id: str, closed_at: dt.datetime) -> Akte:
    vorgang = get_case(session, case_id)
    akte = vorgang.akte
    if akte.status != "closed":
        akte.status = "closed"
        akte.closed_at = closed_at
        try:
            akte.retention_until = closed_at.date().replace(year=closed_at.year + akte.retention_years)
        except ValueError:  # 29 February
            akte.retention_until = closed_at.date().replace(year=closed_at.year + akte.retention_years, day=28)
    if vorgang.closed_at is None:
        vorgang.closed_at = closed_at
    session.flush()
    search.refresh_akte(session, akte)  # archivists find closed Akten
    return akte


def audit(
    session: Session, *, actor: str, role: str, action: str, target_type: str, target_id: str,
    case_id: str | None = None, reason: str | None = None, subject_id: str | None = None,
    details: dict[str, Any] | None = None,
) -> str:
    """Append an event to the hash-chained audit trail (eakte/audit.py); returns its hash.

    The subject (the applicant the record is about) is taken from the case when not given,
    so a data-protection request (Auskunft) finds every event that concerns a person.
    """
    if subject_id is None and case_id is not None:
        subject_id = session.scalar(select(Vorgang.applicant_id).where(Vorgang.id == case_id))
    return audit_log.append(session, actor=actor, role=role, action=action, target_type=target_type,
                            target_id=target_id, case_id=case_id, subject_id=subject_id, reason=reason,
                            details=details)

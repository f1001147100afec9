"""Retention and disposal (Aussonderung) of closed Akten. Framework-free.

A closed Akte keeps its records until ``retention_until`` (set at closing from the service's
retention period, or the Aktenplan's default). After that it is *offered*: the Aktenplan's
appraisal proposes archiving (A), destruction (V) or asks the archivist to appraise (B); an
archivist confirms one of

* ``destroy`` — every document's objects and rows are removed and the personal data of the
  case is blanked;
* ``archive`` — the Akte is handed to the archive as an xdomea package (stored under
  ``archive/`` in the object store), then removed from the eAkte like ``destroy``;
* ``keep`` — the retention period is extended (with a reason) and the offer withdrawn.

What stays: the Akte row (its Aktenzeichen is never reused, and it still resolves, to a
disposed Akte), the Vorgang's non-personal read model and timeline, the audit trail, and a
``DisposalRecord``: what was removed (an inventory of versions with their hashes), when, by
whom, on which rule. A legal hold (``legal_hold``) stops all of it, also for an Akte already
offered.

Objects are content-addressed and deduplicated: an object is removed only when no remaining
Version or MailItem refers to it. Write order: the rows go first (one transaction, with the
DisposalRecord naming the objects), the objects after; a crash in between leaves only
unreferenced objects, which a retry (``remove_released_objects``) or the sweep removes.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import delete, or_, select
from sqlalchemy.orm import Session

from aktenlauf.errors import Conflict, InvalidInput, NotFound
from eakte import records
from eakte.aktenplan import Aktenplan, PlanEntry
from eakte.blobstore import BlobStore, object_key
from eakte.models import (Akte, Dispatch, DisposalRecord, Dokument, MailItem, Notification, Version, Vorgang,
                          utcnow)

OFFERED = "offered"
ARCHIVED = "archived"
DESTROYED = "destroyed"
ACTIONS = ("archive", "destroy", "keep")
# what the Aktenplan's archival appraisal proposes
PROPOSAL = {"A": "archive", "V": "destroy", "B": "appraise"}
BLANK = "(ausgesondert)"


class LegalHoldActive(Conflict):
    code = "legal-hold"
    title = "The Akte is under legal hold"


class NotOffered(Conflict):
    code = "not-offered"
    title = "The Akte is not offered for disposal"


@dataclass(frozen=True)
class Offer:
    """An Akte offered for disposal, with the rule and the appraisal's proposal."""

    akte_id: str
    aktenzeichen: str
    file_plan: str
    title: str
    department: str | None
    closed_at: dt.datetime | None
    retention_until: dt.date | None
    appraisal: str | None
    proposed_action: str
    rule: str
    round_id: str | None


@dataclass
class Disposal:
    """The outcome of executing one decision."""

    akte_id: str
    aktenzeichen: str
    action: str  # archived | destroyed | kept
    record_id: str | None = None
    documents: int = 0
    versions: int = 0
    bytes_removed: int = 0
    objects_removed: int = 0
    objects_kept_shared: int = 0
    archive_key: str | None = None
    archive_sha256: str | None = None
    retention_until: dt.date | None = None
    released_keys: list[str] = field(default_factory=list)


# -- rules -------------------------------------------------------------------------------

def plan_entry(plan: Aktenplan, akte: Akte) -> PlanEntry | None:
    return plan.entry(akte.file_plan)


def rule_text(akte: Akte, entry: PlanEntry | None) -> str:
    """e.g. "Aktenplan 32.10 Meldewesen, 5 Jahre nach Abschluss (§ 14 BMG), Frist bis 2031-03-01"."""
    years = akte.retention_years
    unit = "Jahr" if years == 1 else "Jahre"
    head = f"Aktenplan {akte.file_plan} {entry.title}" if entry else f"Aktenplan {akte.file_plan}"
    basis = f" ({entry.legal_basis})" if entry and entry.legal_basis else ""
    until = akte.retention_until.isoformat() if akte.retention_until else "offen"
    return f"{head}, {years} {unit} nach Abschluss{basis}, Frist bis {until}"


def offer_of(akte: Akte, plan: Aktenplan) -> Offer:
    entry = plan_entry(plan, akte)
    appraisal = entry.appraisal if entry else None
    return Offer(akte_id=akte.id, aktenzeichen=akte.aktenzeichen, file_plan=akte.file_plan, title=akte.title,
                 department=akte.department, closed_at=akte.closed_at, retention_until=akte.retention_until,
                 appraisal=appraisal, proposed_action=PROPOSAL.get(appraisal or "B", "appraise"),
                 rule=rule_text(akte, entry), round_id=akte.disposal_round)


# -- finding and offering ------------------------------------------------------------------

def due(session: Session, as_of: dt.date, *, limit: int = 1000) -> list[Akte]:
    """Closed Akten past retention, not under legal hold, not yet disposed (offered ones again)."""
    return list(session.scalars(
        select(Akte).where(Akte.status == "closed", Akte.retention_until.is_not(None), Akte.retention_until <= as_of,
                           Akte.legal_hold.is_(False),
                           or_(Akte.disposal_status.is_(None), Akte.disposal_status == OFFERED))
        .order_by(Akte.retention_until, Akte.aktenzeichen).limit(limit)))


def offer_due(session: Session, plan: Aktenplan, *, as_of: dt.date, round_id: str, limit: int = 1000,
              actor: str = "system") -> list[Offer]:
    """Mark every due Akte as offered in this round (idempotent per round) and audit the offer."""
    out: list[Offer] = []
    for akte in due(session, as_of, limit=limit):
        if akte.disposal_round != round_id:
            first = akte.disposal_status is None
            akte.disposal_status, akte.disposal_round = OFFERED, round_id
            o = offer_of(akte, plan)
            records.audit(session, actor=actor, role="system", action="akte.disposal_offered", target_type="akte",
                          target_id=akte.id, case_id=_first_case(session, akte.id),
                          details={"aktenzeichen": akte.aktenzeichen, "round": round_id, "rule": o.rule,
                                   "proposed_action": o.proposed_action, "again": not first})
        out.append(offer_of(akte, plan))
    session.flush()
    return out


def offered(session: Session, plan: Aktenplan) -> list[Offer]:
    rows = session.scalars(select(Akte).where(Akte.disposal_status == OFFERED)
                           .order_by(Akte.retention_until, Akte.aktenzeichen))
    return [offer_of(a, plan) for a in rows]


def end_round(session: Session, round_id: str, akte_ids: Iterable[str]) -> int:
    """A round ended without a decision on these Akten: they stay offered, for the next round."""
    n = 0
    for akte_id in akte_ids:
        akte = session.get(Akte, akte_id)
        if akte is not None and akte.disposal_round == round_id and akte.disposal_status == OFFERED:
            akte.disposal_round = None
            n += 1
    session.flush()
    return n


# -- legal hold --------------------------------------------------------------------------

def get_akte(session: Session, akte_id: str, *, lock: bool = False) -> Akte:
    q = select(Akte).where(Akte.id == akte_id)
    akte = session.scalar(q.with_for_update() if lock else q)
    if akte is None:
        raise NotFound(f"Akte {akte_id} not found")
    return akte


def set_legal_hold(session: Session, akte_id: str, *, reason: str, actor: str, role: str) -> tuple[Akte, str | None]:
    """Place a legal hold. An open offer is withdrawn; returns the Akte and the round that held the offer."""
    if not reason.strip():
        raise InvalidInput("a legal hold needs a reason")
    akte = get_akte(session, akte_id, lock=True)
    if akte.disposal_status in (ARCHIVED, DESTROYED):
        raise Conflict(f"Akte {akte.aktenzeichen} has already been {akte.disposal_status}")
    withdrawn_round = akte.disposal_round if akte.disposal_status == OFFERED else None
    akte.legal_hold, akte.legal_hold_reason = True, reason.strip()
    if akte.disposal_status == OFFERED:
        akte.disposal_status, akte.disposal_round = None, None
    records.audit(session, actor=actor, role=role, action="akte.legal_hold", target_type="akte", target_id=akte.id,
                  case_id=_first_case(session, akte.id), reason=reason.strip(),
                  details={"aktenzeichen": akte.aktenzeichen, "offer_withdrawn": withdrawn_round is not None})
    session.flush()
    return akte, withdrawn_round


def release_legal_hold(session: Session, akte_id: str, *, reason: str, actor: str, role: str) -> Akte:
    if not reason.strip():
        raise InvalidInput("releasing a legal hold needs a reason")
    akte = get_akte(session, akte_id, lock=True)
    if not akte.legal_hold:
        raise Conflict(f"Akte {akte.aktenzeichen} is not under legal hold")
    akte.legal_hold, akte.legal_hold_reason = False, None
    records.audit(session, actor=actor, role=role, action="akte.legal_hold_released", target_type="akte",
                  target_id=akte.id, case_id=_first_case(session, akte.id), reason=reason.strip(),
                  details={"aktenzeichen": akte.aktenzeichen})
    session.flush()
    return akte


# -- executing a decision ----------------------------------------------------------------

def check_disposable(session: Session, akte_id: str, round_id: str, *, lock: bool = False) -> Akte:
    """The Akte, if it is offered in this round and not under legal hold (re-checked at execution)."""
    akte = get_akte(session, akte_id, lock=lock)
    if akte.legal_hold:
        raise LegalHoldActive(f"Akte {akte.aktenzeichen} is under legal hold ({akte.legal_hold_reason}); "
                              "it cannot be disposed of")
    if akte.disposal_status != OFFERED or akte.disposal_round != round_id:
        raise NotOffered(f"Akte {akte.aktenzeichen} is not offered in round {round_id} "
                         f"(disposal status: {akte.disposal_status or 'kept'})")
    return akte


def done(session: Session, akte_id: str) -> DisposalRecord | None:
    return session.scalar(select(DisposalRecord).where(DisposalRecord.akte_id == akte_id))


def keep(session: Session, akte_id: str, *, round_id: str, retain_until: dt.date, reason: str, actor: str,
         role: str) -> Disposal:
    """Keep the Akte: retention extended to ``retain_until``, the offer withdrawn. Idempotent."""
    akte = get_akte(session, akte_id, lock=True)
    if akte.disposal_status is None and akte.retention_until == retain_until:
        return Disposal(akte.id, akte.aktenzeichen, "kept", retention_until=akte.retention_until)
    akte = check_disposable(session, akte_id, round_id)
    previous = akte.retention_until
    akte.retention_until, akte.disposal_status, akte.disposal_round = retain_until, None, None
    records.audit(session, actor=actor, role=role, action="akte.retention_extended", target_type="akte",
                  target_id=akte.id, case_id=_first_case(session, akte.id), reason=reason,
                  details={"aktenzeichen": akte.aktenzeichen, "round": round_id,
                           "previous": previous.isoformat() if previous else None,
                           "retention_until": retain_until.isoformat()})
    session.flush()
    return Disposal(akte.id, akte.aktenzeichen, "kept", retention_until=retain_until)


def dispose(session: Session, plan: Aktenplan, *, akte_id: str, round_id: str, action: str, actor: str, role: str,
            reason: str | None, confirmed_at: dt.datetime, archive_key: str | None = None,
            archive_sha256: str | None = None, now: dt.datetime | None = None) -> Disposal:
    """Remove the Akte's documents and personal data (rows only; objects: ``remove_released_objects``).

    ``action`` is ``archived`` (then ``archive_key``/``archive_sha256`` name the package handed
    over) or ``destroyed``. Idempotent: a second call returns the first outcome.
    """
    if action not in (ARCHIVED, DESTROYED):
        raise InvalidInput(f"unknown disposal action {action!r}")
    existing = done(session, akte_id)
    if existing is not None:
        return _from_record(existing)
    akte = check_disposable(session, akte_id, round_id, lock=True)
    now = now or utcnow()
    entry = plan_entry(plan, akte)
    vorgaenge = list(session.scalars(select(Vorgang).where(Vorgang.akte_id == akte.id)))
    case_ids = [v.id for v in vorgaenge]
    docs = list(session.scalars(select(Dokument).where(
        or_(Dokument.akte_id == akte.id, Dokument.vorgang_id.in_(case_ids)))))
    doc_ids = [d.id for d in docs]
    versions = list(session.scalars(select(Version).where(Version.dokument_id.in_(doc_ids))))
    letters = list(session.scalars(select(MailItem).where(
        or_(MailItem.case_id.in_(case_ids), MailItem.dokument_id.in_(doc_ids)))))
    kind_of = {d.id: d.kind for d in docs}
    inventory: list[dict[str, Any]] = [
        {"kind": kind_of.get(v.dokument_id, ""), "document": v.dokument_id, "version": v.number,
         "created_at": v.created_at.isoformat(), "sha256": v.sha256, "size": v.size, "key": v.object_key,
         "removed": False}
        for v in sorted(versions, key=lambda v: (v.created_at, v.dokument_id, v.number))]
    known = {i["key"] for i in inventory}
    for m in letters:  # the scanned original of a letter is a Version too; anything else is listed here
        if object_key(m.sha256) not in known:
            inventory.append({"kind": "Posteingang", "document": None, "version": None,
                              "created_at": m.received_at.isoformat(), "sha256": m.sha256, "size": m.size,
                              "key": object_key(m.sha256), "removed": False})
            known.add(object_key(m.sha256))

    # the audit event first, while the case still names its subject (the Auskunft finds it)
    audit_action = "akte.archived" if action == ARCHIVED else "akte.destroyed"
    details: dict[str, Any] = {"aktenzeichen": akte.aktenzeichen, "round": round_id, "rule": rule_text(akte, entry),
                               "documents": len(docs), "versions": len(versions), "letters": len(letters)}
    if archive_key:
        details.update(archive_key=archive_key, archive_sha256=archive_sha256)
    for case_id in case_ids or [None]:  # type: ignore[list-item]
        records.audit(session, actor=actor, role=role, action=audit_action, target_type="akte", target_id=akte.id,
                      case_id=case_id, reason=reason, details=details)

    if case_ids:  # messages about the case (reminders, escalations, "payment failed") go with it
        session.execute(delete(Notification).where(Notification.vorgang_id.in_(case_ids)))
    if doc_ids:
        session.execute(delete(Dispatch).where(Dispatch.dokument_id.in_(doc_ids)))
    for m in letters:
        session.delete(m)
    session.flush()
    if doc_ids:
        from eakte import search

        for doc_id in doc_ids:  # the full-text index holds the documents' text: it goes with them
            search.remove_document(session, doc_id)
        session.execute(delete(Version).where(Version.dokument_id.in_(doc_ids)))
        session.execute(delete(Dokument).where(Dokument.id.in_(doc_ids)))
    for v in vorgaenge:
        _blank_personal_data(v)
    akte.disposal_status, akte.disposal_round, akte.disposed_at = action, None, now
    record = DisposalRecord(
        akte_id=akte.id, aktenzeichen=akte.aktenzeichen, action=action, rule=rule_text(akte, entry),
        file_plan=akte.file_plan, retention_until=akte.retention_until, confirmed_by=actor,
        confirmed_at=confirmed_at, executed_at=now, documents=len(docs), bytes_removed=0,
        archive_key=archive_key, archive_sha256=archive_sha256, reason=reason, inventory=inventory)
    session.add(record)
    session.flush()
    out = _from_record(record)
    out.versions = len(versions)
    return out


def _blank_personal_data(v: Vorgang) -> None:
    """What identifies or describes the applicant goes; the process facts (service, department,
    status, dates, fee, who decided) stay for statistics and the auditor."""
    v.applicant, v.form, v.applicant_id, v.fingerprint = {}, {}, None, ""
    v.decision_reason = BLANK if v.decision_reason else None
    v.payment_url = None
    v.updated_at = utcnow()


def referenced(session: Session, bucket: str, key: str) -> bool:
    """Whether any remaining record still points to this object (deduplicated storage); the
    one rule of eakte/verify.py, which the sweep and refused uploads use too."""
    from eakte.verify import is_referenced

    return is_referenced(session, bucket, key)


def remove_released_objects(session: Session, store: BlobStore, akte_id: str) -> Disposal:
    """Remove the objects a disposal released that no remaining record refers to; record it.

    Idempotent: objects already removed are skipped; call it again after a crash.
    Runs in the caller's transaction (the record's inventory is updated with what was removed).
    """
    record = done(session, akte_id)
    if record is None:
        raise NotFound(f"no disposal record for Akte {akte_id}")
    inventory = [dict(i) for i in record.inventory]
    removed_bytes = record.bytes_removed
    by_key: dict[str, list[dict[str, Any]]] = {}
    for item in inventory:
        by_key.setdefault(item["key"], []).append(item)
    for key, items in by_key.items():
        if items[0]["removed"] or items[0].get("shared"):
            continue
        if referenced(session, store.bucket, key):
            for i in items:
                i["shared"] = True  # still part of another Akte: kept
            continue
        if store.exists(key):
            store.remove(key)
        removed_bytes += int(items[0]["size"])
        for i in items:
            i["removed"] = True
    record.inventory, record.bytes_removed = inventory, removed_bytes
    session.flush()
    return _from_record(record)


def _from_record(r: DisposalRecord) -> Disposal:
    keys = {i["key"]: i for i in r.inventory}
    return Disposal(akte_id=r.akte_id, aktenzeichen=r.aktenzeichen, action=r.action, record_id=r.id,
                    documents=r.documents, versions=sum(1 for i in r.inventory if i.get("version") is not None),
                    bytes_removed=r.bytes_removed,
                    objects_removed=sum(1 for i in keys.values() if i.get("removed")),
                    objects_kept_shared=sum(1 for i in keys.values() if i.get("shared")),
                    archive_key=r.archive_key, archive_sha256=r.archive_sha256, retention_until=r.retention_until,
                    released_keys=sorted(keys))


# -- hand-over to the archive -------------------------------------------------------------

ARCHIVE_PREFIX = "archive/"


@dataclass(frozen=True)
class ArchivePackage:
    key: str
    sha256: str
    size: int


def hand_over_to_archive(session: Session, store: BlobStore, plan: Aktenplan, akte_id: str, *, round_id: str,
                         exported_by: str, role: str) -> ArchivePackage:
    """Export the Akte as an xdomea Aussonderung package (message 0503, eakte/xdomea.py) and store
    it under ``archive/<file plan>/<Aktenzeichen>/`` in the object store, where the archive
    collects it. The package is deterministic (its ProzessID derives from its content), so a
    retry replaces the same object rather than adding a second one. The export is audited
    (``akte.exported``) by eakte/xdomea.py."""
    import tempfile

    from eakte import xdomea

    akte = get_akte(session, akte_id)
    with tempfile.TemporaryFile(prefix="aktenlauf-archive-") as tmp:
        summary = xdomea.export_akte(
            session, store, akte_id, tmp, exported_by=exported_by, role=role, reason=f"Aussonderung {round_id}",
            recipient="Archiv", message_type=xdomea.AUSSONDERUNG[0], aktenplan=plan)
        tmp.seek(0, 2)
        size = tmp.tell()
        tmp.seek(0)
        h = hashlib.sha256()
        while chunk := tmp.read(1024 * 1024):
            h.update(chunk)
        tmp.seek(0)
        key = f"{ARCHIVE_PREFIX}{akte.file_plan}/{akte.aktenzeichen}/{summary.filename}"
        store.client.put_object(store.bucket, key, tmp, size, content_type="application/zip",
                                metadata={"x-amz-meta-sha256": h.hexdigest()})
    return ArchivePackage(key=key, sha256=h.hexdigest(), size=size)


def _first_case(session: Session, akte_id: str) -> str | None:
    return session.scalar(select(Vorgang.id).where(Vorgang.akte_id == akte_id).order_by(Vorgang.created_at).limit(1))

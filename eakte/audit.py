"""The audit trail as a hash chain.

Every event carries the SHA-256 of its own canonical content and of the previous event
(``prev_hash``), so editing, inserting or deleting a row anywhere breaks the chain from
that event on; ``verify_chain`` names the first event that does not fit.

Appending takes a row lock on the single ``audit_head`` row (``UPDATE … RETURNING``): on
PostgreSQL that serialises concurrent appenders until their transactions commit, on SQLite
the UPDATE takes the database write lock. Either way no two events get the same ``seq``
or the same predecessor. The lock is held only by the transaction that audits, so keep
those transactions short (the API's are).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from eakte.models import AuditEvent, AuditHead, utcnow

GENESIS = "0" * 64


def _ts(at: dt.datetime) -> str:
    if at.tzinfo is None:
        at = at.replace(tzinfo=dt.UTC)
    return at.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def event_hash(
    *, seq: int, at: dt.datetime, actor: str, role: str, action: str, target_type: str, target_id: str,
    case_id: str | None, subject_id: str | None, reason: str | None, details: dict[str, Any] | None, prev_hash: str,
) -> str:
    canonical = json.dumps(
        {"seq": seq, "at": _ts(at), "actor": actor, "role": role, "action": action, "target_type": target_type,
         "target_id": target_id, "case_id": case_id, "subject_id": subject_id, "reason": reason,
         "details": details or {}, "prev": prev_hash},
        sort_keys=True, ensure_ascii=False, separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def hash_of(e: AuditEvent) -> str:
    return event_hash(seq=int(e.seq or 0), at=e.at, actor=e.actor, role=e.role, action=e.action,
                      target_type=e.target_type, target_id=e.target_id, case_id=e.case_id, subject_id=e.subject_id,
                      reason=e.reason, details=e.details, prev_hash=e.prev_hash or "")


def _lock_head(session: Session) -> tuple[int, str]:
    stmt = update(AuditHead).where(AuditHead.id == 1).values(seq=AuditHead.seq + 1).returning(
        AuditHead.seq, AuditHead.last_hash)
    row = session.execute(stmt).one_or_none()
    if row is not None:
        return int(row[0]), str(row[1])
    try:
        with session.begin_nested():
            session.execute(insert(AuditHead).values(id=1, seq=0, last_hash=GENESIS))
    except IntegrityError:
        pass
    row = session.execute(stmt).one()
    return int(row[0]), str(row[1])


def append(
    session: Session, *, actor: str, role: str, action: str, target_type: str, target_id: str,
    case_id: str | None = None, subject_id: str | None = None, reason: str | None = None,
    details: dict[str, Any] | None = None, at: dt.datetime | None = None,
) -> str:
    """Append one event to the chain, inside the caller's transaction; returns its hash.

    Three statements (advance and lock the head, insert, move the head's hash), Core only:
    every audited request pays this, and the head row stays locked until the caller commits.
    """
    seq, prev = _lock_head(session)
    at = at or utcnow()
    # stored with microsecond precision on both backends; hash what will be read back
    at = at.astimezone(dt.UTC).replace(microsecond=at.microsecond)
    details = dict(details or {})
    h = event_hash(seq=seq, at=at, actor=actor, role=role, action=action, target_type=target_type,
                   target_id=target_id, case_id=case_id, subject_id=subject_id, reason=reason, details=details,
                   prev_hash=prev)
    session.execute(insert(AuditEvent).values(
        seq=seq, at=at, actor=actor, role=role, action=action, target_type=target_type, target_id=target_id,
        case_id=case_id, subject_id=subject_id, reason=reason, details=details, prev_hash=prev, hash=h))
    session.execute(update(AuditHead).where(AuditHead.id == 1).values(last_hash=h))
    return h


@dataclass(frozen=True)
class ChainFinding:
    seq: int | None
    event_id: int | None
    problem: str

    def __str__(self) -> str:
        return f"audit event seq={self.seq} id={self.event_id}: {self.problem}"


def _walk(session: Session, batch: int = 5000) -> Iterator[AuditEvent]:
    last = -1
    while True:
        rows = session.scalars(
            select(AuditEvent).where(AuditEvent.seq > last).order_by(AuditEvent.seq).limit(batch)).all()
        if not rows:
            return
        yield from rows
        last = int(rows[-1].seq or 0)
        session.expunge_all()


def verify_chain(session: Session) -> list[ChainFinding]:
    """Re-hash every event in order. Returns the findings (empty = the chain is intact).

    The first broken link is reported precisely; after it, the walk re-anchors on the stored
    hashes so that one edited row yields one finding, not one per later event.
    """
    findings: list[ChainFinding] = []
    unchained = session.scalar(select(AuditEvent.id).where(AuditEvent.seq.is_(None)).limit(1))
    if unchained is not None:
        findings.append(ChainFinding(None, unchained, "event is not part of the chain (no seq)"))
    expected_prev = GENESIS
    expected_seq = 1
    for e in _walk(session):
        if e.seq != expected_seq:
            findings.append(ChainFinding(e.seq, e.id, f"sequence gap: expected seq {expected_seq} (events missing)"))
        if e.prev_hash != expected_prev:
            findings.append(ChainFinding(e.seq, e.id, "prev_hash does not match the previous event's hash"))
        if hash_of(e) != e.hash:
            findings.append(ChainFinding(e.seq, e.id, "content does not match its hash (the row was altered)"))
        expected_prev = e.hash or ""
        expected_seq = int(e.seq or 0) + 1
    head = session.get(AuditHead, 1)
    if head is not None and (head.seq != expected_seq - 1 or head.last_hash != expected_prev):
        findings.append(ChainFinding(head.seq, None, "the chain head does not match the last event (events removed at the end)"))
    return findings


class ReadAuditWindow:
    """Which reads this process has audited recently, so that a caller polling the same record
    (a portal asking for a case's status every few seconds) yields one audit event per window
    instead of one per poll — and the poll stays a read-only transaction.

    The event written for the first read says how long it stands for (``details``). Each
    process keeps its own memory, so N API processes write at most N events per caller,
    record and window. ``window_s`` 0 audits every read. Mark a key only after the
    transaction holding its event has committed, so a rolled-back event is written again.
    """

    def __init__(self, window_s: float, max_entries: int = 100_000, clock: Any = None) -> None:
        self.window_s = float(window_s)
        self.max_entries = max_entries
        self._clock = clock or time.monotonic
        self._seen: dict[tuple[str, ...], float] = {}
        self._lock = threading.Lock()

    def due(self, key: tuple[str, ...]) -> bool:
        if self.window_s <= 0:
            return True
        with self._lock:
            at = self._seen.get(key)
            return at is None or self._clock() - at >= self.window_s

    def mark(self, key: tuple[str, ...]) -> None:
        if self.window_s <= 0:
            return
        now = self._clock()
        with self._lock:
            if len(self._seen) >= self.max_entries:
                # drop what has expired; if everything is fresh, forget the oldest half
                self._seen = {k: t for k, t in self._seen.items() if now - t < self.window_s}
                if len(self._seen) >= self.max_entries:
                    keep = sorted(self._seen.items(), key=lambda kv: kv[1])[len(self._seen) // 2:]
                    self._seen = dict(keep)
            self._seen.pop(key, None)
            self._seen[key] = now

    def details(self) -> dict[str, Any]:
        return {"covers_repeated_reads_for_s": int(self.window_s)} if self.window_s > 0 else {}

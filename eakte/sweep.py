"""Removing orphaned objects: objects in the store that no record points to.

Every write puts the object first and commits the row that points to it afterwards
(eakte/records.py), so a crash leaves at worst an object without a record. The sweep
removes those once they are older than a grace period, and is safe against an upload in
flight:

* young objects are never touched (an upload's object exists before its row; and the
  blob store refreshes a deduplicated object's age when a new upload reuses it);
* right before each delete, inside one transaction, the reference is checked again and
  the object is stat'ed again: still unreferenced, still the same bytes (ETag), still old;
* each removal is an audit event (``object.swept``) committed with that check.

An upload whose row is written after the re-check still finds no object when its row is
written (the filing activities check that the object exists first) and fails cleanly: no
record ever points to a swept object.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from minio.error import S3Error
from sqlalchemy.orm import Session, sessionmaker

from eakte import records
from eakte.blobstore import BlobStore
from eakte.verify import (DEFAULT_GRACE_SECONDS, DEFAULT_PREFIX, MISSING_CODES, Orphan, find_orphans, is_old_enough,
                          is_referenced)


@dataclass
class SweepReport:
    bucket: str
    dry_run: bool
    grace_seconds: float
    objects_listed: int = 0
    removed: list[Orphan] = field(default_factory=list)
    kept: list[tuple[Orphan, str]] = field(default_factory=list)  # (object, why it was kept after all)

    @property
    def bytes_removed(self) -> int:
        return sum(o.size for o in self.removed)

    def as_json(self) -> dict[str, Any]:
        return {
            "bucket": self.bucket, "dry_run": self.dry_run, "grace_seconds": self.grace_seconds,
            "objects_listed": self.objects_listed, "bytes_removed": self.bytes_removed,
            "removed": [{"key": o.key, "size": o.size, "last_modified": _iso(o.last_modified)} for o in self.removed],
            "kept": [{"key": o.key, "why": why} for o, why in self.kept],
        }

    def render(self) -> str:
        verb = "would remove" if self.dry_run else "removed"
        lines = [f"sweep of bucket {self.bucket}: {self.objects_listed} objects listed, {verb} "
                 f"{len(self.removed)} orphan(s), {self.bytes_removed} bytes (grace {self.grace_seconds:g} s)"]
        lines += [f"  {verb} {o.key} ({o.size} bytes)" for o in self.removed]
        lines += [f"  kept {o.key}: {why}" for o, why in self.kept]
        return "\n".join(lines)


def _iso(at: dt.datetime | None) -> str | None:
    return at.isoformat() if at is not None else None


def _recheck(store: BlobStore, s: Session, o: Orphan, grace_seconds: float, now: dt.datetime) -> str | None:
    """Why the object must be kept after all, or None when it may go."""
    if is_referenced(s, o.bucket, o.key):
        return "a record points to it now"
    try:
        st = store.client.stat_object(o.bucket, o.key)
    except S3Error as exc:
        if exc.code in MISSING_CODES:
            return "already gone"
        raise
    if o.etag and (st.etag or "").strip('"') != o.etag:
        return "its content changed since it was listed"
    if not is_old_enough(st.last_modified, grace_seconds, now):
        return "it was written again within the grace period (an upload in flight)"
    return None


def sweep(sessions: sessionmaker[Session], store: BlobStore, *, actor: str,
          grace_seconds: float = DEFAULT_GRACE_SECONDS, prefix: str = DEFAULT_PREFIX, dry_run: bool = False,
          progress: Callable[[str], None] | None = None) -> SweepReport:
    report = SweepReport(bucket=store.bucket, dry_run=dry_run, grace_seconds=grace_seconds)
    orphans, report.objects_listed, _ = find_orphans(sessions, store, grace_seconds=grace_seconds, prefix=prefix)
    for o in orphans:
        if dry_run:
            report.removed.append(o)
            continue
        with sessions() as s, s.begin():
            why = _recheck(store, s, o, grace_seconds, dt.datetime.now(dt.UTC))
            if why is not None:
                report.kept.append((o, why))
                continue
            store.remove(o.key)  # a failure here rolls the audit event back with it
            records.audit(s, actor=actor, role="system", action="object.swept", target_type="object",
                          target_id=o.key.rsplit("/", 1)[-1][:64], reason="orphaned object (no record points to it)",
                          details={"bucket": o.bucket, "key": o.key, "size": o.size,
                                   "last_modified": _iso(o.last_modified)})
        report.removed.append(o)
        if progress is not None:
            progress(f"removed {o.key}")
    return report

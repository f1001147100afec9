"""Integrity verification of the eAkte: every Version's object re-hashed, objects nobody
records (orphans), and the audit hash chain.

Framework-free and read-only (it runs against a read replica too): it reports, it never
repairs. ``eakte/sweep.py`` removes orphans; everything else is for a human to look at.

What counts as a reference to an object is decided in one place, ``referenced_keys`` /
``is_referenced`` below: a Version row (bucket + key), a MailItem (content address of its
SHA-256), a DisposalRecord's archive package and a PrintBatch's PDF. Add new referencing tables there, or the
sweep will call their objects orphans.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import urllib3
from minio.error import S3Error
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session, sessionmaker

from eakte import audit as audit_log
from eakte.blobstore import CHUNK, BlobStore, object_key
from eakte.models import AuditEvent, DisposalRecord, Dokument, MailItem, PrintBatch, Version, Vorgang

DEFAULT_GRACE_SECONDS = 3600
DEFAULT_PREFIX = "sha256/"  # the content-addressed namespace the eAkte writes documents to
MISSING_CODES = ("NoSuchKey", "NoSuchObject", "ResourceNotFound")

# finding kinds
MISSING = "missing"              # a Version points to an object that is not in the store
ALTERED = "altered"              # the object's bytes do not hash to the recorded SHA-256
SIZE_MISMATCH = "size_mismatch"  # the bytes hash right but the recorded size differs
UNREADABLE = "unreadable"        # the store answered with an error other than "missing"
ORPHAN = "orphan"                # an object no record points to (older than the grace period)
AUDIT_CHAIN = "audit_chain"      # the audit hash chain is broken


@dataclass(frozen=True)
class Finding:
    kind: str
    detail: str
    bucket: str | None = None
    key: str | None = None
    document_id: str | None = None
    version: int | None = None
    case_id: str | None = None
    aktenzeichen: str | None = None
    seq: int | None = None
    event_id: int | None = None
    size: int | None = None
    last_modified: dt.datetime | None = None

    def describe(self) -> str:
        where: list[str] = []
        if self.aktenzeichen:
            where.append(self.aktenzeichen)
        if self.document_id:
            where.append(f"document {self.document_id} v{self.version}")
        if self.key:
            where.append(f"object {self.key}")
        if self.kind == AUDIT_CHAIN:
            where.append(f"audit event seq {self.seq}" + (f" (id {self.event_id})" if self.event_id else ""))
        return f"{self.kind:<13} {', '.join(where)}: {self.detail}"

    def as_json(self) -> dict[str, Any]:
        out = {k: v for k, v in asdict(self).items() if v is not None}
        if self.last_modified is not None:
            out["last_modified"] = self.last_modified.isoformat()
        return out


@dataclass
class VerifyReport:
    bucket: str
    started_at: dt.datetime
    versions_checked: int = 0
    objects_hashed: int = 0
    bytes_hashed: int = 0
    objects_listed: int = 0
    orphans_in_grace: int = 0
    audit_events_checked: int = 0
    checked: list[str] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not self.findings

    def of_kind(self, kind: str) -> list[Finding]:
        return [f for f in self.findings if f.kind == kind]

    def as_json(self) -> dict[str, Any]:
        return {
            "clean": self.clean, "bucket": self.bucket, "started_at": self.started_at.isoformat(),
            "checked": self.checked, "versions_checked": self.versions_checked,
            "objects_hashed": self.objects_hashed, "bytes_hashed": self.bytes_hashed,
            "objects_listed": self.objects_listed, "orphans_in_grace": self.orphans_in_grace,
            "audit_events_checked": self.audit_events_checked,
            "findings": [f.as_json() for f in self.findings],
        }

    def render(self) -> str:
        lines = [
            f"eAkte verification of bucket {self.bucket} ({self.started_at:%Y-%m-%d %H:%M:%S} UTC)",
            f"  versions checked   {self.versions_checked}",
            f"  objects re-hashed  {self.objects_hashed} ({self.bytes_hashed / 1e6:.1f} MB)",
        ]
        if "orphans" in self.checked:
            lines.append(f"  objects listed     {self.objects_listed} ({self.orphans_in_grace} unreferenced but "
                         "within the grace period, not reported)")
        if "audit_chain" in self.checked:
            lines.append(f"  audit events       {self.audit_events_checked}")
        if self.clean:
            lines.append("OK: no findings.")
        else:
            counts: dict[str, int] = {}
            for f in self.findings:
                counts[f.kind] = counts.get(f.kind, 0) + 1
            lines.append(f"FINDINGS: {len(self.findings)} (" + ", ".join(f"{k} {n}" for k, n in counts.items()) + ")")
            lines.extend("  " + f.describe() for f in self.findings)
        return "\n".join(lines)


# ----------------------------------------------------------------------------- references


def referenced_keys(session: Session, bucket: str) -> set[str]:
    """Every object key in ``bucket`` some record points to."""
    keys = set(session.scalars(select(Version.object_key).where(Version.bucket == bucket).distinct()))
    keys.update(object_key(sha) for sha in session.scalars(select(MailItem.sha256).distinct()))
    keys.update(k for k in session.scalars(
        select(DisposalRecord.archive_key).where(DisposalRecord.archive_key.is_not(None)).distinct()) if k)
    keys.update(session.scalars(select(PrintBatch.object_key).where(PrintBatch.bucket == bucket)))  # printed post
    return keys


def is_referenced(session: Session, bucket: str, key: str) -> bool:
    """The same rule as ``referenced_keys`` for one key (used right before a delete)."""
    if session.scalar(select(Version.id).where(Version.bucket == bucket, Version.object_key == key).limit(1)):
        return True
    sha = key.rsplit("/", 1)[-1]
    if object_key(sha) == key and session.scalar(select(MailItem.id).where(MailItem.sha256 == sha).limit(1)):
        return True
    if session.scalar(select(PrintBatch.batch_date).where(PrintBatch.bucket == bucket, PrintBatch.object_key == key)
                      .limit(1)) is not None:
        return True  # a day's print batch, handed out again on a reprint
    return session.scalar(select(DisposalRecord.id).where(DisposalRecord.archive_key == key).limit(1)) is not None


# ----------------------------------------------------------------------------- objects


@dataclass(frozen=True)
class _Hashed:
    sha256: str | None
    size: int
    error: str | None = None  # MISSING or UNREADABLE
    message: str = ""


def _hash_object(store: BlobStore, bucket: str, key: str) -> _Hashed:
    """Stream the object and hash it (constant memory, whatever its size)."""
    try:
        resp = store.client.get_object(bucket, key)
    except S3Error as exc:
        if exc.code in MISSING_CODES:
            return _Hashed(None, 0, MISSING, "the object is not in the store")
        return _Hashed(None, 0, UNREADABLE, f"the store refused the read: {exc.code}")
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        return _Hashed(None, 0, UNREADABLE, f"the store is unreachable: {exc}")
    h = hashlib.sha256()
    size = 0
    try:
        for chunk in resp.stream(CHUNK):
            h.update(chunk)
            size += len(chunk)
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        return _Hashed(None, size, UNREADABLE, f"the read broke off after {size} bytes: {exc}")
    finally:
        resp.close()
        resp.release_conn()
    return _Hashed(h.hexdigest(), size)


@dataclass(frozen=True)
class _VersionRow:
    version_id: str
    document_id: str
    number: int
    sha256: str
    size: int
    bucket: str
    key: str
    case_id: str | None
    aktenzeichen: str | None


def _versions(sessions: sessionmaker[Session], batch: int = 2000) -> Iterator[_VersionRow]:
    """All versions, in keyset-paginated batches (short read transactions)."""
    last = ""
    while True:
        with sessions() as s:
            rows = s.execute(
                select(Version.id, Version.dokument_id, Version.number, Version.sha256, Version.size, Version.bucket,
                       Version.object_key, Dokument.vorgang_id, Vorgang.aktenzeichen)
                .join(Dokument, Dokument.id == Version.dokument_id)
                .outerjoin(Vorgang, Vorgang.id == Dokument.vorgang_id)
                .where(Version.id > last).order_by(Version.id).limit(batch)).all()
        if not rows:
            return
        for r in rows:
            yield _VersionRow(*r)
        last = rows[-1][0]


def check_versions(sessions: sessionmaker[Session], store: BlobStore, report: VerifyReport,
                   progress: Callable[[str], None] | None = None) -> None:
    """Re-hash the object of every Version; identical objects (deduplicated) are read once."""
    seen: dict[tuple[str, str], _Hashed] = {}
    for v in _versions(sessions):
        report.versions_checked += 1
        got = seen.get((v.bucket, v.key))
        if got is None:
            got = _hash_object(store, v.bucket, v.key)
            seen[(v.bucket, v.key)] = got
            if got.error is None:
                report.objects_hashed += 1
                report.bytes_hashed += got.size
            if progress is not None and report.objects_hashed % 500 == 0 and report.objects_hashed:
                progress(f"{report.objects_hashed} objects re-hashed")
        if got.error is not None:
            report.findings.append(_at(v, got.error, got.message))
        elif got.sha256 != v.sha256:
            report.findings.append(_at(v, ALTERED, f"the bytes hash to {got.sha256}, the record says {v.sha256} "
                                                   f"({got.size} bytes stored, {v.size} recorded)", got.size))
        elif got.size != v.size:
            report.findings.append(_at(v, SIZE_MISMATCH, f"{got.size} bytes stored, {v.size} recorded", got.size))


def _at(v: _VersionRow, kind: str, detail: str, size: int | None = None) -> Finding:
    return Finding(kind, detail, bucket=v.bucket, key=v.key, document_id=v.document_id, version=v.number,
                   case_id=v.case_id, aktenzeichen=v.aktenzeichen, size=size)


@dataclass(frozen=True)
class Orphan:
    bucket: str
    key: str
    size: int
    last_modified: dt.datetime | None
    etag: str | None


def find_orphans(sessions: sessionmaker[Session], store: BlobStore, *, grace_seconds: float,
                 prefix: str = DEFAULT_PREFIX, now: dt.datetime | None = None) -> tuple[list[Orphan], int, int]:
    """Objects under ``prefix`` that no record points to and that are older than the grace period.

    Lists first, then loads the references: a row committed before the load is seen; an
    object written after the listing is not looked at. An upload writes its object before its
    row, so a young unreferenced object is an upload in flight: the grace period spares it.
    Returns (orphans, objects listed, unreferenced objects still within the grace period).
    """
    now = now or dt.datetime.now(dt.UTC)
    listed = []
    for obj in store.client.list_objects(store.bucket, prefix=prefix, recursive=True):
        if obj.object_name and not obj.is_dir:
            listed.append(Orphan(store.bucket, obj.object_name, int(obj.size or 0), obj.last_modified,
                                 (obj.etag or "").strip('"') or None))
    with sessions() as s:
        refs = referenced_keys(s, store.bucket)
    orphans: list[Orphan] = []
    young = 0
    for o in listed:
        if o.key in refs:
            continue
        if is_old_enough(o.last_modified, grace_seconds, now):
            orphans.append(o)
        else:
            young += 1
    return orphans, len(listed), young


def is_old_enough(last_modified: dt.datetime | None, grace_seconds: float, now: dt.datetime) -> bool:
    if last_modified is None:  # the store did not say: assume it is young (never delete on doubt)
        return grace_seconds <= 0
    if last_modified.tzinfo is None:
        last_modified = last_modified.replace(tzinfo=dt.UTC)
    return (now - last_modified).total_seconds() >= grace_seconds


# ----------------------------------------------------------------------------- audit chain


def _snapshot(s: Session) -> None:
    """Make the session's transaction read one consistent snapshot (PostgreSQL: REPEATABLE READ;
    SQLite: an explicit BEGIN, which the driver otherwise leaves out for reads; WAL keeps the snapshot)."""
    dialect = s.get_bind().dialect.name
    if dialect == "postgresql":
        s.connection(execution_options={"isolation_level": "REPEATABLE READ"})
    elif dialect == "sqlite":
        s.execute(text("BEGIN"))


def check_audit_chain(sessions: sessionmaker[Session], report: VerifyReport) -> None:
    with sessions() as s, s.begin():
        _snapshot(s)  # appends go on meanwhile: walk the events and compare the head in one snapshot
        report.audit_events_checked = int(s.scalar(select(func.count(AuditEvent.id))) or 0)
        for cf in audit_log.verify_chain(s):
            report.findings.append(Finding(AUDIT_CHAIN, cf.problem, seq=cf.seq, event_id=cf.event_id))


# ----------------------------------------------------------------------------- all of it


def verify(sessions: sessionmaker[Session], store: BlobStore, *, grace_seconds: float = DEFAULT_GRACE_SECONDS,
           prefix: str = DEFAULT_PREFIX, objects: bool = True, orphans: bool = True, chain: bool = True,
           progress: Callable[[str], None] | None = None) -> VerifyReport:
    report = VerifyReport(bucket=store.bucket, started_at=dt.datetime.now(dt.UTC))
    if objects:
        report.checked.append("objects")
        check_versions(sessions, store, report, progress)
    if orphans:
        report.checked.append("orphans")
        found, listed, young = find_orphans(sessions, store, grace_seconds=grace_seconds, prefix=prefix,
                                            now=report.started_at)
        report.objects_listed, report.orphans_in_grace = listed, young
        report.findings.extend(
            Finding(ORPHAN, "no Version, mail item or disposal record points to this object", bucket=o.bucket,
                    key=o.key, size=o.size, last_modified=o.last_modified) for o in found)
    if chain:
        report.checked.append("audit_chain")
        check_audit_chain(sessions, report)
    return report

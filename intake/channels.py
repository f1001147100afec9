"""One way into the mailroom for every channel (API upload, watched folder, e-mail, IMAP).

:func:`submit_letter` registers an incoming file: it copies it once (hashing as it goes),
checks its type (a scan: PDF/PNG/TIFF/JPEG; an e-mail: RFC 822, parsed within limits), and
then either starts its :class:`~workflows.mailroom.MailItemWorkflow` or records it as a
duplicate.

Duplicates (same SHA-256, same channel) are decided atomically by Temporal: the workflow id is
derived from (eAkte bucket, channel, SHA-256) and started with ``REJECT_DUPLICATE``, so of five
deliveries of the same file at the same moment exactly one starts a workflow; the others get
"already started" and are recorded as duplicates. Temporal forgets closed workflows after the
namespace's retention period, so the mail register is asked first: an original registered long
ago is found there. The bucket is part of the id because several eAktes (test stacks,
municipalities on one cluster) may share a Temporal namespace.

A duplicate is visible, not silently dropped: a ``mail_item`` row with status ``duplicate`` and
``duplicate_of`` the original, audited as ``mail.duplicate``; no workflow, no document, and no
second object (the store is content-addressed). It is written here, not by an activity, because
there is no workflow to write it: it is the register's note that the delivery happened.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Literal, Protocol

import structlog
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from temporalio.client import Client
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from aktenlauf.errors import (
    InvalidInput,
    PayloadTooLarge,
    UnacceptableFile,
    Unavailable,
    UnsupportedMediaType,
)
from aktenlauf.settings import Settings
from eakte import records
from eakte.blobstore import BlobRef, BlobStore, Spooled, TooLarge
from eakte.db import transaction
from eakte.models import MailItem
from intake.email_intake import (
    CONTENT_TYPES,
    EML_CONTENT_TYPE,
    EXTENSIONS,
    EmailLimits,
    EmailRejected,
    looks_like_email,
    neutral_filename,
    parse_email_file,
)
from intake.sniff import detect_kind
from workflows import contracts as c

log = structlog.get_logger(__name__)

#: channel names as stored in mail_item.channel (duplicates are per channel)
API, FOLDER, EMAIL, IMAP = "api", "folder", "email", "imap"
Accept = Literal["scan", "email", "any"]
START_ATTEMPTS = 4


class IntakeDeps(Protocol):
    """What a channel needs; ``api.context.ApiContext`` is one, :class:`Services` another."""

    settings: Settings
    sessions: sessionmaker[Session]
    store: BlobStore

    def client(self) -> Client: ...


@dataclass
class Services:
    """The dependencies of a channel process (watcher, IMAP poller)."""

    settings: Settings
    sessions: sessionmaker[Session]
    store: BlobStore
    temporal: Client

    def client(self) -> Client:
        return self.temporal


@dataclass(frozen=True)
class Submitted:
    """What the sender is told: the new item (status ``received``) or the duplicate's row."""

    item_id: str
    status: str  # received | duplicate
    channel: str
    filename: str
    content_type: str
    sha256: str
    size: int
    received_at: dt.datetime
    duplicate_of: str | None = None
    origin: dict[str, str] = field(default_factory=dict)

    @property
    def duplicate(self) -> bool:
        return self.duplicate_of is not None


def email_limits(settings: Settings) -> EmailLimits:
    return EmailLimits(max_bytes=settings.max_upload_bytes, max_attachments=settings.mail_max_attachments,
                       max_depth=settings.mail_max_nesting, max_header_bytes=settings.mail_max_header_bytes)


def mail_item_id(bucket: str, channel: str, sha256: str) -> str:
    """The workflow id (= mail item id) of the first delivery of these bytes on this channel."""
    digest = hashlib.sha256(f"{bucket}\x00{channel}\x00{sha256}".encode()).hexdigest()
    return "mail-" + digest[:32]


@dataclass(frozen=True)
class _Checked:
    kind: str  # pdf png tiff jpeg eml
    filename: str
    content_type: str
    sha256: str
    size: int
    ref: BlobRef | None  # None: a duplicate found in the register, nothing stored
    duplicate_of: str | None


async def submit_letter(deps: IntakeDeps, source: BinaryIO, *, filename: str | None, channel: str,
                        submitted_by: str, accept: Accept = "scan", origin: dict[str, str] | None = None,
                        received_at: dt.datetime | None = None) -> Submitted:
    """Register one incoming file on ``channel``; raises a 4xx domain error for a file the
    mailroom does not take (empty, too large, wrong type, an e-mail beyond the limits)."""
    received_at = received_at or dt.datetime.now(dt.UTC)
    origin = {str(k)[:64]: str(v)[:500] for k, v in (origin or {}).items()}
    checked = await asyncio.to_thread(_check_and_store, deps, source, filename, channel, accept)
    if checked.duplicate_of is not None:
        return await asyncio.to_thread(_record_duplicate, deps.sessions, checked, channel, submitted_by, origin,
                                       received_at, checked.duplicate_of)
    assert checked.ref is not None
    item_id = mail_item_id(deps.store.bucket, channel, checked.sha256)
    ref = c.DocumentRef(bucket=checked.ref.bucket, key=checked.ref.key, sha256=checked.sha256, size=checked.size,
                        filename=checked.filename, content_type=checked.content_type)
    inp = c.MailInput(item_id=item_id, ref=ref, channel=channel, submitted_by=submitted_by,
                      ocr_task_queue=deps.settings.ocr_task_queue, received_at=received_at.isoformat(), origin=origin)
    try:
        await _start(deps, inp)
    except WorkflowAlreadyStartedError:
        return await asyncio.to_thread(_record_duplicate, deps.sessions, checked, channel, submitted_by, origin,
                                       received_at, item_id)
    log.info("mail.submitted", item_id=item_id, channel=channel, kind=checked.kind, size=checked.size)
    return Submitted(item_id=item_id, status="received", channel=channel, filename=checked.filename,
                     content_type=checked.content_type, sha256=checked.sha256, size=checked.size,
                     received_at=received_at, origin=origin)


async def _start(deps: IntakeDeps, inp: c.MailInput) -> None:
    from workflows.mailroom import MailItemWorkflow

    for attempt in range(START_ATTEMPTS):
        try:
            await deps.client().start_workflow(MailItemWorkflow.run, inp, id=inp.item_id,
                                               task_queue=deps.settings.task_queue,
                                               id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE)
            return
        except RPCError as exc:
            # racing starts of one id may be turned away ("aborted") instead of answered "already started"
            contention = exc.status in (RPCStatusCode.ABORTED, RPCStatusCode.RESOURCE_EXHAUSTED)
            if not contention or attempt == START_ATTEMPTS - 1:
                raise Unavailable(f"the workflow service did not accept the letter: {exc.message}") from exc
            await asyncio.sleep(0.05 * 2 ** attempt)


def _check_and_store(deps: IntakeDeps, source: BinaryIO, filename: str | None, channel: str,
                     accept: Accept) -> _Checked:
    limit = deps.settings.max_upload_bytes
    try:
        with deps.store.spool(source, max_bytes=limit) as spooled:
            kind, name, ctype = _classify(spooled, filename, accept, deps.settings)
            original = _registered_original(deps.sessions, channel, spooled.sha256)
            if original is not None:
                return _Checked(kind, name, ctype, spooled.sha256, spooled.size, None, original)
            ref = deps.store.put_spooled(spooled, ctype)
            return _Checked(kind, name, ctype, spooled.sha256, spooled.size, ref, None)
    except TooLarge as exc:
        raise PayloadTooLarge(f"the file is larger than {limit // (1024 * 1024)} MiB") from exc


def _classify(spooled: Spooled, filename: str | None, accept: Accept, settings: Settings) -> tuple[str, str, str]:
    if spooled.size == 0:
        raise InvalidInput("the file is empty")
    with spooled.path.open("rb") as fh:
        head = fh.read(65536)
    kind = detect_kind(head[:16])
    if kind is not None and accept in ("scan", "any"):
        return kind, neutral_filename(filename, default="dokument", ext=EXTENSIONS[kind]), CONTENT_TYPES[kind]
    if accept in ("email", "any") and looks_like_email(head):
        try:
            parse_email_file(spooled.path, email_limits(settings))
        except EmailRejected as rejected:
            if rejected.code == "email_too_large":
                raise PayloadTooLarge(rejected.reason) from rejected
            raise UnacceptableFile(rejected.code.replace("_", "-"), rejected.reason) from rejected
        return "eml", neutral_filename(filename, default="nachricht", ext=".eml"), EML_CONTENT_TYPE
    wanted = {"scan": "PDF, PNG, TIFF and JPEG files", "email": "e-mails (message/rfc822, .eml)",
              "any": "PDF, PNG, TIFF and JPEG files and e-mails (.eml)"}[accept]
    raise UnsupportedMediaType(f"only {wanted} are accepted")


def _registered_original(sessions: sessionmaker[Session], channel: str, sha256: str) -> str | None:
    """An original of these bytes on this channel in the register (also one Temporal forgot)."""
    with transaction(sessions) as s:
        return s.scalar(select(MailItem.id).where(
            MailItem.channel == channel, MailItem.sha256 == sha256, MailItem.duplicate_of.is_(None),
            MailItem.status != "duplicate").order_by(MailItem.received_at).limit(1))


def _record_duplicate(sessions: sessionmaker[Session], checked: _Checked, channel: str, submitted_by: str,
                      origin: dict[str, str], received_at: dt.datetime, original_id: str) -> Submitted:
    item_id = "mail-" + uuid.uuid4().hex
    reason = f"Diese Datei ist auf diesem Weg bereits eingegangen ({original_id}) und wird nicht erneut verarbeitet."
    with transaction(sessions) as s:
        s.add(MailItem(id=item_id, received_at=received_at, channel=channel, filename=checked.filename,
                       content_type=checked.content_type, sha256=checked.sha256, size=checked.size, dokument_id=None,
                       status="duplicate", reason_code="duplicate", reason=reason, submitted_by=submitted_by,
                       origin=origin, duplicate_of=original_id, blank_pages={}, suggestions=[]))
        records.audit(s, actor=submitted_by, role="mailroom", action="mail.duplicate", target_type="mail_item",
                      target_id=item_id, details={"duplicate_of": original_id, "channel": channel,
                                                  "sha256": checked.sha256})
    log.info("mail.duplicate", item_id=item_id, duplicate_of=original_id, channel=channel)
    return Submitted(item_id=item_id, status="duplicate", channel=channel, filename=checked.filename,
                     content_type=checked.content_type, sha256=checked.sha256, size=checked.size,
                     received_at=received_at, duplicate_of=original_id, origin=origin)


async def connect_services(settings: Settings) -> Services:
    """Build the dependencies of a channel process (watcher, IMAP poller)."""
    from aktenlauf.temporal import connect
    from aktenlauf.wiring import blob_store, session_factory

    store = blob_store(settings)
    await asyncio.to_thread(store.ensure_bucket)
    return Services(settings=settings, sessions=session_factory(settings), store=store,
                    temporal=await connect(settings))


def path_origin(path: Path, root: Path) -> dict[str, str]:
    try:
        rel = str(path.relative_to(root))
    except ValueError:
        rel = path.name
    return {"path": rel}

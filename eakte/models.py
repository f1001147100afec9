"""The eAkte's records: Akte → Vorgang → Dokument → Version, plus the case read model,
the mailroom register and the audit log.

Framework-free SQLAlchemy 2 (typed ``Mapped[...]``); runs on SQLite and PostgreSQL.
A Vorgang is one case (one workflow); its columns are the read model the API lists
from. Only activities write these rows — each case workflow is the single writer of
its case.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy import JSON, Dialect, TypeDecorator, BigInteger, Boolean, Date, DateTime, ForeignKey, Index, Integer, String, Text, UniqueConstraint, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def new_id() -> str:
    return uuid.uuid4().hex


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class UTCDateTime(TypeDecorator[dt.datetime]):
    """Timestamps are stored and returned as UTC-aware datetimes, also on SQLite (which
    keeps no time zone and would hand back naive values)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        return value

    def process_result_value(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        return value


class Base(DeclarativeBase):
    type_annotation_map = {dt.datetime: UTCDateTime(), dict[str, Any]: JSON}


class AktenzeichenCounter(Base):
    """Next sequence number per (file-plan number, year). Only ever increases."""

    __tablename__ = "aktenzeichen_counter"
    file_plan: Mapped[str] = mapped_column(String(16), primary_key=True)
    year: Mapped[int] = mapped_column(Integer, primary_key=True)
    last_seq: Mapped[int] = mapped_column(Integer, default=0)


class Akte(Base):
    __tablename__ = "akte"
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    aktenzeichen: Mapped[str] = mapped_column(String(40), unique=True)
    file_plan: Mapped[str] = mapped_column(String(16))
    year: Mapped[int] = mapped_column(Integer)
    seq: Mapped[int] = mapped_column(Integer)
    title: Mapped[str] = mapped_column(String(200))
    department: Mapped[str | None] = mapped_column(String(64), index=True)
    status: Mapped[str] = mapped_column(String(16), default="open")  # open | closed
    confidential: Mapped[bool] = mapped_column(Boolean, default=False)
    # Vertraulichkeit: when confidential, only principals holding one of these roles (besides the
    # department's membership) see the Akte; admins still see metadata.
    confidential_roles: Mapped[list[str]] = mapped_column(JSON, default=list)
    retention_years: Mapped[int] = mapped_column(Integer, default=10)
    retention_until: Mapped[dt.date | None] = mapped_column(Date)
    legal_hold: Mapped[bool] = mapped_column(Boolean, default=False)
    legal_hold_reason: Mapped[str | None] = mapped_column(Text)
    # Aussonderung: None while kept; offered → archived | destroyed
    disposal_status: Mapped[str | None] = mapped_column(String(16), index=True)
    disposal_round: Mapped[str | None] = mapped_column(String(100))  # workflow id of the round holding the offer
    disposed_at: Mapped[dt.datetime | None]
    imported_from: Mapped[str | None] = mapped_column(String(200))  # source system of an xdomea import
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    closed_at: Mapped[dt.datetime | None]
    vorgaenge: Mapped[list[Vorgang]] = relationship(back_populates="akte")
    __table_args__ = (UniqueConstraint("file_plan", "year", "seq"),)


#: the statuses a clerk's inbox lists (eakte/inbox.py INBOX_STATUSES), as the partial inbox index's
#: condition; the inbox query repeats it word for word so that SQLite also uses the index
OPEN_INBOX_SQL = "status IN ('awaiting_decision', 'awaiting_cosign', 'awaiting_documents')"


class Vorgang(Base):
    """One case: one workflow. Its columns are the API's read model."""

    __tablename__ = "vorgang"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # = case id = workflow id
    akte_id: Mapped[str] = mapped_column(ForeignKey("akte.id"), index=True)
    aktenzeichen: Mapped[str] = mapped_column(String(40), unique=True)
    #: short reference number given to the applicant at submission (printed on our letters)
    applicant_ref: Mapped[str | None] = mapped_column(String(16), unique=True)
    service_key: Mapped[str | None] = mapped_column(String(32), index=True)
    service_name: Mapped[str | None] = mapped_column(String(200))
    department: Mapped[str | None] = mapped_column(String(64), index=True)
    status: Mapped[str] = mapped_column(String(32), index=True)
    step: Mapped[str] = mapped_column(String(32))
    integrator: Mapped[str] = mapped_column(String(200), index=True)
    applicant_id: Mapped[str | None] = mapped_column(String(200), index=True)
    applicant: Mapped[dict[str, Any]] = mapped_column(default=dict)
    form: Mapped[dict[str, Any]] = mapped_column(default=dict)
    fingerprint: Mapped[str] = mapped_column(String(64))
    fee_cents: Mapped[int] = mapped_column(Integer, default=0)
    payment_id: Mapped[str | None] = mapped_column(String(64))
    payment_url: Mapped[str | None] = mapped_column(Text)
    payment_status: Mapped[str | None] = mapped_column(String(16))
    decision: Mapped[str | None] = mapped_column(String(16))
    decided_by: Mapped[str | None] = mapped_column(String(200))
    decision_reason: Mapped[str | None] = mapped_column(Text)
    due_on: Mapped[dt.date | None] = mapped_column(Date)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    closed_at: Mapped[dt.datetime | None]
    # -- casework (migration 0006) -----------------------------------------------------------
    #: the integrator's URL for signed webhooks (dispatch channel "webhook")
    notify_url: Mapped[str | None] = mapped_column(Text)
    #: the processing deadline while it runs; NULL while it is paused (waiting for the citizen)
    deadline_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    escalated_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    #: Nachforderung: what the citizen was asked for, and until when
    waiting_for: Mapped[list[str]] = mapped_column(JSON, default=list)
    waiting_until: Mapped[dt.date | None] = mapped_column(Date)
    #: Vier-Augen-Prinzip: who decided first, who co-signed
    first_decision_by: Mapped[str | None] = mapped_column(String(200))
    cosigned_by: Mapped[str | None] = mapped_column(String(200))
    # -- work lists (migration 0009, eakte/inbox.py): who works on the case, how urgent it is
    #: the clerk who claimed the case (or a team lead assigned it to); NULL: open to the department
    assignee: Mapped[str | None] = mapped_column(String(200), index=True)
    assigned_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    #: low | normal | high | urgent, set by the department's team lead
    priority: Mapped[str] = mapped_column(String(8), default="normal", server_default="normal")
    # -- payments (migration 0007): the amount asked for by the current payment, refunded so far
    payment_amount_cents: Mapped[int | None] = mapped_column(Integer)
    refunded_cents: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    akte: Mapped[Akte] = relationship(back_populates="vorgaenge")
    # the clerk's inbox: open decisions of a department by due date (migration 0004)
    __table_args__ = (Index("ix_vorgang_inbox", "department", "status", "due_on", "created_at"),
                      # the inbox's own order over the open cases only: a page is read off the index,
                      # not sorted from every open case (migration 0010, eakte/inbox.py OPEN_INBOX)
                      Index("ix_vorgang_open_due", "department", text("(due_on IS NULL)"), "due_on", "created_at",
                            "id", sqlite_where=text(OPEN_INBOX_SQL), postgresql_where=text(OPEN_INBOX_SQL)))


class Dokument(Base):
    """A document. Immutable once filed: a change is a new Version.

    ``akte_id`` is empty while a letter waits in the mailroom, before it is filed.
    """

    __tablename__ = "dokument"
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    idempotency_key: Mapped[str] = mapped_column(String(200), unique=True)
    akte_id: Mapped[str | None] = mapped_column(ForeignKey("akte.id"), index=True)
    vorgang_id: Mapped[str | None] = mapped_column(ForeignKey("vorgang.id"), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # Antrag Nachweis Scan Bescheid Urkunde Vermerk Schreiben
    title: Mapped[str] = mapped_column(String(300))
    filename: Mapped[str] = mapped_column(String(300))
    content_type: Mapped[str] = mapped_column(String(100))
    channel: Mapped[str] = mapped_column(String(32), default="api")
    sender: Mapped[str | None] = mapped_column(String(200))
    public: Mapped[bool] = mapped_column(Boolean, default=False)  # visible to the applicant's portal
    verification_code: Mapped[str | None] = mapped_column(String(20), unique=True)
    text: Mapped[str | None] = mapped_column(Text)
    received_at: Mapped[dt.datetime | None]  # when it reached the authority (letters, uploads)
    #: the mailroom item this document arrived with (original scan, e-mail body, attachments)
    mail_item_id: Mapped[str | None] = mapped_column(String(64), index=True)
    created_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    versions: Mapped[list[Version]] = relationship(back_populates="dokument", order_by="Version.number")


class Version(Base):
    __tablename__ = "version"
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    dokument_id: Mapped[str] = mapped_column(ForeignKey("dokument.id"), index=True)
    number: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    size: Mapped[int] = mapped_column(BigInteger)
    bucket: Mapped[str] = mapped_column(String(64))
    object_key: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(16), default="original")  # original | processed
    created_by: Mapped[str] = mapped_column(String(200))
    reason: Mapped[str | None] = mapped_column(Text)
    idempotency_key: Mapped[str | None] = mapped_column(String(200), unique=True)  # later versions only
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    dokument: Mapped[Dokument] = relationship(back_populates="versions")
    __table_args__ = (UniqueConstraint("dokument_id", "number"),)


class DokumentSearch(Base):
    """A document's full-text index entry (eakte/search.py, migration 0003). On PostgreSQL the
    table also has a ``tsv`` tsvector column (GIN index) that is written by SQL only; on SQLite
    the terms live in the FTS5 table ``dokument_fts`` whose rowid is ``id``."""

    __tablename__ = "dokument_search"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    dokument_id: Mapped[str] = mapped_column(ForeignKey("dokument.id", ondelete="CASCADE"), unique=True)
    doc_date: Mapped[dt.datetime] = mapped_column(index=True)  # received_at, else created_at
    # Copies of what access checks and filters need, so a search never joins the wide document,
    # case and Akte rows for every candidate (kept current by eakte/search.py).
    vorgang_id: Mapped[str | None] = mapped_column(String(64))
    department: Mapped[str | None] = mapped_column(String(64))
    service_key: Mapped[str | None] = mapped_column(String(32))
    kind: Mapped[str] = mapped_column(String(16), default="")
    integrator: Mapped[str | None] = mapped_column(String(200))
    public: Mapped[bool] = mapped_column(Boolean, default=False)
    created_by: Mapped[str] = mapped_column(String(200), default="")
    confidential: Mapped[bool] = mapped_column(Boolean, default=False)
    confidential_roles: Mapped[list[str]] = mapped_column(JSON, default=list)
    akte_closed: Mapped[bool] = mapped_column(Boolean, default=False)
    is_letter: Mapped[bool] = mapped_column(Boolean, default=False)  # in the mailroom, not yet filed


class TimelineEvent(Base):
    """A case's history. ``key`` makes recording idempotent under activity retries."""

    __tablename__ = "timeline_event"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    key: Mapped[str] = mapped_column(String(200), unique=True)
    vorgang_id: Mapped[str] = mapped_column(ForeignKey("vorgang.id"), index=True)
    at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    step: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(32))
    public: Mapped[bool] = mapped_column(Boolean, default=True)
    message: Mapped[str] = mapped_column(Text)


class Dispatch(Base):
    """A document sent to the applicant over one channel (portal | email | post | webhook).

    ``key`` (case, document, channel) makes it exactly-once: a retried activity finds the row and
    never sends again once ``status`` is ``sent``. See activities/dispatch.py for the states.
    """

    __tablename__ = "dispatch"
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    key: Mapped[str] = mapped_column(String(200), unique=True)
    vorgang_id: Mapped[str] = mapped_column(ForeignKey("vorgang.id"), index=True)
    dokument_id: Mapped[str] = mapped_column(ForeignKey("dokument.id"))
    channel: Mapped[str] = mapped_column(String(32))
    at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    # -- dispatch channels (migration 0008); rows of the first dispatch activity are 'sent' portal rows
    #: queued (post: waits for the print batch) | sending (claimed; SMTP/HTTP under way) | sent | failed
    status: Mapped[str] = mapped_column(String(16), default="sent", server_default="sent")
    #: which rule chose the channel: workflow | applicant_choice | catalog_default | catalog_fallback |
    #: portal_fallback; with the reasons in ``decision``
    rule: Mapped[str | None] = mapped_column(String(24))
    decision: Mapped[str | None] = mapped_column(Text)
    #: where it went: {"email": ...} | {"url": ...} | {"name": ..., "address_lines": [...]} (post)
    recipient: Mapped[dict[str, Any]] = mapped_column(default=dict)
    #: the document version sent
    sha256: Mapped[str | None] = mapped_column(String(64))
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    last_error: Mapped[str | None] = mapped_column(Text)
    #: when the current 'sending' claim was taken (a second claim waits out the lease)
    claimed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    sent_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    #: e-mail: the Message-ID (derived from ``key``; a re-send after a crash carries the same one)
    message_id: Mapped[str | None] = mapped_column(String(200))
    #: post: the day's print batch the letter belongs to (local date) and when it was printed
    batch_date: Mapped[dt.date | None] = mapped_column(Date)
    printed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    __table_args__ = (Index("ix_dispatch_batch", "channel", "batch_date"),
                      Index("ix_dispatch_document", "vorgang_id", "dokument_id"))


class MailItem(Base):
    """A letter registered by the digital mailroom (Poststelle)."""

    __tablename__ = "mail_item"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # = workflow id
    received_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    channel: Mapped[str] = mapped_column(String(32))
    filename: Mapped[str] = mapped_column(String(300))
    content_type: Mapped[str] = mapped_column(String(100))
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    size: Mapped[int] = mapped_column(BigInteger)
    dokument_id: Mapped[str | None] = mapped_column(ForeignKey("dokument.id"))
    status: Mapped[str] = mapped_column(String(16), index=True)  # received processing filed triage failed
    reason_code: Mapped[str | None] = mapped_column(String(40))
    reason: Mapped[str | None] = mapped_column(Text)
    pages: Mapped[int | None] = mapped_column(Integer)
    blank_pages: Mapped[dict[str, Any]] = mapped_column(default=dict)
    text_preview: Mapped[str | None] = mapped_column(Text)
    detected_reference: Mapped[str | None] = mapped_column(String(40))
    case_id: Mapped[str | None] = mapped_column(ForeignKey("vorgang.id"))
    submitted_by: Mapped[str] = mapped_column(String(200))
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    # migration 0005 (issue 4: channels, duplicates, separator splits, classification, triage)
    #: channel-specific provenance: watched-folder path, e-mail Message-ID/From/Subject, ...
    origin: Mapped[dict[str, Any]] = mapped_column(default=dict)
    #: set on a re-delivered file (same sha256, same channel): the item that was processed
    duplicate_of: Mapped[str | None] = mapped_column(String(64), index=True)
    #: the scanned stack (separator pages) or triage item this letter was split from / merged into
    parent_id: Mapped[str | None] = mapped_column(String(64), index=True)
    #: how the letter found its case: aktenzeichen | qr | applicant_ref | classified | mailroom
    match_method: Mapped[str | None] = mapped_column(String(24))
    #: department a mailroom clerk routed the letter to (status "routed")
    department: Mapped[str | None] = mapped_column(String(64), index=True)
    #: classification result: [{"service_key", "department", "score", "reasons": [...]}, ...] best first
    suggestions: Mapped[list[Any]] = mapped_column(JSON, default=list)
    __table_args__ = (Index("ix_mail_item_channel_sha256", "channel", "sha256"),)


class MailRoutingDecision(Base):
    """A triage action on a letter; people's routing choices are what the classifier learns from."""

    __tablename__ = "mail_routing_decision"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    #: one row per triage action (workflow id + action number): a retried activity adds nothing
    key: Mapped[str] = mapped_column(String(200), unique=True)
    item_id: Mapped[str] = mapped_column(String(64), index=True)
    action: Mapped[str] = mapped_column(String(16))  # route | new_case | file | split | merge | close
    #: a person's routing choice the classifier learns from (not the system's own, not split/close)
    learn: Mapped[bool] = mapped_column(Boolean, default=False)
    service_key: Mapped[str | None] = mapped_column(String(32), index=True)
    department: Mapped[str | None] = mapped_column(String(64))
    #: the letter's normalised terms (intake.classify.terms), not its text
    terms: Mapped[list[Any]] = mapped_column(JSON, default=list)
    #: what the classifier had suggested first (a correction if it differs)
    suggested_service_key: Mapped[str | None] = mapped_column(String(32))
    actor: Mapped[str] = mapped_column(String(200))
    decided_at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)


class AuditEvent(Base):
    """Who did what to which record, and why. Reads are recorded too.

    Events form a hash chain: ``hash`` = SHA-256 over the event's canonical fields and
    ``prev_hash`` (the previous event's hash, by ``seq``). See eakte/audit.py.
    """

    __tablename__ = "audit_event"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    seq: Mapped[int | None] = mapped_column(BigInteger, unique=True)
    at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(String(200), index=True)
    role: Mapped[str] = mapped_column(String(32))
    action: Mapped[str] = mapped_column(String(40), index=True)
    target_type: Mapped[str] = mapped_column(String(32))
    target_id: Mapped[str] = mapped_column(String(64), index=True)
    case_id: Mapped[str | None] = mapped_column(String(64), index=True)
    subject_id: Mapped[str | None] = mapped_column(String(200), index=True)  # the applicant concerned (Auskunft)
    reason: Mapped[str | None] = mapped_column(Text)
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)
    prev_hash: Mapped[str | None] = mapped_column(String(64))
    hash: Mapped[str | None] = mapped_column(String(64))


class AuditHead(Base):
    """The head of the audit hash chain: one row, locked by every append (serialises the chain)."""

    __tablename__ = "audit_head"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, default=0)
    last_hash: Mapped[str] = mapped_column(String(64))


class DisposalRecord(Base):
    """What was left of an Akte after Aussonderung: what, when, by whom, on which rule."""

    __tablename__ = "disposal_record"
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    akte_id: Mapped[str] = mapped_column(String(32), index=True)
    aktenzeichen: Mapped[str] = mapped_column(String(40), index=True)
    action: Mapped[str] = mapped_column(String(16))  # archived | destroyed
    rule: Mapped[str] = mapped_column(Text)  # e.g. "Aktenplan 32.10, 5 years after closing (2031-03-01)"
    file_plan: Mapped[str] = mapped_column(String(16))
    retention_until: Mapped[dt.date | None] = mapped_column(Date)
    confirmed_by: Mapped[str] = mapped_column(String(200))
    confirmed_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    executed_at: Mapped[dt.datetime | None]
    documents: Mapped[int] = mapped_column(Integer, default=0)
    bytes_removed: Mapped[int] = mapped_column(BigInteger, default=0)
    archive_key: Mapped[str | None] = mapped_column(String(200))  # the xdomea package handed to the archive
    archive_sha256: Mapped[str | None] = mapped_column(String(64))
    reason: Mapped[str | None] = mapped_column(Text)  # the confirming archivist's note
    # what was removed, for auditors: one entry per version (kind, created_at, sha256, size, object removed?)
    inventory: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)


class WebhookDelivery(Base):
    """Payment-provider callbacks already accepted (replay protection): one row per event id.

    ``outcome`` says what became of it: ``received`` (claimed, the signal to the case not yet
    confirmed), ``signalled``, ``amount_mismatch`` (a 'paid' event for another amount than we
    asked for: recorded, never counted as paid), ``case_closed`` (the case had finished).
    """

    __tablename__ = "webhook_delivery"
    event_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    payment_id: Mapped[str] = mapped_column(String(64))
    received_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    # -- migration 0007
    case_id: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str | None] = mapped_column(String(16))
    amount_cents: Mapped[int | None] = mapped_column(Integer)
    outcome: Mapped[str | None] = mapped_column(String(24))


class SandboxPayment(Base):
    """State of the sandbox payment provider (stands in for the external e-payment platform)."""

    __tablename__ = "sandbox_payment"
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    idempotency_key: Mapped[str] = mapped_column(String(200), unique=True)
    reference: Mapped[str] = mapped_column(String(100))
    amount_cents: Mapped[int] = mapped_column(Integer)
    currency: Mapped[str] = mapped_column(String(3))
    purpose: Mapped[str] = mapped_column(String(300))
    callback_url: Mapped[str] = mapped_column(Text)
    #: open paid declined expired cancelled refunded (refunded: the whole amount went back)
    status: Mapped[str] = mapped_column(String(16), default="open")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    callback_attempts: Mapped[int] = mapped_column(Integer, default=0)
    callback_delivered: Mapped[bool] = mapped_column(Boolean, default=False)
    # -- migration 0007
    return_url: Mapped[str | None] = mapped_column(Text)
    #: the test scenario chosen on the payment page (pay, decline, pay_lost_callback, ...)
    scenario: Mapped[str | None] = mapped_column(String(32))
    #: an open payment expires then (NULL: created before expiry existed, never expires)
    expires_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, index=True)
    refunded_cents: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class SandboxRefund(Base):
    """A refund at the sandbox provider (idempotent per Idempotency-Key)."""

    __tablename__ = "sandbox_refund"
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    payment_id: Mapped[str] = mapped_column(ForeignKey("sandbox_payment.id"), index=True)
    idempotency_key: Mapped[str] = mapped_column(String(200), unique=True)
    amount_cents: Mapped[int] = mapped_column(Integer)
    reason: Mapped[str | None] = mapped_column(String(300))
    status: Mapped[str] = mapped_column(String(16), default="refunded")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class PaymentRecord(Base):
    """Our payment ledger: every payment a case asked the provider for (one per attempt), and
    the last status we learned of it (callback, poll, cancel, refund). The webhook finds the
    case of a payment here, also for an earlier attempt's late event."""

    __tablename__ = "payment_record"
    payment_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    case_id: Mapped[str] = mapped_column(String(64), index=True)
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    idempotency_key: Mapped[str] = mapped_column(String(200), unique=True)
    amount_cents: Mapped[int] = mapped_column(Integer)
    payment_url: Mapped[str] = mapped_column(Text)
    #: open paid declined expired cancelled refunded
    status: Mapped[str] = mapped_column(String(16), default="open")
    refunded_cents: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class PaymentReceipt(Base):
    """Zahlungseingang: a payment received, exactly one row per payment however often the
    provider confirms it (callback retries, duplicates, the poll)."""

    __tablename__ = "payment_receipt"
    payment_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    case_id: Mapped[str] = mapped_column(String(64), index=True)
    amount_cents: Mapped[int] = mapped_column(Integer)
    #: how we learned of it: callback | poll
    source: Mapped[str] = mapped_column(String(16))
    event_id: Mapped[str | None] = mapped_column(String(64))
    received_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class PaymentRefund(Base):
    """A refund we made (Erstattung), one per case and payment: the key makes retries safe."""

    __tablename__ = "payment_refund"
    refund_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    idempotency_key: Mapped[str] = mapped_column(String(200), unique=True)
    case_id: Mapped[str] = mapped_column(String(64), index=True)
    payment_id: Mapped[str] = mapped_column(String(64), index=True)
    amount_cents: Mapped[int] = mapped_column(Integer)
    reason: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Vertretung(Base):
    """A deputy arrangement: ``deputy`` acts for ``principal`` on the cases of ``department``
    from ``valid_from`` until (excluding) ``valid_until`` (eakte/inbox.py). Revoked rows stay,
    so who could act for whom at any time can still be answered later."""

    __tablename__ = "vertretung"
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    principal: Mapped[str] = mapped_column(String(200), index=True)
    deputy: Mapped[str] = mapped_column(String(200), index=True)
    department: Mapped[str] = mapped_column(String(64), index=True)
    valid_from: Mapped[dt.datetime]
    valid_until: Mapped[dt.datetime]
    reason: Mapped[str | None] = mapped_column(Text)
    created_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[dt.datetime | None]
    revoked_by: Mapped[str | None] = mapped_column(String(200))


class Notification(Base):
    """A message without a document (reminder, escalation, "payment failed"), exactly once per ``key``.

    ``audience`` applicant: e-mailed when the service allows e-mail and the applicant gave an
    address, else kept for the portal (GET /v1/cases/{id}/messages); department | assignee |
    teamlead: the staff inbox (GET /v1/notifications), scoped by ``department``.
    """

    __tablename__ = "notification"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    key: Mapped[str] = mapped_column(String(200), unique=True)
    vorgang_id: Mapped[str] = mapped_column(ForeignKey("vorgang.id"), index=True)
    department: Mapped[str | None] = mapped_column(String(64), index=True)
    audience: Mapped[str] = mapped_column(String(16))
    #: assignee: the clerk meant (when the case has one)
    recipient: Mapped[str | None] = mapped_column(String(200))
    subject: Mapped[str] = mapped_column(String(300))
    text: Mapped[str] = mapped_column(Text)
    #: email | portal | staff
    channel: Mapped[str] = mapped_column(String(16))
    #: sending (e-mail claimed) | sent | failed (e-mail given up: kept for the portal instead)
    status: Mapped[str] = mapped_column(String(16), default="sent")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    message_id: Mapped[str | None] = mapped_column(String(200))
    claimed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)
    sent_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    read_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    read_by: Mapped[str | None] = mapped_column(String(200))
    __table_args__ = (Index("ix_notification_inbox", "department", "audience", "id"),)


class PrintBatch(Base):
    """The day's letters for the post channel, printed once: the PDF handed to the print room
    is kept in S3, so printing the same day again gives the same bytes."""

    __tablename__ = "print_batch"
    batch_date: Mapped[dt.date] = mapped_column(Date, primary_key=True)
    #: the dispatch ids in print order (frozen at the first print)
    dispatch_ids: Mapped[list[str]] = mapped_column(JSON, default=list)
    letters: Mapped[int] = mapped_column(Integer)
    pages: Mapped[int] = mapped_column(Integer)
    bucket: Mapped[str] = mapped_column(String(64))
    object_key: Mapped[str] = mapped_column(String(200))
    sha256: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(BigInteger)
    printed_by: Mapped[str] = mapped_column(String(200))
    printed_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

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

from sqlalchemy import JSON, Dialect, TypeDecorator, BigInteger, Boolean, Date, DateTime, ForeignKey, Integer, String, Text, UniqueConstraint
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
    retention_years: Mapped[int] = mapped_column(Integer, default=10)
    retention_until: Mapped[dt.date | None] = mapped_column(Date)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    closed_at: Mapped[dt.datetime | None]
    vorgaenge: Mapped[list[Vorgang]] = relationship(back_populates="akte")
    __table_args__ = (UniqueConstraint("file_plan", "year", "seq"),)


class Vorgang(Base):
    """One case: one workflow. Its columns are the API's read model."""

    __tablename__ = "vorgang"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # = case id = workflow id
    akte_id: Mapped[str] = mapped_column(ForeignKey("akte.id"), index=True)
    aktenzeichen: Mapped[str] = mapped_column(String(40), unique=True)
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
    akte: Mapped[Akte] = relationship(back_populates="vorgaenge")


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
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    dokument: Mapped[Dokument] = relationship(back_populates="versions")
    __table_args__ = (UniqueConstraint("dokument_id", "number"),)


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
    __tablename__ = "dispatch"
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    key: Mapped[str] = mapped_column(String(200), unique=True)
    vorgang_id: Mapped[str] = mapped_column(ForeignKey("vorgang.id"), index=True)
    dokument_id: Mapped[str] = mapped_column(ForeignKey("dokument.id"))
    channel: Mapped[str] = mapped_column(String(32))
    at: Mapped[dt.datetime] = mapped_column(default=utcnow)


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


class AuditEvent(Base):
    """Who did what to which record, and why. Reads are recorded too."""

    __tablename__ = "audit_event"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(String(200), index=True)
    role: Mapped[str] = mapped_column(String(32))
    action: Mapped[str] = mapped_column(String(40), index=True)
    target_type: Mapped[str] = mapped_column(String(32))
    target_id: Mapped[str] = mapped_column(String(64), index=True)
    case_id: Mapped[str | None] = mapped_column(String(64), index=True)
    reason: Mapped[str | None] = mapped_column(Text)


class WebhookDelivery(Base):
    """Payment-provider callbacks already accepted (replay protection)."""

    __tablename__ = "webhook_delivery"
    event_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    payment_id: Mapped[str] = mapped_column(String(64))
    received_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


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
    status: Mapped[str] = mapped_column(String(16), default="open")  # open paid declined cancelled
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    callback_attempts: Mapped[int] = mapped_column(Integer, default=0)
    callback_delivered: Mapped[bool] = mapped_column(Boolean, default=False)
